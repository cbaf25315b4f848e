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
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import submitit

from .errors import Unavailable, one_line
from .progress import RunProgress
from .run import RunTask, SlurmRun, log_tail, run_one, skipped
from .store import proc_start
from .submissions import can_query_queue, note_submitted, slurm_queue_states, submitted_job

log = logging.getLogger("gpvae_bench")
LAUNCHERS = ("debug", "local", "slurm")
POLL_SECONDS = 1.0
SLURM_POLL_SECONDS = 5.0  # each poll of a Slurm job may run sacct: go easy on the controller
STOP_WAIT_SECONDS = 15.0  # an interrupted local sweep waits this long at most for its workers to stop


class LauncherError(RuntimeError):
    def __str__(self) -> str:
        return self.args[0]


def _outcomes(job, tasks: list[RunTask]) -> list[dict]:
    """The records of a finished job's runs (a Slurm job may run several: runs_per_task): what the
    job returned, or, when it failed or died, each run's record as the job left it (a run it
    recorded as failed, or finished), else a failure record written here with one line on why."""
    try:
        result = job.result()
    except Exception as err:
        error = _job_error(job, err)
        return [_record_dead_job(job, task, error) for task in tasks]
    results = result if isinstance(result, list) else [result]
    by_key = {json.dumps(r.get("key"), sort_keys=True): r for r in results if isinstance(r, dict)}
    out = []
    for task in tasks:
        record = by_key.get(json.dumps(dataclasses.asdict(task.key), sort_keys=True))
        out.append(_stop_on(record) if record is not None else
                   _record_dead_job(job, task, f"job {job.job_id} returned no result for this run"))
    return out


def _job_error(job, err: Exception) -> str:
    """One line on how a job ended without a result for its runs (a record's `error`): for a job
    that ended without a result (cancelled, killed, out of memory, past its time limit) as the
    follow-up of --no-wait says it, else the last line of what the job raised."""
    if isinstance(err, submitit.core.utils.UncompletedJobError) and isinstance(job, submitit.SlurmJob):
        return f"Slurm job {job.job_id} ended ({job.state}) without recording the run"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(err).__name__
    if isinstance(err, submitit.core.utils.UncompletedJobError):
        return f"job {job.job_id} ended without recording the run: {last}"
    return last[:300]


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
    """Runs of `tasks` that went to Slurm earlier (--no-wait, or a retry): ({key: (job id, state)}
    of those still queued or running, whatever their record says (a failed run's retry may be
    queued), [records of those without a record whose job has left the queue]). With `record`, a
    job that ended without recording its run has a failure record written for it. Nothing is
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
        if not record or task.store.state(task.key, task.config_hash()) != "missing":
            continue  # a run with a record keeps it (a retry's job that ended unrecorded: no news)
        job = submitit.SlurmJob(folder=folder, job_id=job_id)
        if job.paths.result_pickle.exists():
            ended += _outcomes(job, [task])
        else:
            sacct = job.watcher.get_state(job_id, mode="force")
            ended.append(_record_dead_job(job, task, f"Slurm job {job_id} left the queue ({sacct}) "
                                          "without recording the run"))
    return in_flight, ended


def _reap(running: list, records: list[dict], bar: RunProgress) -> bool:
    """Move the finished (job, [task, ...]) pairs of `running` to `records`; whether any had
    finished."""
    finished = [(j, t) for j, t in running if j.done()]
    for job, tasks in finished:
        running.remove((job, tasks))
        records.extend(_outcomes(job, tasks))
        bar.finished(tasks)
    return bool(finished)


def _stop_local(job) -> None:
    """Stop a local job: SIGTERM to its submitit controller, which passes it on to the worker (whose
    run_one turns it into KeyboardInterrupt: the claim released, the checkpoint kept) and exits
    once the worker has. Not SIGINT, which the controller ignores (_controller_ignores_sigint)."""
    process = getattr(job, "_process", None)
    try:
        if process is not None:
            process.send_signal(signal.SIGTERM)
        else:
            os.kill(int(job.job_id), signal.SIGTERM)
    except (OSError, ValueError):
        pass


@contextlib.contextmanager
def _controller_ignores_sigint():
    """Start a local job's submitit controller with SIGINT ignored (a process inherits an ignored
    signal, and Python then installs no KeyboardInterrupt handler): Ctrl-C reaches every process of
    the terminal's process group, and a controller interrupted in its wait loop prints a
    KeyboardInterrupt traceback and SIGKILLs its worker a second later, before the worker can
    release its claim. The launcher stops its controllers itself (_stop_local). The worker sets its
    own handlers (benchmark.run: _stop_with_launcher)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_stopped(running: list, seconds: float) -> None:
    """Wait up to `seconds` until each of the `running` (stopped) jobs has released its runs'
    claims or ended, so that the command ends with nothing held (the worker processes themselves
    may take a few seconds more to exit, torch and all)."""
    deadline = time.monotonic() + seconds

    def holding(job, tasks) -> bool:
        process = getattr(job, "_process", None)
        return (process is None or process.poll() is None) and any(
            t.store.claim_path(t.key).exists() for t in tasks)

    while any(holding(job, tasks) for job, tasks in running) and time.monotonic() < deadline:
        time.sleep(0.05)


