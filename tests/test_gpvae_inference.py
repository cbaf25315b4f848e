"""GPVAE's test-time fast path (packed, precomputed covariances) against the training-time
computation, and the cache's invalidation when parameters change."""

import pytest
import torch

from methods import NetConfig, get_method
from methods.gpvae import PackedQuadraticForms
from methods.likelihoods import GaussianLikelihood

# hidden 100 = one full block of 64 and a partial block of 36, so the block packing is exercised
NET = NetConfig((1, 28, 28), num_conv=3, hidden=100)
D = 4
# In float64 the two paths differ only in summation order: at most ~p^2 * 1.1e-16 relative to the
# sum of |terms|, ~1e-12 here, while any algebraic slip (a missing factor 2, a transposed block)
# changes results at O(1). 1e-9 sits far from both.
TOL64 = dict(rtol=1e-9, atol=1e-12)


def make_gpvae(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = get_method("gpvae").build({}, net=NET, latent_dim=D, likelihood=GaussianLikelihood(0.1),
                                      num_train=1000, init_std=0.3).to(dtype)
    with torch.no_grad():  # full, non-diagonal covariances and non-zero means
        model.mu.normal_(0, 0.3)
        model.eta.normal_(0, 0.05)
        for factor, scale in ((model.sigma, 0.1), (model.gamma, 0.05)):
            raw = factor.raw()
            factor.load_raw_(raw + torch.randn_like(raw).tril(-1) * scale)
    return model


def training_moments(model, x):
    with torch.enable_grad():
        return {k: v.detach() for k, v in model.moments(x).items()}


def test_packed_quadratic_forms_equal_explicit_covariance():
    torch.manual_seed(0)
    chol = torch.randn(3, 10, 10, dtype=torch.float64).tril()
    cov = chol @ chol.transpose(-1, -2)
    psi = torch.randn(5, 10, dtype=torch.float64)
    explicit = torch.einsum("bp,jpq,bq->bj", psi, cov, psi)
    for block in (1, 3, 4, 10, 64):  # partial last blocks, one block, blocks wider than p
        torch.testing.assert_close(PackedQuadraticForms(cov, block)(psi), explicit, **TOL64)


@torch.no_grad()
def test_fast_path_equals_training_computation():
    model = make_gpvae().eval()
    model.prepare_inference()
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    fast, slow = model.moments(x), training_moments(model, x)
    assert set(fast) == set(slow)
    for name in slow:
        torch.testing.assert_close(fast[name], slow[name], **TOL64)
    q = model.posterior(x)
    torch.testing.assert_close(q.variance, slow["var"], **TOL64)
    torch.testing.assert_close(model.uncertainty(x), (slow["var_f"] + slow["var_h"]).sum(-1), **TOL64)


def test_cache_is_rebuilt_after_an_optimizer_step():
    model = make_gpvae()
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = model.moments(x)["var"]
    cached = model._inference_cache
    assert cached is not None
    opt.zero_grad()
    model.loss(x).backward()
    opt.step()
    with torch.no_grad():
        after = model.moments(x)["var"]
    assert model._inference_cache is not cached
    torch.testing.assert_close(after, training_moments(model, x)["var"], **TOL64)
    assert not torch.allclose(after, before, rtol=1e-6, atol=0)  # Adam moved every covariance


@pytest.mark.parametrize("change", ["load_state_dict", "train_mode", "in_place"])
def test_cache_never_stale(change):
    model, other = make_gpvae(seed=0), make_gpvae(seed=1)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    model.eval()
    model.prepare_inference()
    with torch.no_grad():
        if change == "load_state_dict":
            model.load_state_dict(other.state_dict())
        elif change == "in_place":
            model.gamma.rect[0].mul_(1.5)  # one block of one factor
        else:
            model.sigma.tri.data = other.sigma.tri.data.clone()  # .data escapes the version count
            model.train()
            model.eval()
        fast = model.moments(x)
    slow = training_moments(model, x)
    for name in ("var_f", "var_h", "var"):
        torch.testing.assert_close(fast[name], slow[name], **TOL64)
