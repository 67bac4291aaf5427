"""Teacher-training methods by name (ce, mse, soteacher, sftn, gtn, and any module of this package
that registers one: ``register("teacher", name, task_factory, config=..., **meta)``).

Importing this package imports every module in it, so adding a method is one file here.
"""
from ..registry import import_submodules
from .registry import (TEACHERS, TeacherConfig, TeacherMethod, available_teachers, get_teacher,
                       pipeline_section_defaults, reference_teacher, teacher_config_class)

import_submodules(__name__)

__all__ = ["TEACHERS", "TeacherConfig", "TeacherMethod", "available_teachers", "get_teacher",
           "pipeline_section_defaults", "reference_teacher", "teacher_config_class"]
