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


def stratified_elbo(log_joint, x: torch.Tensor, q: GaussianMixture) -> torch.Tensor:
    """sum_m w_m [log p(x, z_m) - log q(z_m|x)], z_m ~ q_m reparameterised; shape (B,).

    `log_joint(x, z)` takes z of shape (M, B, d) (a leading sample dim) and returns (M, B).
    """
    z = q.component_rsample()
    f = log_joint(x, z) - q.log_prob(z)  # (M, B)
    return (q.weights.transpose(0, 1) * f).sum(0)


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

    def posterior(self, x: torch.Tensor) -> GaussianMixture:
        means, stds = zip(*(enc(x) for enc in self.components), strict=True)
        log_weights = torch.log_softmax(self.gate(x), dim=-1)
        return GaussianMixture(log_weights, torch.stack(means, -2), torch.stack(stds, -2))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        return stratified_elbo(self.log_joint, x, self.posterior(x))

    def diagnostics(self, x: torch.Tensor) -> dict[str, float]:
        return self.posterior(x).mean_weights()
