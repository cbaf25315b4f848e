"""SA (semi-amortized VAE): k = 0 is the VAE, the SVI steps raise the ELBO on a fixed decoder,
training differentiates through the steps, and test-time inference runs them under no_grad."""

import math

import pytest
import torch
from torch import nn

from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood

NET = NetConfig((1, 4, 4), num_conv=1, hidden=16)  # 16 pixels: every check here is about the math
D = 2



class LinearDecoder(nn.Module):
    """g(z) = A z + b reshaped to the image; with the Gaussian likelihood, N(A z + b, s^2 I)."""

    def __init__(self, latent_dim, image_shape, scale=0.5):
        super().__init__()
        self.image_shape = image_shape
        self.linear = nn.Linear(latent_dim, math.prod(image_shape))
        with torch.no_grad():
            self.linear.weight.normal_(0, scale)
            self.linear.bias.normal_(0, scale)

    def forward(self, z):
        return self.linear(z).reshape(*z.shape[:-1], *self.image_shape)


def make_sa(k, seed=0, sigma=1.0, linear=False, **kwargs):
    torch.manual_seed(seed)
    model = get_method("sa").build({"k": k, **kwargs}, net=NET, latent_dim=D,
                                   likelihood=GaussianLikelihood(sigma), num_train=100)
    if linear:
        model.decoder = LinearDecoder(D, NET.image_shape)
    return model


def exact_linear_elbo(model, x, mean, std):
    """Closed-form ELBO of N(mean, diag std^2) under the linear-Gaussian decoder and N(0, I) prior:
    E_q log N(x; A z + b, s^2 I)
        = -D/2 log(2 pi s^2) - (|x - A m - b|^2 + sum_j std_j^2 |A_j|^2) / (2 s^2)."""
    a, b = model.decoder.linear.weight, model.decoder.linear.bias
    s2 = model.likelihood.sigma**2
    xf = x.reshape(x.shape[0], -1)
    resid = (xf - mean @ a.T - b).square().sum(-1)
    spread = (std.square() * a.square().sum(0)).sum(-1)
    expected_ll = -0.5 * xf.shape[-1] * math.log(2 * math.pi * s2) - (resid + spread) / (2 * s2)
    kl = 0.5 * (std.square() + mean.square() - 1 - 2 * std.log()).sum(-1)
    return expected_ll - kl


def test_k0_is_exactly_the_vae():
    torch.manual_seed(0)
    vae = get_method("vae").build({}, net=NET, latent_dim=D, likelihood=GaussianLikelihood(0.5),
                                  num_train=100)
    sa = make_sa(0, seed=1, sigma=0.5)
    sa.load_state_dict(vae.state_dict())  # strict: SA(0) has exactly the VAE's parameters
    x = torch.rand(8, *NET.image_shape)

    q_vae, q_sa = vae.posterior(x), sa.posterior(x)
    assert torch.equal(q_vae.mean, q_sa.mean) and torch.equal(q_vae.stddev, q_sa.stddev)
    torch.manual_seed(5)
    loss_vae = vae.loss(x)
    torch.manual_seed(5)
    loss_sa = sa.loss(x)
    assert torch.equal(loss_vae, loss_sa)
    loss_vae.backward()
    loss_sa.backward()
    for (name, p_vae), p_sa in zip(vae.named_parameters(), sa.parameters(), strict=True):
        assert torch.equal(p_vae.grad, p_sa.grad), name


@pytest.mark.parametrize("k", [1, 4])
def test_svi_steps_raise_the_elbo_on_a_fixed_linear_decoder(k):
    # Step 0.05 instead of 1e-3 so k steps move visibly; the ELBO's curvature in the mean is
    # A^T A / s^2 + I (largest eigenvalue ~ 16 * 0.25 + 1 = 5 here), so 0.05 is a stable step.
    model = make_sa(k, linear=True, step_size=0.05, max_grad_norm=None)
    torch.manual_seed(1)
    z_true = torch.randn(64, D)
    with torch.no_grad():
        x = model.decoder(z_true) + torch.randn(64, *NET.image_shape)
        mean0, std0 = model.encoder(x)
        mean_k, std_k = model.refine(x)
    before = exact_linear_elbo(model, x, mean0, std0)
    after = exact_linear_elbo(model, x, mean_k, std_k)
    # exact ELBOs of the refined q: only the steps' own sampling noise is random (seeded); the
    # average gain is tens of nats against per-example noise of a few, so no tolerance is needed
    assert after.mean() > before.mean()
    assert (after > before).float().mean() > 0.75


