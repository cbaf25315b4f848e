"""Each column's likelihood in words and the ceiling of a fixed sigma_x (benchmark.likelihood_text)."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.likelihood_text import (
    ColumnLikelihood,
    column_likelihoods,
    gaussian_ceiling,
    likelihood_caption,
)
from benchmark.specs import DatasetSettings, load_dataset_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("dataset, pixels, ceiling", [
    ("mnist", 784, 1084.8), ("omniglot", 784, 1084.8), ("svhn", 3072, 4250.6),
    ("cifar10", 3072, 4250.6), ("celeba", 12288, 17002.2)])
def test_ceiling_of_a_fixed_sigma_x_is_a_perfect_reconstruction(dataset, pixels, ceiling):
    """D/2 log(1 / (2 pi sigma^2)): the values issue 23 quotes (and CelebA's, 17002.2)."""
    assert gaussian_ceiling(0.1, pixels) == pytest.approx(ceiling, abs=0.05)
    fixed = dataclasses.replace(load_dataset_settings(dataset), learn_sigma_x=False)
    lik = ColumnLikelihood.of(dataset, fixed)
    assert (lik.pixels, round(lik.ceiling, 1)) == (pixels, ceiling)
    assert gaussian_ceiling(0.05, pixels) > lik.ceiling  # a smaller sigma_x raises it


def test_texts_per_kind():
    mnist = load_dataset_settings("mnist")
    fixed = ColumnLikelihood.of("mnist", dataclasses.replace(mnist, learn_sigma_x=False))
    assert fixed.text() == "sigma_x fixed at 0.1 (ceiling 1084.8 nats on MNIST)"
    assert fixed.text(named=False) == "sigma_x fixed at 0.1 (ceiling 1084.8 nats)"
    learned = ColumnLikelihood.of("mnist", mnist)
    assert learned.learned and learned.ceiling is None
    assert learned.text() == "sigma_x learned (one global value, from 0.1; no fixed ceiling)"
    binary = ColumnLikelihood.of("binarized_mnist_fc", load_dataset_settings("binarized_mnist_fc"))
    assert (binary.kind, binary.ceiling, binary.pixels) == ("bernoulli", 0.0, 784)
    assert binary.text() == "Bernoulli (log p(x) <= 0)"
    odd = ColumnLikelihood.of("mine", DatasetSettings(hidden=8, num_conv=1, sigma_x=0.2))
    assert odd.ceiling is None and "D not known here" in odd.text()
    assert column_likelihoods(["nowhere"])["nowhere"].kind == "unknown"


def test_captions_of_the_tables():
    """What every table's caption says (pipeline.build_table), from specs/datasets.yaml."""
    assert likelihood_caption(["mnist", "omniglot"]) == (
        "Likelihood: MNIST and OMNIGLOT: Gaussian, sigma_x learned (one global value, from 0.1; "
        "no fixed ceiling).")
    assert likelihood_caption(["binarized_mnist", "binarized_mnist_fc"]) == (
        "Likelihood: Binary MNIST (CNN) and Binary MNIST (FC): Bernoulli (log p(x) <= 0).")
    # a plan's own settings win; columns with different likelihoods get a sentence each
    svhn = dataclasses.replace(load_dataset_settings("svhn"), learn_sigma_x=False)
    assert likelihood_caption(["svhn", "celeba"], {"svhn": svhn}) == (
        "Likelihood: SVHN: Gaussian, sigma_x fixed at 0.1 (ceiling 4250.6 nats). "
        "CelebA: Gaussian, sigma_x learned (one global value, from 0.1; no fixed ceiling).")


def test_imports_no_torch():
    """Captions are written where no model is built: the module must not pull torch in."""
    code = ("import sys, benchmark.likelihood_text as t; t.likelihood_caption(['mnist']); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
