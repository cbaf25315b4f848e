"""Profiles size the work (epochs, subsets, splits x restarts, IWAE K): benchmark/profiles/*.yaml."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .yamlio import ConfigError, build_dataclass, read_yaml_mapping

PROFILE_DIR = Path(__file__).with_name("profiles")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    epochs: int
    batch_size: int
    lr: float
    patience: int | None  # stop after this many epochs without a better validation ELBO
    splits: int
    restarts: int
    iwae_k: int
    eval_batch_size: int
    train_size: int | None  # training images per run after holding out validation; None = all
    val_size: int | None
    test_size: int | None

    def __post_init__(self):
        for name in ("epochs", "batch_size", "splits", "restarts", "iwae_k", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"profile {self.name!r}: {name} must be >= 1, got "
                                  f"{getattr(self, name)}")
        for name, none in (("patience", "no early stopping"), ("train_size", "all images"),
                           ("val_size", "all images"), ("test_size", "all images")):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"profile {self.name!r}: {name} must be >= 1 or null ({none}), "
                                  f"got {value}")
        if not self.lr > 0:  # also NaN
            raise ConfigError(f"profile {self.name!r}: lr must be > 0, got {self.lr}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (benchmark/profiles/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown profile {name_or_path!r}; known profiles: {', '.join(profile_names())}"
            )
    return build_dataclass(Profile, read_yaml_mapping(path), path, name=path.stem)
