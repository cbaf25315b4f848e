"""GPVAE math against Monte Carlo: eq. 12 (moment-matched q(z|x)), eq. 15 (averaged KL), the
closed-form KL(q(W,U)||N(0,I)) and the uncertainty score."""

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence
from torch.distributions.transforms import LowerCholeskyTransform

from methods import NetConfig, get_method
from methods.gpvae import LowerCholesky, quadratic_forms
from methods.likelihoods import GaussianLikelihood

NET = NetConfig((1, 28, 28), num_conv=3, hidden=16)  # p = h = 16 keeps sampling W, U cheap
D = 3


def make_gpvae(seed=0, init_std=0.3):
    torch.manual_seed(seed)
    model = get_method("gpvae").build({}, net=NET, latent_dim=D, likelihood=GaussianLikelihood(0.1),
                                      num_train=1000, init_std=init_std)
    with torch.no_grad():  # non-trivial variational parameters, off-diagonal covariances included
        model.mu.normal_(0, 0.3)
        model.eta.normal_(0, 0.05)
        model.sigma_raw.add_(torch.randn_like(model.sigma_raw).tril(-1) * 0.1)
        model.gamma_raw.add_(torch.randn_like(model.gamma_raw).tril(-1) * 0.02)
    return model


def sample_conditional_moments(model, x, n):
    """Sample (W, U) ~ q(W, U) and return the mean and std of q(z|x,W,U) (eq. 8), (n, B, d)."""
    b, c = model.base(x)
    pm, ps = model.psi_m(x), model.psi_s(x)
    w = MultivariateNormal(model.mu, scale_tril=model.sigma_chol()).sample((n,))  # (n, d, p)
    u = MultivariateNormal(model.eta, scale_tril=model.gamma_chol()).sample((n,))
    mean = b + torch.einsum("ndp,bp->nbd", w, pm)
    std = c + torch.einsum("ndp,bp->nbd", u, ps)
    return mean, std


@torch.no_grad()
def test_eq12_moments_match_monte_carlo_mixture():
    model = make_gpvae()
    x = torch.rand(4, 1, 28, 28)
    mom = model.moments(x)
    mean, std = sample_conditional_moments(model, x, 200_000)
    mc_mean = mean.mean(0)
    mc_var = (mean.square() + std.square()).mean(0) - mc_mean.square()  # mixture second moment
    # 200k samples: the standard error of each moment is < 0.5% of its value; 2% is 4+ sigma.
    torch.testing.assert_close(mom["mean"], mc_mean, rtol=0.02, atol=2e-3)
    torch.testing.assert_close(mom["var"], mc_var, rtol=0.02, atol=2e-3)


