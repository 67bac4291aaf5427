"""Search-space DSL: layers, candidate ops, architectures, cost, standalone networks.

Importing this package imports every module in it, so a built-in op family is one module here that
registers itself (``register("op", "<name form>", OpClass)``, :mod:`.ops`).
"""
from ..registry import import_submodules
from .blocks import BasicBlock, ConvBNReLU, ResStack, ShapeIdentity, Skip, SpaceHead
from .description import custom_ops, describe_space, space_from_description
from .graph import ConstrainedArch, SpaceGraph, most_probable_arch, space_graph
from .loading import available_spaces, load_space
from .ops import OPS, CustomOp, IdentityOp, Op, ResBlocks, ZeroOp, get_op, resnet_choices
from .space import Arch, Layer, ResolvedLayer, SearchSpace, SpaceNet

import_submodules(__name__)

__all__ = [
    "OPS", "Arch", "BasicBlock", "ConstrainedArch", "ConvBNReLU", "CustomOp", "IdentityOp", "Layer",
    "Op", "ResBlocks", "ResStack", "ResolvedLayer", "SearchSpace", "ShapeIdentity", "Skip",
    "SpaceGraph", "SpaceHead", "SpaceNet", "ZeroOp", "available_spaces", "custom_ops",
    "describe_space", "get_op", "load_space", "most_probable_arch", "resnet_choices",
    "space_from_description", "space_graph",
]
