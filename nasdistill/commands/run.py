"""The main job: discover students, train a standard and a generic teacher, distill, report, export.

    nasdistill run [CONFIG] [key=value ...] [--out-dir DIR] [--resume | --restart]

With no CONFIG it runs the embedded default: scikit-learn digits and the `digits_small` space;
students searched at three MACs targets, a random student of each target's MACs band and three
sampled ones; a CE and a GTN teacher per seed; KD of every student from each teacher and each
student alone, over two seeds (about three minutes on 2 CPU cores). The directory gets report.md
(tables, confidence intervals, paired tests, plots), results.csv, and students/<id>/ with
model.json, model.safetensors, model.py (plain PyTorch: loads without nasdistill), model.pt2 (and
model.onnx with the onnx extra).

Rerunning the same command reuses every finished stage and resumes an interrupted one (that is
what --resume says; it is the default). A rerun with other values is refused, naming the keys;
--restart recomputes the stages those keys change and reuses the others. One job per folder at a
time: a second one is refused while the first runs.

Examples:
    nasdistill run --out-dir runs/demo
    nasdistill run examples/cifar100_gtn.yaml data.root=/data/cifar --out-dir runs/c100
    nasdistill run teachers.methods=[ce,gtn,sftn] distill.methods=[kd,dkd]
    nasdistill run distill.train.epochs=20 --out-dir runs/demo --restart
"""
from __future__ import annotations

from ..registry import register

HELP = "run the main job: search -> teachers -> distill -> report -> export"


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help="YAML config (default: the embedded digits job)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="override a config key, e.g. distill.seeds=[0,1] teachers.methods=[ce,gtn,sftn]")
    parser.add_argument("--out-dir", default=None, help="output directory (overrides out_dir)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished stages and resume interrupted ones (the default)")
    parser.add_argument("--restart", action="store_true",
                        help="recompute the stages whose configuration changed; reuse the others")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args) -> int:
    from .cli_args import config_from_args
    from ..config import ConfigError, attribute
    from ..engine.distributed import init_distributed, shutdown_distributed
    from ..pipeline import pipeline_config_class, run_pipeline

    if args.resume and args.restart:
        raise ConfigError("--resume and --restart: choose one (--resume is the default)")
    args.resume = False  # the job's own config.yaml is not a base: the command line is the job
    cfg = config_from_args(pipeline_config_class(), args)
    init_distributed("auto")  # under torchrun every stage trains on all ranks
    try:
        run_pipeline(cfg, cfg.out_dir, verbose=not args.quiet, mode="restart" if args.restart else "resume")
    except ConfigError as err:
        raise attribute(err, cfg) from None
    finally:
        shutdown_distributed()
    return 0


register("command", "run", run, help=HELP, arguments=add_arguments, doc=__doc__, order=10)
