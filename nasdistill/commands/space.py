"""Inspect a search space, sample architectures and cost them.

SPACE is a module of ``search_spaces`` (``gtn_cifar``, ``digits_small``, ...) or a path to a
``.py`` file that defines ``SPACE = SearchSpace(...)``.

examples:
  nasdistill space list
  nasdistill space show gtn_cifar
  nasdistill space sample gtn_cifar --seed 3 --describe
  nasdistill space sample digits_small --seed 3 --json > arch.json
  nasdistill space cost digits_small arch.json
  nasdistill space cost gtn_cifar '{"layer1": "k3_d2", "layer2": "zero", ...}'
"""
from __future__ import annotations

import json

HELP = "show a search space, sample architectures, cost an architecture"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="space_command", required=True, metavar="ACTION")

    sub.add_parser("list", help="list the spaces of the search_spaces package")

    p = sub.add_parser("show", help="layers, candidates, number of architectures, MACs/params range")
    p.add_argument("space", metavar="SPACE", help="module of search_spaces or path to a .py file")

    p = sub.add_parser("sample", help="a random architecture (deterministic per seed) with its cost")
    p.add_argument("space", metavar="SPACE", help="module of search_spaces or path to a .py file")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object {space, seed, id, arch, cost} and nothing else")
    p.add_argument("--describe", action="store_true", help="also print the layer table")

    p = sub.add_parser("cost", help="MACs and params of an architecture, without training")
    p.add_argument("space", metavar="SPACE", help="module of search_spaces or path to a .py file")
    p.add_argument("arch", metavar="ARCH_JSON_OR_FILE",
                   help="architecture as a JSON object, or a file holding one (the output of "
                        "`space sample --json` is accepted too)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--describe", action="store_true", help="also print the layer table")


def read_arch(text: str, space) -> dict:
    """An architecture of ``space`` from a JSON string, a JSON file (a bare mapping, ``{"arch": ...}``
    or a model record) or a folder holding ``model.json``."""
    from ..record import arch_and_space, read_model_source

    arch, _ = arch_and_space(read_model_source(text, "architecture"))
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
    space = load_space(args.space)
    if args.space_command == "show":
        print(space.summary())
    elif args.space_command == "sample":
        arch = space.sample(seed=args.seed)
        _report(space, arch, args.json, args.describe, {"seed": args.seed})
    elif args.space_command == "cost":
        _report(space, read_arch(args.arch, space), args.json, args.describe, {})
    return 0
