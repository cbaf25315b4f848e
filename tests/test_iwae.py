"""IWAE on a linear-Gaussian model whose log p(x) is known exactly.

Model: z ~ N(0, I_d), x | z ~ N(A z + b, s^2 I_D), so x ~ N(b, A A^T + s^2 I). The proposal is a
deliberately imperfect diagonal Gaussian, so the bound is strict and tightens with K.
"""

import math

import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from benchmark.evaluate import iwae_log_likelihood


class LinearGaussian:
    def __init__(self, d=2, big_d=5, s=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(big_d, d, generator=g, dtype=torch.float64)
        self.b = torch.randn(big_d, generator=g, dtype=torch.float64)
        self.s = s
        self.d = d

    def log_joint(self, x, z):
        mean = z @ self.a.T + self.b
        return (Independent(Normal(mean, self.s), 1).log_prob(x)
                + Independent(Normal(torch.zeros_like(z), 1.0), 1).log_prob(z))

    def exact_log_px(self, x):
        cov = self.a @ self.a.T + self.s**2 * torch.eye(len(self.b), dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(x)

    def exact_posterior(self, x):
        prec = torch.eye(self.d, dtype=torch.float64) + self.a.T @ self.a / self.s**2
        cov = torch.linalg.inv(prec)
        mean = (x - self.b) @ self.a @ cov.T / self.s**2
        return mean, cov

    def posterior(self, x):
        """Diagonal proposal: the exact posterior mean shifted, variances inflated 2x."""
        mean, cov = self.exact_posterior(x)
        return Independent(Normal(mean + 0.3, (2 * cov.diagonal()).sqrt().expand_as(mean)), 1)

    def elbo(self, x):
        q = self.posterior(x)
        z = q.rsample((2000,))
        return (self.log_joint(x, z) - q.log_prob(z)).mean(0)


def test_iwae_approaches_exact_log_likelihood_from_below():
    torch.manual_seed(0)
    model = LinearGaussian()
    x = torch.randn(20, 5, dtype=torch.float64) * 2
    exact = model.exact_log_px(x)
    gaps = {}
    for k in (1, 10, 100, 2000):
        estimates = torch.stack([iwae_log_likelihood(model, x, k) for _ in range(50)])
        gaps[k] = (exact - estimates.mean(0)).mean().item()
        # Jensen: E[IWAE_K] <= log p(x); averaged over 50 repeats x 20 points the Monte Carlo
        # error of the mean gap is far below 0.01 nats
        assert gaps[k] > -0.01, (k, gaps[k])
    assert gaps[1] > gaps[10] > gaps[100] > gaps[2000]
    assert gaps[2000] < 0.05 * gaps[1]  # the bound tightens: K=2000 closes most of the gap


def test_iwae_is_at_least_the_elbo():
    torch.manual_seed(1)
    model = LinearGaussian(seed=1)
    x = torch.randn(30, 5, dtype=torch.float64)
    elbo = model.elbo(x).mean().item()
    iwae = torch.stack([iwae_log_likelihood(model, x, 100) for _ in range(10)]).mean().item()
    assert iwae >= elbo


def test_iwae_with_exact_posterior_is_exact():
    """With q = p(z|x) every importance weight equals p(x): the estimate is exact for any K."""
    model = LinearGaussian(seed=2)
    x = torch.randn(7, 5, dtype=torch.float64)

    def exact_posterior(xx):
        mean, cov = model.exact_posterior(xx)
        return MultivariateNormal(mean, cov.expand(len(xx), -1, -1))

    model.posterior = exact_posterior
    torch.testing.assert_close(iwae_log_likelihood(model, x, 3), model.exact_log_px(x))
    assert math.isfinite(iwae_log_likelihood(model, x, 1).sum().item())