@torch.no_grad()
def test_zero_gp_posterior_reduces_to_base_encoder():
    model = make_gpvae()
    with torch.no_grad():
        model.mu.zero_()
        model.eta.zero_()
        model.sigma_raw.copy_(torch.diag_embed(torch.full((D, NET.hidden), -30.0)))
        model.gamma_raw.copy_(torch.diag_embed(torch.full((D, NET.hidden), -30.0)))
    x = torch.rand(5, 1, 28, 28)
    b, c = model.base(x)
    q = model.posterior(x)
    torch.testing.assert_close(q.mean, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(q.stddev, c, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_eq15_averaged_kl_matches_monte_carlo():
    model = make_gpvae()
    model.log_scale_samples = 20_000  # the closed-form part is exact; make the MC part precise too
    x = torch.rand(3, 1, 28, 28)
    mom = model.moments(x)
    torch.manual_seed(1)
    analytic = model.averaged_kl(mom)
    mean, std = sample_conditional_moments(model, x, 100_000)
    prior = Normal(0.0, 1.0)
    mc = kl_divergence(Normal(mean, std.abs()), prior).sum(-1).mean(0)
    # both estimates have standard errors well under 0.5% here
    torch.testing.assert_close(analytic, mc, rtol=0.01, atol=0.01)


def test_weight_kl_closed_form_matches_torch_distributions():
    model = make_gpvae()
    p = NET.hidden
    expected = 0.0
    for mean, chol in ((model.mu, model.sigma_chol()), (model.eta, model.gamma_chol())):
        q = MultivariateNormal(mean, scale_tril=chol)
        prior = MultivariateNormal(torch.zeros(p), torch.eye(p))
        expected = expected + kl_divergence(q, prior).sum()
    torch.testing.assert_close(model.weight_kl(), expected, rtol=1e-4, atol=1e-3)


def test_factors_formed_once_per_step_give_the_same_terms():
    """elbo() forms the Cholesky factors once and hands them to moments() and weight_kl()."""
    model, x = make_gpvae(), torch.rand(4, 1, 28, 28)
    chols = model.cholesky_factors()
    assert torch.equal(model.weight_kl(chols), model.weight_kl())
    shared, own = model.moments(x, chols), model.moments(x)
    for key in own:
        assert torch.equal(shared[key], own[key]), key


def test_lower_cholesky_parts_are_torchs_lower_cholesky_transform():
    raw = torch.randn(3, 5, 5)
    torch.testing.assert_close(LowerCholesky.of(raw).dense(), LowerCholeskyTransform()(raw),
                               rtol=0, atol=0)


def test_quadratic_forms_equal_explicit_covariance():
    torch.manual_seed(0)
    chol = LowerCholesky.of(torch.randn(4, 6, 6))
    psi = torch.randn(5, 6)
    dense = chol.dense()
    cov = dense @ dense.transpose(-1, -2)
    explicit = torch.stack([torch.stack([psi[b] @ cov[j] @ psi[b] for j in range(4)])
                            for b in range(5)])
    torch.testing.assert_close(quadratic_forms(chol, psi), explicit, rtol=1e-5, atol=1e-5)


def test_training_and_inference_paths_give_the_same_moments():
    """With autograd on, moments come from the Cholesky parts; off, from packed covariances."""
    model, x = make_gpvae().double(), torch.rand(4, 1, 28, 28, dtype=torch.float64)
    training = model.moments(x)
    with torch.no_grad():
        inference = model.moments(x)
    for key in training:  # float64: only summation order differs
        torch.testing.assert_close(training[key].detach(), inference[key], rtol=1e-10, atol=1e-12)


@torch.no_grad()
def test_uncertainty_is_trace_of_posterior_variance_of_f_and_h():
    model = make_gpvae()
    x = torch.rand(2, 1, 28, 28)
    pm, ps = model.psi_m(x), model.psi_s(x)
    sigma_sum = (model.sigma_chol() @ model.sigma_chol().transpose(-1, -2)).sum(0)
    gamma_sum = (model.gamma_chol() @ model.gamma_chol().transpose(-1, -2)).sum(0)
    expected = torch.einsum("bp,pq,bq->b", pm, sigma_sum, pm) + torch.einsum(
        "bp,pq,bq->b", ps, gamma_sum, ps)
    torch.testing.assert_close(model.uncertainty(x), expected, rtol=1e-4, atol=1e-6)


def test_elbo_is_differentiable_and_finite():
    model = make_gpvae()
    x = torch.rand(4, 1, 28, 28)
    loss = model.loss(x)
    loss.backward()
    assert math.isfinite(loss.item())
    for name in ("mu", "eta", "sigma_raw", "gamma_raw"):
        grad = getattr(model, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name


@pytest.mark.parametrize("shape,num_conv", [((1, 28, 28), 3), ((3, 32, 32), 3), ((3, 64, 64), 4)])
def test_networks_round_trip_image_shapes(shape, num_conv):
    net = NetConfig(shape, num_conv=num_conv, hidden=32)
    model = get_method("vae").build({}, net=net, latent_dim=4, likelihood=GaussianLikelihood(0.1),
                                    num_train=10)
    x = torch.rand(2, *shape)
    assert model.decoder(model.posterior(x).rsample()).shape == x.shape
    assert isinstance(model.posterior(x), Independent)
