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
