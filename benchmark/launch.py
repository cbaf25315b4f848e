"""Launch run tasks through submitit executors: one code path for in-process, local and Slurm.

- `debug`: submitit's DebugExecutor, in this process, one run after another (for pdb and prints);
- `local`: submitit's LocalExecutor, one subprocess per run, at most `jobs` at a time;
- `slurm`: submitit's SlurmExecutor, one job array per method family (resources may differ).
Each task executes `benchmark.run.run_one`, which writes the run's record itself, so a launcher
only has to start tasks and report how they ended.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path

import submitit
from tqdm import tqdm

from .run import RunTask, run_one

log = logging.getLogger("gpvae_bench")
LAUNCHERS = ("debug", "local", "slurm")
POLL_SECONDS = 1.0


class LauncherError(RuntimeError):
    def __str__(self) -> str:
        return self.args[0]


def _outcome(job, task: RunTask) -> dict:
    """The record run_one returned, or a failure record if the job itself died."""
    try:
        return job.result()
    except Exception as err:  # the process died before run_one could record anything
        return {"key": task.key, "status": "failed", "error": f"{type(err).__name__}: {err}",
                "log_file": str(getattr(job.paths, "stdout", ""))}


def _bounded(executor, tasks: list[RunTask], jobs: int, bar: tqdm) -> list[dict]:
    """Keep at most `jobs` submitted at once; submit the next as soon as one finishes."""
    queue, running, records = list(tasks), [], []
    try:
        while queue or running:
            while queue and len(running) < jobs:
                task = queue.pop(0)
                running.append((executor.submit(run_one, task), task))
            finished = [(j, t) for j, t in running if j.done()]
            for job, task in finished:
                running.remove((job, task))
                records.append(_outcome(job, task))
                bar.update(1)
            if not finished:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:  # do not leave training subprocesses running behind the user
        for job, _ in running:
            job.cancel(check=False)
        raise
    return records


def _debug(tasks: list[RunTask], folder: Path, bar: tqdm) -> list[dict]:
    executor = submitit.DebugExecutor(folder)
    records = []
    for task in tasks:
        records.append(executor.submit(run_one, task).result())  # run_one records its failures
        bar.update(1)
    return records


def submit_slurm(tasks: list[RunTask], folder: Path, cluster_profile) -> list:
    """One submitit job array per method family, with that family's resource overrides."""
    from .cluster import make_executor

    if shutil.which("sbatch") is None:
        raise LauncherError("--launcher slurm needs Slurm: 'sbatch' is not on PATH")
    submitted = []
    by_method = sorted(tasks, key=lambda t: t.key.method)
    for method, group in groupby(by_method, key=lambda t: t.key.method):
        group = list(group)
        executor = make_executor(cluster_profile, folder, method, name=f"gpvae-{method}")
        jobs = executor.map_array(run_one, group)
        submitted += list(zip(jobs, group, strict=True))
    return submitted


def wait_for(submitted: Iterable, bar: tqdm) -> list[dict]:
    pending, records = list(submitted), []
    while pending:
        finished = [(j, t) for j, t in pending if j.done()]
        for job, task in finished:
            pending.remove((job, task))
            records.append(_outcome(job, task))
            bar.update(1)
        if not finished:
            time.sleep(POLL_SECONDS * 5)
    return records


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
    """Run `tasks` and return their records (failed ones included); [] if none."""
    if launcher not in LAUNCHERS:
        raise LauncherError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")
    if not tasks:
        return []
    folder = Path(folder)
    if launcher == "slurm":
        submitted = submit_slurm(tasks, folder, cluster_profile)
        ids = sorted({j.job_id.split("_")[0] for j, _ in submitted})
        log.info("submitted %d runs to Slurm as job arrays %s", len(submitted), ", ".join(ids))
        if not wait:
            return []
        with tqdm(total=len(tasks), desc="runs", unit="run") as bar:
            return wait_for(submitted, bar)
    with tqdm(total=len(tasks), desc="runs", unit="run") as bar:
        if launcher == "debug":
            return _debug(tasks, folder, bar)
        executor = submitit.LocalExecutor(folder)
        # LocalExecutor sets CUDA_VISIBLE_DEVICES to the GPUs it is given: none unless asked
        uses_cuda = any(t.device.startswith("cuda") for t in tasks)
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=int(uses_cuda))
        return _bounded(executor, tasks, max(1, jobs), bar)
