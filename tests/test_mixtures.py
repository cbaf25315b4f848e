"""ME and RME: mixture densities are normalised (2-D quadrature), weights sum to one, the
stratified ELBO estimator is unbiased, RME's schedule freezes and adds components as documented
and tells the trainer when the model is complete, RME's component criterion is bounded and routed
to the right parameters, and on a target with a known bimodal posterior RME(2) puts a component
with real weight on each mode and beats a single Gaussian's ELBO."""

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from benchmark.train import copy_optimizer_state, train
from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood
from methods.me import GaussianMixture, stratified_elbo
from methods.rme import (
    MIN_SCALED_WEIGHT,
    RME,
    capped_divergence,
    precondition_logit,
    stage_starts,
)

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
            head.weight.normal_(0, 1.0 / model.weight_rate)  # logits ~ N(0, |features|^2)
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


def test_stratified_elbo_gradients_match_quadrature():
    """The estimator's gradients in the mixing logits, the means and the stds (each example its own
    copy of the parameters, so each draw's gradient is a separate sample) average to the gradient
    of the exact mixture ELBO, computed by quadrature on a 1-D grid and differentiated by autograd.
    Same 1-D target and mixture as the value test above."""
    target = Normal(torch.tensor(1.0, dtype=F64), torch.tensor(0.5, dtype=F64))

    def log_joint(x, z):
        return target.log_prob(z[..., 0]) - 3.0

    logits = torch.tensor([0.3, 0.7], dtype=F64).log()
    means = torch.tensor([[-0.5], [1.2]], dtype=F64)
    stds = torch.tensor([[0.8], [0.4]], dtype=F64)

    leaves = [t.clone().requires_grad_() for t in (logits, means, stds)]
    q = GaussianMixture(torch.log_softmax(leaves[0], -1)[None], leaves[1][None], leaves[2][None])
    z = torch.linspace(-12, 12, 24001, dtype=F64).reshape(-1, 1, 1)
    log_q = q.log_prob(z)
    exact_value = (log_q.exp() * (log_joint(None, z) - log_q)).sum() * 0.001
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(exact_value, leaves)])

    torch.manual_seed(0)
    n = 20000
    copies = [t.expand(n, *t.shape).clone().requires_grad_() for t in (logits, means, stds)]
    q = GaussianMixture(torch.log_softmax(copies[0], -1), copies[1], copies[2])
    stratified_elbo(log_joint, None, q).sum().backward()
    per_draw = torch.cat([c.grad.reshape(n, -1) for c in copies], 1)  # (n, 6): one row a draw
    mc, se = per_draw.mean(0), per_draw.std(0) / math.sqrt(n)

    names = ["logit_0", "logit_1", "mean_0", "mean_1", "std_0", "std_1"]
    for name, e, m, s in zip(names, exact.tolist(), mc.tolist(), se.tolist(), strict=True):
        assert abs(m - e) < 5 * s, f"d ELBO / d {name}: {m:.4f} +- {s:.4f} vs quadrature {e:.4f}"
    # softmax invariance: every draw's logit gradients sum to zero, as the exact ones do
    assert per_draw[:, :2].sum(1).abs().max() < 1e-10 and abs(exact[:2].sum()) < 1e-10
    assert (exact.abs() > 20 * se).sum() >= 4  # the gradients are far from zero: the test has teeth


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
        eps = [torch.sigmoid(model.weight_rate * model.weight_heads[j](features[j]))[:, 0]
               for j in (0, 1)]
    expected = torch.stack([(1 - eps[0]) * (1 - eps[1]), eps[0] * (1 - eps[1]), eps[1]], -1)
    torch.testing.assert_close(weights, expected)


@pytest.mark.parametrize("init", [0.5, 0.01])  # the default, and a component entering at ~0
def test_new_rme_component_enters_with_weight_init_weight(init):
    model = build("rme", 3, init_weight=init)
    assert build("rme", 3).weight_heads[0].bias.item() == 0.0  # default 0.5: logit 0
    with torch.no_grad():
        weights = model.posterior(torch.rand(2, *NET.image_shape)).weights
    torch.testing.assert_close(weights[:, 2], torch.full((2,), init))
    torch.testing.assert_close(weights[:, 1], torch.full((2,), init * (1 - init)))


