"""RME: recursive mixture estimation for the VAE encoder (Kim & Pavlovic, NeurIPS 2020,
"Recursive inference for variational autoencoders"), as we implement it.

Sources. What we could read of the RME paper is its abstract and the public reviews
(https://proceedings.neurips.cc/paper_files/paper/2020/hash/e3844e186e6eb8736e9f53c0c5889527-Abstract.html,
https://papers.nips.cc/paper_files/paper/2020/file/e3844e186e6eb8736e9f53c0c5889527-Review.html). The
abstract: the mixture is augmented recursively with new components "so as to maximally reduce the
divergence between the variational and the true posteriors"; by the functional gradient approach
"the new component has to improve the data likelihood (lower bound) and, at the same time, be as
divergent from the current mixture distribution as possible". The reviews: the derivation "results
in an objective for the current component that trades off between the ELBO and a KL from the
current approximate posterior", and the paper shows against boosted VI that "the KL, rather than
entropy, is useful for mixture estimation". We found neither the full text (arXiv 2006.08735)
nor the authors' code (none in the code index; paperswithcode: "No code implementations yet"), so
the trade-off's form and weight, the mixing-weight parameterisation and the schedule below are our
choices, marked as such.

Model (our parameterisation). M amortized Gaussian components h_0..h_{M-1}, each a full VAE
encoder (GaussianEncoder), mixed recursively: q^(0) = h_0 and, for s = 1..M-1,

    q^(s)(z|x) = (1 - eps_s(x)) q^(s-1)(z|x) + eps_s(x) h_s(z|x),
    eps_s(x) = sigmoid(w_s^T f_s(x) + b_s)

with f_s(x) component s's own trunk features, read by the weight head without gradient (the
component's networks learn from its criterion only, below). Unrolled, alpha_0 = prod_{s>=1}
(1 - eps_s) and alpha_j = eps_j prod_{s>j} (1 - eps_s): the weights sum to one by construction.
A new weight head starts at w_s = 0, b_s = logit(init_weight), init_weight = 0.01. The final
mixture is the encoder (posterior / IWAE proposal: methods.me.GaussianMixture);
`mixing_weights(x)` gives the per-example weights alpha(x), (B, M), zero for components that
have not joined yet (`diagnostics(x)`: their batch means, `weight_j`). Component 0 is the base
encoder every method shares (`base_encoder()`: same initial weights as the VAE's).

The component criterion (from the paper, with our bounded form). For the KL(q || p(z|x)) of a
mixture, the functional gradient at q in the direction of a new density h gives the criterion
E_h[log p(x, z) - log q(z|x)] = ELBO(h) + KL(h || q): the data bound plus the divergence from the
current mixture, trade-off exactly 1. As it stands it is unbounded whenever q is narrower than the
posterior in some direction (log p falls slower than log q rises), and it was our earlier
implementation's failure: dividing the mixture-ELBO gradient of h_s by its weight gave h_s
E_h[log p - log q^(s)], whose divergence part is bounded only by log(1/eps_s); a component pushed
away loses weight, which loosens the bound, which pushes it further. Measured (d = 10, 10k MNIST
images, 5 epochs of batch 32): h_1 ended 8.5 std from h_0 and 7x narrower, eps_1 = 0 on every
test image (logit about -29), and the mixture's test IWAE equalled h_0's alone. On the bimodal
toy of the tests (modes at -3 and +3, std 0.6) even a down-weighted plain KL misplaces the
component: maximising log p - lam log q over h's mean puts it at 3 (1 + lam) / (1 - lam), i.e. 9
for lam = 1/2 (Gaussian tails make the KL grow quadratically with distance).

So the new component h_s maximises

    C_s(h) = ELBO(h) + lam * D_c(h || q^(s-1)),
    D_c(h || q) = KL(h || (1 - e^-c) q + e^-c h) = E_h[-log((1 - e^-c) e^{-(log h - log q)} + e^-c)],

with lam = `divergence_weight` (default 0.5, must lie in [0, 1]) and c = `divergence_cap`
(default 20 nats). D_c is a KL from the current mixture with the per-sample log-ratio
log h - log q softly clipped at c: it is KL(h || q) where h and q overlap (log-ratio << c), it
stops growing once h's samples are c nats more likely under h than under q, 0 <= D_c <= c, and
D_c -> KL(h || q) as c -> infinity. Hence C_s(h) <= log p(x) + lam c: no runaway; and the
maximiser's own ELBO is within lam c nats (10 by default) of the best single Gaussian's: lam c is
what the new component may give up of its bound to differ from the current mixture. lam = 1 is the
functional-gradient criterion itself, against the mixture that h would form at weight e^-c;
lam = 0 trains a fresh encoder with no diversity term. For any lam < 1, if the current mixture
already is the posterior then h = q maximises C_s (C_s(h) <= log p(x) - (1 - lam) KL(h || p)):
diversity is bought only where the mixture misses posterior mass. The defaults are our choice:
lam = 1/2 counts the divergence half as much as the bound (midway between a fresh encoder and the
functional-gradient criterion); c = 20 nats lets the push reach about sqrt(2c) = 6 std of a
Gaussian q (on the toy, from the first mode past the midpoint, whence the ELBO takes the component
to the second mode) and caps the trade at 10 nats of ELBO. Toy runs, a component on each mode:
with the test's 150 steps per stage, seeds 0-4, defaults 4/5 (in the fifth the first stage had
not left the midpoint) and lam = 0 1/5; in a 6-seed run at 300 steps per stage, defaults and
lam = 1 6/6, lam = 0 1/6, c = 5 3/6 (the push stops short of the midpoint), warm_start 0/6.
Not tuned on MNIST.

Gradients (our routing). One Adam optimiser, one loss whose value is minus the mixture's ELBO (the
stratified estimator of methods.me: one reparameterised sample per component), but whose gradient
reaches each parameter group from its own objective:
- the decoder gets the mixture-ELBO gradient, in every stage (the generative model keeps learning);
- the weight heads of the components in training get the mixture-ELBO gradient, i.e. the weights
  are learned on the mixture's ELBO (frozen heads get none). With `precondition_weights`
  (default) the gradient reaching eps_s's logit is divided by eps_s (1 - eps_s) (an identity in
  the forward pass; the factor capped at 1e6): the head follows d ELBO / d eps, which does not
  vanish as eps_s -> 0 (through the sigmoid it does, and a weight pushed to ~0 while the new
  component was still bad never came back). Per example that is clipped to +-10 nats
  (MAX_WEIGHT_GRADIENT): a fresh component starts thousands of nats worse, and those first
  gradients filled Adam's second moment so that the head then moved ~1e-5 per step (synthetic
  28x28 run, d = 10). Both keep each example's gradient sign, hence its stationary point. The
  mixture ELBO is concave in eps, and d ELBO / d eps = E_h[log p - log q_eps] - E_q[...] is
  ELBO(h) + KL(h || q) - ELBO(q) at eps -> 0 (and at most ELBO(h) + log(1/eps) - ELBO(q) for
  disjoint h and q): a component that explains posterior mass the mixture misses gains weight
  from any small value; for disjoint components the optimum is eps = sigmoid(ELBO(h) - ELBO(q))
  per example, so a component a few nats worse than the mixture on an image gets ~0 weight there;
- each component in training gets the gradient of its criterion C_s only (its own sample, log p
  with the decoder's gradient cancelled, log h, and the frozen reference mixture), at full
  strength whatever its weight (earlier we had it through the mixture ELBO, scaled by alpha_s,
  and rescaled that by 1 / alpha_s: the runaway above).
In the first stage (component 0 alone) the loss is the one-component ELBO, a VAE's with a
Monte Carlo KL. The cost is one decoder pass per active component plus one per component in
training.

Schedule (our choice), through `on_epoch_start(epoch, num_epochs)`: component 0 trains alone for
the first `first_stage` = 1/2 of the epochs, and component j >= 1 joins at epoch
start_j = floor(E (1/2 + (j - 1) / (2 (M - 1)))), evenly spaced over the second half: the boosting
needs a trained base encoder and decoder before freezing it (with the equal split floor(j E / M) a
6-epoch MNIST run froze h_0 after one epoch, still on the mean-image plateau). For the 100-epoch
profile: [0, 50] for M = 2, [0, 50, 62, 75, 87] for M = 5; for 5 epochs: [0, 2] and
[0, 2, 3, 3, 4]. At an epoch the mixture holds the components with start_j <= epoch; those with
the latest start are in training (requires_grad True, with their weight heads), earlier ones are
frozen (requires_grad_(False): no gradient, Adam skips them), later ones are not in the mixture
yet; the last component trains until the end. Components sharing a start epoch (fewer epochs than
stages: M = 5 over 2 epochs trains 1-4 together in epoch 1; 1 epoch: all five at once) train
together, component j against the recursive mixture of components 0..j-1 (held fixed in its
criterion); without any call to the hook (a model used outside the trainer) all M components are
in the mixture and in training that way. The number of components in the mixture is a buffer
(`num_active`) in the state dict: restoring saved weights restores the mixture that was validated.

Early stopping and model selection (our choice): `model_complete(epoch, num_epochs)` is False
until the last component has joined. The trainer neither stops early after such an epoch (with the
paper profile's patience of 10, a VAE plateau in the 50-epoch first stage would otherwise end an
RME run before any mixture exists) nor keeps its weights as the best: the best-validation epoch is
chosen among epochs with all M components, so a reported RME(M) is always an M-component mixture
(choosing a first-stage epoch would report a VAE under RME's name; a mixture that trails its first
component shows as such). `warm_start` (default False): a joining component starts as a copy of
the latest trained one (fresh weight head), so the enlarged mixture starts exactly at the previous
one; D_c has zero gradient at h = q and the copy mostly stays a refreshed copy of its predecessor
for the moving decoder (on the bimodal toy it never finds the second mode), hence off by default.

Short budgets handicap RME: each stage's component gets only part of the epochs and frozen
components go stale while the decoder learns.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from .base import EncoderModel
from .me import GaussianMixture, stratified_elbo
from .networks import GaussianEncoder
from .registry import register

WARM_STARTS = (False, True, "none", "copy", "trunk")
MAX_GRADIENT_SCALE = 1e6  # 1 / (eps (1 - eps)) is capped: below eps ~ 1e-6 the gradient shrinks again


class _PreconditionLogit(torch.autograd.Function):
    """Identity on the logits (B, 1) of eps; backward: the gradient divided by eps (1 - eps), i.e.
    the gradient with respect to eps, clipped per example to MAX_WEIGHT_GRADIENT nats (over the
    batch size: the loss is a batch mean)."""

    @staticmethod
    def forward(ctx, logit):
        eps = torch.sigmoid(logit)
        ctx.save_for_backward((1 / (eps * (1 - eps))).clamp(max=MAX_GRADIENT_SCALE))
        return logit.view_as(logit)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale


def precondition_logit(logit: torch.Tensor) -> torch.Tensor:
    """`logit` (B, 1) in the forward pass; see _PreconditionLogit for the backward pass."""
    return _PreconditionLogit.apply(logit)


def capped_divergence(log_h: torch.Tensor, log_q: torch.Tensor, cap: float) -> torch.Tensor:
    """One-sample estimate of D_c(h || q) = KL(h || (1 - e^-c) q + e^-c h) at z ~ h, from log h(z)
    and log q(z): the log-ratio log h - log q softly clipped at `cap` nats (0 <= D_c <= cap)."""
    return log_h - torch.logaddexp(log_q + math.log1p(-math.exp(-cap)), log_h - cap)


def stage_starts(num_components: int, num_epochs: int, first_stage: float = 0.5) -> list[int]:
    """Epoch at which each component joins the mixture (0-based components).

    Component 0 trains alone for the first `first_stage` share of the epochs; the others start
    at evenly spaced epochs over the rest: start_j = floor(E (f + (1 - f) (j - 1) / (M - 1))).
    first_stage = 1/M gives the equal split floor(j E / M).
    """
    starts = [0]
    for j in range(1, num_components):
        share = first_stage + (1 - first_stage) * (j - 1) / (num_components - 1)
        starts.append(math.floor(num_epochs * share + 1e-9))
    return starts


@register("rme", label="RME", variants=[{"m": 2}, {"m": 3}, {"m": 4}, {"m": 5}])
class RME(EncoderModel):
    def __init__(self, net, latent_dim, likelihood, num_train, m: int = 2,
                 divergence_weight: float = 0.5, divergence_cap: float = 20.0,
                 init_weight: float = 0.5, first_stage: float = 0.5, weight_delay: float = 0.0,
                 precondition_weights: bool = True, warm_start: bool | str = "copy"):
        super().__init__(net, latent_dim, likelihood, num_train)
        if m < 1:
            raise ValueError(f"a mixture needs at least one component, got m={m}")
        if not 0 <= divergence_weight <= 1:
            raise ValueError(f"divergence_weight must be in [0, 1], got {divergence_weight}")
        if not 0 < divergence_cap < math.inf:
            raise ValueError(f"divergence_cap must be a positive number of nats, got {divergence_cap}")
        if not 0 < init_weight < 1:
            raise ValueError(f"init_weight must be in (0, 1), got {init_weight}")
        if not 0 < first_stage < 1:
            raise ValueError(f"first_stage must be in (0, 1), got {first_stage}")
        if not 0 <= weight_delay < 1:
            raise ValueError(f"weight_delay must be in [0, 1), got {weight_delay}")
        self.weight_delay = float(weight_delay)
        self.weights_learn = True  # False while joining components warm up (weight_delay)
        self.num_components = int(m)
        self.divergence_weight = float(divergence_weight)
        self.divergence_cap = float(divergence_cap)
        self.first_stage = float(first_stage)
        self.precondition_weights = bool(precondition_weights)
        if warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start must be one of {WARM_STARTS}, got {warm_start!r}")
        self.warm_start = "copy" if warm_start is True else ("none" if warm_start is False else warm_start)
        # component 0 is the base encoder every method shares (common random numbers, methods.base)
        self.components = nn.ModuleList(
            [self.base_encoder()] + [GaussianEncoder(net, latent_dim) for _ in range(m - 1)])
        self.weight_heads = nn.ModuleList(nn.Linear(net.hidden, 1) for _ in range(m - 1))
        for head in self.weight_heads:
            nn.init.zeros_(head.weight)
            nn.init.constant_(head.bias, math.log(init_weight / (1 - init_weight)))
        self.register_buffer("num_active", torch.tensor(self.num_components))
        self.trainable = tuple(range(self.num_components))

    # ------------------------------------------------------------------ schedule

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        starts = stage_starts(self.num_components, num_epochs, self.first_stage)
        active = [j for j, start in enumerate(starts) if start <= epoch]
        current = max(starts[j] for j in active)
        previous = int(self.num_active)
        if self.warm_start != "none" and 0 < previous < len(active):
            # the components joining now start from the latest trained one ("copy") or from its
            # trunk with their own fresh head ("trunk"); fresh weight heads either way
            source = self.components[previous - 1]
            for j in range(previous, len(active)):
                part = "trunk" if self.warm_start == "trunk" else None
                target = getattr(self.components[j], part) if part else self.components[j]
                target.load_state_dict((getattr(source, part) if part else source).state_dict())
        later = [start for start in starts if start > current]
        stage_end = min(later) if later else num_epochs
        self.weights_learn = epoch >= current + math.floor(self.weight_delay * (stage_end - current))
        self.set_stage(len(active), [j for j in active if starts[j] == current])

    def model_complete(self, epoch: int, num_epochs: int) -> bool:
        """True from the epoch at which the last component joins (see the module docstring)."""
        return epoch >= max(stage_starts(self.num_components, num_epochs, self.first_stage))

    def set_stage(self, num_active: int, trainable) -> None:
        """Put components 0..num_active-1 in the mixture; only `trainable` ones get gradients."""
        if not 1 <= num_active <= self.num_components:
            raise ValueError(f"num_active must be in 1..{self.num_components}, got {num_active}")
        self.num_active.fill_(num_active)
        self.trainable = tuple(sorted(trainable))
        for j, component in enumerate(self.components):
            component.requires_grad_(j in self.trainable)
        for j, head in enumerate(self.weight_heads, start=1):
            head.requires_grad_(j in self.trainable and self.weights_learn)

    # ------------------------------------------------------------------ the mixture

    def _parts(self, x: torch.Tensor, precondition: bool = False):
        """Means and stds of the active components (lists of (B, d)) and the log-weights of the
        recursive prefixes: prefix[j] is log alpha of q^(j), (B, j + 1)."""
        mean, std = self.components[0](x)
        means, stds = [mean], [std]
        log_weights = torch.zeros_like(mean[:, :1])
        prefix = [log_weights]
        for j in range(1, int(self.num_active)):
            mean, std, features = self.components[j].forward_with_features(x)
            logit = self.weight_heads[j - 1](features.detach())  # (B, 1): eps_j = sigmoid(logit)
            if precondition and j in self.trainable and torch.is_grad_enabled():
                # d/d logit = eps (1 - eps) d/d eps vanishes as eps -> 0: divide it out (and clip)
                logit = precondition_logit(logit)
            log_weights = torch.cat([log_weights + F.logsigmoid(-logit), F.logsigmoid(logit)], -1)
            prefix.append(log_weights)
            means.append(mean)
            stds.append(std)
        return means, stds, prefix

    def posterior(self, x: torch.Tensor) -> GaussianMixture:
        means, stds, prefix = self._parts(x)
        return GaussianMixture(prefix[-1], torch.stack(means, -2), torch.stack(stds, -2))

    @torch.no_grad()
    def mixing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example mixing weights alpha_j(x), (B, M); zero for components not yet joined."""
        weights = self.posterior(x).weights
        return F.pad(weights, (0, self.num_components - weights.shape[-1]))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        return stratified_elbo(self.log_joint, x, self.posterior(x))

    def diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        """{'weight_j': batch mean of alpha_j(x)} for all M components (0 before joining)."""
        return {f"weight_{j}": float(w) for j, w in enumerate(self.mixing_weights(x).mean(0))}

    # ------------------------------------------------------------------ training

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the mixture's ELBO (stratified estimate) in value; in gradient, the routing of
        the module docstring: mixture ELBO -> decoder and weight heads, C_j -> component j."""
        n = int(self.num_active)
        training = [j for j in self.trainable if j < n]
        if n == 1 or not training or not torch.is_grad_enabled():
            return -self.elbo(x).mean()  # the first stage: a VAE
        means, stds, prefix = self._parts(x, precondition=self.precondition_weights)
        noise = torch.randn(n, *means[0].shape, dtype=means[0].dtype, device=means[0].device)
        z_live = [means[j] + stds[j] * noise[j] for j in range(n)]  # reparameterised, (B, d) each
        fixed_means = torch.stack(means, -2).detach()
        fixed_stds = torch.stack(stds, -2).detach()
        q = GaussianMixture(prefix[-1], fixed_means, fixed_stds)  # components held, weights live
        z_mix = torch.stack(z_live).detach()  # (n, B, d): z_j ~ h_j
        log_p = self.log_joint(x, torch.cat([z_mix, torch.stack([z_live[j] for j in training])]))
        log_p_mix, log_p_live = log_p[:n], log_p[n:]
        mixture_elbo = (q.weights.transpose(0, 1) * (log_p_mix - q.log_prob(z_mix))).sum(0)

        criteria = torch.zeros_like(mixture_elbo)
        for k, j in enumerate(training):
            z = z_live[j]
            log_h = Normal(means[j], stds[j]).log_prob(z).sum(-1)
            # same value as log_p_mix[j]; the difference cancels the decoder's gradient, so z
            # (hence h_j) gets d log p / dz and the decoder nothing from the criterion
            log_p_z = log_p_live[k] - log_p_mix[j] + log_p_mix[j].detach()
            criterion = log_p_z - log_h
            if j > 0 and self.divergence_weight > 0:
                reference = GaussianMixture(prefix[j - 1].detach(), fixed_means[:, :j],
                                            fixed_stds[:, :j])
                divergence = capped_divergence(log_h, reference.log_prob(z), self.divergence_cap)
                criterion = criterion + self.divergence_weight * divergence
            criteria = criteria + (criterion - criterion.detach())  # gradient only
        return -(mixture_elbo + criteria).mean()
