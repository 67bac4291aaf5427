"""The nasdistill pipeline through the Python API, step by step.

1. search a student at a MACs target (ProxylessNAS on the supernet of a space),
2. train a CE teacher and a GTN teacher,
3. distill the discovered student from each teacher with KD, and train it alone,
4. export the best student and reload it without any supernet class.

    python examples/search_then_distill.py --out runs/api_demo          # ~1-2 minutes on 2 cores
    python examples/search_then_distill.py --quick --out /tmp/api_demo   # seconds (smoke test)
"""
import argparse
import json
from pathlib import Path

import torch

import nasdistill
from nasdistill.distill import DistillConfig, run_distill
from nasdistill.models.config import ModelConfig
from nasdistill.engine.config import TrainConfig
from nasdistill.network.export import export_model
from nasdistill.search import SearchConfig, SearchSection, run_search
from nasdistill.teachers import teacher_config_class
from nasdistill.teachers.runner import run_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/api_demo")
    parser.add_argument("--quick", action="store_true", help="tiny epochs (smoke test)")
    parser.add_argument("--target", type=float, default=1_000_000, help="MACs target of the search")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    epochs = 1 if args.quick else 8

    # 1. search
    search_cfg = SearchConfig(
        seed=0, train=TrainConfig(epochs=epochs + 1, lr=0.05, schedule="cosine", milestones=[],
                                  weight_decay=4e-5),
        search=SearchSection(space="digits_small", mode="two", warmup_epochs=1, arch_lr=0.02,
                             penalty="add#abs", lam=1.0, target=args.target))
    found = run_search(search_cfg, out / "search", verbose=False)
    print(f"searched student {found['arch_id']}: {found['macs']:,} MACs "
          f"({found['cost_over_target']:.2f}x target), arch {json.dumps(found['arch'])}")

    # 2. teachers
    teacher_dirs = {}
    for method in ("ce", "gtn"):
        cfg = teacher_config_class()(method=method, model=ModelConfig(name="resnet8"),
                                     train=TrainConfig(epochs=epochs, lr=0.1, schedule="cosine", milestones=[]))
        result = run_teacher(cfg, out / f"teacher_{method}", verbose=False)
        teacher_dirs[method] = out / f"teacher_{method}"
        print(f"teacher {method}: test accuracy {result['test_acc']:.2f}%")

    # 3. distillation (and the student alone)
    student = ModelConfig(arch=str(out / "search"))  # the searched network, recorded by the search
    scores = {}
    for name, teacher, method in (("alone", None, "none"), ("ce+kd", "ce", "kd"), ("gtn+kd", "gtn", "kd")):
        cfg = DistillConfig(teacher=None if teacher is None else str(teacher_dirs[teacher]), method=method,
                            student=student, train=TrainConfig(epochs=epochs, lr=0.05, schedule="cosine",
                                                               milestones=[]))
        result = run_distill(cfg, out / f"student_{name}", verbose=False)
        scores[name] = result["test_acc"]
        print(f"student {name}: test accuracy {result['test_acc']:.2f}%")

    # 4. export the best and reload it
    best = max(scores, key=scores.get)
    model = nasdistill.load(out / f"student_{best}")   # any run directory loads like an export
    export_model(model, out / "export", space="digits_small", arch=found["arch"], onnx=False, verbose=False)
    reloaded = nasdistill.load(out / "export")
    x = torch.randn(4, 1, 8, 8)
    diff = (reloaded(x) - model.eval()(x)).abs().max().item()
    print(f"exported {best} to {out / 'export'}; reloaded max |diff| = {diff:.2e}")


if __name__ == "__main__":
    main()
