"""The main job: search -> teachers -> distill -> report -> export (`nasdistill run`)."""
from .config import PipelineConfig
from .runner import run_pipeline

__all__ = ["PipelineConfig", "run_pipeline"]
