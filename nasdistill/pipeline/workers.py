"""The local backend: the main job's runs in worker processes that never outlive the main process.

:func:`run_jobs` runs :class:`~nasdistill.engine.runs.RunSpec` s (or their dicts) with ``workers``
processes, or in this process (one worker, or under torchrun where every rank takes part in every
run), and reports each run as it finishes; every run goes through
:func:`~nasdistill.engine.runs.execute`, which alone decides what its folder holds. A
:class:`JobPool` keeps its processes for a whole job: every stage submits its runs to it, and a
stage whose runs are ready queues them while an earlier stage's still train.

**Placement.** Each worker may be given environment variables before it starts (its ``env``), set
before the worker imports torch: a worker pinned to GPU ``g`` sees only that GPU
(``CUDA_VISIBLE_DEVICES=g``), so a run's ``train.device=auto`` is that GPU
(:func:`~.placement.worker_envs`).

**No orphans.** Each worker is a fresh Python (running :func:`serve`) started
with ``subprocess.Popen``; between its fork and its exec the kernel is asked to kill it when its
parent dies (``PR_SET_PDEATHSIG``, Linux; it survives the exec), so it dies with the main process
-- SIGKILL included -- from its first instruction on, even while it is still importing torch. It
also watches its parent's PID (any POSIX system; within half a second). Jobs and results travel as
length-prefixed pickles over two pipes: no multiprocessing pool, so no semaphores and no resource
tracker to warn about leaked ones when the main process is killed. Each run also takes its own run
directory's lock, so a worker could never write the folder of a new job.
"""
from __future__ import annotations

import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable, Optional

_PR_SET_PDEATHSIG = 1


