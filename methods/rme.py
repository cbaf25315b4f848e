"""RME: recursive mixture estimation for the VAE encoder (Kim & Pavlovic, NeurIPS 2020,
"Recursive inference for variational autoencoders").

From the paper (we could read its abstract and public reviews, not the full text or code; see
https://proceedings.neurips.cc/paper_files/paper/2020/hash/e3844e186e6eb8736e9f53c0c5889527-Abstract.html
and its Review.html): the encoder is a mixture grown recursively, q^(s) = (1 - eps_s) q^(s-1) +
eps_s h_s, and by the functional-gradient argument "the new component has to improve the data
likelihood (lower bound) and, at the same time, be as divergent from the current mixture
distribution as possible": an objective that "trades off between the ELBO and a KL from the current
approximate posterior". Everything else below is our choice, each a constructor parameter; what
each default was measured to do on MNIST is in docs/methods.md ("RME: the probes behind the
defaults"), with the claims-profile weights and the paired comparison with the VAE.

Model. M Gaussian encoders h_0..h_{M-1} (h_0 the shared base encoder, methods.base); amortized
weights eps_s(x) = sigmoid(r (w_s^T f_s(x) + b_s)) on component s's trunk features (read without
gradient); alpha_0 = prod_s (1 - eps_s), alpha_j = eps_j prod_{s>j} (1 - eps_s). `mixing_weights(x)`
gives alpha(x) (B, M); `diagnostics(x)` their batch means (`weight_j`), kept in each record.

Objectives (one Adam, one loss whose value is minus the mixture ELBO, gradients routed):
- the new component h_s maximises C_s(h) = ELBO(h) + lam D_c(h || q^(s-1)), with D_c the KL to
  the mixture softly capped at c nats (`capped_divergence`): bounded, so it cannot run away
  (lam = 1 with no cap is the unbounded functional-gradient criterion). `divergence_weight`
  lam = 0.5, `divergence_cap` c = 2 nats: the newcomer may give up at most lam c = 1 nat of its
  own ELBO to differ from the mixture;
- the components that joined earlier keep learning on the mixture ELBO (`refine_previous`, by the
  path derivative of alpha_j E_{h_j}[log p - log q]), so they keep up with the decoder;
- so do their weights (`refine_weights`), so the heads follow the components they weigh; with
  refine_previous False the earlier components and their weights are frozen alike, whatever
  refine_weights says;
- the weights learn on the mixture ELBO (`precondition_weights`: their gradient divided by
  eps (1 - eps), an unbiased rescaling, so it does not vanish at small eps; no clip);
- the decoder learns on the mixture ELBO in every stage.
One decoder pass a step serves all of it (`loss`, `scale_gradient`: a training component's
z-gradient is divided by its weight on the way back).
`weight_rate` r = 0.05: the logits are r times the heads' outputs. Under Adam a head's logit
moves about lr x (number of features) a step whatever its gradient's size, so at r = 1 the weights
settle long before a joining copy can become different; r slows the weights alone (same model,
same initial weights).
Schedule (`on_epoch_start`): h_0 alone for the first `first_stage` = 1/2 of the epochs, the
others joining evenly over the rest (`stage_starts`); `model_complete` is False until the last
joins, so the trainer neither stops early (paper profile: patience 10 inside a 50-epoch first
stage) nor selects an epoch without all M components.
Joining (`warm_start` = "copy", `init_weight` = 0.5): a new component starts as a copy of the
latest, at weight 1/2, so the second stage starts exactly at the previous mixture (later ones
move mass towards the latest component: (1 - eps) q + eps h_latest), and with a copy of
its Adam moments (`inherit_optimizer_state`; a fresh Adam state makes the first step +-lr on every
parameter). "none" (a fresh component) explores more: on the bimodal toy of the tests only a fresh
component finds the second mode (a copy sits where the divergence has no gradient). "trunk" copies
the trunk only; `weight_delay` holds the new weights fixed for that share of their stage. The
weights' gradient holds the weights inside log q (`loss`): same value, and the dropped term, a
per-sample importance ratio of expectation zero, drove new weights to 0 under Adam.
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
# a training component's z-gradient passes through alpha_j and back (loss); below this weight its
# whole criterion is scaled by alpha_j / MIN_SCALED_WEIGHT instead (float32's decoder gradients,
# ~alpha_j / batch x activations, would otherwise near its smallest normal number, 1.2e-38; in
# float16 the clamp itself would be 0)
MIN_SCALED_WEIGHT = 1e-20
MAX_GRADIENT_SCALE = 1e6  # 1 / (eps (1 - eps)) is capped: below eps ~ 1e-6 the gradient shrinks again


class _ScaleGradient(torch.autograd.Function):
    """Identity on z (B, d); backward: the gradient times `scale` (B,), per example."""

    @staticmethod
    def forward(ctx, z, scale):
        ctx.save_for_backward(scale)
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale.unsqueeze(-1), None


def scale_gradient(z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`z` in the forward pass; its gradient multiplied by `scale` (one factor per example)."""
    return _ScaleGradient.apply(z, scale)


