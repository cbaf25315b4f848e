"""GPVAE math against Monte Carlo: eq. 12 (moment-matched q(z|x)), eq. 15 (averaged KL), the
closed-form KL(q(W,U)||N(0,I)) and the uncertainty score."""

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence
from torch.distributions.transforms import LowerCholeskyTransform

from methods import NetConfig, get_method
from methods.gpvae import VAR_EPS, CholeskyFactor, _FactorQuadraticForms, quadratic_forms
from methods.likelihoods import GaussianLikelihood

NET = NetConfig((1, 28, 28), num_conv=3, hidden=16)  # p = h = 16 keeps sampling W, U cheap
D = 3
# float64: a reordered sum differs by ~1e-15 relative; a wrong term or factor by O(1)
TOL64 = dict(rtol=1e-9, atol=1e-12)


def make_gpvae(seed=0, init_std=0.3):
    torch.manual_seed(seed)
    model = get_method("gpvae").build({}, net=NET, latent_dim=D, likelihood=GaussianLikelihood(0.1),
                                      num_train=1000, init_std=init_std)
    with torch.no_grad():  # non-trivial variational parameters, off-diagonal covariances included
        model.mu.normal_(0, 0.3)
        model.eta.normal_(0, 0.05)
        perturb_factors(model, 0.1, 0.02)
    return model


def perturb_factors(model, sigma_scale, gamma_scale):
    """Random strict lower triangles for L_j and M_j (drawn as the raw (d, p, p) matrices)."""
    with torch.no_grad():
        for factor, scale in ((model.sigma, sigma_scale), (model.gamma, gamma_scale)):
            raw = factor.raw()
            factor.load_raw_(raw + torch.randn_like(raw).tril(-1) * scale)


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
        model.sigma.load_raw_(torch.diag_embed(torch.full((D, NET.hidden), -30.0)))
        model.gamma.load_raw_(torch.diag_embed(torch.full((D, NET.hidden), -30.0)))
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


@pytest.mark.parametrize("p,block", [(5, 64), (9, 4), (12, 4), (7, 1)])
def test_cholesky_factor_is_torchs_lower_cholesky_transform(p, block):
    """Packed column blocks (full, partial and single-column) hold L = LowerCholeskyTransform(raw)
    entry for entry, and raw() gives back raw's lower triangle."""
    raw = torch.randn(3, p, p)
    factor = CholeskyFactor(3, p, 0.0, block=block)
    factor.load_raw_(raw)
    expected = LowerCholeskyTransform()(raw)
    torch.testing.assert_close(factor.dense(), expected, rtol=0, atol=0)
    lower = raw.tril(-1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1))
    torch.testing.assert_close(factor.raw(), lower, rtol=0, atol=0)
    # each entry of the triangle once: Adam steps what is used and nothing else
    assert sum(t.numel() for t in factor.parameters()) == 3 * p * (p + 1) // 2


@pytest.mark.parametrize("p,block", [(6, 64), (10, 4), (7, 1)])
def test_quadratic_forms_equal_explicit_covariance(p, block):
    torch.manual_seed(0)
    factor = CholeskyFactor(4, p, 0.0, block=block).double()
    factor.load_raw_(torch.randn(4, p, p, dtype=torch.float64))
    psi = torch.randn(5, p, dtype=torch.float64)
    dense = factor.dense()
    cov = dense @ dense.transpose(-1, -2)
    explicit = torch.stack([torch.stack([psi[b] @ cov[j] @ psi[b] for j in range(4)])
                            for b in range(5)])
    torch.testing.assert_close(quadratic_forms(factor.factors(), psi), explicit, **TOL64)


