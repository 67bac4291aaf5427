"""The README's figures, generated from runs: a change of defaults cannot leave them stale.

Every figure of the README that a run produces lies in a block

    <!-- generated: NAME from SOURCE (config FINGERPRINT) by COMMAND -->
    ...
    <!-- /generated: NAME -->

that this script (or the bench named by COMMAND) writes. SOURCE is the main job's configuration the
figures come from (``default``: ``nasdistill run``'s defaults; or a YAML file of the repo), and
FINGERPRINT the fingerprint of the keys of that configuration that decide a result. The tests
recompute every block's fingerprint from the current defaults: when a default changes, they fail
and name the command that brings the block up to date.

    python examples/readme_figures.py                    # runs the default job (~2 min), rewrites "report"
    python examples/readme_figures.py --run runs/demo    # the same from a finished default run
    python examples/readme_figures.py --synthetic runs/synthetic_gtn   # "synthetic", from a finished
                                                         # run of examples/synthetic_gtn.yaml
    python examples/readme_figures.py --ladder runs/gtn_scale/ladder.json   # "ladder", from a finished
                                                         # python examples/gtn_scale.py
    python examples/readme_figures.py --check            # exit 1 when a block is stale
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- generated: (?P<name>[\w-]+) from (?P<source>\S+) \(config (?P<fp>[0-9a-f]+)\) "
                   r"by (?P<command>.+?) -->\n(?P<body>.*?)<!-- /generated: (?P=name) -->\n", re.S)


# ------------------------------------------------------------------------------- the blocks
def source_config(source: str, overrides=()):
    """The main job's configuration named by a block's SOURCE (with ``overrides``, as on a command line)."""
    from nasdistill.config import load_config
    from nasdistill.pipeline import PipelineConfig

    return load_config(PipelineConfig, None if source == "default" else str(ROOT / source), list(overrides))


def config_fingerprint(cfg) -> str:
    """The fingerprint of the keys of a main job's configuration that decide its results."""
    from nasdistill.engine.run import fingerprint
    from nasdistill.pipeline.runner import job_identity

    return fingerprint(job_identity(cfg))


def blocks(text: str) -> list[dict]:
    """Every generated block of ``text``: name, source, fp, command, body."""
    return [m.groupdict() for m in BLOCK.finditer(text)]


def replace_block(text: str, name: str, source: str, command: str, body: str) -> str:
    """``text`` with block ``name`` holding ``body``, stamped with ``source``'s fingerprint."""
    fp = config_fingerprint(source_config(source))
    new = f"<!-- generated: {name} from {source} (config {fp}) by {command} -->\n{body.rstrip()}\n" \
          f"<!-- /generated: {name} -->\n"
    found = [m for m in BLOCK.finditer(text) if m.group("name") == name]
    if len(found) != 1:
        raise SystemExit(f"README.md holds {len(found)} blocks named {name!r}; it needs exactly one")
    m = found[0]
    return text[:m.start()] + new + text[m.end():]


def stale(text: str) -> list[str]:
    """One sentence per block whose configuration's defaults changed since it was generated."""
    out = []
    for b in blocks(text):
        now = config_fingerprint(source_config(b["source"]))
        if now != b["fp"]:
            out.append(f"README block {b['name']!r} was generated from {b['source']} with config {b['fp']}, "
                       f"now {now}: rerun `{b['command']}`")
    return out


# --------------------------------------------------------------------------- from a report
def section(report: str, title: str) -> str:
    """The body of ``## title`` in ``report.md`` (up to the next ``## ``)."""
    start = report.index(f"\n## {title}\n") + len(title) + 5
    end = report.find("\n## ", start)
    return report[start:end if end >= 0 else len(report)].strip()


def tables(text: str) -> list[str]:
    """The markdown tables of ``text``, in order."""
    return [t.strip() for t in re.findall(r"((?:^\|.*\|\n?)+)", text, flags=re.M)]


def report_block(run: Path) -> str:
    """The excerpt of a default run's ``report.md``: the summary, the teachers, the accuracy of
    every student, and the time per stage."""
    report = (run / "report.md").read_text()
    summary = "\n".join(f"> {line}" if line else ">" for line in section(report, "Summary").splitlines())
    accuracy = section(report, "Accuracy by teacher")
    first = accuracy.split("\n\n")[0]  # the sentence that says what the numbers are
    return "\n\n".join([summary, tables(section(report, "Teachers"))[0], first, tables(accuracy)[0],
                        "Time per stage:", tables(section(report, "Time per stage"))[0]])


