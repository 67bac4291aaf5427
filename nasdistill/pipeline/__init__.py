"""The main job: search -> teachers -> distill -> report -> export (`nasdistill run`)."""
from .config import PipelineConfig, pipeline_config_class
from .runner import run_pipeline

__all__ = ["PipelineConfig", "pipeline_config_class", "run_pipeline"]
