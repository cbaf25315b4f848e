"""Profiles size the work (epochs, subsets, splits x restarts, IWAE K): benchmark/profiles/*.yaml."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .yamlio import ConfigError, build_dataclass, field_problems, read_yaml_mapping

PROFILE_DIR = Path(__file__).with_name("profiles")
SWEEP_ONLY = ("description", "splits", "restarts")  # change the sweep, not any one run's result


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


def apply_overrides(profile: Profile, assignments: Iterable[str]) -> Profile:
    """`profile` with `--set KEY=VALUE` assignments on top, each VALUE read as a YAML scalar (1e-3
    too, which YAML 1.1 alone reads as text), checked like a profile file: every malformed
    assignment, unknown key and wrong type in one ConfigError line. The result is named after
    the changes that alter a run (quick+batch_size=64,epochs=10): its records are new ones,
    beside the profile's own, and the changed values are in their config hash."""
    values, malformed = {}, []
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            malformed.append(item)
            continue
        values[key.strip()] = _scalar(text.strip())
    data = {k: v for k, v in profile.as_dict().items() if k != "name"}
    data.update(values)
    problems = [f"{item!r} is not KEY=VALUE (e.g. --set epochs=10)" for item in malformed]
    problems += field_problems(Profile, data, exclude=("name",))
    if problems:
        raise ConfigError(f"--set on profile {profile.name!r}: {'; '.join(problems)}")
    base = profile.as_dict()
    changed = sorted(k for k, v in values.items() if k not in SWEEP_ONLY and v != base[k])
    name = profile.name + ("+" + ",".join(f"{k}={_text(values[k])}" for k in changed)
                           if changed else "")
    return build_dataclass(Profile, data, "--set", name=name)


def _scalar(text: str):
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # 1e-3, inf: numbers to a reader, text to YAML 1.1
        except ValueError:
            return value
    return value


def _text(value) -> str:
    return "null" if value is None else str(value)
