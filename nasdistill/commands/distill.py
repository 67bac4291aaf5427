"""Distill a student from a trained teacher.

    nasdistill distill CONFIG [key=value ...] [--out-dir DIR] [--resume [--amend] | --restart]

``teacher=RUN_DIR`` is a run directory written by `nasdistill teacher`; ``method=`` is kd, dkd,
fitnet, at, sp, rkd, pkt, crd, or none (the student alone with cross-entropy, the baseline). Each
method has its own section (``kd.temperature=2``, ``dkd.beta=6``, ``crd.feat_dim=64``, ...). The
student is a zoo model (``student.name=resnet8``) or an architecture of a search space
(``student.space=digits_small student.arch='{"layer1": "k3_d2", ...}'``), or a network another run
recorded (``student.arch=runs/search``: a search run directory, or any model.json).
``cache_teacher_logits=true`` reuses the teacher's logits computed once (kd/dkd, no augmentation).

The run directory receives config.yaml, run.json, metrics.csv/.jsonl, last.ckpt, model.safetensors
and model.json of the student (``nasdistill.load(RUN_DIR)`` rebuilds it) and result.json
(best/last/test accuracy, method, teacher and its test accuracy).

Example:
    nasdistill teacher examples/digits_teacher.yaml --out-dir runs/digits_teacher
    nasdistill distill examples/digits_distill.yaml --out-dir runs/digits_kd
    nasdistill distill examples/digits_distill.yaml method=dkd --out-dir runs/digits_dkd
"""
from __future__ import annotations

from ..registry import register

from .training import add_arguments  # noqa: F401  (CONFIG, overrides, --out-dir, --resume/--amend/--restart)
from .training import run_command

HELP = "distill a student from a trained teacher (kd, dkd, fitnet, at, sp, rkd, pkt, crd, none)"


def run(args) -> int:
    from ..distill import distill_config_class
    from ..distill.runner import run_distill

    return run_command(args, distill_config_class(), run_distill, "student",
                       keys=("method", "best_acc", "best_epoch", "last_acc", "test_acc", "teacher_test_acc",
                             "epochs", "wall_time_s"))


register("command", "distill", run, help=HELP, arguments=add_arguments, doc=__doc__, order=40)
