"""The main job's wall time per stage, kept in ``stage_times.json`` so that a killed job's rerun
reports what an uninterrupted run would.

A stage's time is the span from the start of its runs to the end of its last run, summed over the
invocations that ran any of them: each invocation writes its share as each run ends (under
``partial``), and the stage's total once the stage is over. So

- a stage reused whole keeps the time it took when it ran;
- a stage killed midway counts the part done before the kill plus the rest done by the rerun;
- a stage that has no run at all (the teachers of a baseline-only job) has no row: the time the
  job spent waiting on another stage is no stage's time.

``overlap`` is the time the teachers trained while the search ran (the report's total counts it
once); it is kept with the two stages it belongs to. ``invocation`` is this invocation's own wall
time, which the report gives beside the table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from ..atomic import write_json
from ..report.tables import INVOCATION, OVERLAP, PLACEMENT

#: the key of ``stage_times.json`` under which a stage in progress keeps its time so far
PARTIAL = "partial"


class StageTimes:
    """Stage times of one invocation, added to what earlier invocations recorded in ``path``."""

    def __init__(self, path: Path, write: bool = True):
        self.path, self.write = Path(path), write
        try:
            saved = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            saved = {}  # a damaged record loses the times, never the job
        self.saved = saved if isinstance(saved, dict) else {}
        self.partial: dict = dict(self.saved.get(PARTIAL) or {})
        self.times: dict = {k: v for k, v in self.saved.items() if k != PARTIAL}
        self.spans: dict = {}      # this invocation: stage -> [start, end of its last run]
        self.t_start = time.perf_counter()

    # ----------------------------------------------------------------------------- as runs go
    def run_ended(self, name: str, began: float, now: Optional[float] = None) -> None:
        """A run of stage ``name`` (whose runs started at ``began``) has just ended: record the
        stage's time so far, so that a kill from here on loses none of it."""
        now = time.perf_counter() if now is None else now
        self.spans[name] = [began, now]
        self._save()

    def stage_ended(self, name: str, had_runs: bool) -> None:
        """Stage ``name`` is over: its time is what earlier invocations spent on it (a finished
        record, or the part recorded before a kill) plus this invocation's span."""
        span = self.spans.pop(name, None)
        before = self.partial.pop(name, None)
        if span is not None:
            self.times[name] = (before or 0.0) + span[1] - span[0]
        elif before is not None and name not in self.saved:
            self.times[name] = before  # its runs all ended before a kill, none was left to run
        elif not had_runs and name not in self.saved:
            self.times.pop(name, None)
        self._save()

    def overlap(self, search: Optional[list], teachers: Optional[list], early: bool) -> None:
        """Record how long the teachers (queued at ``teachers[0]``) trained during the search
        (``search``: its span in this invocation). ``None``: that stage ran nothing now."""
        if early and search is not None and teachers is not None:
            self.times[OVERLAP] = max(0.0, min(search[1], teachers[1]) - teachers[0])
        elif search is not None or teachers is not None:
            self.times.pop(OVERLAP, None)  # one stage ran alone this time
        self._save()

    def timed(self, name: str, seconds: float) -> None:
        """A stage timed as a whole in this invocation (export, report), whatever runs it had."""
        self.spans.pop(name, None)
        self.partial.pop(name, None)
        self.times[name] = seconds
        self._save()

    def placed(self, text: str) -> None:
        """Where this invocation's runs run (the report says it under the table)."""
        self.times[PLACEMENT] = text
        self._save()

    # --------------------------------------------------------------------------------- out
    def table(self) -> dict:
        """``{stage: seconds, overlap, invocation}`` for the report."""
        return {**self.times, INVOCATION: time.perf_counter() - self.t_start}

    def _save(self) -> None:
        if not self.write:
            return
        partial = dict(self.partial)
        for name, (began, end) in self.spans.items():
            partial[name] = partial.get(name, 0.0) + end - began
        write_json(self.path, {**self.times, **({PARTIAL: partial} if partial else {})})
