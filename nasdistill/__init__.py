"""nasdistill: neural architecture search and knowledge distillation around one shared supernet.

The names a user reaches for first::

    import nasdistill
    space = nasdistill.load_space("digits_small", num_classes=10, input_size=(1, 8, 8))
    supernet = nasdistill.Supernet(space)
    teacher = nasdistill.create_model("resnet8", num_classes=10, in_channels=1)
    student = nasdistill.load("runs/search")        # any run directory or export folder
"""
from .version import __version__
from .registry import register
from .space import Layer, SearchSpace, load_space
from .models import create_model
from .supernet import Supernet
from .network import ModelRecord, load

__all__ = ["Layer", "ModelRecord", "SearchSpace", "Supernet", "create_model", "load", "load_space",
           "register", "__version__"]