# ---------------------------------------------------------------- RME's schedule


def test_stage_starts():
    assert stage_starts(3, 100) == [0, 50, 75]  # component 0 alone for the first half
    assert stage_starts(5, 100) == [0, 50, 62, 75, 87]
    assert stage_starts(5, 6) == [0, 3, 3, 4, 5]  # components 1 and 2 join together
    assert stage_starts(5, 2) == [0, 1, 1, 1, 1]  # fewer epochs than components
    assert stage_starts(4, 1) == [0, 0, 0, 0]
    assert stage_starts(3, 100, first_stage=1 / 3) == [0, 33, 66]  # the equal split
    assert stage_starts(2, 100) == [0, 50] and stage_starts(2, 5) == [0, 2]  # paper / quick


def trainable_components(model):
    return [j for j, c in enumerate(model.components)
            if all(p.requires_grad for p in c.parameters())]


def test_rme_schedule_refines_or_freezes_earlier_components():
    model = build("rme", 3)
    assert int(model.num_active) == 3 and trainable_components(model) == [0, 1, 2]  # no hook yet
    seen = []
    for epoch in range(6):
        model.on_epoch_start(epoch, 6)
        seen.append((int(model.num_active), list(model.trainable), list(model.refining)))
        assert trainable_components(model) == list(range(int(model.num_active)))
    # the newest component trains on its criterion, the earlier ones on the mixture's ELBO
    assert seen == [(1, [0], []), (1, [0], []), (1, [0], []), (2, [1], [0]), (3, [2], [0, 1]),
                    (3, [2], [0, 1])]
    model = build("rme", 3, refine_previous=False)
    seen = []
    for epoch in range(6):
        model.on_epoch_start(epoch, 6)
        assert model.refining == ()
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
    assert int(model.num_active) == 5 and model.trainable == (1, 2, 3, 4)
    model = build("rme", 5)
    model.on_epoch_start(0, 1)
    assert int(model.num_active) == 5 and trainable_components(model) == [0, 1, 2, 3, 4]


def test_rme_is_complete_once_its_last_component_has_joined():
    model = build("rme", 3)  # starts [0, 50, 75] over 100 epochs, [0, 2, 3] over 5
    assert [model.model_complete(e, 100) for e in (0, 49, 50, 74)] == [False] * 4
    assert model.model_complete(75, 100) and model.model_complete(99, 100)
    assert [model.model_complete(e, 5) for e in range(5)] == [False, False, False, True, True]
    assert build("rme", 1).model_complete(0, 100)  # one component: complete from the start
    assert build("me", 2).model_complete(0, 100)  # the protocol's default: always


def test_trainer_neither_stops_nor_selects_before_the_last_stage(monkeypatch):
    # 8 epochs, starts [0, 4]. Scripted validation ELBOs fall from the first epoch on: with
    # patience 1 a plain run would stop after epoch 2 and keep epoch 1, a one-component model.
    model = build("rme", 2)
    script = [0.0, -1.0, -2.0, -3.0, -5.0, -4.0, -6.0, -7.0]
    real_elbo = model.elbo

    def scripted_elbo(x):
        return real_elbo(x) if model.training else torch.full((len(x),), script.pop(0))

    monkeypatch.setattr(model, "elbo", scripted_elbo)
    images = torch.rand(12, *NET.image_shape, generator=torch.Generator().manual_seed(0))
    result = train(model, images[:8], images[8:], to_input=lambda t: t, epochs=8, batch_size=4,
                   lr=1e-3, eval_batch_size=4, patience=1, seed=0)
    # epochs 1-4 (stage 0) neither best nor a stop; epoch 5 is the first candidate, 6 the best,
    # 7 is one epoch without improvement: stop
    assert result["epochs_run"] == 7 and result["best_epoch"] == 6
    assert result["best_val_elbo"] == -4.0
    assert int(model.num_active) == 2  # the restored weights are a two-component mixture


