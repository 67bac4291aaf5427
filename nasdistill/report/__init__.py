"""The run report: statistics, tables, plots and ``report.md``.

``write_report(run_dir, results, teachers, students, stage_times, phi_history, config_summary,
title=..., metric=..., branch_history=..., *, gate_info=None, exports=None, about=None,
num_classes=None, kd_temperature=None)`` writes ``report.md``,
``results.csv`` and PNG plots into ``run_dir``, every file atomically with ordinary permissions
(``0666`` minus the umask). Inputs (plain dicts):

- ``results``: one row per (student, teacher, method, seed) run::

      {"student": arch_id, "student_kind": "searched"|"sampled", "target_macs": float|None,
       "macs": int, "params": int, "teacher": "ce"|"gtn"|"sftn"|"mse"|"soteacher"|"none",
       "method": "kd"|"dkd"|"none", "seed": int, "teacher_seed": int (optional),
       "best_acc": float, "last_acc": float, "test_acc": float, "wall_time_s": float}

  baseline runs (student trained alone) have ``teacher="none", method="none"``; accuracies in
  percent; ``teacher_seed`` is the seed of the teacher run the distillation used (missing in older
  runs: unknown); extra keys are kept in results.csv. Runs are paired across conditions by
  (student, seed); comparisons average each student's paired differences over its seeds and test
  across students (the student is the unit of analysis), with a t-test, a Wilcoxon signed-rank test
  (6 students or more) and a percentile-bootstrap CI resampling students.
- ``teachers``: ``{"teacher", "model", "test_acc", "best_acc", "wall_time_s", "epochs"}`` plus
  optional ``"ece"``, ``"posterior_mse"``, ``"seed"`` / ``"teacher_seed"``; several entries with one
  name (one per seed) are averaged and counted.
- ``students``: ``{"student", "kind", "arch", "macs", "params", "target_macs"}``; a searched student
  more than 10% off its MACs target is flagged.
- ``stage_times``: ``{stage name: seconds}`` in run order.
- ``phi_history``: per GTN epoch (may be empty; optionally one series per ``teacher_seed``)::

      {"epoch", "teacher_seed" (optional), "phi_entropy", "phi_entropy/<label>" (nats),
       "param_free_mass", "param_free_mass/<label>", "sampled_macs_q25", "sampled_macs_q50",
       "sampled_macs_q75", "pool_macs_q25", "pool_macs_q50", "pool_macs_q75"}

  older histories with bare ``<label>: entropy`` keys are still drawn.
- ``config_summary``: any (nested) dict, shown as ``key.sub = value``.
- ``branch_history``: per epoch of each branch-trained teacher (GTN, SFTN) and teacher seed
  ``{"epoch", "teacher" (absent: "gtn"), "teacher_seed", "teacher_acc", "branch<i>_acc"}`` plus, when
  logged, ``"train_acc"``, ``"sampled_branch<i>_acc"``, ``"sampled_branch<i>_entropy"``,
  ``"teacher_logit_std"``, ``"teacher_entropy_t1"``, ``"teacher_entropy_kd"`` (optional; see
  :mod:`.branches`, whose :func:`branch_rows` makes them from a teacher's ``metrics.jsonl``). With the
  latter keys the report checks the precondition of distilling from such a teacher (sampled branches
  within 15 points of the teacher's training accuracy, KD targets below 0.95 ln K, K =
  ``num_classes``) and warns in the Summary when it fails.
- ``gate_info`` (optional): ``{"labels": [used labels], "choices": {label: K}, "param_free": {label:
  [names]}, "entropy_floor_frac": 0.5, "mass_cap": 0.6}``; the gates have *collapsed* when a used
  label ends with entropy < ``entropy_floor_frac`` * ln K or parameter-free mass > ``mass_cap``.
- ``exports`` (optional): ``{"student", "folder" (relative to run_dir), "teacher", "method", "seed",
  "formats": {format: max_abs_diff or None}}``, described in words by :func:`describe_source`.
"""
from .branches import branch_rows, plot_branch_fit
from .exports import describe_source, export_line
from .gates import gate_table, plot_gate_exploration, plot_phi_entropy
from .markdown import gain_sentence, write_report
from .plots import plot_accuracy_vs_macs, plot_branch_accuracy, plot_gain
from .precondition import branch_teacher_section, precondition_table
from .stats import bootstrap_ci, mean_ci, paired_test, significant, student_level_test
from .tables import (MeanCI, accuracy_table, compare, comparison_table, condition_label, gain_table,
                     pareto_front, stage_table, students_table, teacher_table, write_results_csv)

__all__ = ["write_report", "gain_sentence", "mean_ci", "paired_test", "significant", "MeanCI",
           "teacher_table", "accuracy_table", "gain_table", "compare", "comparison_table",
           "students_table", "stage_table", "pareto_front", "condition_label", "write_results_csv",
           "plot_accuracy_vs_macs", "plot_gain", "plot_phi_entropy",
           "bootstrap_ci", "student_level_test", "describe_source", "export_line", "gate_table",
           "plot_gate_exploration", "plot_branch_accuracy", "plot_branch_fit", "branch_rows",
           "branch_teacher_section", "precondition_table"]
