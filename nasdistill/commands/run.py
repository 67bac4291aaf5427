"""The main job: discover students, train a standard and a generic teacher, distill, report, export.

    nasdistill run [CONFIG] [key=value ...] [--out-dir DIR]

With no CONFIG it runs the embedded default: scikit-learn digits and the `digits_small` space;
students searched at three MACs targets and three sampled ones; a CE and a GTN teacher; KD of
every student from each teacher and each student alone, over three seeds (a few minutes on 2 CPU
cores). A stage already finished in the output directory is reused; an interrupted one resumes.
The directory gets report.md (tables, confidence intervals, paired test, plots), results.csv,
and students/<id>/ with arch.json, model.safetensors, model.pt2 (and model.onnx with the onnx extra).

Examples:
    nasdistill run --out-dir runs/demo
    nasdistill run examples/cifar100_gtn.yaml data.root=/data/cifar --out-dir runs/c100
    nasdistill run teachers.methods=[ce,gtn,sftn] distill.methods=[kd,dkd]
"""
from __future__ import annotations

HELP = "run the main job: search -> teachers -> distill -> report -> export"


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help="YAML config (default: the embedded digits job)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="override a config key, e.g. distill.seeds=[0,1] teachers.methods=[ce,gtn,sftn]")
    parser.add_argument("--out-dir", default=None, help="output directory (overrides out_dir)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args) -> int:
    from ..engine.config import config_from_args
    from ..engine.distributed import init_distributed, shutdown_distributed
    from ..pipeline import PipelineConfig, run_pipeline

    cfg = config_from_args(PipelineConfig, args)  # stages resume by themselves: no --resume flag

    init_distributed("auto")  # under torchrun every stage trains on all ranks
    try:
        run_pipeline(cfg, cfg.out_dir, verbose=not args.quiet)
    finally:
        shutdown_distributed()
    return 0
