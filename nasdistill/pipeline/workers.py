"""Training runs of the main job in worker processes that never outlive the main process.

:func:`run_jobs` runs job payloads (``{"kind": "search"|"teacher"|"distill", "config": {...},
"run_dir": ..., "mode": ...}``) with ``workers`` spawn processes, or in this process (one worker,
or under torchrun where every rank takes part in every run). Each run takes its own run
directory's lock, so a worker left over from a killed job could never write the same folder as a
new one; and no worker is left over: each worker asks the kernel to kill it when its parent dies
(``PR_SET_PDEATHSIG``, Linux) and also watches its parent's PID (any POSIX system), so killing the
main process -- SIGKILL included -- ends its workers within a second.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Callable, Optional


def _die_with_parent(parent: int) -> None:
    """Called first in every worker: end this process as soon as ``parent`` is gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def job_kind(kind: str) -> tuple:
    """``(config class, RunMethod)`` of a job kind: ``search``, ``teacher`` or ``distill``."""
    if kind == "search":
        from ..search import SearchConfig
        from ..search.runner import SEARCH_RUN
        return SearchConfig, SEARCH_RUN
    if kind == "teacher":
        from ..teachers import teacher_config_class
        from ..teachers.runner import TEACHER_RUN
        return teacher_config_class(), TEACHER_RUN
    if kind == "distill":
        from ..distill import distill_config_class
        from ..distill.runner import DISTILL_RUN
        return distill_config_class(), DISTILL_RUN
    raise ValueError(f"unknown job kind {kind!r}")


def job_config(payload: dict) -> tuple:
    """``(config, RunMethod)`` of a job payload."""
    from ..engine.config import from_dict

    cls, method = job_kind(payload["kind"])
    return from_dict(cls, payload["config"]), method


def run_job(payload: dict) -> dict:
    """One training run described by ``payload`` (in this process or a worker)."""
    from ..engine.run import run_training
    from ..engine.threads import use_threads

    if payload.get("threads"):
        use_threads(payload["threads"])
    cfg, method = job_config(payload)
    return run_training(cfg, method, payload["run_dir"], mode=payload["mode"], verbose=False)


def run_jobs(payloads: list[dict], workers: int, on_done: Optional[Callable[[int, dict], None]] = None,
             parallel: bool = True) -> list[dict]:
    """Run every payload; return their results in order. ``on_done(i, result)`` after each.

    With ``workers > 1`` and ``parallel`` the runs go to spawn worker processes; the first failure
    cancels what has not started, stops the workers and is raised here.
    """
    results: list = [None] * len(payloads)
    if workers <= 1 or not parallel or len(payloads) <= 1:
        from ..engine import distributed

        for i, p in enumerate(payloads):
            results[i] = run_job(p)
            distributed.barrier()
            if on_done is not None:
                on_done(i, results[i])
        return results
    import multiprocessing as mp

    pool = ProcessPoolExecutor(min(workers, len(payloads)), mp_context=mp.get_context("spawn"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(run_job, p): i for i, p in enumerate(payloads)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                i = futures[f]
                results[i] = f.result()  # raises the worker's error
                if on_done is not None:
                    on_done(i, results[i])
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return results


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued runs and end the workers now (a run in progress keeps its last checkpoint)."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join(timeout=5)


__all__ = ["job_config", "job_kind", "run_job", "run_jobs"]
