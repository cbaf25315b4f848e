"""ME and RME: mixture densities are normalised (2-D quadrature), weights sum to one, the
stratified ELBO estimator is unbiased, RME's schedule freezes and adds components as documented,
and RME's greedy stage never lowers the ELBO on a bimodal toy target."""

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood
from methods.me import GaussianMixture, stratified_elbo
from methods.rme import RME, stage_starts

NET = NetConfig((1, 4, 4), num_conv=1, hidden=8)  # tiny networks: the densities are the point
F64 = torch.float64



def build(name, m, latent_dim=2, seed=0, cls=None, **kwargs):
    torch.manual_seed(seed)
    args = dict(net=NET, latent_dim=latent_dim, likelihood=GaussianLikelihood(1.0), num_train=100)
    if cls is not None:
        return cls(**args, m=m, **kwargs)
    return get_method(name).build({"m": m, **kwargs}, **args)


def spread_rme(model):
    """Non-trivial RME weights: eps_s(x) = sigmoid(random features), not the ~0 initial value."""
    with torch.no_grad():
        for head in model.weight_heads:
            head.weight.normal_(0, 1.0)
            head.bias.zero_()
    return model


def grid_2d(half_width=9.0, n=361):
    axis = torch.linspace(-half_width, half_width, n, dtype=F64)
    zz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 1, 2)
    return zz, (axis[1] - axis[0]) ** 2


# ---------------------------------------------------------------- the mixture object itself


