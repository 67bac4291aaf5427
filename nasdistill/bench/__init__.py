"""Benchmarks behind `nasdistill bench ...` (one module per benchmark)."""