@pytest.mark.parametrize("p,block", [(6, 64), (10, 4), (7, 1)])
def test_quadratic_forms_backward_is_autograds(p, block):
    """The written-out backward of the forms and of the strict parts' sum of squares (the KL's
    trace) against finite differences (gradcheck, float64)."""
    torch.manual_seed(0)
    factor = CholeskyFactor(3, p, 0.0, block=block).double()
    factor.load_raw_(torch.randn(3, p, p, dtype=torch.float64))
    psi = torch.randn(4, p, dtype=torch.float64, requires_grad=True)

    def forms_and_trace(psi, log_diag, tri, *rects):
        return _FactorQuadraticForms.apply(factor, psi, log_diag, tri, *rects)

    inputs = (psi, factor.log_diag, factor.tri, *factor.rect)
    assert torch.autograd.gradcheck(forms_and_trace, inputs)
    forms, strict_sq = forms_and_trace(*inputs)  # one output unused: its gradient is None
    grads = torch.autograd.grad(forms.sum(), inputs, retain_graph=True)
    assert grads[0] is not None and all(g is not None for g in grads)
    grads = torch.autograd.grad(strict_sq, inputs[2:])
    for g, t in zip(grads, inputs[2:], strict=True):
        torch.testing.assert_close(g, 2 * t, rtol=0, atol=0)


def test_initial_covariance_parameters_are_as_before():
    """The covariance factors start as they always did (raw = diag(log init_std)), and the saved
    weights still hold them as the raw (d, p, p) matrices `sigma_raw` and `gamma_raw`."""
    model = get_method("gpvae").build({}, net=NET, latent_dim=D, likelihood=GaussianLikelihood(0.1),
                                      num_train=1000, init_std=0.3)
    state = model.state_dict()
    expected = torch.diag_embed(torch.full((D, NET.hidden), math.log(0.3)))
    for name in ("sigma_raw", "gamma_raw"):
        assert torch.equal(state[name], expected), name
    assert not any(k.startswith(("sigma.", "gamma.")) for k in state)


def test_state_dict_round_trip_and_old_weights_load():
    model, other = make_gpvae(seed=0), make_gpvae(seed=1)
    other.load_state_dict(model.state_dict())
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    # weights saved before the packed layout: sigma_raw / gamma_raw with an arbitrary upper part
    old = {k: v.clone() for k, v in model.state_dict().items()}
    old["sigma_raw"] = old["sigma_raw"] + torch.randn_like(old["sigma_raw"]).triu(1)
    fresh = make_gpvae(seed=2)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.sigma_chol(), model.sigma_chol())
    assert torch.equal(fresh.gamma_chol(), model.gamma_chol())
    with pytest.raises(RuntimeError, match="sigma_raw"):
        fresh.load_state_dict({**old, "sigma_raw": old["sigma_raw"][:, 1:, 1:]})


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
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("shape,num_conv", [((1, 28, 28), 3), ((3, 32, 32), 3), ((3, 64, 64), 4)])
def test_networks_round_trip_image_shapes(shape, num_conv):
    net = NetConfig(shape, num_conv=num_conv, hidden=32)
    model = get_method("vae").build({}, net=net, latent_dim=4, likelihood=GaussianLikelihood(0.1),
                                    num_train=10)
    x = torch.rand(2, *shape)
    assert model.decoder(model.posterior(x).rsample()).shape == x.shape
    assert isinstance(model.posterior(x), Independent)


# ---- eqs. 12, 14 and 15 and their gradients against the per-dimension reference, in float64

REF_NET = NetConfig((1, 28, 28), num_conv=3, hidden=100)  # blocks of 16: six full, one of 4


