"""Export a trained (or freshly built) network: arch.json, safetensors, torch.export, ONNX.

    nasdistill export SOURCE [--out DIR] [--onnx | --no-onnx]

SOURCE is one of
  - a run directory of `nasdistill search` (arch.json + model.safetensors: the extracted student),
  - a run directory of `nasdistill teacher` or `nasdistill distill` (model.json + model.safetensors),
  - an export folder (re-export),
  - an architecture JSON file (a mapping label -> choice, or {"arch": ...}) with --space: the
    network is built with fresh weights (seeded by --seed), e.g. to inspect its graph.

The folder (default SOURCE/export, or NAME-export next to a JSON file) receives arch.json,
model.safetensors, model.pt2 (torch.export) and model.onnx (with the onnx extra: pip install
'nasdistill[onnx]'); each is reloaded and compared with the original on a batch, and the max
absolute difference per format is printed and written to export.json. Reload the network with
`nasdistill.load(DIR)`; no supernet class is involved. Exit status 1 when a format failed.

Example:
    nasdistill export runs/search1 --out students/s1
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

HELP = "export a network (search/teacher/distill run, or arch JSON) to safetensors, .pt2 and ONNX"


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="run directory (search, teacher, distill), export folder, or arch JSON file")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="export folder (default: SOURCE/export, or NAME-export next to a JSON file)")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default="auto",
                        help="write model.onnx (default: when the onnx extra is installed; "
                             "--onnx fails without it, --no-onnx skips it)")
    parser.add_argument("--space", default=None,
                        help="search space (module of search_spaces or .py path) of an arch JSON file")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the space built for an arch JSON file (default: the space's)")
    parser.add_argument("--input-size", default=None, metavar="C,H,W",
                        help="input size of the space built for an arch JSON file (default: the space's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh weights for an arch JSON file")


def _spec_from_config(run_dir: Path):
    """The space spec a search run used (config.yaml's search.space), which may be a file path."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return None
    spec = (cfg.get("search") or {}).get("space") if isinstance(cfg, dict) else None
    if isinstance(spec, str) and (spec.endswith(".py") or os.sep in spec):
        spec = os.path.abspath(spec)
    return spec if isinstance(spec, str) else None


def _from_run_dir(source: Path):
    """(model, record) of a run directory or export folder."""
    from ..export import build_from_export_record, load_weights, normalize_record

    if (source / "model.json").is_file():  # teacher / distill run
        from ..engine.modelspec import load_model_record

        record = json.loads((source / "model.json").read_text())
        try:
            model = load_model_record(source)
        except RuntimeError as err:  # strict load_state_dict mismatch
            raise ValueError(f"{source / 'model.safetensors'} does not fit the model of "
                             f"{source / 'model.json'}: {str(err).splitlines()[0]}") from None
        return model, record
    if (source / "arch.json").is_file():  # search run or export folder
        try:
            raw = json.loads((source / "arch.json").read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{source / 'arch.json'} is not valid JSON ({err})") from None
        try:
            record = normalize_record(raw)
        except ValueError as err:
            raise ValueError(f"{source / 'arch.json'}: {err}") from None
        spec = _spec_from_config(source)
        if spec is not None and record["kind"] == "space":
            record["space"] = spec
        model = build_from_export_record(record)
        load_weights(model, source / "model.safetensors")
        return model, record
    raise FileNotFoundError(f"{source} holds neither model.json (teacher/distill run) nor arch.json "
                            "(search run or export folder); give a run directory or an arch JSON file "
                            "with --space")


def _from_arch_file(path: Path, args):
    """(model, record) of an arch JSON file: fresh weights seeded by --seed."""
    import torch

    from ..engine.modelspec import resolve_arch
    from ..export import load_space_for, space_record
    from ..space import load_space

    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    spec = args.space or (raw.get("space") if isinstance(raw, dict) else None)
    if spec is None:
        raise ValueError(f"{path} is an architecture without a space: pass --space NAME_OR_FILE.py")
    arch = resolve_arch(str(path))
    space = load_space(spec)
    if args.num_classes is not None or args.input_size is not None:
        input_size = space.input_size
        if args.input_size is not None:
            try:
                input_size = tuple(int(v) for v in args.input_size.split(","))
            except ValueError:
                raise ValueError(f"--input-size {args.input_size!r}: expected C,H,W, e.g. 3,32,32") from None
        space = load_space_for(spec, args.num_classes or space.num_classes, input_size)
    torch.manual_seed(args.seed)
    return space.build(arch), space_record(space, arch, spec=spec)


def run(args) -> int:
    from ..export import export_model

    source = Path(args.source)
    if source.is_dir():
        model, record = _from_run_dir(source)
        out = Path(args.out) if args.out else source / "export"
    elif source.is_file():
        model, record = _from_arch_file(source, args)
        out = Path(args.out) if args.out else source.with_name(source.stem + "-export")
    else:
        raise FileNotFoundError(f"{source} does not exist: give a run directory of search, teacher or "
                                "distill, an export folder, or an architecture JSON file")
    if out.resolve() == source.resolve():
        raise ValueError(f"--out {out} is the source itself; export into another folder")
    result = export_model(model, out, record=record, onnx=args.onnx)
    print(f"reload with: nasdistill.load({str(out)!r})")
    if result["errors"]:
        print(f"nasdistill export: failed formats: {', '.join(result['errors'])} (see {out / 'export.json'})")
        return 1
    return 0
