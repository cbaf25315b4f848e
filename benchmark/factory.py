"""The one model factory: a registered method built for a dataset column and a latent size, from
a seed. Runs (benchmark.run), timing tables (benchmark.timing), Figure 1
(benchmark.analyses.figures) and the speed study (benchmark.analyses.speed) all build their models
here, so a model is the same whichever of them builds it; it imports no training code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from methods import get_method
from methods.likelihoods import make_likelihood

if TYPE_CHECKING:
    from .specs import DatasetSettings


def build_model(method: str, params: Mapping, *, settings: DatasetSettings, image_shape,
                likelihood: str | torch.nn.Module, latent_dim: int, num_train: int, seed: int):
    """(model, likelihood): `method` with `params` on the networks `settings` give for
    `image_shape`, its likelihood named `likelihood` (with the column's sigma_x; or a likelihood
    module to share, e.g. a fitted run's), built right after
    torch.manual_seed(`seed`) (the shared parts, decoder and base encoder, then draw from their own
    role seeds: methods.base)."""
    net = settings.net_config(image_shape)
    lik = (make_likelihood(likelihood, settings.sigma_x, settings.learn_sigma_x)
           if isinstance(likelihood, str) else likelihood)
    torch.manual_seed(seed)
    model = get_method(method).build(dict(params), net=net, latent_dim=latent_dim, likelihood=lik,
                                     num_train=num_train)
    return model, lik
