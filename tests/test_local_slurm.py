"""submitit's Slurm executor against a live cluster (slurm/local_cluster.sh up; see slurm/README.md).
The harness (reproduce.py) on the same cluster: tests/test_slurm_harness.py.

Skipped, with the reason, where there is no cluster; a failure instead when $CI is set, so CI cannot
pass by skipping it. Job ids and sacct states are printed (pytest -s shows them; CI logs keep them).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from slurm_helpers import DEADLINE_S, log, release_requeued, require_cluster, sacct_states, sh

from benchmark.cluster import executor_kwargs, executor_parameters, load_cluster_profile

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
LOCAL_PROFILE = REPO / "slurm" / "local.yaml"


@pytest.fixture(scope="module")
def slurm_cluster():
    require_cluster()
    # the jobs cannot import this test module, so ship its functions and classes by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def executor(slurm_cluster, tmp_path):
    profile = load_cluster_profile(LOCAL_PROFILE)
    ex = submitit.AutoExecutor(folder=tmp_path, cluster="slurm", **executor_kwargs(profile))
    ex.update_parameters(name="gpvae-test", **executor_parameters(profile))
    return ex


def wait_done(jobs, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            queue = sh("squeue", "-o", "%i %T %r").stdout
            pytest.fail(f"jobs {[j.job_id for j in jobs]} not done after {timeout}s; squeue:\n{queue}")
        time.sleep(0.5)


# ------------------------------------------------------------------ callables run inside the jobs
def square(x: int) -> dict:
    return {"x": x, "square": x * x, "array": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "task": os.environ.get("SLURM_ARRAY_TASK_ID")}


def fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("task with x=2 fails on purpose")
    return x * 10


class CountSteps(submitit.helpers.Checkpointable):
    """Counts to `steps`, one every `step_s`, saving its progress to `state_file` after each step
    (as training saves a checkpoint each epoch) and resuming from it when it is started again."""

    def __init__(self) -> None:
        self.checkpointed_at: int | None = None  # set by checkpoint(): submitit itself requeued us

    def __call__(self, state_file: str, steps: int, step_s: float) -> dict:
        path = Path(state_file)
        state = json.loads(path.read_text()) if path.exists() else {"step": 0, "starts": []}
        state["starts"].append({"step": state["step"], "job": os.environ.get("SLURM_JOB_ID"),
                                "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0"))})
        self._save(path, state)
        while state["step"] < steps:
            time.sleep(step_s)
            state["step"] += 1
            self._save(path, state)
        return {**state, "checkpointed_at": self.checkpointed_at}

    @staticmethod
    def _save(path: Path, state: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact

    def checkpoint(self, state_file: str, steps: int, step_s: float):
        self.checkpointed_at = json.loads(Path(state_file).read_text())["step"]
        return super().checkpoint(state_file, steps, step_s)


# ----------------------------------------------------------------------------------------- tests
def test_job_array_completes(executor):
    jobs = executor.map_array(square, [1, 2, 3])
    array_id = jobs[0].job_id.split("_")[0]
    log(f"array {array_id}: jobs {[j.job_id for j in jobs]}")
    wait_done(jobs)
    results = [job.result() for job in jobs]
    assert [r["square"] for r in results] == [1, 4, 9]
    assert {r["array"] for r in results} == {array_id}
    assert sorted(r["task"] for r in results) == ["0", "1", "2"]
    rows = sacct_states(array_id, expected=3)
    assert sorted(jid for jid, _ in rows) == [f"{array_id}_{i}" for i in range(3)]
    assert all(state == "COMPLETED" for _, state in rows), rows


def test_failing_task_is_reported_and_others_complete(executor):
    jobs = executor.map_array(fails_on_two, [1, 2, 3])
    array_id = jobs[0].job_id.split("_")[0]
    log(f"array {array_id}: jobs {[j.job_id for j in jobs]} (x=2 raises)")
    wait_done(jobs)
    assert jobs[0].result() == 10 and jobs[2].result() == 30
    with pytest.raises(submitit.core.utils.FailedJobError, match="fails on purpose"):
        jobs[1].result()
    states = dict(sacct_states(array_id, expected=3))
    assert states == {f"{array_id}_0": "COMPLETED", f"{array_id}_1": "FAILED",
                      f"{array_id}_2": "COMPLETED"}, states


@pytest.mark.parametrize("how", ["scontrol-requeue", "usr2-preempt"])
def test_checkpointable_job_requeued_mid_run_resumes(executor, tmp_path, how):
    """scontrol-requeue: the test requeues the running job (SIGTERM, which submitit ignores, then
    SIGKILL after KillWait) and it restarts from its own checkpoint file. usr2-preempt: USR2, the
    signal Slurm sends signal_delay_s before the time limit; submitit calls checkpoint() and
    requeues the job itself."""
    state_file = tmp_path / f"{how}.json"
    # scontrol-requeue: 12 s of work, so that after a requeue at step 3 more is left than the ~7 s
    # (KillWait + 2) that a job which ignores SIGTERM, as submitit's do, keeps running until SIGKILL
    steps = 60 if how == "scontrol-requeue" else 20
    job = executor.submit(CountSteps(), str(state_file), steps, 0.2)
    log(f"{how}: job {job.job_id}")
    deadline = time.monotonic() + DEADLINE_S
    while not (state_file.exists() and json.loads(state_file.read_text())["step"] >= 3):
        assert not job.done(), f"job ended before it could be requeued: {job.stderr()}"
        assert time.monotonic() < deadline, "job did not start"
        time.sleep(0.2)
    if how == "scontrol-requeue":
        requeue = sh("scontrol", "requeue", job.job_id)
    else:
        requeue = sh("scancel", "--signal=USR2", job.job_id)
    assert requeue.returncode == 0, requeue.stderr
    log(f"{how}: requeued job {job.job_id} at step {json.loads(state_file.read_text())['step']}")
    release_requeued(job.job_id)
    wait_done([job])
    result = job.result()
    log(f"{how}: job {job.job_id} result: {result}")
    assert len(result["starts"]) == 2, f"expected one run before and one after the requeue: {result}"
    first, second = result["starts"]
    assert (first["step"], first["restart_count"]) == (0, 0)
    assert second["step"] >= 3 and second["restart_count"] == 1  # resumed, not restarted from 0
    assert result["step"] == steps
    if how == "usr2-preempt":
        assert result["checkpointed_at"] is not None and result["checkpointed_at"] >= 3
    else:
        assert result["checkpointed_at"] is None  # a hard requeue: submitit's checkpoint() not called
    rows = sacct_states(job.job_id, expected=2, duplicates=True)
    assert [state for _, state in rows] == ["REQUEUED", "COMPLETED"], rows
