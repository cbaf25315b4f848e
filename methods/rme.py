"""RME: recursive mixture estimation for the VAE encoder (Kim & Pavlovic, NeurIPS 2020,
"Recursive inference for variational autoencoders"), as we implement it.

Model. M amortized Gaussian components h_0..h_{M-1}, each a full VAE encoder (GaussianEncoder),
mixed recursively: q^(0) = h_0 and, for s = 1..M-1,

    q^(s)(z|x) = (1 - eps_s(x)) q^(s-1)(z|x) + eps_s(x) h_s(z|x),
    eps_s(x) = sigmoid(w_s^T f_s(x) + b_s)

where f_s(x) is component s's own h-dim trunk features (the mixing weight is amortized and belongs
to the component it introduces). Unrolled, alpha_0 = prod_{s>=1} (1 - eps_s) and
alpha_j = eps_j prod_{s>j} (1 - eps_s): the weights sum to one by construction. A new weight head
starts at w_s = 0, b_s = logit(init_weight), init_weight = 0.01: the new component enters with
weight ~0. The final mixture is the encoder (posterior / IWAE proposal: methods.me.GaussianMixture).

Objective of stage s (the greedy, boosting-style functional update). h_0..h_{s-1} and their
weights are frozen; the loss is minus the ELBO of the enlarged mixture,

    L_s = - E_{q^(s)}[log p(x, z) - log q^(s)(z|x)]     (the stratified estimator of methods.me),

and the trainable parameters are h_s, its weight head eps_s and the decoder (the generative model
keeps learning in every stage). Since eps_s = 0 gives back q^(s-1), the best the stage can do is
never below the previous mixture's ELBO; the tests check the stage does not lower it on a
bimodal toy target.

How gradients flow. The decoder gets the plain ELBO gradient. For the new component,
d ELBO / d h_s = alpha_s(x) * d/dh_s E_{h_s}[log p(x, z) - log q^(s)(z|x)] (the score term of
log q integrates to zero), i.e. alpha_s times the gradient of RME's component criterion
E_h[log p(x, z) - log q(z|x)] = ELBO(h) + KL(h || q): explain the data where the current mixture
does not, and be different from it; as eps_s -> 0 the q inside is q^(s-1), the criterion of the
paper's functional-gradient derivation. With `rescale_gradients` (default) the gradient reaching
(mean, std) of every trainable component j is divided by its weight alpha_j(x) (an identity in the
forward pass), so the component is trained on that criterion at full strength however small its
weight still is; and the gradient reaching eps_s's logit is divided by eps_s (1 - eps_s), i.e.
the weight follows d ELBO / d eps, which does not vanish as eps_s -> 0 (through the sigmoid it
does, and a weight pushed to ~0 early never came back). Both are per-example positive rescalings
of the ELBO gradient (preconditioning); the value optimised and reported is the ELBO.
Without them, on real MNIST (8192 training images, 6 epochs, d = 10, batch 64) the new
component's weight stayed at ~0 (RME(2) validation ELBO 24 with the warm start below, 26 without,
against 198 with both and 289 for the VAE).

Warm start (`warm_start`, default): a component joining the mixture starts as a copy of the latest
trained component (fresh weight head). For s = 1 the enlarged mixture is then exactly q^(0)
whatever eps_1 is, so the stage starts at the previous ELBO; the copy keeps improving as an encoder
for the still-moving decoder (the frozen components go stale) and takes over weight when it is
better. In the same MNIST run a randomly initialised component started ~4000 nats worse than h_0,
its weight collapsed at once, and then the criterion above (with q ~ q^(s-1) only) sent it far
away; warm-started, RME(2) reached 198 with the new component taking over. A random start explores
more (on the bimodal toy it finds the second mode, the copy does not), so `warm_start=False` keeps
that option.

Schedule, through `on_epoch_start(epoch, num_epochs)`: component 0 (a plain VAE encoder) trains
alone for the first `first_stage` = 1/2 of the epochs, and component j >= 1 joins at epoch
start_j = floor(E (1/2 + (j - 1) / (2 (M - 1)))), evenly spaced over the second half: the boosting
needs a trained base encoder and decoder before freezing it (with the equal split floor(j E / M)
the 6-epoch run above froze h_0 after one epoch, still on the mean-image plateau, and ended at
-41 for RME(4) against 116 with the half split). At an epoch, the mixture holds the components
with start_j <= epoch; those with the latest start are trainable (requires_grad True, with their
weight heads), earlier ones are frozen (requires_grad_(False): no gradient, Adam skips them),
later ones are not in the mixture yet; the last component trains until the end. With fewer epochs
than stages, components sharing a start epoch join and train together (e.g. M = 5, 2 epochs:
component 0 in epoch 0, components 1-4 together in epoch 1; 1 epoch: all five jointly, like ME
with recursive weights), so every component trains at least one epoch. Without any call to the
hook (a model used outside the trainer) all M components are in the mixture and trainable. The
number of components in the mixture is a buffer (`num_active`) in the state dict: restoring the
best-validation weights restores the mixture that was validated (later components stay out).

Short budgets handicap RME: each stage's component gets only part of the epochs and frozen
components go stale while the decoder learns. On the 6-epoch run above RME(2) (198) and RME(4)
(116) trail the VAE (289) and ME(2) (286); the paper's protocol (100 epochs) gives the first
stage 50 epochs.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import EncoderModel
from .me import GaussianMixture, stratified_elbo
from .networks import GaussianEncoder
from .registry import register

MAX_GRADIENT_SCALE = 1e6  # 1 / alpha_j is capped: below alpha_j = 1e-6 the gradient shrinks again


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def scale_gradient(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x in the forward pass; the backward pass multiplies x's gradient by `scale` (broadcast)."""
    return _ScaleGradient.apply(x, scale)


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
                 init_weight: float = 0.01, first_stage: float = 0.5,
                 rescale_gradients: bool = True, warm_start: bool = True):
        super().__init__(net, latent_dim, likelihood, num_train)
        if m < 1:
            raise ValueError(f"a mixture needs at least one component, got m={m}")
        if not 0 < init_weight < 1:
            raise ValueError(f"init_weight must be in (0, 1), got {init_weight}")
        if not 0 < first_stage < 1:
            raise ValueError(f"first_stage must be in (0, 1), got {first_stage}")
        self.num_components = int(m)
        self.first_stage = float(first_stage)
        self.rescale_gradients = bool(rescale_gradients)
        self.warm_start = bool(warm_start)
        self.components = nn.ModuleList(GaussianEncoder(net, latent_dim) for _ in range(m))
        self.weight_heads = nn.ModuleList(nn.Linear(net.hidden, 1) for _ in range(m - 1))
        for head in self.weight_heads:
            nn.init.zeros_(head.weight)
            nn.init.constant_(head.bias, math.log(init_weight / (1 - init_weight)))
        self.register_buffer("num_active", torch.tensor(self.num_components))
        self.trainable = tuple(range(self.num_components))

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        starts = stage_starts(self.num_components, num_epochs, self.first_stage)
        active = [j for j, start in enumerate(starts) if start <= epoch]
        current = max(starts[j] for j in active)
        previous = int(self.num_active)
        if self.warm_start and 0 < previous < len(active):
            # the components joining now start from the latest trained one (boosting from the
            # current fit); they get fresh weight heads at init_weight
            source = self.components[previous - 1].state_dict()
            for j in range(previous, len(active)):
                self.components[j].load_state_dict(source)
        self.set_stage(len(active), [j for j in active if starts[j] == current])

    def set_stage(self, num_active: int, trainable) -> None:
        """Put components 0..num_active-1 in the mixture; only `trainable` ones get gradients."""
        if not 1 <= num_active <= self.num_components:
            raise ValueError(f"num_active must be in 1..{self.num_components}, got {num_active}")
        self.num_active.fill_(num_active)
        self.trainable = tuple(sorted(trainable))
        for j, component in enumerate(self.components):
            component.requires_grad_(j in self.trainable)
        for j, head in enumerate(self.weight_heads, start=1):
            head.requires_grad_(j in self.trainable)

    def posterior(self, x: torch.Tensor) -> GaussianMixture:
        mean, std = self.components[0](x)
        means, stds = [mean], [std]
        log_weights = torch.zeros_like(mean[:, :1])
        for j in range(1, int(self.num_active)):
            mean, std, features = self.components[j].forward_with_features(x)
            logit = self.weight_heads[j - 1](features)  # (B, 1): eps_j(x) = sigmoid(logit)
            if self.rescale_gradients and j in self.trainable and torch.is_grad_enabled():
                # d/d logit = eps (1 - eps) d/d eps vanishes as eps -> 0: divide it out
                eps = torch.sigmoid(logit.detach())
                logit = scale_gradient(logit, (1 / (eps * (1 - eps))).clamp(max=MAX_GRADIENT_SCALE))
            log_weights = torch.cat([log_weights + F.logsigmoid(-logit), F.logsigmoid(logit)], -1)
            means.append(mean)
            stds.append(std)
        if self.rescale_gradients and len(means) > 1 and torch.is_grad_enabled():
            # d ELBO / d(mean_j, std_j) carries the factor alpha_j(x): divide it out (docstring)
            scale = (-log_weights.detach()).exp().clamp(max=MAX_GRADIENT_SCALE)
            for j in self.trainable:
                if j < len(means):
                    means[j] = scale_gradient(means[j], scale[:, j : j + 1])
                    stds[j] = scale_gradient(stds[j], scale[:, j : j + 1])
        return GaussianMixture(log_weights, torch.stack(means, -2), torch.stack(stds, -2))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        return stratified_elbo(self.log_joint, x, self.posterior(x))