def test_mixing_weights_helper():
    model = spread_rme(build("rme", 3)).double()
    x = torch.rand(5, *NET.image_shape, dtype=F64)
    model.on_epoch_start(2, 4)  # starts [0, 2, 3]: two components in the mixture
    weights = model.mixing_weights(x)
    assert weights.shape == (5, 3) and not weights.requires_grad
    torch.testing.assert_close(weights[:, :2], model.posterior(x).weights.detach())
    assert (weights[:, 2] == 0).all() and (weights[:, :2] > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, dtype=F64))
    means = model.diagnostics(x)
    assert sorted(means) == ["weight_0", "weight_1", "weight_2"] and means["weight_2"] == 0
    assert means["weight_1"] == pytest.approx(weights[:, 1].mean().item())


def test_warm_start_copies_the_latest_component_once():
    model = build("rme", 3, warm_start=True).double()
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
    # (1 - eps) h_0 + eps h_0 = h_0: the stage starts exactly at the old mixture
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)

    with torch.no_grad():
        for p in model.components[1].parameters():
            p.add_(1.0)
    snapshot = [p.clone() for p in model.components[1].parameters()]
    model.on_epoch_start(2, 4)  # the same epoch again (a resumed run): no second copy
    assert all(torch.equal(p, q) for p, q in zip(snapshot, model.components[1].parameters(),
                                                 strict=True))


def test_rme_without_warm_start_gets_a_fresh_component():
    model = build("rme", 2, warm_start="none")
    model.on_epoch_start(0, 2)
    model.on_epoch_start(1, 2)
    assert not torch.equal(model.components[0].head.weight, model.components[1].head.weight)


