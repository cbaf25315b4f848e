"""Decoder likelihoods p(x|z), chosen by the dataset (real-valued or binary), never by the method.

Images are (..., C, H, W); log-probabilities sum over the last three dims, so decoder outputs with
extra leading sample dims (K, B, C, H, W) broadcast against a batch x of shape (B, C, H, W).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

IMAGE_DIMS = (-3, -2, -1)


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(x; g(z), sigma_x^2 I) with sigma_x a fixed constant (paper eq. 1, footnote 2)."""

    def __init__(self, sigma: float):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma_x must be positive, got {sigma}")
        self.sigma = float(sigma)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        d = x.shape[-3] * x.shape[-2] * x.shape[-1]
        sq = (out - x).pow(2).sum(IMAGE_DIMS)
        return -0.5 * d * math.log(2 * math.pi * self.sigma**2) - sq / (2 * self.sigma**2)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def output_for_mean(self, mean_image: torch.Tensor) -> torch.Tensor:
        """Decoder output whose likelihood mean is `mean_image` (for the mean-image floor)."""
        return mean_image


class BernoulliLikelihood(nn.Module):
    """p(x|z) = prod Bernoulli(x; sigmoid(logits)) for binarized images."""

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # either side may carry the extra dims: samples (K, B, ...) or one mean image (C, H, W)
        x, out = torch.broadcast_tensors(x, out)
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(IMAGE_DIMS)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def output_for_mean(self, mean_image: torch.Tensor) -> torch.Tensor:
        return torch.logit(mean_image.clamp(1e-6, 1 - 1e-6))


def make_likelihood(kind: str, sigma: float | None = None) -> nn.Module:
    if kind == "gaussian":
        if sigma is None:
            raise ValueError("a gaussian likelihood needs sigma_x")
        return GaussianLikelihood(sigma)
    if kind == "bernoulli":
        return BernoulliLikelihood()
    raise ValueError(f"unknown likelihood {kind!r}; choose 'gaussian' or 'bernoulli'")
