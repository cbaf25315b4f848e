"""Launch run tasks through submitit executors: one code path for in-process, local and Slurm.

- `debug`: submitit's DebugExecutor, in this process, one run after another (for pdb and prints);
- `local`: submitit's LocalExecutor, one subprocess per run, at most `jobs` at a time;
- `slurm`: submitit's SlurmExecutor, one job array per method family (resources may differ), each
  task a checkpointable `SlurmRun` that Slurm may preempt and requeue.
Each task executes `benchmark.run.run_one`, which claims the run and writes its record itself
(benchmark.store), so a launcher only has to start tasks and report how they ended; a job that dies
before run_one could record anything gets a failure record here, unless another process holds the
run's claim or a finished record is there. The local launcher passes its pid to its workers, which
stop when it is gone, and stops them itself when it is interrupted (SIGINT, SIGTERM).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import submitit
from tqdm import tqdm

from .errors import Unavailable
from .run import RunTask, SlurmRun, log_tail, run_one, skipped
from .store import proc_start
from .submissions import can_query_queue, note_submitted, slurm_queue_states, submitted_job

log = logging.getLogger("gpvae_bench")
LAUNCHERS = ("debug", "local", "slurm")
POLL_SECONDS = 1.0
SLURM_POLL_SECONDS = 5.0  # each poll of a Slurm job may run sacct: go easy on the controller


class LauncherError(RuntimeError):
    def __str__(self) -> str:
        return self.args[0]


def _outcome(job, task: RunTask) -> dict:
    """The record run_one returned, or a failure record (written) if the job itself died."""
    try:
        record = job.result()
    except Exception as err:
        return _record_dead_job(job, task, f"{type(err).__name__}: {err}")
    return _stop_on(record)


def _stop_on(record: dict) -> dict:
    """A run that stopped because the results disk is full or read-only stops the sweep."""
    if record.get("status") == "stopped":
        raise Unavailable(record["error"])
    return record


def _record_dead_job(job, task: RunTask, error: str) -> dict:
    store, key = task.store, task.key
    stdout, stderr = str(job.paths.stdout), str(job.paths.stderr)
    claim = store.claim_info(key)
    if claim is not None and claim.dead_because() is None and claim.job != str(job.job_id):
        return skipped(task, f"in progress ({claim.describe()})")  # another process trains it
    on_disk = store.current(key, task.config_hash())
    if on_disk is not None and (on_disk.ok or on_disk.log_file == stdout):
        # a finished record is never replaced by a failure; and this job may have recorded how
        # it ended before it stopped (e.g. requeue cap)
        return dict(on_disk.data)
    record = {"key": dataclasses.asdict(key), "config_hash": task.config_hash(), "status": "failed",
              "error": error[-4000:], "log_file": stdout, "stderr_file": stderr,
              "log_tail": log_tail(stderr),
              "slurm": {"job_id": job.job_id} if isinstance(job, submitit.SlurmJob) else None}
    record = dict(store.write(record).data)
    if claim is not None:  # the dead job's own claim, or a dead owner's: nobody trains the run
        store.remove_claim(claim)
    return record


def follow_up(folder: Path, tasks: list[RunTask], record: bool = True) -> tuple[dict, list]:
    """Runs without a record that went to Slurm earlier (--no-wait): ({key: (job id, state)} of
    those still queued or running, [records of those whose job has left the queue]). With `record`,
    a job that ended without recording its run has a failure record written for it. Nothing is
    looked up where squeue is not available."""
    submitted = [(t, job_id) for t in tasks if (job_id := submitted_job(folder, t))]
    if not submitted or not can_query_queue():
        return {}, []
    queued = slurm_queue_states([job_id for _, job_id in submitted])
    in_flight, ended = {}, []
    for task, job_id in submitted:
        if job_id in queued:
            in_flight[task.key] = (job_id, queued[job_id])
            continue
        if not record:
            continue
        job = submitit.SlurmJob(folder=folder, job_id=job_id)
        if job.paths.result_pickle.exists():
            ended.append(_outcome(job, task))
        else:
            sacct = job.watcher.get_state(job_id, mode="force")
            ended.append(_record_dead_job(job, task, f"Slurm job {job_id} left the queue ({sacct}) "
                                          "without recording the run"))
    return in_flight, ended


def _reap(running: list, records: list[dict], bar: tqdm) -> bool:
    """Move the finished (job, task) pairs of `running` to `records`; whether any had finished."""
    finished = [(j, t) for j, t in running if j.done()]
    for job, task in finished:
        running.remove((job, task))
        records.append(_outcome(job, task))
        bar.update(1)
    return bool(finished)


def _stop_local(job) -> None:
    """Stop a local job: SIGTERM to its submitit controller, which passes it on to the worker (whose
    run_one turns it into KeyboardInterrupt), and SIGINT as submitit's own cancel does (a controller
    started from a background shell may ignore SIGINT, hence both)."""
    process = getattr(job, "_process", None)
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            if process is not None:
                process.send_signal(sig)
            else:
                os.kill(int(job.job_id), sig)
        except (OSError, ValueError):
            pass


def _bounded(executor, tasks: list[RunTask], jobs: int, bar: tqdm) -> list[dict]:
    """Keep at most `jobs` submitted at once; submit the next as soon as one finishes. Each worker
    knows this process (pid, start time) and stops when it is gone."""
    me = (os.getpid(), proc_start(os.getpid()))
    queue = [dataclasses.replace(t, launcher=me) for t in tasks]
    running, records = [], []
    try:
        while queue or running:
            while queue and len(running) < jobs:
                task = queue.pop(0)
                running.append((executor.submit(run_one, task), task))
            if not _reap(running, records, bar):
                time.sleep(POLL_SECONDS)
    except (KeyboardInterrupt, Unavailable):  # leave no training subprocess behind the user
        for job, _ in running:
            _stop_local(job)
        raise
    return records


def wait_for(submitted: Iterable, bar: tqdm) -> list[dict]:
    """Wait for submitted (job, task) pairs; Slurm jobs keep running if this is interrupted."""
    running, records = list(submitted), []
    while running:
        if not _reap(running, records, bar):
            time.sleep(SLURM_POLL_SECONDS)
    return records


def _debug(tasks: list[RunTask], folder: Path, bar: tqdm) -> list[dict]:
    executor = submitit.DebugExecutor(folder)
    records = []
    for task in tasks:
        records.append(_stop_on(executor.submit(run_one, task).result()))  # failures are recorded
        bar.update(1)
    return records


@dataclass
class SlurmArray:
    """One job array: a method family's pending runs and the sbatch directives they go out with."""

    method: str
    name: str
    tasks: list[RunTask]
    directives: list[str]


