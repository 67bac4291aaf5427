"""Search spaces written with the nasdistill DSL; each module defines ``SPACE``."""
