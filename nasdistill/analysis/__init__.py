"""Analyses of teachers and students: distance to the true posterior, calibration, similarity.

Plain functions of tensors (computed in float64 on CPU), plus :func:`evaluate_teacher_quality`,
which runs a model over a split.
"""
from nasdistill.analysis.similarity import compare_teacher_student, linear_cka, teacher_student_kl
from nasdistill.analysis.teacher_quality import (evaluate_teacher_quality, expected_calibration_error,
                                                 fit_temperature, posterior_kl, posterior_mse, predict)

__all__ = ["posterior_mse", "posterior_kl", "expected_calibration_error", "evaluate_teacher_quality",
           "fit_temperature", "predict", "teacher_student_kl", "linear_cka", "compare_teacher_student"]
