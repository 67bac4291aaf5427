"""Teacher-training methods by name (ce, mse, soteacher, sftn, gtn, and any module of this package
that calls :func:`register_teacher`).

Importing this package imports every module in it, so adding a method is one file here.
"""
import importlib
import pkgutil

from .registry import (TEACHERS, TeacherConfig, TeacherMethod, available_teachers, get_teacher,
                       register_teacher, teacher_config_class)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TEACHERS", "TeacherConfig", "TeacherMethod", "available_teachers", "get_teacher",
           "register_teacher", "teacher_config_class"]