def reference_elbo(model, x):
    """Eq. 14 one latent dimension at a time, from `reference_moments` (eq. 12 transcribed) and
    each L_j, M_j = LowerCholeskyTransform(raw_j): the averaged KL of eq. 15 with the same draws as
    GPVAE.elbo (z's noise first, then the log-scale samples) and KL(q(W,U)||N(0,I)) per j from
    the formed covariances (log det by slogdet)."""
    mean, var = model.reference_moments(x)
    eps_z = torch.randn_like(mean)
    eps_s = torch.randn(model.log_scale_samples, *mean.shape)  # as GPVAE.averaged_kl draws it
    b, c = model.base(x)
    ps = model.psi_s(x)
    to_chol = LowerCholeskyTransform()
    sigma_raw, gamma_raw = model.sigma.raw(), model.gamma.raw()
    p = ps.shape[-1]
    averaged_kl, weight_kl = 0.0, 0.0
    for j in range(model.latent_dim):
        sigma_chol, gamma_chol = to_chol(sigma_raw[j]), to_chol(gamma_raw[j])
        sigma, gamma = sigma_chol @ sigma_chol.T, gamma_chol @ gamma_chol.T
        scale_mean = c[:, j] + ps @ model.eta[j]
        var_h = ((ps @ gamma) * ps).sum(-1)
        scale = scale_mean + (var_h + VAR_EPS).sqrt() * eps_s[..., j]
        log_scale_sq = torch.log(scale ** 2 + 1e-20).mean(0)
        averaged_kl = averaged_kl + 0.5 * (var[:, j] + mean[:, j] ** 2 - 1 - log_scale_sq)
        for m, cov in ((model.mu[j], sigma), (model.eta[j], gamma)):
            weight_kl = weight_kl + 0.5 * (torch.trace(cov) + m @ m - p
                                           - torch.linalg.slogdet(cov).logabsdet)
    z = mean + var.sqrt() * eps_z
    return model.log_likelihood(x, z) - averaged_kl - weight_kl / model.num_train


def relative_error(got, want):
    """max |got - want| relative to max |want| (gradients have entries near zero)."""
    got, want = got.detach(), want.detach()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def test_eqs_12_14_15_and_gradients_match_the_per_dimension_reference_in_float64():
    torch.manual_seed(0)
    model = get_method("gpvae").build({}, net=REF_NET, latent_dim=5,
                                      likelihood=GaussianLikelihood(0.1, learned=True),
                                      num_train=1000, init_std=0.3).double()
    with torch.no_grad():
        model.mu.normal_(0, 0.3)
        model.eta.normal_(0, 0.05)
    perturb_factors(model, 0.1, 0.05)
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    params = [p for _, p in model.named_parameters()]

    mom = model.moments(x)  # eq. 12
    mean, var = model.reference_moments(x)
    assert relative_error(mom["mean"], mean) < 1e-9 and relative_error(mom["var"], var) < 1e-9

    torch.manual_seed(7)
    elbo = model.elbo(x)  # eq. 14 with eq. 15
    torch.manual_seed(7)
    ref = reference_elbo(model, x)
    assert relative_error(elbo, ref) < 1e-9
    grads = torch.autograd.grad(elbo.sum(), params)
    ref_grads = torch.autograd.grad(ref.sum(), params)
    names = [name for name, _ in model.named_parameters()]
    errors = {n: relative_error(g, r) for n, g, r in zip(names, grads, ref_grads, strict=True)}
    assert max(errors.values()) < 1e-9, errors
    # the covariance factors' gradients are not zero (the check would be empty)
    for name in ("sigma.rect.0", "sigma.tri", "sigma.log_diag", "gamma.rect.0", "gamma.tri"):
        assert grads[names.index(name)].abs().max() > 1e-6, name


def test_adam_steps_follow_the_per_dimension_reference_in_float64():
    """Training on the packed layout is training on the paper's parameters: five fused-Adam steps
    on GPVAE's loss and five on the per-dimension reference's (from the same start, the same
    draws) end at the same parameters (Adam is elementwise; the raw matrices' upper triangles,
    which the old layout also held, never had a gradient)."""
    def trained(loss_of):
        torch.manual_seed(0)
        model = get_method("gpvae").build({}, net=REF_NET, latent_dim=3,
                                          likelihood=GaussianLikelihood(0.1, learned=True),
                                          num_train=1000, init_std=0.3).double()
        perturb_factors(model, 0.1, 0.05)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
        torch.manual_seed(3)
        for _ in range(5):
            x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
            opt.zero_grad(set_to_none=True)
            loss_of(model, x).backward()
            opt.step()
        return model.state_dict()

    fast = trained(lambda model, x: model.loss(x))
    ref = trained(lambda model, x: -reference_elbo(model, x).mean())
    errors = {k: relative_error(fast[k], ref[k]) for k in fast}
    assert max(errors.values()) < 1e-9, errors