def test_trunk_warm_start_copies_the_trunk_and_keeps_a_fresh_head():
    model = build("rme", 2, warm_start="trunk")
    model.on_epoch_start(0, 2)
    model.on_epoch_start(1, 2)
    for p, q in zip(model.components[0].trunk.parameters(), model.components[1].trunk.parameters(),
                    strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(model.components[0].head.weight, model.components[1].head.weight)


def test_rme_rejects_an_unknown_warm_start():
    with pytest.raises(ValueError, match="warm_start"):
        build("rme", 2, warm_start="head")


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


# ---------------------------------------------------------------- RME's component criterion


@pytest.mark.parametrize("kwargs", [
    {"divergence_weight": -0.1}, {"divergence_weight": 1.5}, {"divergence_weight": math.nan},
    {"divergence_cap": 0.0}, {"divergence_cap": -1.0}, {"divergence_cap": math.inf},
    {"divergence_cap": math.nan},
])
def test_rme_rejects_an_unbounded_trade_off(kwargs):
    with pytest.raises(ValueError, match="divergence_"):
        build("rme", 2, **kwargs)


def test_rme_default_trade_off():
    model = build("rme", 2)
    assert model.divergence_weight == 0.5 and model.divergence_cap == 2.0
    assert get_method("rme").settings({"m": 2})["divergence_weight"] == 0.5  # in the config hash


def kl_by_quadrature(log_h, log_m, z, dz):
    return (log_h.exp() * (log_h - log_m)).sum().item() * dz


def test_capped_divergence_is_the_kl_to_the_smoothed_mixture_and_at_most_the_cap():
    z = torch.linspace(-30, 40, 70001, dtype=F64)
    dz = (z[1] - z[0]).item()
    h, q = Normal(torch.tensor(0.0, dtype=F64), 1.0), Normal(torch.tensor(0.7, dtype=F64), 1.3)
    log_h, log_q = h.log_prob(z), q.log_prob(z)
    for cap in (2.0, 20.0):
        beta = math.exp(-cap)
        log_m = torch.logaddexp(log_q + math.log1p(-beta), log_h + math.log(beta))
        expected = kl_by_quadrature(log_h, log_m, z, dz)  # KL(h || (1 - b) q + b h), b = e^-cap
        got = (log_h.exp() * capped_divergence(log_h, log_q, cap)).sum().item() * dz
        assert got == pytest.approx(expected, abs=1e-9)
    # overlapping densities: with a 20-nat cap it is KL(h || q) itself
    assert got == pytest.approx(kl_by_quadrature(log_h, log_q, z, dz), abs=1e-6)
    # far apart: the KL is 50 nats, the capped divergence stops at the cap; every sample <= cap
    far = Normal(torch.tensor(10.0, dtype=F64), 1.0).log_prob(z)
    assert kl_by_quadrature(far, log_q, z, dz) > 25
    capped = capped_divergence(far, log_q, 5.0)
    assert (capped <= 5.0 + 1e-12).all()
    assert 4.9 < (far.exp() * capped).sum().item() * dz <= 5.0


def stage_one_gradients(model, x, seed=3):
    model.on_epoch_start(1, 2)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    model.loss(x).backward()
    return {name: (None if p.grad is None else p.grad.clone())
            for name, p in model.named_parameters()}


def test_rme_gradient_routing():
    x = torch.rand(3, *NET.image_shape, dtype=F64)
    grads = {}
    for lam in (0.0, 1.0):
        for bias in (-20.0, 0.0):
            model = build("rme", 2, divergence_weight=lam).double()
            with torch.no_grad():
                model.weight_heads[0].bias.fill_(bias / model.weight_rate)  # logit `bias`
            grads[lam, bias] = stage_one_gradients(model, x)
    g = grads[1.0, 0.0]
    assert all(g[n] is not None for n in g)  # component 0 is refined (refine_previous)
    frozen = stage_one_gradients(build("rme", 2, refine_previous=False).double(), x)
    assert all(frozen[n] is None for n in frozen if n.startswith("components.0."))
    assert all(frozen[n] is not None for n in frozen if not n.startswith("components.0."))
    same = lambda a, b, prefix: all(torch.allclose(a[n], b[n], rtol=1e-9, atol=1e-12)  # noqa: E731
                                    for n in a if n.startswith(prefix))
    # the divergence term reaches the new component only: the decoder and the weight head
    # follow the mixture's ELBO whatever lam is
    assert same(grads[0.0, 0.0], g, "decoder.") and same(grads[0.0, 0.0], g, "weight_heads.")
    assert same(grads[0.0, 0.0], g, "components.0.")  # the earlier one follows the mixture ELBO
    assert not same(grads[0.0, 0.0], g, "components.1.")
    # the new component trains on its criterion at full strength whatever its weight
    # (eps = sigmoid(-20) ~ 2e-9 or 1/2); the decoder does see the weight
    assert same(grads[1.0, -20.0], g, "components.1.")
    assert not same(grads[1.0, -20.0], g, "decoder.")


def objective_gradients(model, x, seed):
    """Each part's gradient of minus its own objective (module docstring), one objective at a time:
    the mixture ELBO (decoder and learning weight heads; z held, log q's weights held), C_j for the
    training component, alpha_j E_{h_j}[log p - log q] by its path derivative for refined ones."""
    n = int(model.num_active)
    torch.manual_seed(seed)
    means, stds, prefix = model._parts(x)
    noise = torch.randn(n, *means[0].shape, dtype=means[0].dtype)  # the draw loss() makes next
    z = [means[j] + stds[j] * noise[j] for j in range(n)]
    fixed_means, fixed_stds = torch.stack(means, -2).detach(), torch.stack(stds, -2).detach()
    held = GaussianMixture(prefix[-1].detach(), fixed_means, fixed_stds)
    weights = prefix[-1].exp()  # (B, n), live
    grads = {}

    def collect(objective, named):
        named = [(name, p) for name, p in named if p.requires_grad]
        for (name, _), g in zip(named, torch.autograd.grad(-objective.mean(), [p for _, p in named],
                                                           retain_graph=True, allow_unused=True),
                                strict=True):
            grads[name] = g

    z_held = torch.stack(z).detach()
    mixture = (weights.T * (model.log_joint(x, z_held) - held.log_prob(z_held))).sum(0)
    collect(mixture, [(n_, p) for n_, p in model.named_parameters()
                      if n_.startswith(("decoder.", "weight_heads."))])
    for j in range(n):
        named = [(f"components.{j}.{n_}", p) for n_, p in model.components[j].named_parameters()]
        log_p = model.log_joint(x, z[j].unsqueeze(0))[0]
        if j in model.trainable:
            log_h = Normal(means[j], stds[j]).log_prob(z[j]).sum(-1)
            objective = log_p - log_h
            if j > 0:
                reference = GaussianMixture(prefix[j - 1].detach(), fixed_means[:, :j],
                                            fixed_stds[:, :j])
                objective = objective + model.divergence_weight * capped_divergence(
                    log_h, reference.log_prob(z[j]), model.divergence_cap)
        elif j in model.refining:
            objective = weights[:, j].detach() * (log_p - held.log_prob(z[j]))
        else:
            continue
        collect(objective, named)
    return grads


@pytest.mark.parametrize("refine", [True, False])
def test_rme_loss_gives_each_part_the_gradient_of_its_own_objective(refine):
    # the loss's one backward pass against each objective's gradient taken separately
    model = spread_rme(build("rme", 3, precondition_weights=False, divergence_weight=0.7,
                             refine_previous=refine)).double()
    model.on_epoch_start(2, 3)  # starts [0, 1, 2]: component 2 training, 0 and 1 refined or frozen
    x = torch.rand(5, *NET.image_shape, dtype=F64)
    expected = objective_gradients(model, x, seed=4)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(4)
    model.loss(x).backward()
    got = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert set(got) == {name for name, g in expected.items() if g is not None}
    assert any(name.startswith("weight_heads.0.") for name in got) == refine  # an earlier weight
    for name, g in got.items():
        torch.testing.assert_close(g, expected[name], rtol=1e-9, atol=1e-12, msg=name)


def test_a_training_component_below_the_smallest_scaled_weight_keeps_its_whole_criterion():
    # alpha_1 = e^-57.5 ~ 1e-25 < MIN_SCALED_WEIGHT: the component's criterion C_1 is scaled as a
    # whole by alpha_1 / MIN, log p's part (through z) and the rest (-log h, lam D) alike
    model = build("rme", 2, precondition_weights=False).double()
    model.on_epoch_start(1, 2)
    with torch.no_grad():
        model.weight_heads[0].bias.fill_(-57.5 / model.weight_rate)
    x = torch.rand(1, *NET.image_shape, dtype=F64)
    expected = objective_gradients(model, x, seed=5)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    model.loss(x).backward()
    restore = model.mixing_weights(x)[0, 1].item() / MIN_SCALED_WEIGHT
    assert 1e-7 < restore < 1e-3
    for name, p in model.components[1].named_parameters():
        torch.testing.assert_close(p.grad, restore * expected[f"components.1.{name}"],
                                   rtol=1e-7, atol=0, msg=name)


def test_earlier_weights_learn_only_with_refine_weights():
    x = torch.rand(4, *NET.image_shape, dtype=F64)
    for refine_weights in (True, False):
        model = spread_rme(build("rme", 3, refine_weights=refine_weights)).double()
        model.on_epoch_start(2, 3)  # component 2 training, 0 and 1 refined
        model.loss(x).backward()
        assert (model.weight_heads[0].bias.grad is not None) == refine_weights  # component 1's
        assert model.weight_heads[1].bias.grad is not None  # the newcomer's weight always learns
        assert model.components[1].head.bias.grad is not None  # the component itself is refined


def test_weight_rate_scales_the_logits_not_the_initial_weights():
    x = torch.rand(4, *NET.image_shape, dtype=F64)
    weights = {rate: build("rme", 3, weight_rate=rate, init_weight=0.3).double().mixing_weights(x)
               for rate in (1.0, 0.1)}
    torch.testing.assert_close(weights[0.1], weights[1.0])  # same model at the start
    slow = build("rme", 2, weight_rate=0.1)
    with torch.no_grad():
        slow.weight_heads[0].bias.add_(1.0)  # one unit of the head's output: 0.1 of logit
    eps = slow.mixing_weights(torch.rand(2, *NET.image_shape))[:, 1]
    torch.testing.assert_close(eps, torch.sigmoid(torch.tensor(0.1)).expand(2), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="weight_rate"):
        build("rme", 2, weight_rate=0.0)


def test_refined_component_follows_the_mixture_elbo_gradient():
    # component 0 (joined earlier) gets the path derivative of alpha_0 E_{h_0}[log p - log q]: in
    # expectation the gradient of the mixture's ELBO with respect to its parameters (the dropped
    # term through q's parameters at fixed z has expectation zero)
    model = spread_rme(build("rme", 2)).double()
    model.on_epoch_start(1, 2)  # component 1 trains on its criterion, component 0 is refined
    x = torch.rand(1, *NET.image_shape, dtype=F64).expand(20000, -1, -1, -1)
    bias = model.components[0].head.bias
    torch.manual_seed(0)
    ours = torch.autograd.grad(model.loss(x), bias)[0]
    torch.manual_seed(1)
    full = torch.autograd.grad(-model.elbo(x).mean(), bias)[0]  # every term, score included
    torch.testing.assert_close(ours, full, rtol=0.1, atol=0.02 * full.abs().max().item())


def test_warm_start_hands_the_optimiser_state_on_once():
    model = build("rme", 3)
    model.on_epoch_start(0, 4)
    assert model.take_optimizer_state_copies() == []  # starts [0, 2, 3]: nobody joins yet
    model.on_epoch_start(2, 4)
    pairs = model.take_optimizer_state_copies()
    assert [(a.shape, b.shape) for a, b in pairs] == [
        (a.shape, b.shape) for a, b in zip(model.components[0].parameters(),
                                           model.components[1].parameters(), strict=True)]
    assert all(a is p for (a, _), p in zip(pairs, model.components[0].parameters(), strict=True))
    assert model.take_optimizer_state_copies() == []  # once
    quiet = build("rme", 3, inherit_optimizer_state=False)
    quiet.on_epoch_start(0, 4)
    quiet.on_epoch_start(2, 4)
    assert quiet.take_optimizer_state_copies() == []


def test_copy_optimizer_state_gives_the_target_the_sources_adam_moments():
    source, target = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([source, target], lr=0.1)
    for g in (torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 0.5, -1.0])):
        source.grad = g.clone()
        opt.step()
    assert copy_optimizer_state(opt, [(source, target)]) == 1
    for name in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(opt.state[target][name], opt.state[source][name])
        assert opt.state[target][name] is not opt.state[source][name]  # a copy, not shared
    with torch.no_grad():
        target.copy_(source)
    source.grad = torch.tensor([0.1, 0.2, 0.3])
    target.grad = source.grad.clone()
    opt.step()  # with the same moments and gradient both take the same step (not Adam's first)
    torch.testing.assert_close(target, source)
    fresh = torch.nn.Parameter(torch.ones(3))
    assert copy_optimizer_state(torch.optim.Adam([fresh]), [(fresh, source)]) == 0  # no state


