"""reproduce.py --launcher slurm against the live local cluster (slurm/local_cluster.sh up):
the table equals the local launcher's, a requeued run resumes from its checkpoint, a failing run is
isolated, listed by --collect and rerun alone by --retry-failed, --no-wait returns with job ids,
and a --no-wait job is followed up: not resubmitted while queued, recorded as failed once cancelled.

Skipped, with the reason, where there is no cluster; a failure instead when $CI is set. Job ids and
sacct states are printed as `[slurm] ...` lines (pytest -s, or CI's log)."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import pytest
import torch
from slurm_helpers import DEADLINE_S, log, release_requeued, require_cluster, sacct_states, sh
from test_reproduce_e2e import RERUN_TOLERANCE

from benchmark.cli import main

pytestmark = pytest.mark.slurm

TESTS = Path(__file__).resolve().parent
# on stderr, a log line (after its time); not said under -q
SUBMITTED = re.compile(r"^(?:\d\d:\d\d:\d\d )?submitted job array (\d+) \((\S+)\): (\d+) runs", re.M)
NUMBER = re.compile(r"-?\d+\.\d+")
MARKUP = re.compile(r"<[^>]+>|\*\*")
# A table cell is a mean ± sample std over n = 2 splits. Each run reruns within RERUN_TOLERANCE, so
# the mean moves by at most that, and the std by at most RERUN_TOLERANCE * sqrt(n / (n - 1)) (the
# std is a norm of the deviations divided by sqrt(n - 1)); rounding to 0.1 on both sides adds 0.1.
CELL_TOLERANCE = RERUN_TOLERANCE * math.sqrt(2) + 0.1


@pytest.fixture(scope="module", autouse=True)
def cluster():
    require_cluster()


@pytest.fixture(autouse=True)
def one_thread():
    """Overrides conftest's: the test process only submits and waits."""
    yield