def precondition_logit(logit: torch.Tensor) -> torch.Tensor:
    """`logit` (B, 1) of eps in the forward pass; backward: the gradient divided by eps (1 - eps),
    i.e. the gradient with respect to eps (unclipped; the scale itself is capped at
    MAX_GRADIENT_SCALE)."""
    eps = torch.sigmoid(logit.detach())
    return scale_gradient(logit, (1 / (eps * (1 - eps))).clamp(max=MAX_GRADIENT_SCALE).squeeze(-1))


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
                 divergence_weight: float = 0.5, divergence_cap: float = 2.0,
                 init_weight: float = 0.5, first_stage: float = 0.5, weight_delay: float = 0.0,
                 precondition_weights: bool = True, warm_start: bool | str = "copy",
                 inherit_optimizer_state: bool = True, refine_previous: bool = True,
                 refine_weights: bool = True, weight_rate: float = 0.05):
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
        if not 0 < weight_rate <= 1:
            raise ValueError(f"weight_rate must be in (0, 1], got {weight_rate}")
        self.weight_delay = float(weight_delay)
        self.weight_rate = float(weight_rate)
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
            nn.init.constant_(head.bias, math.log(init_weight / (1 - init_weight)) / weight_rate)
        self.inherit_optimizer_state = bool(inherit_optimizer_state)
        self.refine_previous = bool(refine_previous)
        self.refine_weights = bool(refine_weights)
        self._state_copies: list = []  # (source, target) parameters, for the trainer's optimiser
        self.register_buffer("num_active", torch.tensor(self.num_components))
        self.trainable = tuple(range(self.num_components))
        self.refining: tuple[int, ...] = ()

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
                origin = getattr(source, part) if part else source
                target.load_state_dict(origin.state_dict())
                if self.inherit_optimizer_state:
                    self._state_copies += list(zip(origin.parameters(), target.parameters(), strict=True))
        later = [start for start in starts if start > current]
        stage_end = min(later) if later else num_epochs
        self.weights_learn = epoch >= current + math.floor(self.weight_delay * (stage_end - current))
        self.set_stage(len(active), [j for j in active if starts[j] == current])

    def take_optimizer_state_copies(self):
        """The (source, target) pairs of the latest warm start, once (methods.base)."""
        pairs, self._state_copies = self._state_copies, []
        return pairs

    def model_complete(self, epoch: int, num_epochs: int) -> bool:
        """True from the epoch at which the last component joins (see the module docstring)."""
        return epoch >= max(stage_starts(self.num_components, num_epochs, self.first_stage))

    def set_stage(self, num_active: int, trainable) -> None:
        """Put components 0..num_active-1 in the mixture; only `trainable` ones get gradients."""
        if not 1 <= num_active <= self.num_components:
            raise ValueError(f"num_active must be in 1..{self.num_components}, got {num_active}")
        self.num_active.fill_(num_active)
        self.trainable = tuple(sorted(trainable))
        # components that joined earlier: frozen, or refined on the mixture ELBO (refine_previous)
        self.refining = tuple(j for j in range(num_active)
                              if self.refine_previous and j not in self.trainable)
        for j, component in enumerate(self.components):
            component.requires_grad_(j in self.trainable or j in self.refining)
        for j, head in enumerate(self.weight_heads, start=1):
            # the new component's weight (after `weight_delay`); those of refined components too
            head.requires_grad_((j in self.trainable and self.weights_learn)
                                or (self.refine_weights and j in self.refining))

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
            # (B, 1): eps_j = sigmoid(logit); weight_rate sets how fast Adam moves the logit
            logit = self.weight_rate * self.weight_heads[j - 1](features.detach())
            if precondition and self.weight_heads[j - 1].bias.requires_grad and torch.is_grad_enabled():
                # d/d logit = eps (1 - eps) d/d eps vanishes as eps -> 0: divide it out
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
        refining = [j for j in self.refining if j < n]
        # the weights' gradient is sum_j (d alpha_j) (log p - log q)(z_j): the term through log q
        # has expectation zero (sum_j alpha_j E_{h_j}[d log q] = d of the integral of q) and is a
        # heavy-tailed importance ratio h_j / q per sample, which under Adam drove the new weights to
        # 0 on MNIST; so log q enters with its weights held (same value, unbiased gradient)
        held = GaussianMixture(prefix[-1].detach(), fixed_means, fixed_stds)
        weights = q.weights.detach()  # (B, n)
        # One decoder pass for all n draws. In the mixture ELBO, log p(x, z_j) has coefficient
        # alpha_j: right for the decoder and for a refined component (alpha_j E_{h_j}[log p - log q]),
        # but a training component's criterion C_j has coefficient 1, so its z_j's gradient is
        # divided by alpha_j on the way back (`scale_gradient`); frozen components' z is held.
        # Below MIN_SCALED_WEIGHT the whole criterion is scaled by `restore` = alpha_j / MIN (< 1),
        # log p's part and the rest alike, rather than losing log p's part to underflow.
        floor = {j: weights[:, j].clamp(min=MIN_SCALED_WEIGHT) for j in training}
        restore = {j: weights[:, j] / floor[j] for j in training}  # 1 unless alpha_j < MIN
        z_in = [scale_gradient(z_live[j], 1 / floor[j]) if j in training
                else z_live[j] if j in refining else z_mix[j] for j in range(n)]
        log_p = self.log_joint(x, torch.stack(z_in))  # (n, B)
        mixture_elbo = (q.weights.transpose(0, 1) * (log_p - held.log_prob(z_mix))).sum(0)

        criteria = torch.zeros_like(mixture_elbo)  # the rest of each component's objective
        for j in training:
            z = z_live[j]
            log_h = Normal(means[j], stds[j]).log_prob(z).sum(-1)
            criterion = -log_h  # C_j = log p - log h + lam D_c; log p's part came through z_in
            if j > 0 and self.divergence_weight > 0:
                reference = GaussianMixture(prefix[j - 1].detach(), fixed_means[:, :j],
                                            fixed_stds[:, :j])
                divergence = capped_divergence(log_h, reference.log_prob(z), self.divergence_cap)
                criterion = criterion + self.divergence_weight * divergence
            criterion = restore[j] * criterion
            criteria = criteria + (criterion - criterion.detach())  # gradient only
        for j in refining:
            # earlier components follow the mixture ELBO: alpha_j E_{h_j}[log p - log q] by its
            # path derivative (z_j through log p and log q; q's parameters held, as the term
            # through them has expectation zero), so they keep up with the learning decoder;
            # log p's part came through z_in
            term = -weights[:, j] * held.log_prob(z_live[j])
            criteria = criteria + (term - term.detach())
        return -(mixture_elbo + criteria).mean()
