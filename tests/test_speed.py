"""benchmark.speed: its looped eq.-12 reference gives GPVAE's numbers; bad input is one error line.
(No timings are asserted: speed is measured by the benchmark, not by tests.)"""

import torch

from benchmark import speed
from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood

NET = NetConfig((1, 28, 28), num_conv=3, hidden=24)


@torch.no_grad()
def test_looped_reference_equals_gpvae():
    torch.manual_seed(0)
    model = get_method("gpvae").build({}, net=NET, latent_dim=5, likelihood=GaussianLikelihood(0.1),
                                      num_train=100, init_std=0.3).double().eval()
    model.mu.normal_(0, 0.3)
    model.eta.normal_(0, 0.05)
    model.sigma_raw.add_(torch.randn_like(model.sigma_raw).tril(-1) * 0.1)
    model.gamma_raw.add_(torch.randn_like(model.gamma_raw).tril(-1) * 0.05)
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
    floor = speed.GPVAEFloor(model)
    p, d = NET.hidden, 5
    # B d p (p + 1) multiply-adds = 2 forms x B d p (p + 1) / 2 (the upper triangle incl. diagonal)
    assert floor.weight.shape == (p, d * (p + 1))
    assert floor(torch.rand(3, 1, 28, 28)).shape == (3, d * (p + 1))


def test_missing_data_is_one_error_line(tmp_path, capsys):
    assert speed.main(["--data-root", str(tmp_path), "--dims", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_bad_dims_is_one_error_line(capsys):
    assert speed.main(["--dims", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
