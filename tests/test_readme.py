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