def test_preconditioned_weight_gradient_is_the_elbo_gradient_over_eps_one_minus_eps():
    x = torch.rand(1, *NET.image_shape, dtype=F64)
    grads = {}
    for precondition in (False, True):
        model = build("rme", 2, precondition_weights=precondition).double()
        with torch.no_grad():
            model.weight_heads[0].bias.fill_(-1.0 / model.weight_rate)  # eps = sigmoid(-1) ~ 0.27
        grads[precondition] = stage_one_gradients(model, x)
    eps = torch.sigmoid(torch.tensor(-1.0, dtype=F64))
    torch.testing.assert_close(grads[True]["weight_heads.0.bias"],
                               grads[False]["weight_heads.0.bias"] / (eps * (1 - eps)))
    for name in ("components.1.head.weight", "decoder.fc.0.weight"):  # the rest is unchanged
        torch.testing.assert_close(grads[True][name], grads[False][name])


def test_weight_gradient_is_d_elbo_d_eps_unclipped():
    # per example d loss / d logit * 1 / (eps (1 - eps)) = d loss / d eps, whatever its size: a
    # per-example clip biased the weights' gradient (measured on MNIST: it pointed the other way
    # from the mixture ELBO's finite difference, and the new component's weight fell to ~1e-8)
    logit = torch.tensor([[-1.0], [0.0], [-8.0], [3.0]], dtype=F64, requires_grad=True)
    upstream = torch.tensor([[0.1], [-0.8], [1e-4], [-5.0]], dtype=F64)
    precondition_logit(logit).backward(upstream)
    eps = torch.sigmoid(logit.detach())
    torch.testing.assert_close(logit.grad, upstream / (eps * (1 - eps)))


