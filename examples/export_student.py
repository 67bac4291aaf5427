"""Extract a student from a supernet, export it, and reload it without any supernet class.

    python examples/export_student.py [--out DIR] [--no-onnx]

Steps: build the digits supernet, train it a few steps on random batches (so the weights are not
the initial ones), extract one architecture (with identity and skipped layers) as a plain network,
check it against its supernet path, recalibrate its BatchNorm statistics, export it (model.json,
model.safetensors, model.pt2 and model.onnx when the onnx extra is installed), reload it with
``nasdistill.load`` and with ``load_pt2``, and print how far each copy is from the student.
Runs in seconds on a CPU. For a trained student use ``nasdistill export RUN_DIR`` instead.
"""
import argparse

import torch

import nasdistill
from nasdistill.network.export import export_model
from nasdistill.network import load_pt2, supernet_modules
from nasdistill.supernet import Supernet
from nasdistill.models.batchnorm import recalibrate_bn

ARCH = {"layer1": "k3_d2", "layer2": "identity", "layer3": "k5_d2", "layer4": "zero",
        "layer5": "k3_d4", "layer6": "zero"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/export_student", help="export folder")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default="auto",
                        help="write model.onnx (default: when onnx, onnxscript, onnxruntime import)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    space = nasdistill.load_space("digits_small", num_classes=10, input_size=(1, 8, 8))
    supernet = Supernet(space, seed=0)
    opt = torch.optim.SGD(supernet.weight_parameters(), lr=0.05, momentum=0.9)
    for _ in range(10):  # a few steps on random paths: weights away from their initial values
        supernet.sample()
        x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
        loss = torch.nn.functional.cross_entropy(supernet(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    student = supernet.extract(ARCH)
    x = torch.randn(16, 1, 8, 8)
    supernet.eval().set_arch(ARCH)
    with torch.no_grad():
        print(f"extracted student vs supernet path: max |diff| "
              f"{(student.eval()(x) - supernet(x)).abs().max().item():.3e}")
    supernet.set_arch(None)
    # the supernet's BatchNorm statistics mix every path; the student gets its own
    recalibrate_bn(student, [torch.randn(32, 1, 8, 8) for _ in range(4)])
    print(f"student {space.arch_id(ARCH)}: {ARCH}")
    print(space.describe_arch(ARCH))

    result = export_model(student, args.out, space=space, arch=ARCH, onnx=args.onnx)

    model = nasdistill.load(args.out)
    print(f"reloaded {type(model).__name__}; supernet modules in it: {supernet_modules(model) or 'none'}")
    with torch.no_grad():
        reference = student.eval()(x)
        print(f"nasdistill.load vs extracted student: max |diff| "
              f"{(model(x) - reference).abs().max().item():.3e}")
        print(f"load_pt2        vs extracted student: max |diff| "
              f"{(load_pt2(args.out)(x) - reference).abs().max().item():.3e}")
    bad = {fmt: d for fmt, d in result["max_abs_diff"].items() if d is not None and d > 1e-4}
    if result["errors"] or bad:
        raise SystemExit(f"export check failed: {result['errors'] or bad}")
    print("export check: OK")


if __name__ == "__main__":
    main()
