"""ME: the mixture encoder baseline of the paper (section 5, item 5).

    q(z|x) = sum_m alpha(m|x) q_m(z|x),   q_m(z|x) = N(mean_m(x), diag std_m(x)^2)

with M amortized components, each a full VAE encoder (GaussianEncoder: its own conv trunk and
heads), and mixing proportions alpha(.|x) = softmax(g(x)) from one network g with the encoder's
architecture and M outputs (networks.Encoder).

ELBO estimator: the stratified (per-component) estimator

    ELBO(x) = sum_m alpha(m|x) E_{q_m}[log p(x, z) - log q(z|x)],    z_m = mean_m + std_m * eps_m,

one reparameterised sample from every component, each weighted by its mixing proportion, and
log q the full mixture density (log-sum-exp over components). Since E_q[f] = sum_m alpha_m
E_{q_m}[f], this is unbiased for the mixture's ELBO, and it is differentiable in everything: the
components through the reparameterised z_m and log q, the mixing network through the weights
alpha_m and log q. It costs M decoder passes per example instead of one (no discrete sampling of
the component, hence no score-function gradient).

The IWAE proposal is a `GaussianMixture` (shared with RME): `rsample` draws a component index
from alpha (not differentiable in alpha: IWAE needs none) and a reparameterised sample from it;
`log_prob` is the mixture density. torch.distributions.MixtureSameFamily gives the same density
(the tests check it) but has no rsample.

Training record (`training_diagnostics`, kept in the run's record): the batch-mean mixing weight of
every component and its batch-mean ELBO term E_{q_m}[log p(x, z) - log q(z|x)] at each of the first
`TRACE_STEPS` training steps, every epoch's mean training weights, and which component wins. On
MNIST one component takes all the weight within ~10 Adam steps: the objective's doing, not a bug
(the ELBO rewards a second component by at most log M nats; docs/me-collapse.md). When the winner
is not component 0 (the base encoder every method shares), ME's pairing with the VAE holds only
through the decoder's initial weights and the batch order.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical, Independent, Normal

from .base import EncoderModel
from .networks import Encoder, GaussianEncoder
from .registry import register


class GaussianMixture:
    """sum_m w_m N(z; mean_m, diag std_m^2) per example: log w (B, M), means, stds (B, M, d)."""

    def __init__(self, log_weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor):
        self.log_weights = log_weights
        self.components = Independent(Normal(means, stds), 1)  # batch (B, M), event (d,)

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def mean_weights(self) -> dict[str, float]:
        """{'weight_j': mean over the batch of component j's mixing weight}: a component whose mean
        weight is ~0 on test images has collapsed (the mixture is then one component fewer)."""
        return {f"weight_{j}": float(w) for j, w in enumerate(self.weights.mean(0))}

    @property
    def num_components(self) -> int:
        return self.log_weights.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        return self.log_weights.shape[:-1]

    @property
    def event_shape(self) -> torch.Size:
        return self.components.event_shape

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights.unsqueeze(-1) * self.components.mean).sum(-2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) for z of shape (*S, B, d) -> (*S, B)."""
        return torch.logsumexp(self.components.log_prob(z.unsqueeze(-2)) + self.log_weights, -1)

    def component_rsample(self) -> torch.Tensor:
        """One reparameterised sample from every component, (M, B, d)."""
        return self.components.rsample().movedim(-2, 0)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        index = Categorical(logits=self.log_weights).sample(sample_shape)  # (*S, B)
        every = self.components.rsample(sample_shape)  # (*S, B, M, d)
        index = index[..., None, None].expand(*index.shape, 1, every.shape[-1])
        return every.gather(-2, index).squeeze(-2)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_with_log_prob(self, sample_shape=()):
        z = self.rsample(sample_shape)
        return z, self.log_prob(z)


def component_terms(log_joint, x: torch.Tensor, q: GaussianMixture) -> torch.Tensor:
    """log p(x, z_m) - log q(z_m|x) for one reparameterised z_m ~ q_m per component, (M, B).

    `log_joint(x, z)` takes z of shape (M, B, d) (a leading sample dim) and returns (M, B).
    """
    z = q.component_rsample()
    return log_joint(x, z) - q.log_prob(z)


def stratified_elbo(log_joint, x: torch.Tensor, q: GaussianMixture) -> torch.Tensor:
    """sum_m w_m [log p(x, z_m) - log q(z_m|x)], z_m ~ q_m reparameterised; shape (B,)."""
    return (q.weights.transpose(0, 1) * component_terms(log_joint, x, q)).sum(0)


TRACE_STEPS = 100  # training steps whose mixing weights ME's training record keeps
WON_AT = 0.99  # a component whose batch-mean weight reaches this has taken the mixture


class WeightTrace:
    """A mixture's weights during training (plain Python state, not in the state_dict, so weights
    files and checkpoints are unchanged): per step, for the first `steps` steps, each component's
    batch-mean weight and batch-mean ELBO term; per epoch, the mean training weights. A run resumed
    from a checkpoint starts its trace at the epoch it resumed from (`starts_at_epoch`)."""

    def __init__(self, steps: int = TRACE_STEPS):
        self.steps = steps
        self.weights: list[list[float]] = []
        self.terms: list[list[float]] = []
        self.epoch_weights: list[list[float]] = []
        self.steps_seen = 0
        self.first_epoch: int | None = None
        self._epoch_sum: torch.Tensor | None = None
        self._epoch_count = 0

    def epoch_start(self, epoch: int) -> None:
        self._close_epoch()
        if self.first_epoch is None:
            self.first_epoch = epoch

    def step(self, weights: torch.Tensor, terms: torch.Tensor) -> None:
        """One training step: weights (B, M), terms (M, B), both detached."""
        self.steps_seen += 1
        if len(self.weights) < self.steps:
            self.weights.append([round(float(w), 5) for w in weights.mean(0)])
            self.terms.append([round(float(t), 2) for t in terms.mean(1)])
        total = weights.sum(0).double()  # stays on the device: no sync a step after the trace
        self._epoch_sum = total if self._epoch_sum is None else self._epoch_sum + total
        self._epoch_count += len(weights)

    def _close_epoch(self) -> None:
        if self._epoch_count:
            self.epoch_weights.append([round(float(w), 5)
                                       for w in self._epoch_sum / self._epoch_count])
        self._epoch_sum, self._epoch_count = None, 0

    def summary(self) -> dict:
        """What the run's record keeps; {} before any training step."""
        self._close_epoch()
        if not self.weights:
            return {}
        last = self.weights[-1]
        winner = max(range(len(last)), key=last.__getitem__)
        decided = None  # first step from which the winner's weight stays >= WON_AT in the trace
        for i in range(len(self.weights) - 1, -1, -1):
            if self.weights[i][winner] < WON_AT:
                break
            decided = i + 1
        final = self.epoch_weights[-1] if self.epoch_weights else last
        final_winner = max(range(len(final)), key=final.__getitem__)
        return {
            "what": (f"mixing weights (batch means) at each of the first {len(self.weights)} "
                     "training steps, each component's batch-mean ELBO term E_q_m[log p(x,z) - "
                     "log q(z|x)] there, and every epoch's mean training weights; component 0 is "
                     "the base encoder shared with the VAE"),
            "starts_at_epoch": self.first_epoch or 0,
            "steps_traced": len(self.weights),
            "steps_trained": self.steps_seen,
            "step_weights": self.weights,
            "step_component_elbo": self.terms,
            "epoch_weights": self.epoch_weights,
            "winner_at_last_traced_step": winner,
            "won_from_step": decided,
            "won_at": WON_AT,
            "winner": final_winner,
            "base_component_lost": final_winner != 0,
        }


@register("me", label="ME", variants=[{"m": 2}, {"m": 3}, {"m": 4}, {"m": 5}])
class ME(EncoderModel):
    def __init__(self, net, latent_dim, likelihood, num_train, m: int = 2):
        super().__init__(net, latent_dim, likelihood, num_train)
        if m < 1:
            raise ValueError(f"a mixture needs at least one component, got m={m}")
        self.num_components = int(m)
        # component 0 is the base encoder every method shares (common random numbers, methods.base)
        self.components = nn.ModuleList(
            [self.base_encoder()] + [GaussianEncoder(net, latent_dim) for _ in range(m - 1)])
        self.gate = Encoder(net, m)
        self.weight_trace = WeightTrace()

    def posterior(self, x: torch.Tensor) -> GaussianMixture:
        means, stds = zip(*(enc(x) for enc in self.components), strict=True)
        log_weights = torch.log_softmax(self.gate(x), dim=-1)
        return GaussianMixture(log_weights, torch.stack(means, -2), torch.stack(stds, -2))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        q = self.posterior(x)
        terms = component_terms(self.log_joint, x, q)
        weights = q.weights
        if self.training and torch.is_grad_enabled():  # a training step (validation runs no_grad)
            self.weight_trace.step(weights.detach(), terms.detach())
        return (weights.transpose(0, 1) * terms).sum(0)

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.weight_trace.epoch_start(epoch)

    def diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        return self.posterior(x).mean_weights()

    def training_diagnostics(self) -> dict:
        return self.weight_trace.summary()