def _bounded(executor, tasks: list[RunTask], jobs: int, bar: RunProgress) -> list[dict]:
    """Keep at most `jobs` submitted at once; submit the next as soon as one finishes. Each worker
    knows this process (pid, start time) and stops when it is gone."""
    me = (os.getpid(), proc_start(os.getpid()))
    queue = [dataclasses.replace(t, launcher=me) for t in tasks]
    running, records = [], []
    try:
        while queue or running:
            while queue and len(running) < jobs:
                task = queue.pop(0)
                with _controller_ignores_sigint():
                    job = executor.submit(run_one, task)
                bar.started(task, job.paths.stdout)
                running.append((job, [task]))
            if not _reap(running, records, bar):
                time.sleep(POLL_SECONDS)
    except (KeyboardInterrupt, Unavailable):  # leave no training subprocess behind the user
        for job, _ in running:
            _stop_local(job)
        _wait_stopped(running, STOP_WAIT_SECONDS)
        raise
    return records


def wait_for(submitted: Iterable, bar: RunProgress) -> list[dict]:
    """Wait for submitted (job, [task, ...]) pairs; Slurm jobs keep running if this is
    interrupted."""
    running, records = list(submitted), []
    while running:
        if not _reap(running, records, bar):
            time.sleep(SLURM_POLL_SECONDS)
    return records


def _debug(tasks: list[RunTask], folder: Path, bar: RunProgress) -> list[dict]:
    executor = submitit.DebugExecutor(folder)
    records = []
    for task in tasks:
        bar.started(task)  # its log lines go to this console
        records.append(_stop_on(executor.submit(run_one, task).result()))  # failures are recorded
        bar.finished([task])
    return records


@dataclass
class SlurmArray:
    """One job array: pending runs of one method family, packed `runs_per_task` to a job (array
    task), with the sbatch directives they go out with. A family with more jobs than the
    cluster's MaxArraySize goes out as several arrays (`part` of `parts`)."""

    method: str
    name: str
    packs: list[list[RunTask]]  # one per array task (job)
    runs_per_task: int
    packing: str  # how runs_per_task was decided
    parallelism: int | None  # at most this many of its jobs at once (%N); None: the profile's
    after: int | None  # index of the array it waits for (afterany), to keep the sweep's cap
    directives: list[str]
    part: int = 1
    parts: int = 1

    @property
    def tasks(self) -> list[RunTask]:
        return [task for pack in self.packs for task in pack]


def slurm_arrays(tasks: list[RunTask], folder: Path, cluster_profile,
                 max_size: int | None = None) -> list[SlurmArray]:
    """How `tasks` would go to Slurm: one array per method family (its resource overrides), runs
    packed `runs_per_task` to a job, arrays split at `max_size` jobs (default: the cluster's
    MaxArraySize), the profile's sweep_parallelism shared among the arrays. Needs no Slurm (for
    --dry-run)."""
    from .cluster import max_array_size, runs_per_task, sbatch_directives, split_cap

    if max_size is None:
        max_size = max_array_size(cluster_profile)[0]
    arrays = []
    for method, group in groupby(sorted(tasks, key=lambda t: t.key.method), key=lambda t: t.key.method):
        group = list(group)
        k, how = runs_per_task(cluster_profile, method)
        packs = [group[i:i + k] for i in range(0, len(group), k)]
        chunks = [packs[i:i + max_size] for i in range(0, len(packs), max_size)]
        for n, chunk in enumerate(chunks, 1):
            name = f"gpvae-{method}" + (f"-part{n}of{len(chunks)}" if len(chunks) > 1 else "")
            arrays.append(SlurmArray(method, name, chunk, k, how, None, None, [], n, len(chunks)))
    cap = cluster_profile.sweep_parallelism
    if cap is not None and arrays:
        limits = [cluster_profile.resources(a.method) for a in arrays]
        weights = [len(a.packs) * lim.get("timeout_min", 60) for a, lim in zip(arrays, limits, strict=True)]
        bounds = [min(len(a.packs), lim.get("array_parallelism", len(a.packs)))
                  for a, lim in zip(arrays, limits, strict=True)]
        for array, (share, after) in zip(arrays, split_cap(cap, weights, bounds), strict=True):
            array.parallelism, array.after = share, after
    for array in arrays:
        extra = {} if array.parallelism is None else {"slurm_array_parallelism": array.parallelism}
        array.directives = sbatch_directives(cluster_profile, Path(folder), array.method,
                                             name=array.name, array_size=len(array.packs), **extra)
    return arrays


