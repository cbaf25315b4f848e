"""Which Slurm job each run went out as, so that runs submitted with --no-wait can be followed up.

At submission a marker per run, FOLDER/submitted/<run>.json = {job_id, config_hash}, is written
(FOLDER is the table's submitit folder, where the job's logs are). Later, for the runs that have
no record yet, `slurm_queue_states` asks squeue, in one call, whether their jobs are still queued
or running:
- yes: the run is in flight and must not be submitted again (two jobs would write one record and
  one checkpoint);
- no: the job ended without run_one recording anything (cancelled, out of memory, node failure,
  killed past its time limit) and `launch.follow_up` records the run as failed, with its log.
Where squeue is not on PATH (results read away from the cluster), markers are not consulted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .store import write_json_atomic
from .tasks import RunTask

IN_QUEUE = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
            "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
            "RESIZING", "PREEMPTED")


def marker_path(folder: Path, task: RunTask) -> Path:
    return Path(folder) / "submitted" / f"{task.key}.json"  # RunKey's own name for the run


def note_submitted(folder: Path, job_id: str, task: RunTask) -> None:
    write_json_atomic(marker_path(folder, task), {"job_id": job_id, "config_hash": task.config_hash()})


def submitted_job(folder: Path, task: RunTask) -> str | None:
    """The job id this run (with its current configuration) was last submitted as, if any."""
    try:
        marker = json.loads(marker_path(folder, task).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("config_hash") != task.config_hash():
        return None
    return str(marker.get("job_id") or "") or None


def can_query_queue() -> bool:
    return shutil.which("squeue") is not None


def slurm_queue_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} of those of `job_ids` that Slurm still has queued or running (e.g. PENDING),
    from one squeue call; every id reads UNKNOWN, i.e. in flight, when squeue cannot tell."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    cannot_tell = dict.fromkeys(ids, "UNKNOWN")  # rather than submit a run twice
    try:
        # -r: one line per array task, so ids read as submitit writes them ("17_3", or "17")
        done = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %T"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return cannot_tell
    # asked for one id that Slurm has forgotten, squeue fails with "Invalid job id specified": that
    # job has left the queue. Any other failure (controller down, bad config) means it cannot tell.
    if done.returncode and "Invalid job id" not in done.stderr:
        return cannot_tell
    states = dict(line.split()[:2] for line in done.stdout.splitlines() if len(line.split()) >= 2)
    return {i: states[i] for i in ids if states.get(i) in IN_QUEUE}
