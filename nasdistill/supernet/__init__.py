"""Path-binarized weight-sharing supernet: mixed layers, gates phi, extraction, cost model."""
from .cost import CostModel, cost_penalty
from .gates import MODES, ArchGates, GateGrad
from .supernet import MixedLayer, Supernet, recalibrate_bn, recalibrating_bn

__all__ = ["ArchGates", "CostModel", "GateGrad", "MODES", "MixedLayer", "Supernet", "cost_penalty",
           "recalibrate_bn", "recalibrating_bn"]
