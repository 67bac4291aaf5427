"""Running one stage of the main job: its runs submitted to the job's backend (worker processes, or
this process), each line said as it finishes; a failure named by its stage. Whether a run is
reused, resumed or refused is the run's own lifecycle's to decide
(:func:`~nasdistill.engine.runs.execute`), never the stage's."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from ..engine import distributed
from ..engine.runs import RunSpec
from .workers import JobPool, run_here


class Progress:
    """Stage headers and one progress bar per stage (tqdm), cheap and quiet otherwise."""

    def __init__(self, verbose: bool):
        self.verbose = verbose

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def bar(self, total: int, desc: str):
        from tqdm import tqdm
        disable = not self.verbose or os.environ.get("NASDISTILL_PROGRESS", "1") == "0"
        return tqdm(total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=True)


class Pending:
    """Runs a stage queued; :meth:`wait` returns their results in order."""

    def __init__(self, wait):
        self._wait = wait

    def wait(self) -> list[dict]:
        return self._wait()


class Stage:
    """Runs one stage's jobs and turns a run's failure into a sentence that names the stage."""

    def __init__(self, cfg, mode: str, log: Progress, root: Optional[Path] = None,
                 pool: Optional[JobPool] = None):
        self.cfg, self.mode, self.log = cfg, mode, log
        self.root = Path(root) if root is not None else None   # run folders are named relative to it
        self.ran = 0   # runs executed (not reused) so far
        self.ran_by: dict = {}  # the same, by stage name
        self.reused_by: dict = {}  # runs reused, by stage name
        self.began: dict = {}  # stage name -> when its first run was started or queued
        #: called as ``on_run_end(stage name, began)`` in the main process as each run it executed
        #: (not reused) ends
        self.on_run_end = None
        #: the job's worker processes (``cfg.workers`` > 1, closed by the job); without it a call
        #: of several runs starts workers of its own for as long as it lasts, and a single run
        #: runs in this process
        self.pool = pool

    @property
    def parallel(self) -> bool:
        """Whether runs go to worker processes (a pool, or ``workers`` > 1; not under torchrun)."""
        return (self.pool is not None or self.cfg.workers == "auto" or self.cfg.workers > 1) \
            and not distributed.world().distributed

    @property
    def queues(self) -> bool:
        """Whether :meth:`start` queues runs on the job's worker processes (and returns at once)
        rather than running them before it returns."""
        return self.pool is not None and self.parallel

    def spec(self, kind: str, stage_cfg, run_dir: Path) -> RunSpec:
        """The :class:`~nasdistill.engine.runs.RunSpec` of one run of this stage."""
        return RunSpec.of(kind, stage_cfg, run_dir, mode=self.mode, threads=self.cfg.threads,
                          job=str(self.root) if self.root is not None else None, name=self._name(str(run_dir)))

    def run(self, name: str, specs: list) -> list[dict]:
        """Run every spec; return their results (``result.json``, with ``reused``) in order."""
        return self.start(name, specs).wait()

    def start(self, name: str, specs: list) -> "Pending":
        """Submit ``specs`` (on the job's worker pool, or, without one, run them now); ``.wait()``
        returns every result in order."""
        world = distributed.world()
        pool = self.pool if self.queues else None
        own = pool is None and self.parallel and len(specs) > 1
        if own:
            pool = JobPool(min(2 if self.cfg.workers == "auto" else self.cfg.workers, len(specs)))
        if specs:
            how = (f"{min(pool.size, len(specs))} worker processes" if pool is not None and len(specs) > 1
                   else "in a worker process" if pool is not None
                   else f"on {world.world_size} ranks" if world.distributed else "one at a time")
            self.log.say(f"{name}: {len(specs)} run{'s' if len(specs) != 1 else ''} ({how})")
        # one bar per stage of several runs (a stage of one run says when it is done)
        bar = self.log.bar(len(specs), name) if len(specs) > 1 else None
        self.ran_by.setdefault(name, 0)
        self.reused_by.setdefault(name, 0)
        if specs:
            self.began.setdefault(name, time.perf_counter())

        def finished(i: int, result: dict) -> None:
            # as each run ends (not when the stage does): the bar, its ETA, and a line for the run
            if result.get("reused"):
                self.reused_by[name] += 1
                line = f"  reused {specs[i].name}: {_accuracy(result)}"
            else:
                self.ran += 1
                self.ran_by[name] += 1
                if self.on_run_end is not None:
                    self.on_run_end(name, self.began[name])
                line = f"  done {specs[i].name}: {_accuracy(result)}, {result.get('wall_time_s') or 0:.1f}s"
            if bar is not None and not bar.disable:
                bar.write(line)
                bar.update(1)
            else:
                self.log.say(line)

        def close_bar() -> None:
            if bar is not None:
                bar.close()

        if pool is None or not specs:
            try:
                results = run_here(specs, finished)
            except FloatingPointError as err:
                raise _stage_error(err, name) from None
            finally:
                close_bar()
            return Pending(lambda: results)
        batch = pool.submit(specs, finished, name)

        def wait() -> list[dict]:
            try:
                results = batch.wait()
            except FloatingPointError as err:
                # a run of another stage sharing the pool may be the one that failed
                raise _stage_error(err, getattr(err, "batch", None) or name) from None
            finally:
                close_bar()
                if own:
                    pool.kill() if batch.left else pool.close()
            return results
        return Pending(wait)

    def _name(self, run_dir: str) -> str:
        path = Path(run_dir)
        if self.root is not None:
            try:
                return str(path.relative_to(self.root))
            except ValueError:
                pass
        return str(path)


def _accuracy(result: dict) -> str:
    """The run's accuracy for its progress line: test, else best validation. A search of several
    targets says how many students it wrote: its own accuracy is the shared supernet's, whose
    BatchNorm statistics mix every path, and would read as a student's."""
    students = result.get("students")
    if isinstance(students, list):
        return f"{len(students)} students"
    formats = result.get("max_abs_diff")
    if isinstance(formats, dict):  # an export
        return "exported " + ", ".join(k for k, v in formats.items() if v is not None)
    for key, what in (("test_acc", "test"), ("best_acc", "best val")):
        value = result.get(key)
        if isinstance(value, (int, float)):
            return f"{what} {value:.2f}%"
    return "no accuracy"


def _stage_error(err: FloatingPointError, stage: str) -> FloatingPointError:
    detail = getattr(err, "detail", None) or str(err)
    where = getattr(err, "run_dir", None)
    out = FloatingPointError(
        f"{stage} stopped{f' in {where}' if where else ''}: {detail} Lower {stage}.train.lr (or check the "
        f"data) and rerun `nasdistill run` with the new value and --restart: the stages whose "
        "configuration changed are recomputed, the others reused.")
    out.detail, out.run_dir = detail, where
    return out