def _sbatch_error(err: Exception) -> str:
    """sbatch's own error lines from a failed submission, in one line."""
    text = str(err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("sbatch:")]
    return one_line("; ".join(lines) if lines else (text.strip() or type(err).__name__))[:500]


# what submitit writes for a submission before sbatch answers, in the executor's folder: the sbatch
# script and one pickle per job (both renamed after the job id once sbatch accepts the job)
_PENDING_SUBMISSION = re.compile(r"(\.submission_file_[0-9a-f]{32}\.sh|[0-9a-f]{32}\.pkl)")


def _submission_files(folder: Path) -> set[Path]:
    """The files of submissions sbatch has not accepted (yet) in submitit's `folder`."""
    try:
        return {p for p in Path(folder).absolute().iterdir() if _PENDING_SUBMISSION.fullmatch(p.name)}
    except OSError:
        return set()


def _no_slurm(tool: str) -> str:
    return (f"--launcher slurm needs Slurm: {tool!r} is not on PATH (run it where Slurm's "
            "commands are, e.g. a cluster's login node)")


def submit_slurm(tasks: list[RunTask], folder: Path, cluster_profile) -> list[tuple[str, list]]:
    """Submit the job arrays of slurm_arrays(), each with its family's resource overrides and its
    share of the sweep's cap; [(array job id, [(job, [task, ...]), ...])]. A submission Slurm refuses
    part-way stops with one line saying what went out (it stays queued) and what did not."""
    from .cluster import make_executor, max_requeues

    if shutil.which("sbatch") is None:
        raise LauncherError(_no_slurm("sbatch"))
    submitted, ids = [], []
    arrays = slurm_arrays(tasks, folder, cluster_profile)
    for index, array in enumerate(arrays):
        params: dict = {"name": array.name}
        if array.parallelism is not None:
            params["slurm_array_parallelism"] = array.parallelism
        if array.after is not None:
            params["slurm_additional_parameters"] = {"dependency": f"afterany:{ids[array.after]}"}
        before = _submission_files(folder)
        try:
            executor = make_executor(cluster_profile, folder, array.method, **params)
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr
                jobs = executor.map_array(SlurmRun(max_requeues(cluster_profile, array.method)),
                                          array.packs)
        except Exception as err:  # sbatch refused (bad partition, QoS, limits), controller down
            for path in _submission_files(folder) - before:  # what this refused submission wrote
                path.unlink(missing_ok=True)
            if shutil.which("srun") is None:  # submitit's SlurmExecutor will not start without it
                raise LauncherError(_no_slurm("srun")) from None
            done = ", ".join(f"job array {i} ({a.name}, {len(a.tasks)} runs)"
                             for i, a in zip(ids, arrays, strict=False)) or "nothing"
            rest = ", ".join(f"{a.name} ({len(a.tasks)} runs)" for a in arrays[index:])
            raise Unavailable(
                f"Slurm refused job array {array.name} ({_sbatch_error(err)}). Submitted and still "
                f"queued: {done}; not submitted: {rest}. Fix the cause (cluster profile "
                f"{cluster_profile.source}), then rerun the same command: it submits only the runs "
                "not queued") from None
        for job, pack in zip(jobs, array.packs, strict=True):
            for task in pack:
                note_submitted(folder, job.job_id, task)
        array_id = jobs[0].job_id.split("_")[0]
        ids.append(array_id)
        packed = f" in {len(jobs)} jobs of up to {array.runs_per_task}" if array.runs_per_task > 1 else ""
        log.info("submitted job array %s (%s): %d runs%s; logs in %s", array_id, array.name,
                 len(array.tasks), packed, folder)  # -q: not said (--collect follows them up)
        submitted.append((array_id, list(zip(jobs, array.packs, strict=True))))
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
    progress: RunProgress | None = None,
) -> list[dict]:
    """Run `tasks` and return their records (failed ones included); [] if none or not waiting.
    `progress` (benchmark.progress) hears each run start (with its log) and finish: the console's
    bar and ETA; by default a bar without an estimate."""
    if launcher not in LAUNCHERS:
        raise LauncherError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")
    if not tasks:
        return []
    folder = Path(folder)
    if launcher == "slurm":
        submitted = submit_slurm(tasks, folder, cluster_profile)
        if not wait:
            return []
        with progress or RunProgress(tasks) as bar:
            return wait_for([pair for _, pairs in submitted for pair in pairs], bar)
    with progress or RunProgress(tasks) as bar:
        if launcher == "debug":
            return _debug(tasks, folder, bar)
        executor = submitit.LocalExecutor(folder)
        # LocalExecutor sets CUDA_VISIBLE_DEVICES to the GPUs it is given: none unless asked
        uses_cuda = any(t.device.startswith("cuda") for t in tasks)
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=int(uses_cuda))
        return _bounded(executor, tasks, max(1, jobs), bar)
