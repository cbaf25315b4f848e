"""A learned global sigma_x: its log-density against torch.distributions, its gradient moves it
toward the maximum-likelihood value, and it starts where the fixed one is."""
import math

import torch

from methods.likelihoods import GaussianLikelihood, make_likelihood


def test_learned_and_fixed_agree_at_the_start_and_match_torch_distributions():
    torch.manual_seed(0)
    x, out = torch.rand(4, 1, 5, 5), torch.rand(3, 4, 1, 5, 5)
    fixed, learned = GaussianLikelihood(0.1), make_likelihood("gaussian", 0.1, learn_sigma=True)
    ref = torch.distributions.Normal(out, 0.1).log_prob(x).sum((-3, -2, -1))
    assert torch.allclose(fixed.log_prob(x, out), ref, atol=1e-4)
    assert torch.allclose(learned.log_prob(x, out), ref, atol=1e-4)
    assert math.isclose(learned.sigma, 0.1, rel_tol=1e-6)
    assert [n for n, _ in learned.named_parameters()] == ["log_sigma"]
    assert not list(fixed.parameters())


def test_gradient_ascent_on_log_sigma_finds_the_root_mean_squared_error():
    torch.manual_seed(1)
    x, out = torch.rand(64, 1, 6, 6), torch.rand(64, 1, 6, 6)
    lik = GaussianLikelihood(0.1, learned=True)
    opt = torch.optim.Adam(lik.parameters(), lr=0.05)
    for _ in range(500):
        opt.zero_grad()
        (-lik.log_prob(x, out).mean()).backward()
        opt.step()
    rmse = float((out - x).pow(2).mean().sqrt())
    assert math.isclose(lik.sigma, rmse, rel_tol=1e-3)
    assert math.isclose(float(lik.inverse_variance()), 1 / rmse**2, rel_tol=3e-3)
