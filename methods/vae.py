"""The standard VAE (Kingma & Welling 2014): q(z|x) = N(b(x), diag c(x)^2), one forward pass."""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from .base import EncoderModel, diagonal_gaussian
from .registry import register


@register("vae", label="VAE")
class VAE(EncoderModel):
    def __init__(self, net, latent_dim, likelihood, num_train):
        super().__init__(net, latent_dim, likelihood, num_train)
        self.encoder = self.base_encoder()

    def posterior(self, x: torch.Tensor):
        return diagonal_gaussian(*self.encoder(x))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        q = self.posterior(x)
        return self.log_likelihood(x, q.rsample()) - kl_divergence(q, self.prior())