def _libc_prctl():
    """``prctl`` of the C library (None off Linux), looked up before any fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _arm_pdeathsig(prctl, parent: int) -> Callable[[], None]:
    """The ``preexec_fn`` of a worker: SIGKILL this process when ``parent`` dies (armed before exec)."""
    def arm() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    return arm


def _watch_parent(parent: int) -> None:
    """In a worker: end this process as soon as ``parent`` is gone (where PDEATHSIG is missing)."""
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# ---------------------------------------------------------------------------- framing
def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> Optional[bytes]:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None  # the other end closed
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(fd: int):
    """The next object on ``fd``; raises EOFError when the other end closed."""
    head = _read_exact(fd, 8)
    if head is None:
        raise EOFError
    data = _read_exact(fd, struct.unpack("<Q", head)[0])
    if data is None:
        raise EOFError
    return pickle.loads(data)


def run_job(spec) -> dict:
    """One run (a :class:`~nasdistill.engine.runs.RunSpec` or its dict), in this process or a
    worker: :func:`~nasdistill.engine.runs.execute`."""
    from ..engine.runs import execute

    return execute(spec)


def run_jobs(payloads: list[dict], workers: int, on_done: Optional[Callable[[int, dict], None]] = None,
             parallel: bool = True) -> list[dict]:
    """Run every payload; return their results in order. ``on_done(i, result)`` as each finishes.

    With ``workers > 1`` and ``parallel`` the runs go to worker processes (see the module
    docstring); the first failure cancels what has not started, ends the workers and is raised
    here (with its attributes, e.g. a FloatingPointError's ``detail`` and ``run_dir``).
    """
    if workers <= 1 or not parallel or len(payloads) <= 1:
        return run_here(payloads, on_done)
    with JobPool(min(workers, len(payloads))) as pool:
        return pool.submit(payloads, on_done).wait()


def run_here(payloads: list[dict], on_done: Optional[Callable[[int, dict], None]] = None) -> list[dict]:
    """Run every payload in this process, one after the other (every rank takes part under torchrun)."""
    from ..engine import distributed

    results: list = [None] * len(payloads)
    for i, p in enumerate(payloads):
        results[i] = run_job(p)
        distributed.barrier()
        if on_done is not None:
            on_done(i, results[i])
    return results


class Batch:
    """Runs handed to a :class:`JobPool` together; :meth:`wait` returns their results in order."""

    def __init__(self, pool: "JobPool", n: int, on_done, name: Optional[str] = None):
        self.pool, self.results, self.left, self.on_done = pool, [None] * n, n, on_done
        self.name = name  # what the runs are (a stage's name): a failure says it

    def _finished(self, i: int, result: dict) -> None:
        self.results[i] = result
        self.left -= 1
        if self.on_done is not None:
            self.on_done(i, result)

    def wait(self) -> list[dict]:
        """Block until every run of this batch has finished (runs of other batches finishing
        meanwhile are recorded in theirs); the first failure of any batch is raised here."""
        while self.left:
            self.pool._next()
        return self.results


class Backend:
    """What the job's runs go to (the local :class:`JobPool`, the Ray pool of :mod:`.ray_pool`):
    ``submit`` batches, ``close`` once they are done, ``kill`` on a failure. As a context manager
    it closes when the block ends normally and kills when it raises (Ctrl-C, SIGTERM included)."""

    def close(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb) -> None:
        if err is None:
            self.close()
        else:
            self.kill()


class JobPool(Backend):
    """Worker processes shared by every stage of a job: batches of runs are queued in the order
    they are submitted and each run goes to the next free worker, so a later stage's runs that are
    ready (teachers that need no searched student) train while an earlier stage's still run, and
    the workers start once per job. The processes start with the first batch. The first failure
    ends every worker (runs in progress keep their last checkpoint) and is raised by the
    :meth:`Batch.wait` that meets it; nothing queued starts after it."""

    def __init__(self, workers: int, envs: Optional[list] = None, placement: Optional[str] = None):
        self.size = workers
        self.envs = envs  # per worker: environment variables set before it starts (placement)
        self.placement = placement
        self._pool: Optional[_WorkerPool] = None
        self._queue: list = []        # (batch, index in the batch, payload) not yet given
        self._idle: list = []         # workers without a run
        self._running: dict = {}      # job number -> (batch, index in the batch)
        self._count = 0
        self._failed: Optional[BaseException] = None

    def submit(self, payloads: list[dict], on_done: Optional[Callable[[int, dict], None]] = None,
               name: Optional[str] = None) -> Batch:
        """Queue ``payloads``; ``on_done(i, result)`` as each finishes (called from a ``wait``).
        A run's failure gets the attribute ``batch`` = ``name``: whichever batch's ``wait``
        raises it, it names the batch the failed run belongs to."""
        if self._failed is not None:
            raise self._failed
        batch = Batch(self, len(payloads), on_done, name)
        if not payloads:
            return batch
        if self._pool is None:
            self._pool = _WorkerPool(self.size, self.envs)
            self._idle = list(self._pool.workers)
        self._queue += [(batch, i, p) for i, p in enumerate(payloads)]
        self._dispatch()
        return batch

    def _dispatch(self) -> None:
        while self._idle and self._queue:
            batch, i, payload = self._queue.pop(0)
            self._count += 1
            self._running[self._count] = (batch, i)
            self._idle.pop(0).give(self._count, payload)

    def _next(self) -> None:
        """Wait for the next run of any batch to finish and record it (raise a failure)."""
        if self._failed is not None:
            raise self._failed
        if self._pool is None or not self._running:
            raise RuntimeError("JobPool: waiting on runs that were never submitted")
        w, job, status, value = self._pool.next_result()
        if status == "error":
            failed = self._running.get(job)
            if failed is not None and failed[0].name is not None:
                try:
                    value.batch = failed[0].name
                except AttributeError:  # an exception type without a __dict__
                    pass
            self._failed = value
            self._queue.clear()
            self.kill()
            raise value
        batch, i = self._running.pop(job)
        self._idle.append(w)
        self._dispatch()
        batch._finished(i, value)

    def describe(self) -> str:
        """Where the runs run (``2 worker processes``, ``4 worker processes on 2 GPUs, ...``)."""
        return self.placement or f"{self.size} worker process{'es' if self.size != 1 else ''}"

    def close(self) -> None:
        """Let the workers end once their runs are done (nothing may be left waiting)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def kill(self) -> None:
        """End every worker now (a run in progress keeps its last checkpoint)."""
        if self._pool is not None:
            self._pool.kill()
            self._pool = None


class _Worker:
    """One worker process, its job pipe and its result pipe."""

    def __init__(self, parent: int, prctl, prepare: dict, env: Optional[dict] = None):
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        cmd = [sys.executable, "-c", f"from nasdistill.pipeline.workers import serve; serve({job_r}, {res_w}, {parent})"]
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(job_r, res_w), preexec_fn=_arm_pdeathsig(prctl, parent),
                                         stdin=subprocess.DEVNULL, env=_worker_env(env))
        finally:
            os.close(job_r)
            os.close(res_w)
        self.jobs, self.results = job_w, res_r
        self.index: Optional[int] = None
        self.run_dir: Optional[str] = None
        _send(self.jobs, prepare)

    def give(self, i: int, payload) -> None:
        self.index = i
        self.run_dir = payload.get("run_dir") if isinstance(payload, dict) else getattr(payload, "run_dir", None)
        try:
            _send(self.jobs, (i, payload))
        except BrokenPipeError:
            pass  # the worker died: its result pipe ends, and next_result says so

    def close(self) -> None:
        for fd in (self.jobs, self.results):
            try:
                os.close(fd)
            except OSError:
                pass


