"""Bad input gets one clear error line and a non-zero exit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_main(capsys, *args):
    rc = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--table", "9"], "unknown table '9'; known tables: 1"),
        (["--table", "1", "--profile", "huge"], "unknown profile 'huge'"),
        (["--table", "1", "--methods", "vae,bogus"], "unknown method 'bogus'"),
        (["--table", "4", "--methods", "vlae-t3"], "unknown method 'vlae-t3'"),
        (["--table", "1", "--datasets", "imagenet"], "dataset 'imagenet' is not in table1"),
        (["--table", "1", "--dims", "ten"], "--dims ten: expected comma-separated integers"),
        (["--table", "1", "--dims", "10,7"], "7 is not a latent size of this table"),
        (["--table", "1", "--device", "tpu"], "--device tpu: not a torch device"),
        ([], "--table is required"),
    ],
)
def test_unknown_names(capsys, args, needle):
    rc, err = run_main(capsys, *args)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


@pytest.mark.parametrize(
    "text,needle",
    [
        ("epochs: [1\n", "not valid YAML"),
        ("epochs: 1\nbogus: 2\n", "unknown key 'bogus'"),
        ("description: x\nepochs: two\n", "key 'epochs' must be"),
        ("- a list\n", "expected a mapping"),
        ("description: x\nepochs: 2\n", "missing keys 'batch_size', 'lr', 'patience'"),
    ],
)
def test_bad_profile_yaml(capsys, tmp_path, text, needle):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    rc, err = run_main(capsys, "--table", "1", "--profile", str(path))
    assert rc == 2 and len(err) == 1 and needle in err[0], err


def test_missing_data_offline(capsys, tmp_path):
    rc, err = run_main(capsys, "--table", "1", "--profile", "smoke", "--datasets", "mnist",
                       "--data-root", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path),
                       "--launcher", "debug", "-q")
    assert rc == 2
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "train-images-idx3-ubyte" in errors[0] and "--download" in errors[0]
    assert not (tmp_path / "runs").exists()


def test_slurm_without_slurm(capsys, tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    rc, err = run_main(capsys, "--table", "1", "--profile", "smoke", "--datasets", "mnist",
                       "--dims", "10", "--methods", "vae", "--data-root", str(mnist_root),
                       "--results-dir", str(tmp_path), "--launcher", "slurm", "--cluster",
                       str(REPO / "slurm" / "local.yaml"), "-q")
    assert rc == 2
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "sbatch" in errors[0]


def test_nan_loss_is_recorded_and_exits_nonzero(capsys, tmp_path, mnist_root, monkeypatch):
    from methods.vae import VAE

    monkeypatch.setattr(VAE, "loss", lambda self, x: torch.tensor(float("nan"), requires_grad=True))
    rc, err = run_main(capsys, "--table", "1", "--profile", "smoke", "--datasets", "mnist",
                       "--dims", "10", "--methods", "vae", "--data-root", str(mnist_root),
                       "--results-dir", str(tmp_path), "--launcher", "debug", "-q")
    assert rc == 1
    failed = [line for line in err if line.startswith("failed:")]
    assert len(failed) == 2 and all("NonFiniteLoss" in line for line in failed)
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 2  # recorded, not lost


def test_a_multi_line_error_is_one_line_in_the_record_and_the_listing(capsys, tmp_path, mnist_root,
                                                                     monkeypatch):
    from methods.vae import VAE

    def loss(self, x):  # as torch.distributions' argument validation words it
        raise ValueError("Expected parameter precision_matrix to satisfy the constraint "
                         "PositiveDefinite(), but found invalid values:\ntensor([[1.0, 2.0],\n [3.0, 4.0]])")

    monkeypatch.setattr(VAE, "loss", loss)
    rc = main(["--table", "1", "--profile", "smoke", "--datasets", "mnist", "--dims", "10",
               "--methods", "vae", "--splits", "1", "--data-root", str(mnist_root),
               "--results-dir", str(tmp_path), "--launcher", "debug", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "tensor(" not in err
    [failed] = [line for line in err.splitlines() if line.startswith("failed:")]
    assert "ValueError: Expected parameter precision_matrix" in failed and "invalid values:" in failed
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("*.json")]
    assert "\n" not in record["error"] and "tensor([[1.0, 2.0]" in record["traceback"]


def test_error_summary_cuts_long_messages():
    from benchmark.run import error_summary

    assert error_summary(RuntimeError("x" * 1000), limit=50) == "RuntimeError: " + "x" * 33 + "..."
    assert error_summary(KeyError()) == "KeyError"


def test_cli_help_and_list():
    out = subprocess.run([sys.executable, "reproduce.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    for option in ("--table", "--profile", "--data-root", "--launcher", "--jobs", "--force",
                   "--paired", "--list", "--dry-run", "--collect"):
        assert option in out
    listing = subprocess.run([sys.executable, "reproduce.py", "--list"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    for word in ("tables:", "methods:", "profiles:", "vae", "gpvae", "smoke", "quick", "paper"):
        assert word in listing


def test_a_row_parameter_the_plugin_does_not_take_fails_when_the_spec_loads(capsys, tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text("title: t\nmetric: test_iwae\ndatasets: [mnist]\ndims: [10]\n"
                    "rows:\n  - {sa: {kk: 4}}\n")
    rc, err = run_main(capsys, "--table", str(spec), "--profile", "smoke", "--dry-run")
    assert rc == 2
    assert len(err) == 1 and "method 'sa' takes no parameter 'kk'" in err[0], err