def slurm_arrays(tasks: list[RunTask], folder: Path, cluster_profile) -> list[SlurmArray]:
    """How `tasks` would go to Slurm: one array per method family. Needs no Slurm (for --dry-run)."""
    from .cluster import sbatch_directives

    arrays = []
    for method, group in groupby(sorted(tasks, key=lambda t: t.key.method), key=lambda t: t.key.method):
        group = list(group)
        name = f"gpvae-{method}"
        arrays.append(SlurmArray(method, name, group, sbatch_directives(
            cluster_profile, Path(folder), method, name=name, array_size=len(group))))
    return arrays


def submit_slurm(tasks: list[RunTask], folder: Path, cluster_profile) -> list[tuple[str, list]]:
    """Submit one job array per method family, with that family's resource overrides;
    [(array job id, [(job, task), ...])]."""
    from .cluster import make_executor, max_requeues

    if shutil.which("sbatch") is None:
        raise LauncherError("--launcher slurm needs Slurm: 'sbatch' is not on PATH")
    submitted = []
    for array in slurm_arrays(tasks, folder, cluster_profile):
        executor = make_executor(cluster_profile, folder, array.method, name=array.name)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr
                jobs = executor.map_array(SlurmRun(max_requeues(cluster_profile, array.method)),
                                          array.tasks)
        except submitit.core.utils.FailedJobError as err:
            raise Unavailable(f"Slurm refused the job array {array.name} ({err}): check that "
                              "the controller is up (sinfo), then rerun; nothing was submitted"
                              + (" after the arrays above" if submitted else "")) from None
        for job, task in zip(jobs, array.tasks, strict=True):
            note_submitted(folder, job.job_id, task)
        array_id = jobs[0].job_id.split("_")[0]
        print(f"submitted job array {array_id} ({array.name}): {len(jobs)} runs; logs in {folder}",
              flush=True)
        submitted.append((array_id, list(zip(jobs, array.tasks, strict=True))))
    return submitted


def launch(
    tasks: list[RunTask],
    *,
    launcher: str,
    folder: Path,
    jobs: int = 1,
    timeout_min: int = 24 * 60,
    cluster_profile=None,
    wait: bool = True,
) -> list[dict]:
    """Run `tasks` and return their records (failed ones included); [] if none or not waiting."""
    if launcher not in LAUNCHERS:
        raise LauncherError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")
    if not tasks:
        return []
    folder = Path(folder)
    if launcher == "slurm":
        submitted = submit_slurm(tasks, folder, cluster_profile)
        if not wait:
            return []
        with tqdm(total=len(tasks), desc="runs", unit="run") as bar:
            return wait_for([pair for _, pairs in submitted for pair in pairs], bar)
    with tqdm(total=len(tasks), desc="runs", unit="run") as bar:
        if launcher == "debug":
            return _debug(tasks, folder, bar)
        executor = submitit.LocalExecutor(folder)
        # LocalExecutor sets CUDA_VISIBLE_DEVICES to the GPUs it is given: none unless asked
        uses_cuda = any(t.device.startswith("cuda") for t in tasks)
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=int(uses_cuda))
        return _bounded(executor, tasks, max(1, jobs), bar)
