"""The README's Quick start is what CI runs: two one-line commands that each do their own set-up."""
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start"):text.index("\n## ", text.index("## Quick start") + 1)]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_is_two_self_contained_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    for cmd in commands:
        assert "\n" not in cmd  # one line to paste
        steps = [s.strip() for s in cmd.split("&&")]
        # each sets up its own environment before anything else runs
        assert steps[:3] == ["python3 -m venv .venv", ". .venv/bin/activate", "pip install torch==2.13.0"]
        assert any(s.startswith("pip install -e ") for s in steps)
    assert commands[0].endswith("nasdistill run --out-dir runs/demo")
    assert commands[1].endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^TEST_COMMAND=(.*)$", ci, flags=re.M)
    assert match is not None
    (value,) = shlex.split(match.group(1))
    assert value == quick_start_commands()[1]
    assert 'bash -c "$TEST_COMMAND"' in ci


def _figures():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "examples" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_figures_come_from_runs_of_the_current_defaults():
    """Each block of figures was generated from a run whose configuration is the current default
    (or the named example's): a changed default fails here, naming the command to rerun."""
    figures = _figures()
    text = (ROOT / "README.md").read_text()
    assert {b["name"] for b in figures.blocks(text)} >= {"report", "synthetic", "shared-search"}
    assert all(b["body"].strip() for b in figures.blocks(text))
    assert figures.stale(text) == []


def test_a_changed_default_makes_a_block_stale_and_the_script_rewrites_it(monkeypatch):
    figures = _figures()
    text = "intro\n<!-- generated: report from default (config 0) by CMD -->\nold\n<!-- /generated: report -->\nend\n"
    assert figures.stale(text) == ["README block 'report' was generated from default with config 0, now "
                                   f"{figures.config_fingerprint(figures.source_config('default'))}: rerun `CMD`"]
    new = figures.replace_block(text, "report", "default", "CMD", "| a |\n|---|\n| 1 |")
    assert figures.stale(new) == [] and new.startswith("intro\n") and new.endswith("\nend\n")
    assert [b["body"] for b in figures.blocks(new)] == ["| a |\n|---|\n| 1 |\n"]
    # another default: the fingerprint moves
    real = figures.source_config
    monkeypatch.setattr(figures, "source_config",
                        lambda source: _with(real(source), "distill.kd.temperature", 2.0))
    assert figures.stale(new) and "rerun `CMD`" in figures.stale(new)[0]


def _with(cfg, key, value):
    section, _, name = key.rpartition(".")
    obj = cfg
    for part in section.split("."):
        obj = getattr(obj, part)
    setattr(obj, name, value)
    return cfg
