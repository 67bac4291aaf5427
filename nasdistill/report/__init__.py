"""The run report: statistics, tables, plots and ``report.md``.

``write_report(run_dir, results, teachers, students, stage_times, phi_history, config_summary)``
writes ``report.md``, ``results.csv`` and PNG plots into ``run_dir``. Inputs (plain dicts):

- ``results``: one row per (student, teacher, method, seed) run::

      {"student": arch_id, "student_kind": "searched"|"sampled", "target_macs": float|None,
       "macs": int, "params": int, "teacher": "ce"|"gtn"|"sftn"|"mse"|"soteacher"|"none",
       "method": "kd"|"dkd"|"none", "seed": int, "best_acc": float, "last_acc": float,
       "test_acc": float, "wall_time_s": float}

  baseline runs (student trained alone) have ``teacher="none", method="none"``; accuracies in
  percent; extra keys are kept in results.csv. Runs are paired across teachers by (student, seed).
- ``teachers``: ``{"teacher", "model", "test_acc", "best_acc", "wall_time_s", "epochs"}`` plus
  optional ``"ece"``, ``"posterior_mse"``; several entries with one name are averaged.
- ``students``: ``{"student", "kind", "arch", "macs", "params", "target_macs"}``.
- ``stage_times``: ``{stage name: seconds}`` in run order.
- ``phi_history``: per GTN epoch ``{"epoch", "phi_entropy", <label>: entropy, ...}`` (may be empty).
- ``config_summary``: any (nested) dict, shown as ``key.sub = value``.
"""
from .markdown import gain_sentence, write_report
from .plots import plot_accuracy_vs_macs, plot_gain, plot_phi_entropy
from .stats import mean_ci, paired_test, significant
from .tables import (MeanCI, accuracy_table, compare, comparison_table, condition_label, gain_table,
                     pareto_front, stage_table, students_table, teacher_table, write_results_csv)

__all__ = ["write_report", "gain_sentence", "mean_ci", "paired_test", "significant", "MeanCI",
           "teacher_table", "accuracy_table", "gain_table", "compare", "comparison_table",
           "students_table", "stage_table", "pareto_front", "condition_label", "write_results_csv",
           "plot_accuracy_vs_macs", "plot_gain", "plot_phi_entropy"]