def test_mixture_log_prob_matches_torch_mixture_same_family():
    torch.manual_seed(0)
    logits, means, stds = torch.randn(4, 3), torch.randn(4, 3, 2), torch.rand(4, 3, 2) + 0.2
    ours = GaussianMixture(torch.log_softmax(logits, -1), means, stds)
    ref = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(means, stds), 1))
    z = torch.randn(5, 4, 2)
    torch.testing.assert_close(ours.log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(ours.mean, ref.mean)


def test_mixture_samples_follow_the_weights():
    weights = torch.tensor([[0.2, 0.3, 0.5]])
    means = torch.tensor([[[-10.0], [0.0], [10.0]]])
    q = GaussianMixture(weights.log(), means, torch.ones(1, 3, 1))
    torch.manual_seed(0)
    z = q.rsample((20000,))[:, 0, 0]
    assert z.shape == (20000,)
    freq = torch.stack([(z < -5).float().mean(), ((z > -5) & (z < 5)).float().mean(),
                        (z > 5).float().mean()])
    # binomial standard error <= sqrt(0.25 / 20000) = 0.0035; 0.015 is over 4 of them
    torch.testing.assert_close(freq, weights[0], rtol=0, atol=0.015)


def test_stratified_elbo_is_unbiased():
    # 1-D toy: log p(x, z) = log N(z; 1, 0.5^2) + const, q a fixed 2-component mixture.
    def log_joint(x, z):
        return Normal(1.0, 0.5).log_prob(z[..., 0]).to(F64) - 3.0

    q = GaussianMixture(torch.tensor([[0.3, 0.7]], dtype=F64).log(),
                        torch.tensor([[[-0.5], [1.2]]], dtype=F64),
                        torch.tensor([[[0.8], [0.4]]], dtype=F64))
    z = torch.linspace(-12, 12, 24001, dtype=F64).reshape(-1, 1, 1)
    log_q = q.log_prob(z)
    exact = (log_q.exp() * (log_joint(None, z) - log_q)).sum() * 0.001

    torch.manual_seed(0)
    n = 20000
    big = GaussianMixture(q.log_weights.expand(n, 2), q.components.mean.expand(n, 2, 1),
                          q.components.stddev.expand(n, 2, 1))
    draws = stratified_elbo(log_joint, None, big)
    se = draws.std() / math.sqrt(n)
    assert abs(draws.mean() - exact) < 5 * se  # unbiased up to Monte Carlo error


# ---------------------------------------------------------------- ME and RME as encoders


@pytest.mark.parametrize("name,m", [("me", 2), ("me", 4), ("rme", 2), ("rme", 3)])
def test_mixture_encoder_density_integrates_to_one(name, m):
    model = build(name, m).double()
    if name == "rme":
        spread_rme(model)
    x = torch.rand(2, *NET.image_shape, dtype=F64)
    zz, cell = grid_2d()
    with torch.no_grad():
        q = model.posterior(x)
        masses = q.log_prob(zz).exp().sum(0) * cell
    assert q.num_components == m
    # Riemann sum of Gaussians (stds ~0.5-1, means ~0) on a 0.05 grid over [-9, 9]^2: error and
    # tail mass are both far below 1e-6; 1e-5 leaves room for float64 summation of 130k terms.
    torch.testing.assert_close(masses, torch.ones(2, dtype=F64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["me", "rme"])
def test_mixing_weights_sum_to_one(name):
    model = build(name, 5).double()
    if name == "rme":
        spread_rme(model)
    x = torch.rand(7, *NET.image_shape, dtype=F64)
    with torch.no_grad():
        weights = model.posterior(x).weights
    assert weights.shape == (7, 5) and (weights > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(7, dtype=F64), rtol=0, atol=1e-12)


def test_rme_weights_are_the_recursive_products():
    model = spread_rme(build("rme", 3)).double()
    x = torch.rand(4, *NET.image_shape, dtype=F64)
    with torch.no_grad():
        weights = model.posterior(x).weights
        features = [model.components[j].forward_with_features(x)[2] for j in (1, 2)]
        eps = [torch.sigmoid(model.weight_heads[j](features[j]))[:, 0] for j in (0, 1)]
    expected = torch.stack([(1 - eps[0]) * (1 - eps[1]), eps[0] * (1 - eps[1]), eps[1]], -1)
    torch.testing.assert_close(weights, expected)


def test_new_rme_component_enters_with_weight_init_weight():
    model = build("rme", 3)
    with torch.no_grad():
        weights = model.posterior(torch.rand(2, *NET.image_shape)).weights
    torch.testing.assert_close(weights[:, 2], torch.full((2,), 0.01))
    torch.testing.assert_close(weights[:, 1], torch.full((2,), 0.01 * 0.99))


# ---------------------------------------------------------------- RME's schedule


def test_stage_starts():
    assert stage_starts(3, 100) == [0, 50, 75]  # component 0 alone for the first half
    assert stage_starts(5, 100) == [0, 50, 62, 75, 87]
    assert stage_starts(5, 6) == [0, 3, 3, 4, 5]  # components 1 and 2 join together
    assert stage_starts(5, 2) == [0, 1, 1, 1, 1]  # fewer epochs than components
    assert stage_starts(4, 1) == [0, 0, 0, 0]
    assert stage_starts(3, 100, first_stage=1 / 3) == [0, 33, 66]  # the equal split


def trainable_components(model):
    return [j for j, c in enumerate(model.components)
            if all(p.requires_grad for p in c.parameters())]


def test_rme_schedule_freezes_earlier_components():
    model = build("rme", 3)
    assert int(model.num_active) == 3 and trainable_components(model) == [0, 1, 2]  # no hook yet
    seen = []
    for epoch in range(6):
        model.on_epoch_start(epoch, 6)
        seen.append((int(model.num_active), trainable_components(model)))
        frozen_heads = [not any(p.requires_grad for p in h.parameters())
                        for h in model.weight_heads]
        assert frozen_heads == [j not in model.trainable for j in (1, 2)]
        assert all(p.requires_grad for p in model.decoder.parameters())
    assert seen == [(1, [0]), (1, [0]), (1, [0]), (2, [1]), (3, [2]), (3, [2])]


def test_rme_with_fewer_epochs_than_components_trains_every_component():
    model = build("rme", 5)
    model.on_epoch_start(0, 2)
    assert int(model.num_active) == 1 and trainable_components(model) == [0]
    model.on_epoch_start(1, 2)
    assert int(model.num_active) == 5 and trainable_components(model) == [1, 2, 3, 4]
    model = build("rme", 5)
    model.on_epoch_start(0, 1)
    assert int(model.num_active) == 5 and trainable_components(model) == [0, 1, 2, 3, 4]


def test_warm_start_copies_the_latest_component_once():
    model = build("rme", 3).double()
    model.on_epoch_start(0, 4)  # starts [0, 2, 3]
    with torch.no_grad():  # stand-in for training component 0
        for p in model.components[0].parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.rand(2, *NET.image_shape, dtype=F64)
    zz, _ = grid_2d(n=41)
    with torch.no_grad():
        before = model.posterior(x).log_prob(zz)
    model.on_epoch_start(2, 4)
    for p, q in zip(model.components[0].parameters(), model.components[1].parameters(),
                    strict=True):
        assert torch.equal(p, q)
    with torch.no_grad():
        after = model.posterior(x).log_prob(zz)
    # (1 - eps) h_0 + eps h_0 = h_0: the first greedy stage starts exactly at the old mixture
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)

    with torch.no_grad():
        for p in model.components[1].parameters():
            p.add_(1.0)
    snapshot = [p.clone() for p in model.components[1].parameters()]
    model.on_epoch_start(2, 4)  # the same epoch again (a resumed run): no second copy
    assert all(torch.equal(p, q) for p, q in zip(snapshot, model.components[1].parameters(),
                                                 strict=True))


def test_rescaled_gradients_are_the_elbo_gradients_divided_by_the_weights():
    # one example, same noise: the gradient of component 1's output head is the plain ELBO
    # gradient / alpha_1(x), and the gradient of eps_1's head is the plain one / (eps (1 - eps)).
    x = torch.rand(1, *NET.image_shape, dtype=F64)
    grads = {}
    for rescale in (False, True):
        model = build("rme", 2, rescale_gradients=rescale).double()
        model.on_epoch_start(1, 2)
        with torch.no_grad():
            model.weight_heads[0].bias.fill_(-1.0)  # eps = sigmoid(-1) ~ 0.27
        torch.manual_seed(3)
        model.loss(x).backward()
        grads[rescale] = (model.components[1].head.weight.grad.clone(),
                          model.weight_heads[0].bias.grad.clone())
        eps = torch.sigmoid(torch.tensor(-1.0, dtype=F64))
    torch.testing.assert_close(grads[True][0], grads[False][0] / eps)
    torch.testing.assert_close(grads[True][1], grads[False][1] / (eps * (1 - eps)))


def test_rme_active_components_are_in_the_state_dict():
    model = build("rme", 4)
    model.on_epoch_start(2, 4)  # starts [0, 2, 2, 3]
    model.on_epoch_start(0, 4)  # a restart of the schedule shrinks the mixture again
    model.on_epoch_start(2, 4)
    state = model.state_dict()
    assert int(state["num_active"]) == 3
    other = build("rme", 4, seed=1)
    other.load_state_dict(state)
    assert int(other.num_active) == 3
    assert other.posterior(torch.rand(3, *NET.image_shape)).num_components == 3


# ---------------------------------------------------------------- RME's greedy step on a toy


class BimodalRME(RME):
    """log p(x, z) := log(0.5 N(z; -3, 0.6^2) + 0.5 N(z; 3, 0.6^2)) for every x (normalised, so
    the ELBO is -KL(q || p) <= 0: one Gaussian reaches at best about -log 2, two about 0)."""

    def log_joint(self, x, z):
        comps = Normal(torch.tensor([-3.0, 3.0], dtype=z.dtype), 0.6)
        return torch.logsumexp(comps.log_prob(z) + math.log(0.5), -1)


def exact_elbo(model, x):
    """ELBO of the model's q(z|x) for the toy target by quadrature on a 1-D grid."""
    z = torch.linspace(-15, 15, 6001).reshape(-1, 1, 1)
    with torch.no_grad():
        log_q = model.posterior(x[:1]).log_prob(z)
        return ((log_q.exp() * (model.log_joint(None, z) - log_q)).sum() * 0.005).item()


def fit(model, opt, x, steps):
    for _ in range(steps):
        loss = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def test_rme_greedy_stage_never_decreases_the_objective():
    # a randomly initialised new component (warm_start=False), so the stage has to find the
    # second mode by itself; with the default warm start the copy sits on the first mode
    model = build("rme", 2, latent_dim=1, cls=BimodalRME, warm_start=False)
    x = torch.rand(1, *NET.image_shape).expand(64, -1, -1, -1)  # 64 Monte Carlo draws per step
    opt = torch.optim.Adam(model.parameters(), lr=0.02)  # one optimiser, as the trainer does

    model.on_epoch_start(0, 2)  # stage 1: component 0 alone (a VAE encoder)
    fit(model, opt, x, 300)
    single = exact_elbo(model, x)
    assert -0.9 < single < -0.6  # one Gaussian on one mode: ~ -log 2

    model.on_epoch_start(1, 2)  # stage 2: component 1 added with weight 0.01, component 0 frozen
    frozen = [p.detach().clone() for p in model.components[0].parameters()]
    enlarged_at_start = exact_elbo(model, x)
    fit(model, opt, x, 300)
    after = exact_elbo(model, x)

    assert all(torch.equal(p, q) for p, q in zip(frozen, model.components[0].parameters(),
                                                 strict=True))
    assert after >= single and after >= enlarged_at_start
    assert after > -0.2  # and it did find the second mode (exact ELBOs, deterministic seeds)
