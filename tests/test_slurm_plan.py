"""The Slurm launcher's planning, requeue cap and plugin loading: no cluster needed."""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from pathlib import Path

import pytest
import submitit

from benchmark.cli import main
from benchmark.launch import _outcomes, slurm_arrays
from benchmark.plan import make_plan
from benchmark.profiles import load_profile
from benchmark.run import RequeueCap, RunsFailed, SlurmRun
from benchmark.specs import load_table_spec
from benchmark.store import write_json_atomic
from benchmark.submissions import note_submitted, slurm_queue_states

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def smoke_tasks(mnist_root, results):
    plan = make_plan(load_table_spec("1"), load_profile("smoke"), data_root=str(mnist_root),
                     results_dir=str(results), methods={"vae", "gpvae"}, dataset_filter={"mnist"},
                     dims={10})
    return plan.tasks


def test_methods_takes_families_and_row_ids(tmp_path):
    def planned_rows(methods):
        plan = make_plan(load_table_spec("4"), load_profile("smoke"), data_root=str(tmp_path),
                         results_dir=str(tmp_path), methods=methods,
                         dataset_filter={"binarized_mnist"})
        return sorted({f"{t.key.method}-{t.key.variant}" for t in plan.tasks})

    assert planned_rows({"vlae"}) == ["vlae-t2", "vlae-t4"]
    assert planned_rows({"vlae-t2", "sa"}) == ["sa-k1", "sa-k4", "vlae-t2"]
    assert len(planned_rows(None)) == 14


