"""benchmark.analyses.gpu_check in its tiny CPU setting (--quick): the report's three sections, the
ratios, the JSON it writes, and bad input as one error line. Not a timed test: no speed is
asserted (the figures come from a GPU run, docs/performance-training-cost.md)."""

import json
import queue
import time

import pytest
from markdown_tables import table

from benchmark.analyses import gpu_check


def test_quick_run_on_cpu(mnist_root, tmp_path, capsys):
    out = tmp_path / "check"
    assert gpu_check.main(["--quick", "--device", "cpu", "--data-root", str(mnist_root),
                           "--out", str(out), "--budget-s", "120"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("# GPU check: cpu (")
    sections = [line for line in lines if line.startswith("## ")]
    assert [s.split(":")[0] for s in sections] == ["## Table 3", "## Training step at batch 4, d=2, fp32",
                                                   "## Runs per GPU"]

    head, body = table(lines, "| row | ms | paper ms |")
    assert head == ["row", "ms", "paper ms", "ours / paper", "x VAE", "paper x VAE", "passes"]
    assert [r[0] for r in body] == ["VAE", "SA(1)", "SA(2)", "SA(4)", "SA(8)", "IAF(1)", "IAF(2)",
                                    "IAF(4)", "IAF(8)", "GPVAE"]
    assert body[0][4] == "x1.00" and body[0][2] == "3.6" and body[-1][2] == "9.9"
    assert all(r[4].startswith("x") and r[5].startswith("x") for r in body)

    head, body = table(lines, "| family | ms per step |")
    assert head == ["family", "ms per step", "x VAE", "steps"]
    assert [r[0] for r in body] == ["VAE", "SA(1)", "IAF(1)", "HF(1)", "ME(2)", "RME(2)", "GPVAE",
                                    "GPVAE floor", "VLAE(2)"]
    assert body[0][2] == "x1.00" and all(r[2].startswith("x") for r in body)

    head, body = table(lines, "| family | runs |")
    assert head[:5] == ["family", "runs", "steps/s (sum)", "per run", "speed-up over 1"]
    assert [(r[0], r[1]) for r in body] == [("vae", "1"), ("vae", "2"), ("gpvae", "1"), ("gpvae", "2")]
    assert body[0][4] == "x1.00" and body[2][4] == "x1.00"
    suggestion = next(line for line in lines if line.startswith("Suggested runs_per_task"))
    assert "slurm/<cluster>.yaml" in suggestion and "benchmark/cluster.py" in suggestion

    assert (out / "gpu_check.md").read_text() == text
    figures = json.loads((out / "gpu_check.json").read_text())
    assert {"device", "torch", "budget_s", "table3", "training", "concurrency", "elapsed_s"} <= set(figures)
    t3 = figures["table3"]
    assert len(t3["rows"]) == 10 and t3["rows"][0]["ratio_to_vae"] == 1.0
    assert {"row", "ms", "paper_ms", "ratio_to_paper", "ratio_to_vae", "paper_ratio_to_vae",
            "passes"} <= set(t3["rows"][0])
    training = figures["training"]
    assert training["batch"] == 4 and training["families"][0]["ratio_to_vae"] == 1.0
    conc = figures["concurrency"]
    assert conc["levels"] == [1, 2] and not conc["errors"]
    assert all(t["steps_per_s"] > 0 for t in conc["trials"])
    assert set(conc["suggested"]) == {"vae", "gpvae"} and conc["runs_per_task"] in (1, 2)


def test_over_budget_parts_stop_cleanly(mnist_root, tmp_path, capsys):
    """A budget too small for anything: every part still reports, saying it was cut short."""
    assert gpu_check.main(["--quick", "--device", "cpu", "--data-root", str(mnist_root), "--out",
                           str(tmp_path), "--budget-s", "0.001", "--parts", "table3,training"]) == 0
    text = capsys.readouterr().out
    assert text.count("Cut short by the budget") == 2
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["table3"]["cut_short"] and figures["training"]["cut_short"]
    assert "concurrency" not in figures


def test_knee():
    assert gpu_check.knee([(1, 10.0), (4, 30.0), (8, 31.0)]) == 4
    assert gpu_check.knee([(1, 10.0), (4, 10.5), (8, 40.0)]) == 1
    assert gpu_check.knee([(1, 10.0), (4, 30.0), (8, 40.0)]) == 8
    assert gpu_check.knee([(1, None)]) is None


@pytest.mark.parametrize("args", [["--levels", "2,4"], ["--levels", "1,x"], ["--parts", "nope"],
                                  ["--device", "cuda:0"], ["--budget-s", "0"], ["--nope"],
                                  ["--run-families", "nope"], ["--data-root", "/nonexistent"]])
def test_bad_input_is_one_error_line(capsys, args, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert gpu_check.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_collect_gives_up_on_a_worker_that_died():
    """A worker that dies before it reports (a crash, a spawn that could not start) ends the wait
    at once, not at the deadline."""
    class Dead:
        exitcode = 1

    start = time.monotonic()
    got, errors = gpu_check.collect(queue.Queue(), [Dead()], [0], "ready", start + 60)
    assert got == {} and errors == ["worker 0 exited (code 1) without a report"]
    assert time.monotonic() - start < 10