def test_rme_loss_is_minus_the_mixture_elbo_in_value():
    model = spread_rme(build("rme", 3)).double()
    x = torch.rand(1, *NET.image_shape, dtype=F64).expand(4000, -1, -1, -1)  # 4000 draws
    model.on_epoch_start(2, 3)  # starts [0, 1, 2]: components 0, 1 refined, 2 training
    torch.manual_seed(0)
    loss = model.loss(x).item()
    with torch.no_grad():
        elbos = model.elbo(x)
    se = elbos.std().item() / math.sqrt(len(elbos))
    assert abs(-loss - elbos.mean().item()) < 5 * math.sqrt(2) * se


# ---------------------------------------------------------------- a known bimodal posterior


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


def train_on_the_toy(m, steps_per_stage=150, seed=0, **kwargs):
    """Two 'epochs' of `steps_per_stage` Adam steps through the trainer's hook, one optimiser:
    for RME(2) stage 1 is component 0 alone (a VAE encoder), stage 2 adds component 1.
    The new component starts fresh (warm_start "none") at weight 0.01: a copy of the first sits
    on its mode, where the divergence term has no gradient, and never reaches a mode 10 std away
    (the module docstring says why the default is the copy all the same). The divergence cap is
    20 nats, not the default 2: to cross from one mode to the other the newcomer passes a region
    where its ELBO is several nats worse, and a bonus of at most lam c = 1 nat does not pay for
    that (seed 0 stays on the first mode); on MNIST the larger cap priced the newcomer out.
    The weights move at full speed (weight_rate 1, not the default 0.05): from 0.01 to 1/2 is 4.6
    in the logit, and the default's 20-fold slower logit suits stages of ~800 steps, not 150."""
    kwargs = {"warm_start": "none", "init_weight": 0.01, "divergence_cap": 20.0,
              "weight_rate": 1.0, **kwargs}
    model = build("rme", m, latent_dim=1, seed=seed, cls=BimodalRME, **kwargs)
    x = torch.rand(1, *NET.image_shape).expand(64, -1, -1, -1)  # 64 Monte Carlo draws per step
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for epoch in range(2):
        model.on_epoch_start(epoch, 2)
        for _ in range(steps_per_stage):
            loss = model.loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model, x


