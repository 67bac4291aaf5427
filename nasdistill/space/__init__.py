"""Search-space DSL: layers, candidate ops, architectures, cost, standalone networks."""
from .blocks import BasicBlock, ConvBNReLU, ResStack, ShapeIdentity, Skip, SpaceHead
from .description import custom_ops, describe_space, space_from_description
from .loading import available_spaces, load_space
from .ops import OPS, CustomOp, IdentityOp, Op, ResBlocks, ZeroOp, get_op, register_op, resnet_choices
from .space import Arch, Layer, ResolvedLayer, SearchSpace, SpaceNet

__all__ = [
    "OPS", "Arch", "BasicBlock", "ConvBNReLU", "CustomOp", "IdentityOp", "Layer", "Op", "ResBlocks",
    "ResStack", "ResolvedLayer", "SearchSpace", "ShapeIdentity", "Skip", "SpaceHead", "SpaceNet",
    "ZeroOp", "available_spaces", "custom_ops", "describe_space", "get_op", "load_space", "register_op",
    "resnet_choices", "space_from_description",
]
