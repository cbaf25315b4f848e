"""Table 3 (a timing table) through reproduce.py: end to end on a tiny test set, and bad input."""

import json

import pytest

from benchmark import specs
from benchmark.cli import main
from benchmark.specs import load_table_spec

TINY_PROFILE = """description: "timing test: 8 test images"
epochs: 1
batch_size: 32
lr: 1.0e-3
patience: null
splits: 1
restarts: 1
iwae_k: 10
eval_batch_size: 128
train_size: 64
val_size: 32
test_size: 8
"""


def run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err.strip().splitlines()


def test_spec_is_a_timing_table():
    spec = load_table_spec("3")
    assert spec.metric == "inference_ms" and spec.batch_size == 128 and spec.repeats == 5
    assert spec.dims == (50,) and [r.label for r in spec.rows][0] == "VAE"


def test_table3_end_to_end_on_a_tiny_test_set(mnist_root, tmp_path, capsys):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(TINY_PROFILE)
    results = tmp_path / "results"
    rc, out, _ = run(capsys, "--table", "3", "--profile", str(profile), "--data-root", str(mnist_root),
                     "--results-dir", str(results), "--device", "cpu", "-q")
    assert rc == 0
    md = (results / "tables" / "table3.md").read_text()
    assert md in out  # printed as written
    assert (results / "tables" / "table3.tex").exists() and (results / "tables" / "table3.html").exists()
    raw = json.loads((results / "runs" / "tiny" / "table3" / "timings.json").read_text())
    cells = raw["ms_per_batch"]["mnist/d50"]
    assert set(cells) == {r.label for r in load_table_spec("3").rows}
    assert all(ms > 0 for ms in cells.values())
    assert raw["batches"]["mnist/d50"] == [1, 8]
    vae_line = next(line for line in md.splitlines() if line.startswith("| VAE "))
    assert " 1.00 |" in vae_line  # the ratio column is relative to the first row
    assert "OMNIGLOT" in md and "data missing" in md and "not found" in md  # DatasetMissing text
    assert " thread" in md and "torch" in md and "untrained" in md and "Device: cpu (" in md


@pytest.mark.parametrize("args,needle", [
    (["--datasets", "omniglot"], "OMNIGLOT not found"),
    (["--methods", "vae,bogus"], "unknown method 'bogus'"),
    (["--datasets", "imagenet"], "dataset 'imagenet' is not in table3"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, args, needle):
    rc, _, err = run(capsys, "--table", "3", "--profile", "smoke", "--data-root", str(tmp_path),
                     "--results-dir", str(tmp_path / "r"), *args)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "r" / "tables").exists()


def test_bad_timing_spec_field_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(specs, "SPEC_DIR", tmp_path)
    (tmp_path / "table7.yaml").write_text(
        "title: t\nmetric: inference_ms\ndatasets: [mnist]\ndims: [50]\nrepeats: 0\nrows: [vae]\n")
    rc, _, err = run(capsys, "--table", "7", "--data-root", str(tmp_path))
    assert rc == 2
    assert len(err) == 1 and "repeats must be a positive integer" in err[0], err
