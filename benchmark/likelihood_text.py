"""Each table column's likelihood in words, and the ceiling a fixed sigma_x puts on log p(x).

A Gaussian decoder N(g(z), sigma_x^2 I) on D pixels with sigma_x fixed bounds the test
log-likelihood by a perfect reconstruction: log p(x) <= D/2 log(1 / (2 pi sigma_x^2)) (1084.8 nats
on MNIST at sigma_x = 0.1, 4250.6 on SVHN). A sigma_x learned with the decoder has no fixed bound;
a Bernoulli decoder's is 0. Tables and comparisons with the paper say which holds per column
(docs/likelihood.md explains the choice). Planning-time code: no torch, no data loaded (the
image sizes are the loaders' documented shapes, benchmark.datasets).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .labels import DATASET_LABELS
from .specs import DatasetSettings, load_dataset_settings
from .yamlio import ConfigError

# pixels per image (C x H x W) of each loader (benchmark.datasets' module docstring)
PIXELS = {"mnist": 784, "binarized_mnist": 784, "omniglot": 784, "svhn": 3 * 32 * 32,
          "cifar10": 3 * 32 * 32, "celeba": 3 * 64 * 64}
BERNOULLI_LOADERS = frozenset({"binarized_mnist"})  # binary pixels: a Bernoulli decoder


def gaussian_ceiling(sigma_x: float, pixels: int) -> float:
    """The largest log p(x) (nats) under N(g(z), sigma_x^2 I) on `pixels` pixels with sigma_x
    fixed: a perfect reconstruction, D/2 log(1 / (2 pi sigma_x^2))."""
    return pixels / 2 * math.log(1 / (2 * math.pi * sigma_x**2))


@dataclass(frozen=True)
class ColumnLikelihood:
    """The likelihood of one table column (dataset)."""

    dataset: str
    kind: str  # "gaussian", "bernoulli" or "unknown" (no settings for the dataset)
    sigma_x: float | None = None  # fixed value, or the starting value when learned
    learned: bool = False  # one global sigma_x trained with the decoder
    pixels: int | None = None  # D; None when the image size is not known here

    @classmethod
    def of(cls, dataset: str, settings: DatasetSettings | None) -> ColumnLikelihood:
        if settings is None:
            return cls(dataset, "unknown")
        loader = settings.loader(dataset)
        pixels = PIXELS.get(loader)
        if loader in BERNOULLI_LOADERS or settings.sigma_x is None:
            return cls(dataset, "bernoulli", pixels=pixels)
        return cls(dataset, "gaussian", float(settings.sigma_x), bool(settings.learn_sigma_x), pixels)

    @property
    def label(self) -> str:
        return DATASET_LABELS.get(self.dataset, self.dataset)

    @property
    def fixed_sigma(self) -> bool:
        return self.kind == "gaussian" and not self.learned

    @property
    def ceiling(self) -> float | None:
        """The bound on log p(x) in nats where the likelihood fixes one: D/2 log(1 / (2 pi
        sigma_x^2)) for a fixed sigma_x, 0 for Bernoulli; None for a learned sigma_x (no fixed
        bound), an unknown image size or an unknown likelihood."""
        if self.kind == "bernoulli":
            return 0.0
        if self.fixed_sigma and self.pixels:
            return gaussian_ceiling(self.sigma_x, self.pixels)
        return None

    def text(self, named: bool = True) -> str:
        """'sigma_x fixed at 0.1 (ceiling 1084.8 nats on MNIST)', 'sigma_x learned (one global
        value, from 0.1; no fixed ceiling)' or 'Bernoulli (log p(x) <= 0)'; `named=False` leaves
        the dataset out of the ceiling (for a caption that names it before)."""
        if self.kind == "bernoulli":
            return "Bernoulli (log p(x) <= 0)"
        if self.kind == "unknown":
            return "likelihood not known (no settings for this dataset)"
        if self.learned:
            return f"sigma_x learned (one global value, from {self.sigma_x:g}; no fixed ceiling)"
        where = f" on {self.label}" if named else ""
        if self.ceiling is None:
            return (f"sigma_x fixed at {self.sigma_x:g} (ceiling D/2 log(1 / (2 pi sigma_x^2)) "
                    f"nats{where}, D not known here)")
        return f"sigma_x fixed at {self.sigma_x:g} (ceiling {self.ceiling:.1f} nats{where})"


def column_likelihoods(datasets: Iterable[str],
                       settings: Mapping[str, DatasetSettings] | None = None
                       ) -> dict[str, ColumnLikelihood]:
    """{dataset: ColumnLikelihood}: from `settings` where given (a plan's), else from
    specs/datasets.yaml; a dataset with neither is 'unknown'."""
    out = {}
    for ds in datasets:
        found = (settings or {}).get(ds)
        if found is None:
            try:
                found = load_dataset_settings(ds)
            except (ConfigError, OSError):
                found = None
        out[ds] = ColumnLikelihood.of(ds, found)
    return out


def _and(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def caption_of(likelihoods: Iterable[ColumnLikelihood], lead: str = "Likelihood") -> str:
    """One sentence per likelihood, naming its columns: 'Likelihood: MNIST and OMNIGLOT:
    Gaussian, sigma_x learned (one global value, from 0.1; no fixed ceiling).'"""
    groups: dict[str, list[str]] = {}
    for lik in likelihoods:
        kind = "Gaussian, " if lik.kind == "gaussian" else ""
        groups.setdefault(kind + lik.text(named=False), []).append(lik.label)
    return f"{lead}: " + " ".join(f"{_and(labels)}: {text}." for text, labels in groups.items())


def likelihood_caption(datasets: Iterable[str],
                       settings: Mapping[str, DatasetSettings] | None = None) -> str:
    """A table caption's sentence on its columns' likelihoods (caption_of), from `settings` (a
    plan's) or specs/datasets.yaml."""
    return caption_of(column_likelihoods(datasets, settings).values())
