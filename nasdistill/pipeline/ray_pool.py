"""``backend=ray``: the job's runs as Ray tasks, on this machine or on every node of a cluster.

The same interface as the local :class:`~.workers.JobPool` (batches submitted by the stages,
``Batch.wait`` reporting each run as it ends, the first failure raised naming its stage), and the
same run function: each task executes one :class:`~nasdistill.engine.runs.RunSpec` against its run
folder (:func:`~nasdistill.engine.runs.execute`: lock, fingerprint, reuse / resume / refuse,
atomic result), so a run lost with its node is run again by Ray (``max_retries``) and resumes
from its last checkpoint, and a rerun of the same command reuses every finished run.

Ray is an optional extra (``pip install 'nasdistill[ray]'``), imported when the backend starts.
``ray.address=local`` starts a Ray instance for the job (no dashboard, listening on the loopback
only, its workers at normal priority like the local backend's processes) and stops it at the end;
``auto`` / ``HOST:PORT`` join a running cluster (its token authentication, when on, stays on).
The job's folder must be on storage every node sees: before the first run, one task per node looks
for a file the driver wrote there, and a node that cannot see it ends the job with a sentence (not
a hang).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Optional

from .workers import Backend, Batch

#: seconds every node has to answer whether it sees the job's folder
PROBE_TIMEOUT = 120

#: what the job says when the ``ray`` package is missing
MISSING = ("backend=ray needs the ray package, which is not installed: pip install 'nasdistill[ray]' "
           "(or use backend=local)")


def _ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(MISSING) from err
    return ray


def _execute(spec: dict) -> dict:
    from ..engine.runs import execute

    os.environ.setdefault("NASDISTILL_PROGRESS", "0")
    return execute(spec)  # (the spec carries the run's CPU threads)


def _probe():
    """A task that says whether its node sees a file (defined in a function, so that Ray ships
    it by value: a node answers without importing nasdistill and torch)."""
    def sees(path: str, token: str) -> tuple:
        import os
        import socket

        return socket.gethostname(), os.path.isfile(os.path.join(path, f".ray-check-{token}"))
    return sees


class RayPool(Backend):
    """Ray tasks for the job's runs (see the module docstring)."""

    def __init__(self, section, job: Optional[Path] = None):
        self.section, self.job = section, job
        self.ray = _ray()
        self._started = False
        self._own = False          # whether this pool started the Ray instance (and stops it)
        self._running: dict = {}   # ObjectRef -> (batch, index in the batch)
        self._failed: Optional[BaseException] = None
        self._remote = None

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        ray = self.ray
        if self._started:
            return
        self._own = not ray.is_initialized()
        if self._own:
            if self.section.address == "local":
                # the runs are this instance's work: its workers run at the priority of the
                # local backend's processes, not at Ray's default of nice 15 (which yields the CPU
                # to anything else on the machine, the job's own driver included)
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                         _node_ip_address="127.0.0.1", _system_config={"worker_niceness": 0})
            else:
                ray.init(address=self.section.address, log_to_driver=False, configure_logging=False)
        self._started = True
        self._remote = ray.remote(num_cpus=self.section.cpus_per_run, num_gpus=self.section.gpus_per_run,
                                  max_retries=3)(_execute)
        if self.job is not None:
            self.check_storage(self.job)

    @property
    def size(self) -> int:
        """How many runs the cluster runs at a time (its CPUs, or GPUs, over a run's share)."""
        if not self._started:
            self.start()
        res = self.ray.cluster_resources()
        by_cpu = int(res.get("CPU", 1) // self.section.cpus_per_run)
        by_gpu = int(res.get("GPU", 0) // self.section.gpus_per_run) if self.section.gpus_per_run else by_cpu
        return max(1, min(by_cpu, by_gpu))

    def describe(self) -> str:
        self.start()
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        where = "a local Ray instance" if self.section.address == "local" else f"the Ray cluster at {self.section.address}"
        return (f"{where} ({len(nodes) or 1} node{'s' if len(nodes) != 1 else ''}, {self.size} runs at a time: "
                f"{self.section.cpus_per_run:g} CPU, {self.section.gpus_per_run:g} GPU per run)")

    def check_storage(self, folder: Path) -> None:
        """Refuse (a sentence) when a node of the cluster cannot see ``folder``."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        marker = folder / f".ray-check-{token}"
        marker.write_text("")
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            probe = ray.remote(num_cpus=0)(_probe())
            refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(folder), token) for n in nodes]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=PROBE_TIMEOUT)
            answers = [ray.get(r) for r in ready]
            blind = [host for host, seen in answers if not seen]
            if len(ready) < len(refs):
                blind.append(f"{len(refs) - len(ready)} node(s) that did not answer in {PROBE_TIMEOUT} s")
            if blind:
                raise OSError(f"the job's folder {folder} is not visible from every node of the Ray cluster "
                              f"(not from {', '.join(blind)}): put --out-dir on storage every node mounts at "
                              "the same path (e.g. NFS), or use backend=local")
        finally:
            marker.unlink(missing_ok=True)

    def close(self) -> None:
        if self._started and self._own:
            self.ray.shutdown()
        self._started = False

    def kill(self) -> None:
        """Cancel every task still running (their runs keep their last checkpoint), then close."""
        if self._started:
            for ref in list(self._running):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # a task that ended meanwhile
                    pass
            self._running.clear()
        self.close()

    # ------------------------------------------------------------------------------ runs
    def submit(self, payloads: list, on_done: Optional[Callable[[int, dict], None]] = None,
               name: Optional[str] = None) -> Batch:
        """Start a task per payload (a RunSpec); ``on_done(i, result)`` as each ends (from a wait)."""
        from ..engine.runs import RunSpec

        if self._failed is not None:
            raise self._failed
        batch = Batch(self, len(payloads), on_done, name)
        if not payloads:
            return batch
        self.start()
        for i, p in enumerate(payloads):
            spec = p.to_dict() if isinstance(p, RunSpec) else dict(p)
            self._running[self._remote.remote(spec)] = (batch, i)
        return batch

    def _next(self) -> None:
        """Wait for the next task of any batch to end and record it (raise a failure)."""
        ray = self.ray
        if self._failed is not None:
            raise self._failed
        if not self._running:
            raise RuntimeError("RayPool: waiting on runs that were never submitted")
        (ref,), _ = ray.wait(list(self._running), num_returns=1)
        batch, i = self._running.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if getattr(err, "cause", None) is not None else err
            if batch.name is not None:
                try:
                    cause.batch = batch.name
                except AttributeError:
                    pass
            self._failed = cause
            self.kill()
            raise cause from None
        batch._finished(i, result)


__all__ = ["MISSING", "RayPool"]
