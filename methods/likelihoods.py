"""Decoder likelihoods p(x|z), chosen by the dataset (real-valued or binary), never by the method.

Images are (..., C, H, W); log-probabilities sum over the last three dims, so decoder outputs with
extra leading sample dims (K, B, C, H, W) broadcast against a batch x of shape (B, C, H, W).

From the paper: a Gaussian decoder N(g(z), sigma_x^2 I) for real-valued images (eq. 1), whose
sigma_x "can be subsumed in theta and trained" (footnote 2); it prints no value. Our choice, per
dataset in benchmark/specs/datasets.yaml: sigma_x fixed, or one global sigma_x learned with the
decoder (`learn_sigma_x`, parametrised by its log, starting at `sigma_x`). Why Tables 1-2 learn it:
docs/likelihood.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

IMAGE_DIMS = (-3, -2, -1)


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(x; g(z), sigma_x^2 I) (paper eq. 1, footnote 2): sigma_x a fixed constant, or
    with `learned` one global sigma_x trained with the decoder (a parameter log sigma_x that starts
    at log `sigma`; the optimiser steps it with the model's other parameters)."""

    def __init__(self, sigma: float, learned: bool = False):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma_x must be positive, got {sigma}")
        self.learned = bool(learned)
        if self.learned:
            self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        else:
            self.fixed_sigma = float(sigma)

    @property
    def sigma(self) -> float:
        """sigma_x now, as a number (a learned one's current value)."""
        return float(self.log_sigma.detach().exp()) if self.learned else self.fixed_sigma

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        d = x.shape[-3] * x.shape[-2] * x.shape[-1]
        sq = (out - x).pow(2).sum(IMAGE_DIMS)
        if self.learned:
            log_sigma = self.log_sigma.to(sq.dtype)
            return -0.5 * d * math.log(2 * math.pi) - d * log_sigma - 0.5 * sq * torch.exp(-2 * log_sigma)
        return -0.5 * d * math.log(2 * math.pi * self.fixed_sigma**2) - sq / (2 * self.fixed_sigma**2)

    def inverse_variance(self) -> torch.Tensor | float:
        """1 / sigma_x^2, differentiable in a learned sigma_x (closed-form updates use it: VLAE)."""
        return torch.exp(-2 * self.log_sigma) if self.learned else 1.0 / self.fixed_sigma**2

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


def make_likelihood(kind: str, sigma: float | None = None, learn_sigma: bool = False) -> nn.Module:
    if kind == "gaussian":
        if sigma is None:
            raise ValueError("a gaussian likelihood needs sigma_x")
        return GaussianLikelihood(sigma, learned=learn_sigma)
    if kind == "bernoulli":
        return BernoulliLikelihood()
    raise ValueError(f"unknown likelihood {kind!r}; choose 'gaussian' or 'bernoulli'")