def synthetic_block(run: Path) -> str:
    """The synthetic benchmark's headline comparison, the searched-vs-random result and every
    student's accuracy per condition, from a run of ``examples/synthetic_gtn.yaml``."""
    report = (run / "report.md").read_text()
    paragraphs = section(report, "Summary").split("\n\n")
    # the teachers' comparison, then whether the search beat random students of its cost
    kept = [paragraphs[0]] + [p for p in paragraphs if p.startswith("Searched minus random")]
    return "\n\n".join(["> " + "\n>\n> ".join(kept), tables(section(report, "Accuracy by teacher"))[0]])


def ladder_block(path: Path) -> str:
    """The scale ladder's table (``examples/gtn_scale.py``), from its ``ladder.json``, once every
    rung's job is checked to be the benchmark as it is now with the ladder's overrides."""
    import json

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import gtn_scale
    finally:
        sys.path.remove(str(ROOT / "examples"))
    rungs = json.loads(path.read_text())
    if not isinstance(rungs, list) or not rungs or not all("overrides" in r and "folder" in r for r in rungs):
        raise SystemExit(f"{path} is not the ladder.json of this version of examples/gtn_scale.py (no rungs, "
                         "or rungs without their overrides): rerun it (finished runs are reused)")
    for r in rungs:
        for variant, extra in r["variants"].items():
            job = path.parent / r["folder"] / variant
            want = config_fingerprint(source_config("examples/synthetic_gtn.yaml", [*r["overrides"], *extra]))
            if not (job / "config.yaml").is_file() or \
                    config_fingerprint(source_config(str(job / "config.yaml"))) != want:
                raise SystemExit(f"{job} is not a run of examples/synthetic_gtn.yaml as it is now with the "
                                 "ladder's overrides: rerun python examples/gtn_scale.py")
    return gtn_scale.table(rungs, list(rungs[0]["variants"]))


# ------------------------------------------------------------------------------------- main
def run_default(out: Path) -> Path:
    from nasdistill.config import load_config
    from nasdistill.pipeline import PipelineConfig, run_pipeline

    run_pipeline(load_config(PipelineConfig, None, []), out, verbose=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="a finished run of the default job (default: run one into runs/readme)")
    p.add_argument("--synthetic", type=Path, help="a finished run of examples/synthetic_gtn.yaml")
    p.add_argument("--ladder", type=Path, help="the ladder.json of a finished examples/gtn_scale.py")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--check", action="store_true", help="only say which blocks are stale (exit 1 if any)")
    args = p.parse_args(argv)
    if args.check:
        text = args.readme.read_text()
        problems = stale(text)
        print("\n".join(problems) or f"every generated block of {args.readme} is up to date")
        return 1 if problems else 0
    if args.ladder is not None:
        command = "python examples/gtn_scale.py && python examples/readme_figures.py --ladder LADDER_JSON"
        text = replace_block(args.readme.read_text(), "ladder", "examples/synthetic_gtn.yaml", command,
                             ladder_block(args.ladder))
    elif args.synthetic is not None:
        if config_fingerprint(source_config("examples/synthetic_gtn.yaml")) != \
                config_fingerprint(source_config(str(args.synthetic / "config.yaml"))):
            raise SystemExit(f"{args.synthetic} is not a run of examples/synthetic_gtn.yaml as it is now")
        text = replace_block(args.readme.read_text(), "synthetic", "examples/synthetic_gtn.yaml",
                             "python examples/readme_figures.py --synthetic RUN_DIR", synthetic_block(args.synthetic))
    else:
        run = args.run if args.run is not None else run_default(ROOT / "runs" / "readme")
        if config_fingerprint(source_config("default")) != config_fingerprint(source_config(str(run / "config.yaml"))):
            raise SystemExit(f"{run} is not a run of the default job as it is now (its configuration differs)")
        # (the README is read once the run is over: edits made meanwhile are kept)
        text = replace_block(args.readme.read_text(), "report", "default", "python examples/readme_figures.py",
                             report_block(run))
    args.readme.write_text(text)
    print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
