"""Datasets through their official files and loaders (torchvision conventions: root / download).

`load_dataset(name, root, download=False)` returns an `ImageData` holding the official training
and test images as compact tensors (uint8 where the source is 8-bit), with the scale that maps
them to floats in [0, 1]. Offline and missing, a loader raises `DatasetMissing` whose message is one
line naming the files and where they go.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


class DatasetMissing(FileNotFoundError):
    """The dataset's files are not under the data root (and were not, or could not be, fetched)."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class ImageData:
    name: str
    train: torch.Tensor  # (N, C, H, W): the official training set (validation is held out later)
    test: torch.Tensor  # (M, C, H, W): the official test set
    likelihood: str  # "gaussian" for real-valued pixels, "bernoulli" for binary ones
    scale: float = 1.0  # multiply the stored values by this to get floats in [0, 1]
    val_fraction: float = 0.1  # share of `train` each split holds out for validation

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale


def _mnist(root: Path, download: bool) -> ImageData:
    from torchvision.datasets import MNIST

    try:
        splits = [MNIST(str(root), train=t, download=download) for t in (True, False)]
    except RuntimeError as err:
        raise DatasetMissing(
            f"MNIST not found under {root / 'MNIST' / 'raw'}: put train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or their .gz) "
            f"there, or pass --download ({err})"
        ) from None
    train, test = (s.data.unsqueeze(1).contiguous() for s in splits)
    return ImageData("mnist", train, test, likelihood="gaussian", scale=1 / 255)


LOADERS: dict[str, Callable[[Path, bool], ImageData]] = {
    "mnist": _mnist,
}


def dataset_names() -> list[str]:
    return sorted(LOADERS)


def load_dataset(name: str, root: str | Path, download: bool = False) -> ImageData:
    if name not in LOADERS:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return LOADERS[name](Path(root), download)
