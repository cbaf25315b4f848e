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
# What training computes in (benchmark.train): fp32, or bf16 autocast around each step's forward pass
# and loss on hardware with fast bf16 (evaluation always fp32). The default is left out of a run's
# config, so records made before the key existed stay current.
PRECISIONS = ("fp32", "bf16")
DEFAULT_PRECISION = "fp32"
# How Adam's step size moves over a run (benchmark.train.lr_at_step): "constant" (lr throughout:
# every record before December 2026), or "cosine" (lr * (1 + cos(pi t / T)) / 2 over the T steps of
# the planned epochs, reaching 0 at the last step). The paper gives no schedule. The default is
# left out of a run's config, as `precision` is.
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_LR_SCHEDULE = "constant"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    epochs: int | dict  # a number, or {latent size: epochs} (larger latents converge slower)
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
    precision: str = DEFAULT_PRECISION  # one of PRECISIONS: what training steps compute in
    lr_schedule: str = DEFAULT_LR_SCHEDULE  # one of LR_SCHEDULES: Adam's step size over the run

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"profile {self.name!r}: precision must be "
                              f"{' or '.join(PRECISIONS)}, got {self.precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"profile {self.name!r}: lr_schedule must be "
                              f"{' or '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if isinstance(self.epochs, dict):
            bad = [f"{k}: {v}" for k, v in self.epochs.items()
                   if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1
                           and isinstance(v, int) and not isinstance(v, bool) and v >= 1)]
            if bad or not self.epochs:
                raise ConfigError(f"profile {self.name!r}: epochs per latent size must map sizes to "
                                  f"epochs >= 1, e.g. {{10: 6, 50: 12}}; got {bad[0] if bad else '{}'}")
        for name in ("batch_size", "splits", "restarts", "iwae_k", "eval_batch_size") + \
                (() if isinstance(self.epochs, dict) else ("epochs",)):
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

    def as_config(self) -> dict:
        """What of the profile goes into a run's config (and its hash): every field but those that
        only size the sweep (SWEEP_ONLY), and `precision` and `lr_schedule` only when they are not
        their defaults, so records made before the keys existed stay current (as
        DatasetSettings.as_config leaves out learn_sigma_x at its default)."""
        config = {k: v for k, v in self.as_dict().items() if k not in SWEEP_ONLY}
        if config["precision"] == DEFAULT_PRECISION:
            del config["precision"]
        if config["lr_schedule"] == DEFAULT_LR_SCHEDULE:
            del config["lr_schedule"]
        return config

    def at_dim(self, dim: int) -> Profile:
        """The profile as one run of latent size `dim` sees it: epochs a number (a run's config,
        hash included, is the same as a profile giving that number for every size)."""
        if not isinstance(self.epochs, dict):
            return self
        if dim not in self.epochs:
            raise ConfigError(f"profile {self.name!r} gives epochs for latent sizes "
                              f"{', '.join(map(str, sorted(self.epochs)))}, not for {dim}")
        return dataclasses.replace(self, epochs=self.epochs[dim])

    def epochs_text(self) -> str:
        """'6' or '6 / 10 / 16 (d=10 / 20 / 50)'."""
        if not isinstance(self.epochs, dict):
            return str(self.epochs)
        dims = sorted(self.epochs)
        return (" / ".join(str(self.epochs[d]) for d in dims) + " (d="
                + " / ".join(map(str, dims)) + ")")


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
