"""benchmark.pipeline as a Python API: a notebook runs a table without argv."""

import torch

from benchmark import pipeline
from benchmark.pipeline import Request
from benchmark.store import ResultsStore


def test_a_notebook_runs_a_table_without_argv(mnist_root, tmp_path, capsys):
    results = tmp_path / "results"
    request = Request(table="1", profile="smoke", methods="vae", datasets={"mnist"}, dims=[10],
                      splits=1, data_root=str(mnist_root), results_dir=str(results),
                      launcher="debug", device="cpu", threads=1, keep_weights=True)
    assert request.methods == frozenset({"vae"})  # "a,b" strings and any collection are accepted

    estimate = pipeline.run(Request(**{**request.__dict__, "dry_run": True}))
    out = capsys.readouterr().out
    assert estimate.exit_code == 0 and "would run table1/mnist/d10/vae-default/s0-r0" in out
    assert "estimate: " in out and "how: 1 run from the fallback table" in out
    assert not results.exists()  # a dry run writes nothing

    outcome = pipeline.run(request)
    assert outcome.exit_code == 0 and outcome.problems == []
    [record] = outcome.records
    assert record.ok and record.key.method == "vae"
    cell = outcome.table.cells[("mnist", 10)][("vae", "default")]
    assert cell.n == 1 and cell.mean == record.metrics.value("test_iwae")
    assert (results / "tables" / "table1.md") in outcome.paths
    # --keep-weights: the evaluated model's state_dict beside the record, path from the store
    weights = ResultsStore(results).weights_path(record.key)
    assert record.data["weights_file"] == str(weights)
    state = torch.load(weights, weights_only=True)
    assert state and all(torch.is_tensor(v) for v in state.values())

    # the same request again trains nothing; the dry run's estimate now comes from the record
    again = pipeline.run(request)
    assert again.exit_code == 0 and [r.data for r in again.records] == [record.data]
    capsys.readouterr()
    pipeline.run(Request(**{**request.__dict__, "dry_run": True, "force": True}))
    assert "how: 1 run from measured records" in capsys.readouterr().out


def test_quiet_training_run_says_nothing_but_the_table(mnist_root, tmp_path, capsys):
    """-q: a run that trains (local launcher: subprocess, bar, per-run log lines) prints the table
    on stdout and nothing on stderr (no plan summary, bar, 'start ... log' or file list)."""
    from benchmark.cli import main

    rc = main(["--table", "1", "--profile", "smoke", "--methods", "vae", "--datasets", "mnist",
               "--dims", "10", "--splits", "1", "--data-root", str(mnist_root), "--results-dir",
               str(tmp_path / "results"), "--launcher", "local", "--jobs", "1", "--threads", "1",
               "--device", "cpu", "-q"])
    out, err = capsys.readouterr()
    assert rc == 0 and "| VAE " in out
    assert err == ""
    assert list((tmp_path / "results" / "runs").rglob("s0-r0.json"))  # it did train


def test_quiet_slurm_submission_is_not_said(mnist_root, tmp_path, capsys, monkeypatch):
    """The 'submitted job array' line is a log line on stderr: said by default, not under -q."""
    import shutil

    from benchmark.cli import _setup_logging
    from benchmark.cluster import load_cluster_profile
    from benchmark.launch import submit_slurm
    from benchmark.plan import make_plan
    from benchmark.profiles import load_profile
    from benchmark.specs import load_table_spec

    class FakeJob:
        def __init__(self, i):
            self.job_id = f"4242_{i}"

    class FakeExecutor:
        def map_array(self, fn, packs):
            return [FakeJob(i) for i in range(len(packs))]

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/bin/true" if name == "sbatch"
                        else None if name == "scontrol" else which(name, *a, **k))
    monkeypatch.setattr("benchmark.cluster.make_executor", lambda *a, **k: FakeExecutor())
    tasks = make_plan(load_table_spec("1"), load_profile("smoke"), data_root=str(mnist_root),
                      results_dir=str(tmp_path), methods={"vae"}, dataset_filter={"mnist"},
                      dims={10}).tasks
    cluster = load_cluster_profile("local")
    try:
        _setup_logging(quiet=True)
        assert submit_slurm(tasks, tmp_path / "submitit", cluster)
        assert capsys.readouterr() == ("", "")
        _setup_logging(quiet=False)
        submit_slurm(tasks, tmp_path / "submitit", cluster)
        out, err = capsys.readouterr()
        assert out == "" and "submitted job array 4242 (gpvae-vae)" in err
    finally:
        _setup_logging(quiet=False)
