"""Which Slurm job each run went out as, so that runs submitted with --no-wait can be followed up.

At submission a marker per run, FOLDER/submitted/<run>.json = {job_id, config_hash}, is written
(FOLDER is the table's submitit folder, where the job's logs are). Later, for a run that has no
record yet, `slurm_queue_state` asks squeue whether its job is still queued or running:
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

from .records import write_json_atomic
from .run import RunTask

IN_QUEUE = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
            "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
            "RESIZING", "PREEMPTED")


def marker_path(folder: Path, task: RunTask) -> Path:
    k = task.key
    name = f"{k.dataset}-d{k.dim}-{k.method}-{k.variant}-s{k.split}-r{k.restart}.json"
    return Path(folder) / "submitted" / name


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


def slurm_queue_state(job_id: str) -> str | None:
    """The job's state while Slurm still has it queued or running (e.g. PENDING), else None."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                             text=True, timeout=60).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"  # cannot tell: treat as in flight rather than submit it twice
    return next((s for s in out if s in IN_QUEUE), None)