class _WorkerPool:
    def __init__(self, n: int, envs: Optional[list] = None):
        import multiprocessing.spawn as mp_spawn

        parent, prctl = os.getpid(), _libc_prctl()
        # what a spawn child needs to resemble this process (sys.path, cwd, the main module: its
        # registrations of methods and ops run in the worker too)
        prepare = mp_spawn.get_preparation_data("nasdistill-worker")
        prepare.pop("authkey", None)
        self.workers: list[_Worker] = []
        self.selector = selectors.DefaultSelector()
        try:
            for k in range(n):
                w = _Worker(parent, prctl, prepare, (envs[k] if envs else None))
                self.workers.append(w)
                self.selector.register(w.results, selectors.EVENT_READ, w)
        except BaseException:
            self.kill()
            raise

    def next_result(self):
        """``(worker, index, "ok"|"error", result or exception)`` of the next run to finish."""
        while True:
            for key, _ in self.selector.select():
                w = key.data
                try:
                    i, status, value, text = _recv(w.results)
                except EOFError:
                    code = w.proc.wait()
                    where = f" while running {w.run_dir}" if w.run_dir else ""
                    return w, w.index, "error", ChildProcessError(
                        f"a worker process ended unexpectedly (exit status {code}){where}; rerun the same "
                        "command: finished runs are reused and this one continues from its last checkpoint")
                if status == "error":
                    value = _exception(value, text)
                w.index = w.run_dir = None
                return w, i, status, value

    def close(self) -> None:
        """Let the workers end (their job pipe closes) and wait for them."""
        for w in self.workers:
            try:
                os.close(w.jobs)
            except OSError:
                pass
        for w in self.workers:
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.close()
        self.selector.close()

    def kill(self) -> None:
        """End every worker now (a run in progress keeps its last checkpoint)."""
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()
        for w in self.workers:
            w.proc.wait()
            w.close()
        self.selector.close()


def _worker_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ, **(extra or {}))
    # the worker must import this very nasdistill, wherever it was imported from
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _exception(blob: bytes, text: str) -> BaseException:
    """The worker's exception, rebuilt (a plain RuntimeError with its text when it cannot be)."""
    try:
        err = pickle.loads(blob)
    except Exception:
        return RuntimeError(text.strip().splitlines()[-1] if text.strip() else "a worker failed")
    err.worker_traceback = text
    return err


def serve(jobs: int, results: int, parent: int) -> None:
    """A worker's life: prepare like the parent, then run jobs until the job pipe closes."""
    _watch_parent(parent)
    import multiprocessing.spawn as mp_spawn

    try:
        prepare = _recv(jobs)
    except EOFError:
        return
    mp_spawn.prepare(prepare)
    import nasdistill.pipeline  # noqa: F401  (every run kind registers itself: search, teacher, distill, export)

    while True:
        try:
            i, payload = _recv(jobs)
        except EOFError:
            return
        try:
            _send(results, (i, "ok", run_job(payload), ""))
        except BaseException as err:  # sent to the parent, which raises it
            text = traceback.format_exc()
            try:
                blob = pickle.dumps(err)
                pickle.loads(blob)
            except Exception:
                blob = pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))
            _send(results, (i, "error", blob, text))
            if not isinstance(err, Exception):
                return


__all__ = ["Batch", "JobPool", "run_here", "run_job", "run_jobs", "serve"]
