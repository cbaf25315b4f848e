"""VLAE: on a linear-Gaussian decoder one update gives the exact posterior; the Bernoulli update is
a GGN Newton step with precision I + J^T diag(p(1-p)) J; the forward-mode decoder Jacobian matches
autograd; the closed-form KL matches torch's. All in float64: tolerances are round-off level."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from methods import NetConfig, get_method
from methods.likelihoods import BernoulliLikelihood, GaussianLikelihood

NET = NetConfig((1, 4, 4), num_conv=1, hidden=16)
F64 = torch.float64
D = 3



class LinearDecoder(nn.Module):
    """g(z) = A z + b reshaped to the image."""

    def __init__(self, latent_dim, image_shape):
        super().__init__()
        self.image_shape = image_shape
        self.linear = nn.Linear(latent_dim, math.prod(image_shape))
        with torch.no_grad():
            self.linear.weight.normal_(0, 0.7)
            self.linear.bias.normal_(0, 0.5)

    def forward(self, z):
        return self.linear(z).reshape(*z.shape[:-1], *self.image_shape)


def make_vlae(t, likelihood, linear=True, seed=0, net=NET, **kwargs):
    torch.manual_seed(seed)
    model = get_method("vlae").build({"t": t, **kwargs}, net=net, latent_dim=D,
                                     likelihood=likelihood, num_train=100)
    if linear:
        model.decoder = LinearDecoder(D, net.image_shape)
    return model.double()


@pytest.mark.parametrize("t", [1, 2])
@pytest.mark.parametrize("sigma", [0.1, 0.7])
def test_linear_gaussian_decoder_gives_the_exact_posterior(t, sigma):
    # p(x|z) = N(A z + b, s^2 I), p(z) = N(0, I): p(z|x) = N(S A^T (x - b) / s^2, S),
    # S = (I + A^T A / s^2)^{-1}. One full update (update_lr = 1) from any start lands on it;
    # later ones stay there.
    model = make_vlae(t, GaussianLikelihood(sigma), update_lr=1.0)
    x = torch.rand(5, *NET.image_shape, dtype=F64)
    a, b = model.decoder.linear.weight.detach(), model.decoder.linear.bias.detach()
    precision = torch.eye(D, dtype=F64) + a.T @ a / sigma**2
    cov = torch.linalg.inv(precision)
    mean = (x.reshape(5, -1) - b) @ a @ cov / sigma**2  # cov symmetric
    with torch.no_grad():
        q = model.posterior(x)
    assert not torch.allclose(model.encoder(x), mean)  # the encoder alone is far from it
    torch.testing.assert_close(q.mean, mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(q.covariance_matrix, cov.expand(5, D, D), rtol=1e-10, atol=1e-12)


def test_bernoulli_update_is_a_ggn_newton_step():
    model = make_vlae(1, BernoulliLikelihood(), update_lr=1.0)
    x = torch.bernoulli(torch.full((2, *NET.image_shape), 0.4, dtype=F64))
    a = model.decoder.linear.weight.detach()
    with torch.no_grad():
        mu0 = model.encoder(x)
        q = model.posterior(x)
    for i in range(2):
        def log_joint(z, i=i):
            logits = model.decoder(z)
            return -nn.functional.binary_cross_entropy_with_logits(
                logits, x[i], reduction="sum") - 0.5 * z.square().sum()

        def ggn_precision(z):
            p = torch.sigmoid(model.decoder(z).reshape(-1))
            return torch.eye(D, dtype=F64) + a.T @ (a * (p * (1 - p))[:, None])

        z0 = mu0[i].clone().requires_grad_()
        grad = torch.autograd.grad(log_joint(z0), z0)[0]
        mu1 = mu0[i] + torch.linalg.solve(ggn_precision(mu0[i]), grad)
        torch.testing.assert_close(q.mean[i], mu1, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(q.precision_matrix[i], ggn_precision(mu1),
                                   rtol=1e-10, atol=1e-10)


def test_update_rate_damping():
    # r_t = update_lr / (t + 1): with update_lr = 0.5 the first update goes half way
    model = make_vlae(1, GaussianLikelihood(0.3))  # the default: the reference's 0.5
    assert model.update_lr == 0.5
    full = make_vlae(1, GaussianLikelihood(0.3), update_lr=1.0)
    x = torch.rand(3, *NET.image_shape, dtype=F64)
    with torch.no_grad():
        mu0 = model.encoder(x)
        half = model.posterior(x).mean
        exact = full.posterior(x).mean
    torch.testing.assert_close(half, 0.5 * (mu0 + exact), rtol=1e-10, atol=1e-10)


def test_decoder_jacobian_matches_autograd_on_the_conv_decoder():
    net = NetConfig((1, 8, 8), num_conv=2, hidden=16)
    model = make_vlae(2, GaussianLikelihood(0.1), linear=False, net=net)
    z = torch.randn(3, D, dtype=F64)
    out, jac = model.decoder_jacobian(z)
    assert out.shape == (3, 64) and jac.shape == (3, 64, D)
    for i in range(3):
        ref = torch.autograd.functional.jacobian(lambda v: model.decoder(v).reshape(-1), z[i])
        torch.testing.assert_close(jac[i], ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, model.decoder(z).reshape(3, -1))


def test_closed_form_kl_and_gradients_reach_both_networks():
    net = NetConfig((1, 8, 8), num_conv=2, hidden=16)
    model = make_vlae(2, GaussianLikelihood(0.2), linear=False, net=net)
    x = torch.rand(4, *net.image_shape, dtype=F64)
    torch.manual_seed(1)
    elbo = model.elbo(x)
    torch.manual_seed(1)
    q = model.posterior(x)
    prior = MultivariateNormal(torch.zeros(D, dtype=F64), torch.eye(D, dtype=F64))
    expected = model.log_likelihood(x, q.rsample()) - kl_divergence(q, prior)
    torch.testing.assert_close(elbo, expected)
    (-elbo.mean()).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    # the decoder's last bias shifts g but not its Jacobian; every weight matrix gets a gradient
    assert all(p.grad is not None for n, p in model.decoder.named_parameters() if "weight" in n)


def test_float32_precision_is_exactly_symmetric_with_large_jacobians():
    # J^T (W J) in float32 is not exactly symmetric; with Jacobian entries of a few units over 784
    # pixels (a CNN decoder a few epochs into training) the difference failed MultivariateNormal's
    # symmetry check and killed the run
    torch.manual_seed(0)
    net = NetConfig((1, 28, 28), num_conv=1, hidden=16)
    model = get_method("vlae").build({"t": 1}, net=net, latent_dim=50, likelihood=BernoulliLikelihood(),
                                     num_train=100)
    model.decoder = LinearDecoder(50, net.image_shape)
    with torch.no_grad():
        model.decoder.linear.weight.normal_(0, 3.0)
    x = torch.bernoulli(torch.full((32, *net.image_shape), 0.3))
    precision, _ = model.linearise(x, torch.randn(32, 50))
    assert precision.dtype == torch.float32 and torch.equal(precision, precision.mT)
    model.posterior(x).rsample()  # validates the precision matrix


def test_rejects_other_likelihoods():
    with pytest.raises(TypeError, match="Gaussian and Bernoulli"):
        get_method("vlae").build({"t": 2}, net=NET, latent_dim=D, likelihood=nn.Identity(),
                                 num_train=10)
