"""RESULTS/tables/records.csv: one row per run record, loadable with pandas.read_csv."""

import json

import pandas as pd
import pytest

from benchmark.export import record_paths, write_records_export
from benchmark.keys import RunKey
from benchmark.store import ResultsStore


def record(key: RunKey, status="ok", test=600.0, params=None) -> dict:
    rec = {"key": {"profile": key.profile, "table": key.table, "dataset": key.dataset,
                   "dim": key.dim, "method": key.method, "variant": key.variant,
                   "split": key.split, "restart": key.restart},
           "config": {"params": params or {}}, "config_hash": f"h{key.split}{key.restart}",
           "status": status, "wall_seconds": 12.5,
           "provenance": {"device": "cpu: x86_64", "host": "vm", "threads": 1, "git_commit": "abc"}}
    if status == "ok":
        rec["metrics"] = {"test_iwae": test, "val_iwae": test - 10, "mean_image_floor": -1400.0,
                          "test_elbo": test - 20, "epochs_run": 5}
    else:
        rec["error"] = "FloatingPointError: NaN loss"
    return rec


def write(results, key: RunKey, rec: dict):
    path = ResultsStore(results).record_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def sweep(tmp_path):
    results = tmp_path / "results"
    for split in range(2):
        for restart in range(2):
            key = RunKey("quick", "table1", "mnist", 10, "sa", "k4", split, restart)
            write(results, key, record(key, test=600.0 + split, params={"k": 4, "step_size": 1e-3}))
    vae = RunKey("quick", "table1", "mnist", 20, "vae", "default", 0, 0)
    aside = write(results, vae, record(vae, status="failed")).with_name("s0-r0.json.stale0")
    aside.write_text(json.dumps(record(vae)))  # a record set aside: not a run of the sweep
    other = RunKey("smoke", "table4", "binarized_mnist_fc", 50, "gpvae", "default", 0, 0)
    write(results, other, record(other, test=90.0))
    broken = RunKey("quick", "table1", "mnist", 10, "vae", "default", 1, 0)
    write(results, broken, {"status": "ok"})  # corrupt: skipped, as the tables skip it
    (results / "runs" / "quick" / "table3").mkdir(parents=True)
    (results / "runs" / "quick" / "table3" / "timings.json").write_text("{}")
    return results


def test_records_csv_has_one_row_per_run(sweep, caplog):
    paths = write_records_export(sweep)
    csv = sweep / "tables" / "records.csv"
    assert paths[0] == csv and len(record_paths(sweep)) == 7
    frame = pd.read_csv(csv)
    assert len(frame) == 6 and caplog.text.count("corrupt record") == 1  # left out, said once
    assert list(frame.columns[:13]) == ["profile", "table", "dataset", "dim", "method", "variant",
                                        "label", "split", "restart", "params", "config_hash",
                                        "status", "error"]
    assert list(frame.columns[13:17]) == ["test_iwae", "val_iwae", "test_elbo", "mean_image_floor"]
    assert list(frame.columns[-6:]) == ["wall_seconds", "device", "host", "threads", "git_commit",
                                        "record"]
    sa = frame[frame.method == "sa"]
    assert len(sa) == 4 and set(sa.label) == {"SA(4)"} and (sa.status == "ok").all()
    assert sorted(zip(sa.split, sa.restart, strict=True)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert json.loads(sa.params.iloc[0]) == {"k": 4, "step_size": 1e-3}
    assert sa.test_iwae.tolist() == [600.0, 600.0, 601.0, 601.0]
    assert (sa.device == "cpu: x86_64").all() and (sa.wall_seconds == 12.5).all()
    assert sa.record.iloc[0] == "runs/quick/table1/mnist/d10/sa-k4/s0-r0.json"
    failed = frame[frame.status == "failed"].iloc[0]
    assert failed.label == "VAE" and failed.dim == 20 and "NaN loss" in failed.error
    assert pd.isna(failed.test_iwae)
    fc = frame[frame.table == "table4"].iloc[0]
    assert (fc.profile, fc.dataset, fc.label, fc.test_iwae) == ("smoke", "binarized_mnist_fc",
                                                                 "GPVAE", 90.0)


def test_an_empty_results_folder_gives_the_header(tmp_path):
    write_records_export(tmp_path)
    frame = pd.read_csv(tmp_path / "tables" / "records.csv")
    assert frame.empty and "config_hash" in frame.columns
