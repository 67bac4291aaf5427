"""Path-binarized weight-sharing supernet: mixed layers, gates phi, extraction, cost model."""
from .cost import CostModel, cost_penalty
from .gates import MODES, ArchGates, GateGrad
from .supernet import MixedLayer, Supernet

__all__ = ["ArchGates", "CostModel", "GateGrad", "MODES", "MixedLayer", "Supernet", "cost_penalty",
           "recalibrate_bn", "recalibrating_bn"]


def __getattr__(name: str):
    """``recalibrate_bn`` / ``recalibrating_bn``: from :mod:`nasdistill.engine.evaluation`, lazily
    (a supernet needs nothing from the training engine)."""
    if name in ("recalibrate_bn", "recalibrating_bn"):
        from ..engine import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
