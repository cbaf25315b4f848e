"""HF: Householder flow encoder (Tomczak & Welling 2016; jmtomczak/vae_householder_flow).

z_0 ~ N(mean(x), diag std(x)^2) from the VAE encoder, then k Householder reflections

    v_1 = Linear(h(x)),   v_{t+1} = Linear_t(v_t)       (linear maps, no nonlinearity, as in the
                                                          reference's HF-v layers)
    z_t = (I - 2 v_t v_t^T / ||v_t||^2) z_{t-1}

where h(x) is the encoder's h-dim hidden features. Each reflection is orthogonal and symmetric
(its own inverse) with determinant -1, so the flow is volume preserving and
log q(z_k|x) = log N(z_0; mean, std) with z_0 = H_1 ... H_k z_k. Together the reflections turn the
diagonal covariance into the full covariance U diag(std^2) U^T, U = H_k ... H_1.

Training ELBO: one reparameterised z_0 per example and the base entropy in closed form,
ELBO = log p(x, z_k) + H[N(mean, std)] (the reference uses log q(z_0) of the sample; same
expectation, lower variance). The IWAE proposal is a `FlowPosterior` (methods.iaf) whose
`rsample_with_log_prob` needs no inversion; `log_prob(z)` inverts by reflecting in reverse order.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import EncoderModel, diagonal_gaussian
from .iaf import FlowPosterior
from .registry import register

NORM_FLOOR = 1e-12  # ||v||^2 floor against a zero vector; never active for a generic v


def reflect(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(I - 2 v v^T / ||v||^2) z, batched over leading dims; v (B, d) broadcasts over samples."""
    norm_sq = v.square().sum(-1, keepdim=True).clamp_min(NORM_FLOOR)
    coef = 2 * (z * v).sum(-1, keepdim=True) / norm_sq
    return z - coef * v


class HouseholderFlow(nn.Module):
    def __init__(self, context_dim: int, latent_dim: int, k: int):
        super().__init__()
        if k < 1:
            raise ValueError(f"HF needs at least one reflection, got k={k}")
        self.first = nn.Linear(context_dim, latent_dim)
        self.rest = nn.ModuleList(nn.Linear(latent_dim, latent_dim) for _ in range(k - 1))

    def vectors(self, h: torch.Tensor) -> list[torch.Tensor]:
        vs = [self.first(h)]
        for layer in self.rest:
            vs.append(layer(vs[-1]))
        return vs

    @staticmethod
    def forward_with(vs, z: torch.Tensor):
        for v in vs:
            z = reflect(z, v)
        return z, torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)

    @staticmethod
    def inverse_with(vs, z: torch.Tensor):
        for v in reversed(vs):
            z = reflect(z, v)
        return z, torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)


@register("hf", label="HF", variants=[{"k": 1}, {"k": 2}, {"k": 4}, {"k": 8}])
class HF(EncoderModel):
    def __init__(self, net, latent_dim, likelihood, num_train, k: int = 1):
        super().__init__(net, latent_dim, likelihood, num_train)
        self.encoder = self.base_encoder()
        self.flow = HouseholderFlow(net.hidden, latent_dim, k)

    def posterior(self, x: torch.Tensor) -> FlowPosterior:
        mean, std, h = self.encoder.forward_with_features(x)
        vs = self.flow.vectors(h)
        return FlowPosterior(
            mean,
            std,
            lambda z: HouseholderFlow.forward_with(vs, z),
            lambda z: HouseholderFlow.inverse_with(vs, z),
        )

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        mean, std, h = self.encoder.forward_with_features(x)
        q0 = diagonal_gaussian(mean, std)
        z, _ = HouseholderFlow.forward_with(self.flow.vectors(h), q0.rsample())
        return self.log_joint(x, z) + q0.entropy()
