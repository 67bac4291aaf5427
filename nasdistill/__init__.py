"""nasdistill: neural architecture search and knowledge distillation around one shared supernet."""
__version__ = "0.1.0"

from .space import Layer, SearchSpace, load_space, register_op  # noqa: E402
from .artifact import load  # noqa: E402

__all__ = ["Layer", "SearchSpace", "load", "load_space", "register_op", "__version__"]
