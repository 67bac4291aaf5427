"""Train a teacher network.

    nasdistill teacher CONFIG [key=value ...] [--out-dir DIR] [--resume [--amend] | --restart]

The method is ``method=`` (ce, mse, soteacher, sftn, gtn, and any registered method); each method
has its own config section (e.g. ``ce.label_smoothing=0.1``). The run directory receives
config.yaml, run.json, model.json, metrics.csv/.jsonl, last.ckpt, model.safetensors and
result.json; another command can rebuild the trained teacher from it
(``nasdistill distill teacher=RUN_DIR``, ``nasdistill.load(RUN_DIR)``).
Under ``torchrun --nproc_per_node N`` the global batch ``train.batch_size`` is split over ranks.

Example:
    nasdistill teacher examples/digits_teacher.yaml train.epochs=5 --out-dir runs/t1
    nasdistill teacher examples/digits_teacher.yaml method=gtn --out-dir runs/t_gtn
"""
from __future__ import annotations

from ..registry import register

from .training import add_arguments  # noqa: F401  (CONFIG, overrides, --out-dir, --resume/--amend/--restart)
from .training import run_command

HELP = "train a teacher (ce, mse, soteacher, sftn, gtn)"


def run(args) -> int:
    from ..teachers import teacher_config_class
    from ..teachers.runner import run_teacher

    return run_command(args, teacher_config_class(), run_teacher, "teacher",
                       keys=None)


register("command", "teacher", run, help=HELP, arguments=add_arguments, doc=__doc__, order=30)
