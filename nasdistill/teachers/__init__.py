"""Teacher-training methods (ce, and mse/soteacher/sftn/gtn where present), by name.

Importing this package registers every built-in method whose module exists.
"""
import importlib

from .registry import (TeacherConfig, TeacherMethod, available_teachers, get_teacher,
                       register_teacher, teacher_config_class)

_BUILTIN = ("ce", "mse", "soteacher", "sftn", "gtn")
for _name in _BUILTIN:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _err:
        if _err.name != f"{__name__}.{_name}":
            raise

__all__ = ["TeacherConfig", "TeacherMethod", "available_teachers", "get_teacher",
           "register_teacher", "teacher_config_class"]
