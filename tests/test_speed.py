"""benchmark.analyses.speed: GPVAE's looped eq.-12 reference (the plugin's reference_moments) gives its
numbers; bad input is one error line.
(No timings are asserted: speed is measured by the benchmark, not by tests.)"""

import sys
from pathlib import Path

import pytest
import torch

from benchmark import datasets
from benchmark.analyses import speed
from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_datasets as fx  # noqa: E402

NET = NetConfig((1, 28, 28), num_conv=3, hidden=24)


@torch.no_grad()
def test_looped_reference_equals_gpvae():
    torch.manual_seed(0)
    model = get_method("gpvae").build({}, net=NET, latent_dim=5, likelihood=GaussianLikelihood(0.1),
                                      num_train=100, init_std=0.3).double().eval()
    model.mu.normal_(0, 0.3)
    model.eta.normal_(0, 0.05)
    for factor, scale in ((model.sigma, 0.1), (model.gamma, 0.05)):
        raw = factor.raw()
        factor.load_raw_(raw + torch.randn_like(raw).tril(-1) * scale)
    model.prepare_inference()
    x = torch.rand(7, 1, 28, 28, dtype=torch.float64)
    mean, var = speed.looped_moments(model, x)
    q = model.posterior(x)
    # float64; the two differ only in summation order (~1e-14 relative), a wrong term is O(1)
    torch.testing.assert_close(mean, q.mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(var, q.variance, rtol=1e-9, atol=1e-12)
    torch.manual_seed(3)
    looped = speed.looped_infer(model, x)
    torch.manual_seed(3)
    torch.testing.assert_close(looped, mean + var.sqrt() * torch.randn_like(mean))


def test_floor_matmul_has_the_flops_of_the_symmetric_quadratic_forms():
    torch.manual_seed(0)
    model = get_method("gpvae").build({}, net=NET, latent_dim=5, likelihood=GaussianLikelihood(0.1),
                                      num_train=100)
    floor = model.inference_floor()  # the plugin protocol's optional compute floor
    p, d = NET.hidden, 5
    # B d p (p + 1) multiply-adds = 2 forms x B d p (p + 1) / 2 (the upper triangle incl. diagonal)
    assert floor.weight.shape == (p, d * (p + 1))
    assert floor(torch.rand(3, 1, 28, 28)).shape == (3, d * (p + 1))


def test_missing_data_is_one_error_line(tmp_path, capsys):
    assert speed.main(["--data-root", str(tmp_path), "--dims", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


@pytest.mark.parametrize("args", [["--dims", "0"], ["--dataset", "no_such_column"]])
def test_bad_argument_is_one_error_line(capsys, args):
    assert speed.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_train_step_of_every_method_on_the_bernoulli_fc_column(tmp_path, monkeypatch, capsys):
    """--dataset picks the column's data, networks and likelihood (Table 4's FC: Bernoulli)."""
    written = fx.write_amat(tmp_path)
    monkeypatch.setattr(datasets, "BINARIZED_MNIST_MD5", {s: m for s, (_, m) in written.items()})
    assert speed.main(["--train", "--dataset", "binarized_mnist_fc", "--data-root", str(tmp_path),
                       "--dims", "2", "--min-time", "0.001", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 binarized_mnist_fc test images" in out
    ratios = out.strip().splitlines()[-1]
    assert ratios.startswith("ratio to VAE: VAE 1.00") and "VLAE(2)" in ratios and "GPVAE" in ratios
