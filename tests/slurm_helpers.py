"""Helpers for the tests that need the live Slurm cluster (slurm/local_cluster.sh up; see
slurm/README.md): is it usable, sacct states, releasing a requeued job. Everything they print starts
with `[slurm]` and goes past capsys to the real stdout (pytest -s shows it at once); conftest.py
repeats every line in a "slurm jobs" section of the terminal summary, so CI's log shows job ids and
sacct states even when the tests pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}
DEADLINE_S = 60  # per wait
LOGGED: list[str] = []  # for conftest's terminal summary


def log(message: str) -> None:
    line = f"[slurm] {message}"
    LOGGED.append(line)
    print(line, file=sys.__stdout__, flush=True)


def sh(*cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def cluster_problem() -> str | None:
    """Why the cluster cannot be used, or None."""
    if shutil.which("sbatch") is None:
        return "'sbatch' is not on PATH (bash slurm/local_cluster.sh install)"
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        return 'SLURM_CONF is not set (eval "$(bash slurm/local_cluster.sh up DIR)")'
    if not Path(conf).is_file():
        return f"SLURM_CONF={conf} does not exist"
    try:
        ping = sh("scontrol", "ping", timeout=15)
        if " is UP" not in ping.stdout:
            return f"slurmctld is not answering: {(ping.stdout + ping.stderr).strip()}"
        nodes = sh("sinfo", "-h", "-N", "-o", "%T", timeout=15).stdout.split()
        if not nodes or any(s.rstrip("*~#$@").startswith(("down", "drain", "fail", "not_resp"))
                            for s in nodes):
            return f"no usable node (sinfo node states: {nodes})"
        acct = sh("sacct", "-n", "-X", "-P", "-o", "JobID", "-S", "now", timeout=15)
        if acct.returncode:
            return f"accounting (slurmdbd) is not answering: {acct.stderr.strip()}"
    except subprocess.TimeoutExpired as err:
        return f"{' '.join(err.cmd)} timed out"
    return None


def require_cluster() -> None:
    """Skip, with the reason, where there is no cluster; fail instead when $CI is set, so CI cannot
    pass by skipping the Slurm tests."""
    problem = cluster_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the Slurm test may not be skipped: {problem}", pytrace=False)
        pytest.skip(f"no Slurm cluster: {problem}")


def sacct_states(job_id: str, expected: int, duplicates: bool = False,
                 timeout: float = DEADLINE_S) -> list[tuple[str, str]]:
    """[(JobID, State)] of the allocations of job_id (an array id gives its tasks), polled until
    `expected` records are all in a final state (accounting reaches slurmdbd asynchronously)."""
    cmd = ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id] + (["-D"] if duplicates else [])
    deadline = time.monotonic() + timeout
    while True:
        out = sh(*cmd).stdout
        rows = [tuple(line.split("|")[:2]) for line in out.splitlines() if line]
        final = [r for r in rows if r[1].split()[0] in TERMINAL or r[1] == "REQUEUED"]
        if len(rows) == expected and len(final) == expected and rows[-1][1].split()[0] in TERMINAL:
            for jid, state in rows:
                log(f"sacct {jid} {state}")
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"sacct {' '.join(cmd[1:])} after {timeout}s:\n{out}")
        time.sleep(0.5)


def release_requeued(job_id: str, timeout: float = DEADLINE_S) -> None:
    """Start a requeued job now rather than in ~2 minutes. Slurm holds a requeued job back (its
    BeginTime); wait until it is PENDING again, then 2 s more: slurmd rejects a credential issued in
    the same second as the requeue revoked the old one ("Job credential revoked"), and the job fails
    instead of restarting. (StartTime=now+2 works too, but then waits for the next scheduling pass.)"""
    deadline = time.monotonic() + timeout
    while sh("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() != "PENDING":
        assert time.monotonic() < deadline, f"requeued job {job_id} never went back to PENDING"
        time.sleep(0.2)
    time.sleep(2)
    update = sh("scontrol", "update", f"JobId={job_id}", "StartTime=now")
    assert update.returncode == 0, update.stderr