@pytest.fixture
def probe_plugin(monkeypatch):
    """tests/probe_plugin.py, registered here and (through the environment sbatch passes on) in
    every Slurm task."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS),
                                                                    os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("GPVAE_BENCH_PLUGINS", "probe_plugin")


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    for line in (out + err).splitlines():
        line = re.sub(r"^\d\d:\d\d:\d\d ", "", line)  # a log line's time
        if line.startswith(("submitted", "failed:", "pending:", "table", "probe", "trained")):
            log(f"cli: {line}")
    return rc, out, err


def args_for(mnist_root, results, launcher, *extra, table="1", profile="smoke", cluster="local"):
    cluster = ["--cluster", str(cluster)] if launcher == "slurm" else []
    return ["--table", str(table), "--profile", str(profile), "--data-root", str(mnist_root),
            "--results-dir", str(results), "--launcher", launcher, *cluster, "--datasets", "mnist",
            "--dims", "10", "--device", "cpu", *extra]  # not -q: the tests read the plan's lines


def submitted_arrays(out: str) -> list[tuple[str, str, int]]:
    return [(jid, name, int(n)) for jid, name, n in SUBMITTED.findall(out)]


def records(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text())
            for p in sorted((results / "runs").rglob("*.json"))}


def table_cells(results: Path, name: str = "table1") -> list[list[str]]:
    rows = [line for line in (results / "tables" / f"{name}.md").read_text().splitlines()
            if line.startswith("|")]
    return [[MARKUP.sub("", cell).strip() for cell in row.strip("|").split("|")] for row in rows]


def write_spec(path: Path, rows: list[str]) -> Path:
    path.write_text("title: harness test\nmetric: test_iwae\ndatasets: [mnist]\ndims: [10]\nrows:\n"
                    + "".join(f"  - {row}\n" for row in rows))
    return path


def small_profile(path: Path, epochs: int = 4, splits: int = 1) -> Path:
    """The smoke profile on 512 training images and one split: short runs for tests of mechanics."""
    path.write_text((TESTS.parent / "benchmark" / "profiles" / "smoke.yaml").read_text()
                    .replace("epochs: 4", f"epochs: {epochs}").replace("splits: 2", f"splits: {splits}")
                    .replace("train_size: 2048", "train_size: 512"))
    return path


def cluster_profile(path: Path, **changes) -> Path:
    """slurm/local.yaml with top-level keys changed (YAML scalars)."""
    import yaml

    data = yaml.safe_load((TESTS.parent / "slurm" / "local.yaml").read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def test_slurm_table_equals_local_table(capsys, mnist_root, tmp_path):
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    select = ("--methods", "vae")  # 2 splits: one job array of 2 tasks, cells are mean ± std
    # --jobs = CPUs: one thread per run, as Slurm runs it (cpus_per_task: 1 in slurm/local.yaml)
    rc, _, _ = cli(capsys, *args_for(mnist_root, local, "local", *select, "--jobs", str(os.cpu_count())))
    assert rc == 0

    rc, plan_out, _ = cli(capsys, *args_for(mnist_root, slurm, "slurm", *select, "--dry-run"))
    assert rc == 0 and "would submit 2 runs as 2 jobs in 1 job arrays" in plan_out
    start = time.perf_counter()
    rc, out, err = cli(capsys, *args_for(mnist_root, slurm, "slurm", *select))
    log(f"slurm launcher: 2 runs in {time.perf_counter() - start:.0f}s")
    assert rc == 0, err
    arrays = submitted_arrays(out + err)
    assert [(name, n) for _, name, n in arrays] == [("gpvae-vae", 2)]
    folder = slurm / "submitit" / "smoke" / "table1"
    for array_id, name, n in arrays:
        assert all(state == "COMPLETED" for _, state in sacct_states(array_id, expected=n))
        # the dry run printed exactly the #SBATCH lines that went to Slurm
        sent = [line for line in (folder / f"{array_id}_submission.sh").read_text().splitlines()
                if line.startswith("#SBATCH")]
        block = plan_out[plan_out.index(f"array {name}:"):].splitlines()[1:]
        planned = [line.strip() for line in block if line.strip().startswith("#SBATCH")]
        assert planned[:len(sent)] == sent  # (the block also names the device and the estimate)

    ours, theirs = records(slurm), records(local)
    assert ours.keys() == theirs.keys() and len(ours) == 2
    for path, rec in ours.items():
        assert rec["status"] == "ok" and rec["slurm"]["job_id"].split("_")[0] in {a for a, _, _ in arrays}
        log_file = Path(rec["log_file"])
        assert log_file.is_relative_to(folder) and "epoch 4/4" in log_file.read_text()
        # the same thread count, so that the comparison is of launchers only: 1 against 2 threads
        # changed a smoke run's test IWAE by 11 nats here
        assert rec["provenance"]["threads"] == theirs[path]["provenance"]["threads"] == 1
        log(f"{path}: test_iwae slurm {rec['metrics']['test_iwae']!r} local "
            f"{theirs[path]['metrics']['test_iwae']!r}")
        assert rec["metrics"]["test_iwae"] == pytest.approx(theirs[path]["metrics"]["test_iwae"],
                                                            abs=RERUN_TOLERANCE), path
    ours, theirs = table_cells(slurm), table_cells(local)
    assert len(ours) == len(theirs) and len(ours) > 3
    compared = 0
    for row_a, row_b in zip(ours, theirs, strict=True):
        for a, b in zip(row_a, row_b, strict=True):
            assert NUMBER.sub("#", a) == NUMBER.sub("#", b), (a, b)  # same text, e.g. 'not run'
            for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
                assert float(x) == pytest.approx(float(y), abs=CELL_TOLERANCE), (row_a[0], a, b)
                compared += 1
    assert compared == 3  # VAE's mean and std, the mean-image floor


def checkpoint_epoch(results: Path) -> int:
    try:
        ckpt = next((results / "runs").rglob("*.ckpt"))
        return torch.load(ckpt, weights_only=False)["train_state"]["epoch"]
    except (StopIteration, OSError, EOFError, RuntimeError):  # not written yet, or mid-replace
        return 0


@pytest.mark.parametrize("how", ["scontrol-requeue", "usr2-preempt"])
def test_requeued_run_resumes_from_its_checkpoint(capsys, mnist_root, tmp_path, probe_plugin, how):
    """scontrol-requeue: an operator's requeue (SIGTERM, ignored by submitit, then SIGKILL after
    KillWait); the run restarts and train() resumes from the last epoch's checkpoint.
    usr2-preempt: USR2, what Slurm sends signal_delay_s before preemption or the time limit;
    submitit calls SlurmRun.checkpoint() and requeues the job itself."""
    results = tmp_path / "results"
    # 8 epochs of >= 1.5 s before the requeue: after a requeue at epoch 2 more is left than the
    # ~7 s (KillWait + 2) that a job ignoring SIGTERM keeps running; 512 images keep epochs short
    profile = small_profile(tmp_path / "requeue.yaml", epochs=8)
    spec = write_spec(tmp_path / "requeue_table.yaml", ["{probe: {epoch_sleep: 1.5}}"])
    rc, out, err = cli(capsys, *args_for(mnist_root, results, "slurm", "--no-wait", table=spec,
                                         profile=profile))
    assert rc == 0
    [(job_id, _, n)] = submitted_arrays(out + err)  # one run: submitit sends it as a plain job
    assert n == 1
    deadline = time.monotonic() + DEADLINE_S
    while checkpoint_epoch(results) < 2:
        assert time.monotonic() < deadline, f"no checkpoint at epoch 2: {sh('squeue').stdout}"
        time.sleep(0.3)
    signal = ["scontrol", "requeue", job_id] if how == "scontrol-requeue" else \
        ["scancel", "--signal=USR2", job_id]
    requeue = sh(*signal)
    assert requeue.returncode == 0, requeue.stderr
    log(f"{how}: {' '.join(signal)} with a checkpoint at epoch {checkpoint_epoch(results)}")
    release_requeued(job_id)
    rows = sacct_states(job_id, expected=2, duplicates=True, timeout=2 * DEADLINE_S)
    assert [state for _, state in rows] == ["REQUEUED", "COMPLETED"], rows

    rc, _, err = cli(capsys, *args_for(mnist_root, results, "slurm", "--collect", table=spec,
                                       profile=profile))
    assert rc == 0, err
    [rec] = records(results).values()
    m = rec["metrics"]
    log(f"{how}: record status={rec['status']} slurm={rec['slurm']} "
        f"resumed_from_epoch={m['resumed_from_epoch']} epochs_run={m['epochs_run']} "
        f"history epochs={[h['epoch'] for h in rec['history']]}")
    assert rec["status"] == "ok" and rec["slurm"] == {"job_id": job_id, "requeues": 1}
    assert 2 <= m["resumed_from_epoch"] < 8 and m["epochs_run"] == 8
    assert [h["epoch"] for h in rec["history"]] == list(range(1, 9))  # no epoch lost or repeated
    log_text = Path(rec["log_file"]).read_text()
    assert f"resumed from checkpoint at epoch {m['resumed_from_epoch']}" in log_text
    if how == "usr2-preempt":
        assert "requeue 1 of at most 2" in log_text  # SlurmRun.checkpoint() ran (max_requeues: 2)
    assert not list((results / "runs").rglob("*.ckpt"))  # removed once the run is recorded


def test_failing_run_is_isolated_collected_and_retried_alone(capsys, mnist_root, tmp_path, probe_plugin,
                                                             monkeypatch):
    results = tmp_path / "results"
    fail_file = tmp_path / "fail-now"
    fail_file.touch()
    monkeypatch.setenv("GPVAE_TEST_FAIL_FILE", str(fail_file))
    # two method families, so two job arrays: vae (1 run) and probe (2 runs, one of them failing)
    spec = write_spec(tmp_path / "failure_table.yaml", ["vae", "{probe: {fail: 0}}", "{probe: {fail: 1}}"])
    run = args_for(mnist_root, results, "slurm", table=spec, profile=small_profile(tmp_path / "small.yaml"))

    start = time.perf_counter()
    rc, out, err = cli(capsys, *run, "--no-wait")
    assert rc == 0 and "submitted; run again with --collect" in err
    assert time.perf_counter() - start < 30  # returned without waiting for training
    arrays = submitted_arrays(out + err)
    assert [(name, n) for _, name, n in arrays] == [("gpvae-probe", 2), ("gpvae-vae", 1)]
    states = {}
    for array_id, name, n in arrays:
        rows = sacct_states(array_id, expected=n, timeout=3 * DEADLINE_S)
        states[name] = sorted(state for _, state in rows)
    # the failing run is recorded, then its job exits non-zero: sacct says FAILED for it alone
    assert states == {"gpvae-probe": ["COMPLETED", "FAILED"], "gpvae-vae": ["COMPLETED"]}, states

    rc, _, err = cli(capsys, *run, "--collect")
    assert rc == 1
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "probe-fail1/s0-r0: ProbeFailure: failing on purpose" in failed[0], err
    before = records(results)
    [(bad_path, bad)] = [(p, r) for p, r in before.items() if r["status"] != "ok"]
    assert "probe-fail1" in bad_path and sum(r["status"] == "ok" for r in before.values()) == 2
    assert f"(log: {bad['log_file']})" in failed[0] and Path(bad["log_file"]).exists()
    assert "ProbeFailure" in bad["traceback"] and "failing on purpose" in bad["log_tail"]
    assert "epoch 1/4" in bad["log_tail"]  # the log's tail, not just the error

    fail_file.unlink()
    rc, out, err = cli(capsys, *run, "--retry-failed")
    assert rc == 0, err
    assert "3 runs: 2 done, 1 failed; 1 to run" in err
    [(retry_id, _, n)] = submitted_arrays(out + err)
    assert n == 1
    sacct_states(retry_id, expected=1)
    after = records(results)
    assert after[bad_path]["status"] == "ok" and after[bad_path]["slurm"]["job_id"] == retry_id
    assert {p: r for p, r in after.items() if p != bad_path} == \
        {p: r for p, r in before.items() if p != bad_path}  # the others were not rerun


def test_no_wait_jobs_are_followed_up_not_resubmitted(capsys, mnist_root, tmp_path, monkeypatch):
    results = tmp_path / "results"
    run = args_for(mnist_root, results, "slurm", "--methods", "vae",
                   profile=small_profile(tmp_path / "small.yaml"))
    monkeypatch.setenv("SBATCH_HOLD", "1")  # sbatch --hold: the job stays in the queue, PENDING
    rc, out, err = cli(capsys, *run, "--no-wait")
    [(array_id, _, n)] = submitted_arrays(out + err)
    assert rc == 0 and n == 1
    monkeypatch.delenv("SBATCH_HOLD")

    rc, out, err = cli(capsys, *run, "--no-wait")  # e.g. the user reruns the command
    assert rc == 0 and "1 missing; 1 queued or running in Slurm; 0 to run" in err, err
    assert not submitted_arrays(out + err)
    rc, _, err = cli(capsys, *run, "--collect")
    assert "pending: 1 runs have no current record yet (1 queued or running in Slurm)" in err

    assert sh("scancel", array_id).returncode == 0  # as Slurm would end a job killed for memory
    sacct_states(array_id, expected=1)
    rc, _, err = cli(capsys, *run, "--collect")
    [failed] = [line for line in err.splitlines() if line.startswith("failed:")]
    assert rc == 1 and re.search(rf"Slurm job {array_id}(_0)? left the queue \(CANCELLED", failed), err
    rc, out, err = cli(capsys, *run, "--retry-failed")
    assert rc == 0 and "1 failed; 1 to run" in err, err
    [(retry_id, _, _)] = submitted_arrays(out + err)
    sacct_states(retry_id, expected=1)
    assert [r["status"] for r in records(results).values()] == ["ok"]


SLOW_START = ["export PYTHONUNBUFFERED=1", "sleep 60"]  # a job that stays a minute before training


def checkpoint_epochs(results: Path) -> list[int]:
    epochs = []
    for ckpt in sorted((results / "runs").rglob("*.ckpt")):
        try:
            epochs.append(torch.load(ckpt, weights_only=False)["train_state"]["epoch"])
        except (OSError, EOFError, RuntimeError):
            epochs.append(0)
    return epochs


def test_packed_job_requeued_mid_run_resumes_every_run(capsys, mnist_root, tmp_path, probe_plugin):
    """runs_per_task: 2 packs two runs into one array task, each in its own process with its own
    claim, record and checkpoint; an operator's requeue mid-run restarts the job and both runs
    resume from their own checkpoints."""
    results = tmp_path / "results"
    profile = small_profile(tmp_path / "packed.yaml", epochs=8, splits=2)
    spec = write_spec(tmp_path / "packed_table.yaml", ["{probe: {epoch_sleep: 1.5}}"])
    cluster = cluster_profile(tmp_path / "packed-cluster.yaml", runs_per_task=2, cpus_per_task=2,
                              mem_gb=2)
    run = args_for(mnist_root, results, "slurm", table=spec, profile=profile, cluster=cluster)
    rc, out, _ = cli(capsys, *run, "--device", "auto", "--dry-run")
    assert rc == 0 and "would submit 2 runs as 1 jobs in 1 job arrays" in out
    assert "(2 runs per job: runs_per_task in the profile)" in out
    assert "device: auto: cpu (the profile asks for no GPU: gpus_per_node)" in out
    rc, out, err = cli(capsys, *run, "--device", "auto", "--no-wait")
    assert rc == 0
    [(job_id, _, n)] = submitted_arrays(out + err)  # one job (a plain job: one task) with two runs
    assert n == 2 and "in 1 jobs of up to 2" in out + err  # the submitted line is a log line
    deadline = time.monotonic() + 2 * DEADLINE_S
    while not (len(epochs := checkpoint_epochs(results)) == 2 and min(epochs) >= 2):
        assert time.monotonic() < deadline, f"no checkpoints at epoch 2: {epochs} {sh('squeue').stdout}"
        time.sleep(0.3)
    requeue = sh("scontrol", "requeue", job_id)
    assert requeue.returncode == 0, requeue.stderr
    log(f"packed: scontrol requeue {job_id} with checkpoints at epochs {checkpoint_epochs(results)}")
    release_requeued(job_id)
    rows = sacct_states(job_id, expected=2, duplicates=True, timeout=3 * DEADLINE_S)
    assert [state for _, state in rows] == ["REQUEUED", "COMPLETED"], rows
    recs = records(results)
    assert len(recs) == 2
    for path, rec in recs.items():
        m = rec["metrics"]
        log(f"packed: {path} status={rec['status']} slurm={rec['slurm']} resumed_from_epoch="
            f"{m['resumed_from_epoch']} epochs={[h['epoch'] for h in rec['history']]} "
            f"device={rec['provenance']['device']} threads={rec['provenance']['threads']}")
        assert rec["status"] == "ok" and rec["slurm"] == {"job_id": job_id, "requeues": 1}
        assert 2 <= m["resumed_from_epoch"] < 8 and m["epochs_run"] == 8
        assert [h["epoch"] for h in rec["history"]] == list(range(1, 9))
        assert rec["provenance"]["device"].startswith("cpu") and rec["provenance"]["threads"] == 1
    assert not list((results / "runs").rglob("*.ckpt"))


def test_retry_is_not_submitted_twice_and_requeue_cap_keeps_its_message(capsys, mnist_root, tmp_path,
                                                                       probe_plugin, monkeypatch):
    """--retry-failed looks up every run it would submit in the queue: a failed run whose retry is
    queued is not submitted again. At the requeue cap (max_requeues: 0, USR2) the run's record says
    so, not submitit's 'checkpoint function returned None', and the job ends FAILED."""
    results = tmp_path / "results"
    profile = small_profile(tmp_path / "cap.yaml", epochs=8)
    spec = write_spec(tmp_path / "cap_table.yaml", ["{probe: {epoch_sleep: 1.5}}"])
    cluster = cluster_profile(tmp_path / "cap-cluster.yaml", max_requeues=0)
    run = args_for(mnist_root, results, "slurm", table=spec, profile=profile, cluster=cluster)
    rc, out, err = cli(capsys, *run, "--no-wait")
    [(job_id, _, _)] = submitted_arrays(out + err)
    deadline = time.monotonic() + DEADLINE_S
    while checkpoint_epoch(results) < 1:
        assert time.monotonic() < deadline, f"no checkpoint: {sh('squeue').stdout}"
        time.sleep(0.3)
    assert sh("scancel", "--signal=USR2", job_id).returncode == 0
    rows = sacct_states(job_id, expected=1, timeout=2 * DEADLINE_S)
    assert [state for _, state in rows] == ["FAILED"], rows  # recorded as failed: exits non-zero
    rc, _, err = cli(capsys, *run, "--collect")
    [failed] = [line for line in err.splitlines() if line.startswith("failed:")]
    assert rc == 1 and "Requeued 0 times, the most max_requeues=0 allows" in failed, err
    assert "checkpoint function returned None" not in err
    [rec] = records(results).values()
    assert rec["status"] == "failed" and rec["error"].startswith("Requeued 0 times")
    assert list((results / "runs").rglob("*.ckpt"))  # kept for --retry-failed

    # the retry stays in the queue a minute before it starts training (sbatch ignores $SBATCH_HOLD)
    slow = cluster_profile(tmp_path / "slow-cluster.yaml", max_requeues=0, setup=SLOW_START)
    run = args_for(mnist_root, results, "slurm", table=spec, profile=profile, cluster=slow)
    rc, out, err = cli(capsys, *run, "--retry-failed", "--no-wait")
    [(retry_id, _, _)] = submitted_arrays(out + err)
    assert rc == 0 and "1 failed; 1 to run" in err
    rc, out, err = cli(capsys, *run, "--retry-failed", "--no-wait")
    assert "1 failed; 1 queued or running in Slurm; 0 to run" in err, err  # exit 1: a failed run
    assert not submitted_arrays(out + err)  # no second job for the run
    log(f"retry: job {retry_id} queued; a second --retry-failed submitted nothing")
    assert sh("scancel", retry_id).returncode == 0
    sacct_states(retry_id, expected=1)


