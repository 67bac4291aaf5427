"""Path-binarized weight-sharing supernet: mixed layers, gates phi, extraction."""
from .gates import MODES, ArchGates, GateGrad
from .supernet import MixedLayer, Supernet

__all__ = ["ArchGates", "GateGrad", "MODES", "MixedLayer", "Supernet"]