def dry_run(capsys, mnist_root, results, *extra):
    rc = main(["--table", "1", "--profile", "smoke", "--data-root", str(mnist_root), "--results-dir",
               str(results), "--launcher", "slurm", "--cluster", "local", "--datasets", "mnist",
               "--dims", "10", "--methods", "vae,gpvae", "--device", "cpu", "-q", "--dry-run", *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_dry_run_prints_states_arrays_and_sbatch_parameters(capsys, mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: a dry run must not need Slurm
    tasks = smoke_tasks(mnist_root, tmp_path)
    assert len(tasks) == 4  # vae, gpvae x 2 splits
    done, failed = tasks[0], tasks[2]
    for task, status in ((done, "ok"), (failed, "failed")):
        write_json_atomic(task.record_path, {"key": task.config()["key"], "status": status,
                                             "config_hash": task.config_hash(),
                                             "metrics": {"test_iwae": 1.0, "val_iwae": 1.0,
                                                         "mean_image_floor": 0.0}})
    rc, out, err = dry_run(capsys, mnist_root, tmp_path)
    assert rc == 0
    assert "4 runs: 1 done, 1 failed, 2 missing; 2 to run" in err
    assert "would submit 2 runs as 2 jobs in 2 job arrays with cluster profile local" in out
    arrays = dict(re.findall(r"array (gpvae-\w+): (\d+) runs", out))
    assert arrays == {"gpvae-vae": "1", "gpvae-gpvae": "1"}
    # slurm/local.yaml: timeout_min 60, overridden to 120 for gpvae; the rest shared
    vae_part = out[out.index("array gpvae-vae"):]
    gpvae_part = out[out.index("array gpvae-gpvae"):out.index("array gpvae-vae")]
    assert "#SBATCH --time=60" in vae_part and "#SBATCH --time=120" in gpvae_part
    for part in (vae_part, gpvae_part):
        for line in ("#SBATCH --partition=debug", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=1GB",
                     "#SBATCH --signal=USR2@30", "#SBATCH --array=0-0%1",
                     "setup: export PYTHONUNBUFFERED=1",
                     f"#SBATCH --output={tmp_path}/submitit/smoke/table1/%A_%a_0_log.out"):
            assert line in part, (line, part)
    assert not (tmp_path / "submitit").exists()  # nothing submitted

    rc, out, err = dry_run(capsys, mnist_root, tmp_path, "--retry-failed")
    assert "3 to run" in err and "would submit 3 runs as 3 jobs in 2 job arrays" in out
    assert re.findall(r"array (gpvae-\w+): (\d+) runs", out) == [("gpvae-gpvae", "2"), ("gpvae-vae", "1")]


def test_dry_run_with_slurm_needs_a_cluster_profile(capsys, mnist_root, tmp_path):
    rc = main(["--table", "1", "--profile", "smoke", "--data-root", str(mnist_root), "--results-dir",
               str(tmp_path), "--launcher", "slurm", "--methods", "vae", "--datasets", "mnist",
               "--dry-run", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: --launcher slurm needs --cluster")


@pytest.fixture
def slurm_env(monkeypatch, tmp_path):
    """What a Slurm task started by submitit sees (SUBMITIT_* name its environment and log files)."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "76")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path / "submitit"))
    return monkeypatch


def test_requeue_below_the_cap_resubmits_the_same_run(slurm_env, mnist_root, tmp_path):
    task = smoke_tasks(mnist_root, tmp_path)[0]
    slurm_env.setenv("SLURM_RESTART_COUNT", "1")
    run = SlurmRun(max_requeues=2)
    delayed = run.checkpoint([task])
    assert delayed.function is run and delayed.args == ([task],)
    assert not task.record_path.exists()


def test_requeue_at_the_cap_stops_the_job_with_the_harness_message(slurm_env, mnist_root, tmp_path):
    """At max_requeues, checkpoint() raises RequeueCap inside submitit's USR2 handler: the job's
    process stops waiting for its runs, records the unfinished ones as failed with that message
    (not submitit's 'checkpoint function returned None') and exits non-zero."""
    task = smoke_tasks(mnist_root, tmp_path)[0]
    slurm_env.setenv("SLURM_RESTART_COUNT", "2")
    with pytest.raises(RequeueCap, match="Requeued 2 times"):
        SlurmRun(max_requeues=2).checkpoint([task])
    assert not task.record_path.exists()


def test_run_requeued_past_the_cap_from_outside_is_not_trained(slurm_env, mnist_root, tmp_path):
    """`scontrol requeue` bypasses checkpoint(); the next start counts, records and exits non-zero."""
    task = smoke_tasks(mnist_root, tmp_path)[0]
    slurm_env.setenv("SLURM_RESTART_COUNT", "3")
    with pytest.raises(RunsFailed, match="Requeued 3 times"):
        SlurmRun(max_requeues=2)([task])
    rec = json.loads(task.record_path.read_text())
    assert rec["status"] == "failed" and "Requeued 3 times" in rec["error"]
    assert "max_requeues=2" in rec["error"] and rec["config_hash"] == task.config_hash()
    assert "metrics" not in rec and rec["slurm"] == {"job_id": "76_1", "requeues": 3}
    assert rec["log_file"] == str(tmp_path / "submitit" / "76_1_0_log.out")


def test_plugins_from_the_environment_and_a_spec_by_path(capsys, monkeypatch, mnist_root, tmp_path):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("GPVAE_BENCH_PLUGINS", "probe_plugin")
    spec = tmp_path / "probe_table.yaml"
    spec.write_text("title: probe\nmetric: test_iwae\ndatasets: [mnist]\ndims: [10]\n"
                    "rows:\n  - {probe: {fail: 1}}\n  - vae\n")
    rc = main(["--table", str(spec), "--profile", "smoke", "--data-root", str(mnist_root),
               "--results-dir", str(tmp_path), "--dry-run", "-q"])
    out, err = capsys.readouterr()
    assert rc == 0 and "probe_table, profile smoke: 4 runs: 4 missing; 4 to run" in err
    assert "would run probe_table/mnist/d10/probe-fail1/s0-r0 (missing)" in out

    monkeypatch.setenv("GPVAE_BENCH_PLUGINS", "probe_plugin, no_such_plugin_module")
    rc = main(["--table", str(spec), "--profile", "smoke", "--dry-run", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: $GPVAE_BENCH_PLUGINS: cannot import plugin module "
                               "'no_such_plugin_module': ModuleNotFoundError: No module named "
                               "'no_such_plugin_module'"]


class DeadJob:
    """What submitit hands back for a task whose process was killed before run_one recorded it."""

    def __init__(self, folder: Path):
        self.job_id = "90_3"
        self.paths = submitit.core.utils.JobPaths(folder, job_id=self.job_id, task_id=0)
        self.paths.stderr.parent.mkdir(parents=True, exist_ok=True)
        self.paths.stderr.write_text("".join(f"line {i}\n" for i in range(100)) + "Killed\n")

    def result(self):
        raise submitit.core.utils.UncompletedJobError("Job 90_3 (task: 0) with path ... has state CANCELLED")


def test_job_that_died_unrecorded_gets_a_failure_record(mnist_root, tmp_path):
    task = smoke_tasks(mnist_root, tmp_path)[0]
    job = DeadJob(tmp_path / "submitit")
    [rec] = _outcomes(job, [task])
    assert json.loads(task.record_path.read_text()) == rec
    assert rec["status"] == "failed" and rec["config_hash"] == task.config_hash()
    # one line, as --no-wait's follow-up gives, not submitit's whole message
    assert rec["error"] == ("job 90_3 ended without recording the run: Job 90_3 (task: 0) with path "
                            "... has state CANCELLED")
    assert rec["log_file"] == str(job.paths.stdout) and rec["stderr_file"] == str(job.paths.stderr)
    assert rec["log_tail"].splitlines() == [f"line {i}" for i in range(61, 100)] + ["Killed"]  # last 40


def test_record_the_job_wrote_before_failing_is_kept(slurm_env, mnist_root, tmp_path):
    """The requeue cap records the run, then the job exits non-zero: the launcher keeps that record."""
    task = smoke_tasks(mnist_root, tmp_path)[0]
    job = DeadJob(tmp_path / "submitit")
    slurm_env.setenv("SLURM_JOB_ID", "93")
    slurm_env.setenv("SLURM_ARRAY_JOB_ID", "90")
    slurm_env.setenv("SLURM_ARRAY_TASK_ID", "3")
    slurm_env.setenv("SLURM_RESTART_COUNT", "3")
    with pytest.raises(RunsFailed):
        SlurmRun(max_requeues=2)([task])
    written = json.loads(task.record_path.read_text())
    assert _outcomes(job, [task]) == [written] and "Requeued 3 times" in written["error"]


def test_packing_caps_and_array_splitting(mnist_root, tmp_path):
    """runs_per_task packs runs into jobs per method family; sweep_parallelism is shared among the
    arrays (adding up to it); a family with more jobs than MaxArraySize is split."""
    from benchmark.cluster import load_cluster_profile, runs_per_task

    tasks = smoke_tasks(mnist_root, tmp_path)  # vae, gpvae x 2 splits
    many = [dataclasses.replace(tasks[0], key=dataclasses.replace(tasks[0].key, split=s))
            for s in range(9)] + [t for t in tasks if t.key.method == "gpvae"]
    profile = tmp_path / "c.yaml"
    profile.write_text("gpus_per_node: 1\ncpus_per_task: 8\nmem_gb: 32\ntimeout_min: 60\n"
                       "sweep_parallelism: 3\noverrides:\n  gpvae: {runs_per_task: 1}\n")
    cluster = load_cluster_profile(profile)
    assert runs_per_task(cluster, "vae") == (4, "default: 4 per GPU (estimate)")
    assert runs_per_task(cluster, "gpvae") == (1, "runs_per_task in the profile")
    arrays = slurm_arrays(many, tmp_path, cluster, max_size=2)
    assert [(a.name, [len(p) for p in a.packs]) for a in arrays] == [
        ("gpvae-gpvae", [1, 1]), ("gpvae-vae-part1of2", [4, 4]), ("gpvae-vae-part2of2", [1])]
    assert sum(a.parallelism for a in arrays) == 3 and all(a.after is None for a in arrays)
    assert "#SBATCH --array=0-1%1" in arrays[0].directives
    assert sorted(t.key.split for t in arrays[1].tasks + arrays[2].tasks) == list(range(9))
    profile.write_text("sweep_parallelism: 2\n")
    arrays = slurm_arrays(many, tmp_path, load_cluster_profile(profile), max_size=2)
    assert [(a.parallelism, a.after) for a in arrays] == [(1, None), (1, None), (1, 0), (1, 1),
                                                          (1, 2), (1, 3)]
    profile.write_text("overrides:\n  vae: {sweep_parallelism: 2}\n")
    with pytest.raises(ValueError, match="unknown key 'sweep_parallelism'"):
        load_cluster_profile(profile)


def test_dry_run_says_device_jobs_estimate_and_data(capsys, mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no scontrol: no Slurm needed
    rc = main(["--table", "1", "--profile", "paper", "--data-root", str(mnist_root), "--results-dir",
               str(tmp_path), "--launcher", "slurm", "--cluster", str(REPO / "slurm" / "example.yaml"),
               "--methods", "vae,gpvae", "-q", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "would submit 360 runs as 90 jobs in 2 job arrays" in out
    assert "array gpvae-vae: 180 runs in 45 jobs (4 runs per job: default: 4 per GPU (estimate))" in out
    assert "device: auto: cuda on the node (1 GPU per job)" in out  # decided on the node
    assert "data: mnist found" in out and "data: omniglot MISSING" in out
    assert re.search(r"estimate: \d+ min-\d+ min per run \(paper Table 3 on an RTX 2080 Ti\)", out)
    assert re.search(r"time limit 120 min: fits", out)
    assert re.search(r"estimate: \d+-\d+ GPU-hours", out)
    assert "Slurm's default MaxArraySize (scontrol not available)" in out


def test_one_cost_model_for_local_and_slurm(mnist_root, tmp_path):
    """benchmark.estimate: records on the run's device first, else the CPU table (CPU) or Table 3
    (GPU), else records on the other device; local sweeps on slots, Slurm as jobs x GPUs."""
    from benchmark import estimate

    vae, gpvae = [t for t in smoke_tasks(mnist_root, tmp_path) if t.key.split == 0]
    cpu = estimate.estimate_run(vae, False, [])
    assert cpu.source == estimate.CPU_FALLBACK and cpu.seconds == estimate.fallback_seconds(vae) > 0
    gpu = estimate.estimate_run(vae, True, [])
    assert gpu.source.startswith("paper Table 3") and gpu.seconds == estimate.table3_seconds(vae).seconds
    on_gpu = estimate.MeasuredCost("vae", "default", "mnist", 10, "cuda", 1e-6, None)
    on_cpu = dataclasses.replace(on_gpu, device="cpu", train_s_per_image_epoch=1e-4)
    n_train, _ = estimate.sizes(vae)
    assert estimate.estimate_run(vae, True, [on_cpu, on_gpu]).source == "1 record on cuda"
    assert estimate.estimate_run(vae, False, [on_gpu]).source == estimate.CPU_FALLBACK
    measured = estimate.estimate_run(vae, False, [on_cpu, on_gpu])
    assert measured.seconds == pytest.approx(vae.profile.epochs * n_train * 1e-4)

    sweep = estimate.SweepEstimate({"a": estimate.RunEstimate(3.0, "x"),
                                    "b": estimate.RunEstimate(1.0, "x"),
                                    "c": estimate.RunEstimate(1.0, "x")}, workers=2)
    assert sweep.wall_seconds == 3.0  # b and c share the second slot while a runs
    # launched longest expected first: in table order (1, 1, 3) two slots would take 4
    Task = collections.namedtuple("Task", "key")
    late = estimate.SweepEstimate({"b": estimate.RunEstimate(1.0, "x"),
                                   "c": estimate.RunEstimate(1.0, "x"),
                                   "a": estimate.RunEstimate(3.0, "x"),
                                   "u": estimate.RunEstimate(None, "none")}, workers=2)
    assert [t.key for t in late.launch_order([Task(k) for k in "bcau"])] == ["u", "a", "b", "c"]
    assert late.wall_seconds == 3.0
    array = estimate.estimate_array([[vae, gpvae]], 2, [on_gpu])
    lows, highs = array.job_seconds
    per_run = [array.runs[vae.key].seconds, array.runs[gpvae.key].seconds]
    assert lows == [max(per_run)] and highs == [sum(per_run)]
    assert array.hours == pytest.approx((2 * max(per_run) / 3600, 2 * sum(per_run) / 3600))


def test_no_wait_runs_are_followed_up_through_squeue(capsys, mnist_root, tmp_path, monkeypatch):
    """Runs submitted earlier (--no-wait) and still in Slurm's queue are not submitted again; once
    their job has left the queue without a record, they are recorded as failed, with the job's log.
    squeue here is a stand-in script that gives every job asked for the state in `state_file`."""
    bin_dir, state_file = tmp_path / "bin", tmp_path / "squeue-state"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(  # answers `squeue ... -j ID,ID -o "%i %T"` as Slurm does
        f'#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -j ] && ids=$2; shift; done\n'
        f'[ -f "{state_file}" ] && read -r s < "{state_file}"\n'
        'if [ -n "$s" ]; then IFS=,; for i in $ids; do echo "$i $s"; done; fi\nexit 0\n')
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))  # and no sacct: its state reads UNKNOWN
    results = tmp_path / "results"
    tasks = smoke_tasks(mnist_root, results)
    folder = results.absolute() / "submitit" / "smoke" / "table1"
    for job_id, task in (("77_0", tasks[0]), ("77_1", tasks[1])):
        note_submitted(folder, job_id, task)

    state_file.write_text("PENDING\n")
    rc, out, err = dry_run(capsys, mnist_root, results)
    assert rc == 0 and "4 runs: 4 missing; 2 queued or running in Slurm; 2 to run" in err
    assert f"in Slurm: {tasks[0].key} (job 77_0, PENDING): not submitted again" in out
    assert f"would run {tasks[0].key}" not in out and f"would run {tasks[2].key}" in out
    rc, _, err = dry_run(capsys, mnist_root, results, "--force")
    assert "; 2 to run" in err  # not even --force starts a second job for a run

    def collect() -> tuple[int, str]:
        rc = main(["--table", "1", "--profile", "smoke", "--data-root", str(mnist_root),
                   "--results-dir", str(results), "--datasets", "mnist", "--dims", "10",
                   "--methods", "vae,gpvae", "-q", "--collect"])
        return rc, capsys.readouterr().err

    rc, err = collect()
    assert rc == 0 and "pending: 4 runs have no current record yet (2 queued or running in Slurm)" in err

    state_file.write_text("")  # the jobs have left the queue (cancelled, killed, out of memory)
    rc, out, err = dry_run(capsys, mnist_root, results)
    assert "4 missing; 4 to run" in err and not tasks[0].record_path.exists()  # a dry run writes nothing
    rc, err = collect()
    assert rc == 1
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2 and "pending: 2 runs have no current record yet\n" in err
    for job_id, task in (("77_0", tasks[0]), ("77_1", tasks[1])):
        record = json.loads(task.record_path.read_text())
        assert record["status"] == "failed" and record["slurm"] == {"job_id": job_id}
        assert record["error"] == f"Slurm job {job_id} left the queue (UNKNOWN) without recording the run"
        assert record["log_file"] == str(folder / f"{job_id}_0_log.out")
        assert any(str(task.key) in line and record["log_file"] in line for line in failed)
    rc, _, err = dry_run(capsys, mnist_root, results, "--retry-failed")
    assert "4 runs: 2 failed, 2 missing; 4 to run" in err


@pytest.mark.parametrize("stderr, expected", [
    ("slurm_load_jobs error: Invalid job id specified", {}),  # one id, forgotten: it has ended
    ("slurm_load_jobs error: Unable to contact slurm controller", {"5": "UNKNOWN", "6_1": "UNKNOWN"}),
])
def test_squeue_failing_reads_as_ended_only_for_an_unknown_job(tmp_path, monkeypatch, stderr, expected):
    (tmp_path / "squeue").write_text(f'#!/bin/sh\necho "{stderr}" >&2\nexit 1\n')
    (tmp_path / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm_queue_states(["6_1", "5", "5"]) == expected