def test_cancelled_task_in_waiting_mode_is_one_line(mnist_root, tmp_path, monkeypatch):
    """A task cancelled while the launcher waits is listed in one line with its log, as --collect
    lists it; it runs as a process of its own (reproduce.py), cancelled from here."""
    import subprocess
    import sys

    results = tmp_path / "results"
    slow = cluster_profile(tmp_path / "slow-cluster.yaml", setup=SLOW_START)
    run = args_for(mnist_root, results, "slurm", "--methods", "vae",
                   profile=small_profile(tmp_path / "small.yaml"), cluster=slow)
    proc = subprocess.Popen([sys.executable, str(TESTS.parent / "reproduce.py"), *run],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + DEADLINE_S
    while not (markers := list(results.glob("submitit/small/table1/submitted/**/*.json"))):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.3)
    job_id = json.loads(markers[0].read_text())["job_id"]
    assert sh("scancel", job_id).returncode == 0
    out, err = proc.communicate(timeout=3 * DEADLINE_S)
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    log(f"waiting mode, cancelled job {job_id}: {failed}")
    assert proc.returncode == 1 and len(failed) == 1, err
    assert re.search(rf"Slurm job {job_id} ended \(CANCELLED[^)]*\) without recording the run \(log: "
                     rf"\S+{job_id}_0_log.out\)$", failed[0]), failed[0]
    assert "UncompletedJobError" not in err and "Traceback" not in err


def test_submission_rejected_part_way_is_one_line(capsys, mnist_root, tmp_path, probe_plugin,
                                                  monkeypatch):
    results = tmp_path / "results"
    cluster = tmp_path / "bad-override.yaml"
    cluster_profile(cluster, setup=SLOW_START, overrides={"vae": {"partition": "no-such-partition"}})
    spec = write_spec(tmp_path / "two_table.yaml", ["vae", "probe"])
    rc, out, err = cli(capsys, *args_for(mnist_root, results, "slurm", "--no-wait", table=spec,
                                         profile=small_profile(tmp_path / "small.yaml"), cluster=cluster))
    [(probe_id, name, _)] = submitted_arrays(out + err)
    lines = err.strip().splitlines()
    log(f"rejected part-way: {lines[-1]}")
    assert rc == 1 and name == "gpvae-probe" and "Traceback" not in err
    assert lines[-1].startswith("error: Slurm refused job array gpvae-vae (sbatch: error: ")
    assert f"Submitted and still queued: job array {probe_id} (gpvae-probe, 1 runs); not " \
        "submitted: gpvae-vae (1 runs)" in lines[-1]
    assert sh("scancel", probe_id).returncode == 0