def test_rme_puts_weight_on_both_modes_and_beats_a_single_gaussian():
    single, x = train_on_the_toy(1)  # a single Gaussian, the same 300 steps
    single_elbo = exact_elbo(single, x)
    assert -0.8 < single_elbo < -0.6  # one mode: ~ -log 2

    model, x = train_on_the_toy(2)
    weights = model.mixing_weights(x[:1])[0]
    means = model.posterior(x[:1]).components.mean[0, :, 0]
    assert (weights > 0.3).all(), weights  # both components carry weight (~1/2 each)
    assert sorted(means.tolist()) == pytest.approx([-3.0, 3.0], abs=0.4)  # one on each mode
    rme_elbo = exact_elbo(model, x)
    assert rme_elbo > single_elbo + 0.5 and rme_elbo > -0.15  # exact ELBOs, seeded

    # the divergence term is what sends the new component to the other mode: without it
    # (lam = 0, a fresh encoder on its own ELBO) the same seed puts both on one mode
    plain, x = train_on_the_toy(2, divergence_weight=0.0)
    assert exact_elbo(plain, x) < single_elbo + 0.1


def test_weight_delay_keeps_the_new_weights_fixed_for_the_first_part_of_a_stage():
    model = build("rme", 2, weight_delay=0.5)
    heads_learn = []
    for epoch in range(8):  # starts [0, 4]: stage 2 is epochs 4-7, its weights learn from 6
        model.on_epoch_start(epoch, 8)
        heads_learn.append(model.weight_heads[0].bias.requires_grad)
    assert heads_learn == [False, False, False, False, False, False, True, True]
    assert model.components[1].head.weight.requires_grad  # the component itself trains
    with pytest.raises(ValueError, match="weight_delay"):
        build("rme", 2, weight_delay=1.0)
