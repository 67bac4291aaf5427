"""Inspect a search space, sample architectures and cost them.

SPACE is a module of ``search_spaces`` (``gtn_cifar``, ``digits_small``, ...) or a path to a
``.py`` file that defines ``SPACE = SearchSpace(...)``.

examples:
  nasdistill space list
  nasdistill space show gtn_cifar
  nasdistill space show digits_small --graph --graph-out digits_graph.png
  nasdistill space sample gtn_cifar --seed 3 --describe
  nasdistill space sample digits_small --seed 3 --json > arch.json
  nasdistill space cost digits_small arch.json
  nasdistill space cost gtn_cifar '{"layer1": "k3_d2", "layer2": "zero", ...}'
  nasdistill space cost gtn_cifar --range --input-size 3,64,64 --num-classes 200
"""
from __future__ import annotations

from ..registry import register

import json

HELP = "show a search space, sample architectures, cost an architecture"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="space_command", required=True, metavar="ACTION")

    sub.add_parser("list", help="list the spaces of the search_spaces package")

    p = sub.add_parser("show", help="layers, candidates, number of architectures, MACs/params range")
    p.add_argument("space", metavar="SPACE", help="module of search_spaces or path to a .py file")
    p.add_argument("--graph", action="store_true",
                   help="print the space as a layered graph: per layer the shapes that can arrive "
                        "and each candidate with its MACs")
    p.add_argument("--graph-out", default=None, metavar="FILE.png",
                   help="also draw the layered graph into a PNG file")
    _add_adapt_arguments(p)

    p = sub.add_parser("sample", help="a random architecture (deterministic per seed) with its cost")
    p.add_argument("space", metavar="SPACE", help="module of search_spaces or path to a .py file")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object {space, seed, id, arch, cost} and nothing else")
    p.add_argument("--describe", action="store_true", help="also print the layer table")
    _add_adapt_arguments(p)

    p = sub.add_parser("cost", help="MACs and params of an architecture (or, with --range, the "
                                    "range the space can reach), without training")
    p.add_argument("space", metavar="SPACE", help="module of search_spaces or path to a .py file")
    p.add_argument("arch", metavar="ARCH_JSON_OR_FILE", nargs="?", default=None,
                   help="architecture as a JSON object, or a file holding one (the output of "
                        "`space sample --json` is accepted too)")
    p.add_argument("--range", action="store_true",
                   help="instead of one architecture: the minimum and maximum MACs and params "
                        "over the whole space (exact)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--describe", action="store_true", help="also print the layer table")
    _add_adapt_arguments(p)


def _add_adapt_arguments(p) -> None:
    p.add_argument("--input-size", default=None, metavar="C,H,W",
                   help="adapt the space to inputs of this size (default: the space's own)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="adapt the space to this many classes (default: the space's own)")


def _input_size(text):
    if text is None:
        return None
    try:
        size = tuple(int(v) for v in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) <= 0:
        raise ValueError(f"--input-size {text!r}: expected three positive integers C,H,W, e.g. 3,32,32")
    return size


def read_arch(text: str, space) -> dict:
    """An architecture of ``space`` from a JSON string, a JSON file (a bare mapping, ``{"arch": ...}``
    or a model record) or a folder holding ``model.json``."""
    from ..network.source import read_model_source

    arch = read_model_source(text, "architecture").arch
    if arch is None:
        raise ValueError(f"architecture {text!r} describes a zoo model, not an architecture of {space.name}")
    return space.validate(arch)


def _report(space, arch: dict, as_json: bool, describe: bool, extra: dict) -> None:
    cost = space.cost(arch)
    arch_id = space.arch_id(arch)
    if as_json:
        print(json.dumps({"space": space.name, **extra, "id": arch_id, "arch": arch, "cost": cost}))
        return
    head = f"space {space.name}" + "".join(f", {k} {v}" for k, v in extra.items())
    print(head)
    print(f"id: {arch_id}")
    print(f"arch: {json.dumps(arch)}")
    print(f"MACs: {cost['macs']:,}  params: {cost['params']:,}")
    if describe:
        print(space.describe_arch(arch))


def run(args) -> int:
    from ..space import available_spaces, load_space

    if args.space_command == "list":
        for name in available_spaces():
            print(name)
        return 0
    if getattr(args, "num_classes", None) is not None and args.num_classes <= 0:
        raise ValueError(f"--num-classes must be a positive integer, got {args.num_classes}")
    space = load_space(args.space, getattr(args, "num_classes", None),
                       _input_size(getattr(args, "input_size", None)))
    if args.space_command == "show":
        _show(space, args)
    elif args.space_command == "sample":
        arch = space.sample(seed=args.seed)
        _report(space, arch, args.json, args.describe, {"seed": args.seed})
    elif args.space_command == "cost":
        if args.range == (args.arch is not None):
            raise ValueError("space cost needs either an architecture (ARCH_JSON_OR_FILE) or --range, "
                             "not both or neither")
        if args.range:
            _report_range(space, args.json)
        else:
            _report(space, read_arch(args.arch, space), args.json, args.describe, {})
    return 0


def _show(space, args) -> None:
    if not (args.graph or args.graph_out):
        print(space.summary())
        return
    from ..space import space_graph

    graph = space_graph(space)
    if args.graph:
        print(graph.render())
    if args.graph_out:
        from ..report.space_graph import draw_space_graph

        print(f"wrote {draw_space_graph(graph, args.graph_out)}")


def _report_range(space, as_json: bool) -> None:
    rng = space.cost_range()
    c, h, w = space.input_size
    if as_json:
        print(json.dumps({"space": space.name, "input_size": [c, h, w], "num_classes": space.num_classes,
                          **rng}))
        return
    print(f"space {space.name}: input {c}x{h}x{w}, {space.num_classes} classes")
    print(f"MACs: {rng['macs_min']:,} .. {rng['macs_max']:,}")
    print(f"params: {rng['params_min']:,} .. {rng['params_max']:,}")


register("command", "space", run, help=HELP, arguments=add_arguments, doc=__doc__, order=70)