def test_training_backpropagates_through_the_unrolled_steps():
    # one step, no clipping, linear decoder:
    #   mean_1 = mean_0 + eta (A^T (x - A z - b) / s^2 - mean_0)
    # with z = mean_0 + std_0 eps, so d mean_1 / d mean_0 = I - eta (A^T A / s^2 + I) exactly
    # (create_graph=True); with the steps detached it would be the identity.
    model = make_sa(1, linear=True, step_size=0.05, max_grad_norm=None).double()
    x = torch.randn(1, *NET.image_shape, dtype=torch.float64)
    log_std0 = torch.full((1, D), -0.5, dtype=torch.float64)

    def refined_mean(mean0):
        torch.manual_seed(3)
        return model.svi_steps(x, mean0, log_std0, differentiable=True)[0]

    jac = torch.autograd.functional.jacobian(refined_mean, torch.zeros(1, D, dtype=torch.float64))
    a = model.decoder.linear.weight.detach()
    eye = torch.eye(D, dtype=torch.float64)
    expected = eye - 0.05 * (a.T @ a + eye)
    torch.testing.assert_close(jac[0, :, 0, :], expected, rtol=1e-10, atol=1e-12)

    # and the loss reaches the encoder and the decoder
    model.zero_grad()
    model.loss(torch.randn(4, *NET.image_shape, dtype=torch.float64)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_test_time_inference_runs_the_steps_under_no_grad():
    model = make_sa(2, sigma=0.5, step_size=0.05)
    x = torch.rand(6, *NET.image_shape)
    torch.manual_seed(7)
    with torch.no_grad():
        mean0, _ = model.encoder(x)
        q = model.posterior(x)
        z = model.infer(x)
        elbo = model.elbo(x)
    assert not q.mean.requires_grad and not z.requires_grad and not elbo.requires_grad
    assert not torch.allclose(q.mean, mean0)  # the steps ran
    assert z.shape == (6, D) and torch.isfinite(elbo).all()
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated on the weights

    # the no-grad path computes the same refinement as the differentiable one (same noise)
    torch.manual_seed(11)
    with torch.no_grad():
        q_eval = model.posterior(x)
    torch.manual_seed(11)
    q_train = model.posterior(x)
    assert q_train.mean.requires_grad
    torch.testing.assert_close(q_eval.mean, q_train.mean.detach())
    torch.testing.assert_close(q_eval.stddev, q_train.stddev.detach())


@pytest.mark.parametrize("parameterisation", ["log_var", "log_std"])
def test_gradient_clipping_bounds_each_step(parameterisation):
    model = make_sa(1, sigma=0.01, step_size=1.0, max_grad_norm=5.0,  # huge raw gradients
                    parameterisation=parameterisation)
    x = torch.rand(5, *NET.image_shape)
    with torch.no_grad():
        mean0, std0 = model.encoder(x)
        mean1, std1 = model.refine(x)
    # per example, each block moves by exactly step_size * max_grad_norm: the clip is active
    torch.testing.assert_close((mean1 - mean0).norm(dim=-1), torch.full((5,), 5.0))
    scale_step = (model.scale_of(std1) - model.scale_of(std0)).norm(dim=-1)
    torch.testing.assert_close(scale_step, torch.full((5,), 5.0), rtol=1e-4, atol=1e-4)


def test_batch_clip_scope_bounds_the_whole_batch_step():
    model = make_sa(1, sigma=0.01, step_size=1.0, max_grad_norm=5.0, clip_scope="batch")
    x = torch.rand(5, *NET.image_shape)
    with torch.no_grad():
        mean0, _ = model.encoder(x)
        mean1, _ = model.refine(x)
    torch.testing.assert_close((mean1 - mean0).norm(), torch.tensor(5.0))


def test_log_var_step_is_the_log_std_step_on_the_log_variance():
    # d ELBO / d log var = 1/2 d ELBO / d log std, so one unclipped log-var step of size 2 eta
    # moves log var by 2 eta * (1/2) g = eta g, i.e. log std by eta g / 2: half the log-std step
    x = torch.rand(3, *NET.image_shape)
    moved = {}
    for parameterisation, step in (("log_std", 0.01), ("log_var", 0.02)):
        model = make_sa(1, sigma=0.5, step_size=step, max_grad_norm=None,
                        parameterisation=parameterisation)
        torch.manual_seed(4)
        with torch.no_grad():
            _, std0 = model.encoder(x)
            _, std1 = model.refine(x)
        moved[parameterisation] = std1.log() - std0.log()
    torch.testing.assert_close(moved["log_var"], moved["log_std"] / 2, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    ({"step_size": 0.0}, "step_size"), ({"max_grad_norm": -1.0}, "max_grad_norm"),
    ({"clip_scope": "tensor"}, "clip_scope"), ({"parameterisation": "std"}, "parameterisation"),
])
def test_rejects_bad_svi_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        make_sa(1, **bad)


def test_rejects_negative_k():
    with pytest.raises(ValueError, match="k must be >= 0"):
        make_sa(-1)
