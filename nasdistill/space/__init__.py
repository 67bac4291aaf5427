"""Search-space DSL: layers, candidate ops, architectures, cost, standalone networks."""
from .blocks import BasicBlock, ConvBNReLU, ResStack, ShapeIdentity, Skip, SpaceHead
from .description import custom_ops, describe_space, space_from_description
from .graph import ConstrainedArch, SpaceGraph, most_probable_arch, space_graph
from .loading import available_spaces, load_space
from .ops import OPS, CustomOp, IdentityOp, Op, ResBlocks, ZeroOp, get_op, resnet_choices
from .space import Arch, Layer, ResolvedLayer, SearchSpace, SpaceNet

__all__ = [
    "OPS", "Arch", "BasicBlock", "ConstrainedArch", "ConvBNReLU", "CustomOp", "IdentityOp", "Layer",
    "Op", "ResBlocks", "ResStack", "ResolvedLayer", "SearchSpace", "ShapeIdentity", "Skip",
    "SpaceGraph", "SpaceHead", "SpaceNet", "ZeroOp", "available_spaces", "custom_ops",
    "describe_space", "get_op", "load_space", "most_probable_arch", "resnet_choices",
    "space_from_description", "space_graph",
]
