"""Test-time estimators: IWAE log-likelihood, ELBO, and the mean-image sanity floor."""

from __future__ import annotations

import math

import torch

from methods import sample_with_log_prob


def iwae_log_likelihood(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) (Burda et al. 2016) with q(z|x) as proposal, (B,).

    log p(x) ~= logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K, z_k ~ q(z|x). Its expectation
    is a lower bound that tightens as K grows and equals the ELBO's expectation at K = 1.
    """
    z, log_q = sample_with_log_prob(model.posterior(x), (k,))
    log_w = model.log_joint(x, z) - log_q
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def batched_mean(fn, images: torch.Tensor, batch_size: int, to_input) -> float:
    """Mean over `images` of a per-example statistic, computed batch by batch without autograd."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_input(images[start : start + batch_size])
            values = fn(x)
            if not torch.isfinite(values).all():
                raise FloatingPointError("non-finite value during evaluation")
            total += values.double().sum().item()
            count += len(x)
    return total / count


def evaluate(model, images, *, k: int, batch_size: int, to_input) -> dict[str, float]:
    """IWAE(K) log-likelihood and single-sample ELBO, averaged over `images` (nats per example)."""
    model.eval()
    return {
        "iwae": batched_mean(lambda x: iwae_log_likelihood(model, x, k), images, batch_size, to_input),
        "elbo": batched_mean(model.elbo, images, batch_size, to_input),
    }


def mean_image_log_likelihood(likelihood, train_mean: torch.Tensor, images, batch_size, to_input):
    """Closed-form log p(x) of the latent-free model whose decoder always outputs the training
    mean image: the floor every trained model must clear by a wide margin."""
    out = likelihood.output_for_mean(train_mean)
    return batched_mean(lambda x: likelihood.log_prob(x, out), images, batch_size, to_input)


def mean_diagnostics(model, images: torch.Tensor, batch_size: int, to_input) -> dict[str, float]:
    """The method's own `diagnostics(x)` (e.g. a mixture's mean mixing weight per component),
    averaged over `images` weighted by batch size; {} for a method that reports none."""
    totals: dict[str, float] = {}
    count = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_input(images[start : start + batch_size])
            for name, value in model.diagnostics(x).items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(x)
            count += len(x)
    return {name: total / count for name, total in totals.items()} if count else {}
