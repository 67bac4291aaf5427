"""Export a trained (or freshly built) network: model.json, safetensors, model.py, torch.export, ONNX.

    nasdistill export SOURCE [--out DIR] [--onnx | --no-onnx] [--trust-code]

SOURCE is one of
  - a run directory of `nasdistill search`, `teacher` or `distill` (model.json + model.safetensors),
  - an export folder (re-export),
  - a JSON file: a model record (model.json), or an architecture (a mapping label -> choice, or
    {"arch": ...}) with --space: the network is built with fresh weights (seeded by --seed), e.g.
    to inspect its graph.

The folder (default SOURCE/export, or NAME-export next to a JSON file) receives model.json,
model.safetensors, model.py (the network as plain PyTorch source: torch and safetensors only),
model.pt2 (torch.export) and model.onnx (with the onnx extra: pip install 'nasdistill[onnx]');
each is reloaded and compared with the original on a batch, and the max absolute difference per
format is printed and written to export.json with each file's SHA-256. Reload the network with
`nasdistill.load(DIR)`: no supernet class and no code from the folder is involved. A space with
custom ops needs them registered, or --trust-code, which imports the op code saved in SOURCE.
The weights of SOURCE are checked against the digest SOURCE records (export.json or result.json)
first. Exit status 1 when a format failed, 2 when SOURCE cannot be exported (e.g. damaged).

Example:
    nasdistill export runs/search1 --out students/s1
"""
from __future__ import annotations

from ..registry import register

import argparse
from pathlib import Path

HELP = "export a network (search/teacher/distill run, or a JSON file) to safetensors, model.py, .pt2, ONNX"


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="run directory (search, teacher, distill), export folder, or JSON file")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="export folder (default: SOURCE/export, or NAME-export next to a JSON file)")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default="auto",
                        help="write model.onnx (default: when the onnx extra is installed; "
                             "--onnx fails without it, --no-onnx skips it)")
    parser.add_argument("--space", default=None,
                        help="search space (module of search_spaces or .py path) of an architecture file")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the network of a JSON file (default: the record's or the space's)")
    parser.add_argument("--input-size", default=None, metavar="C,H,W",
                        help="input size of the network of a JSON file (default: the record's or the space's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh weights for a JSON file")
    parser.add_argument("--trust-code", action="store_true",
                        help="import the custom-op code saved in SOURCE (code/*.py): runs that code")


def _from_folder(source: Path, trust_code: bool):
    """(model, record) of a run directory or export folder."""
    from ..network import load_with_record

    return load_with_record(source, trust_code=trust_code)


def _from_json_file(path: Path, args):
    """(model, record) of a JSON file: fresh weights seeded by --seed."""
    import torch

    from ..network import SourceNames, record_from_source

    input_size = None
    if args.input_size is not None:
        try:
            input_size = tuple(int(v) for v in args.input_size.split(","))
        except ValueError:
            raise ValueError(f"--input-size {args.input_size!r}: expected C,H,W, e.g. 3,32,32") from None
    record = record_from_source(str(path), args.space, args.num_classes, input_size,
                                SourceNames.command_line(path))
    torch.manual_seed(args.seed)
    return record.build(trust_code=args.trust_code, base_dir=path.parent), record


def run(args) -> int:
    from ..network.export import export_model

    source = Path(args.source)
    if source.is_dir():
        model, record = _from_folder(source, args.trust_code)
        out = Path(args.out) if args.out else source / "export"
    elif source.is_file():
        model, record = _from_json_file(source, args)
        out = Path(args.out) if args.out else source.with_name(source.stem + "-export")
    else:
        raise FileNotFoundError(f"{source} does not exist: give a run directory of search, teacher or "
                                "distill, an export folder, or an architecture JSON file")
    if out.resolve() == source.resolve():
        raise ValueError(f"--out {out} is the source itself; export into another folder")
    result = export_model(model, out, record=record, onnx=args.onnx)
    print(f"reload with: nasdistill.load({str(out)!r})"
          + (f", or without nasdistill: load() of {out / 'model.py'}" if "python" in result["files"] else ""))
    if result["errors"]:
        print(f"nasdistill export: failed formats: {', '.join(result['errors'])} (see {out / 'export.json'})")
        return 1
    return 0


register("command", "export", run, help=HELP, arguments=add_arguments, doc=__doc__, order=50)
