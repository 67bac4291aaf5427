"""Running one stage of the main job: its runs, reused when finished with the same configuration,
the others in worker processes; a failure named by its stage."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..engine import distributed
from ..config import to_dict
from ..engine.run import fingerprint
from ..engine.rundir import RunDirectory
from .workers import JobPool, job_config, run_here


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
        #: the job's worker processes (``cfg.workers`` > 1, closed by the job); without it a call
        #: of several runs starts workers of its own for as long as it lasts, and a single run
        #: runs in this process
        self.pool = pool

    @property
    def parallel(self) -> bool:
        """Whether runs go to worker processes (``workers`` > 1, not under torchrun)."""
        return self.cfg.workers > 1 and not distributed.world().distributed

    @property
    def queues(self) -> bool:
        """Whether :meth:`start` queues runs on the job's worker processes (and returns at once)
        rather than running them before it returns."""
        return self.pool is not None and self.parallel

    def payload(self, kind: str, stage_cfg, run_dir: Path) -> dict:
        return {"kind": kind, "config": to_dict(stage_cfg), "run_dir": str(run_dir), "mode": self.mode,
                "threads": self.cfg.threads}

    def run(self, name: str, payloads: list[dict]) -> list[dict]:
        """Run (or reuse) every payload; return their results (``result.json``) in order."""
        return self.start(name, payloads).wait()

    def start(self, name: str, payloads: list[dict]) -> "Pending":
        """Queue the runs of ``payloads`` that are not finished already (on the job's worker pool,
        or, without one, run them now); ``.wait()`` returns every result in order."""
        reused = [_reusable_result(p) for p in payloads]
        todo = [p for p, r in zip(payloads, reused) if r is None]
        self.ran += len(todo)
        self.ran_by[name] = self.ran_by.get(name, 0) + len(todo)
        world = distributed.world()
        pool = self.pool if self.queues else None
        own = pool is None and self.parallel and len(todo) > 1
        if own:
            pool = JobPool(min(self.cfg.workers, len(todo)))
        if payloads:
            how = (f"{min(self.cfg.workers, len(todo))} worker processes" if pool is not None and len(todo) > 1
                   else "in a worker process" if pool is not None
                   else f"on {world.world_size} ranks" if world.distributed else "one at a time")
            self.log.say(f"{name}: {len(payloads)} run{'s' if len(payloads) != 1 else ''}, "
                         f"{len(payloads) - len(todo)} reused"
                         + (f", {len(todo)} to run ({how})" if todo else ""))
        # one bar per stage of several runs (a stage of one run says when it is done)
        bar = self.log.bar(len(todo), name) if len(todo) > 1 else None

        def finished(i: int, result: dict) -> None:
            # as each run ends (not when the stage does): the bar, its ETA, and a line for the run
            line = f"  done {self._name(todo[i]['run_dir'])}: {_accuracy(result)}, {result.get('wall_time_s') or 0:.1f}s"
            if bar is not None and not bar.disable:
                bar.write(line)
                bar.update(1)
            else:
                self.log.say(line)

        def collect(ran: list[dict]) -> list[dict]:
            fresh = iter(ran)
            return [r if r is not None else next(fresh) for r in reused]

        if pool is None or not todo:
            try:
                ran = run_here(todo, finished)
            except FloatingPointError as err:
                raise _stage_error(err, name) from None
            finally:
                if bar is not None:
                    bar.close()
            return Pending(lambda: collect(ran))
        batch = pool.submit(todo, finished, name)

        def wait() -> list[dict]:
            try:
                results = collect(batch.wait())
            except FloatingPointError as err:
                # a run of another stage sharing the pool may be the one that failed
                raise _stage_error(err, getattr(err, "batch", None) or name) from None
            finally:
                if bar is not None:
                    bar.close()
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
    for key, what in (("test_acc", "test"), ("best_acc", "best val")):
        value = result.get(key)
        if isinstance(value, (int, float)):
            return f"{what} {value:.2f}%"
    return "no accuracy"


def _reusable_result(payload: dict) -> Optional[dict]:
    """The result of a finished run whose configuration is this one, else None (checked again,
    under its lock, by the run)."""
    rd = RunDirectory(payload["run_dir"])
    result = rd.finished_result()
    if result is None:
        return None
    manifest = rd.read_manifest() or {}
    if manifest and manifest.get("kind") == payload["kind"] and \
            _payload_fingerprint(payload) == manifest.get("fingerprint"):
        return result
    return None


def _payload_fingerprint(payload: dict) -> str:
    cfg, method = job_config(payload)
    return fingerprint(method.identity_of(cfg))


def _stage_error(err: FloatingPointError, stage: str) -> FloatingPointError:
    detail = getattr(err, "detail", None) or str(err)
    where = getattr(err, "run_dir", None)
    out = FloatingPointError(
        f"{stage} stopped{f' in {where}' if where else ''}: {detail} Lower {stage}.train.lr (or check the "
        f"data) and rerun `nasdistill run` with the new value and --restart: the stages whose "
        "configuration changed are recomputed, the others reused.")
    out.detail, out.run_dir = detail, where
    return out
