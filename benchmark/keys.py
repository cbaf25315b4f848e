"""RunKey names one training run; its fields give the seeds. `_config_parts` says which of a run's
settings make its configuration (RunTask.config_hash, benchmark.tasks). Keys know nothing of where
a run's record lives (benchmark.store maps keys to paths) nor of the rest a run needs
(benchmark.tasks: RunTask, a key with its settings, data and results folder)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass


def stable_seed(*parts) -> int:
    """A seed from a tuple of values that is the same in every process and on every machine."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True, order=True)
class RunKey:
    profile: str
    table: str
    dataset: str
    dim: int
    method: str
    variant: str
    split: int
    restart: int

    @property
    def split_seed(self) -> int:
        """Depends on (dataset, split) only: every method and dim sees the same validation split."""
        return stable_seed("split", self.dataset, self.split)

    @property
    def init_seed(self) -> int:
        """Depends on (split, restart) only: restarts differ only in initialisation."""
        return stable_seed("init", self.split, self.restart)

    @property
    def eval_seed(self) -> int:
        """Seeds the evaluation's Monte Carlo draws (IWAE, ELBO) after training."""
        return self.init_seed + 1

    def __str__(self) -> str:
        return (f"{self.table}/{self.dataset}/d{self.dim}/{self.method}-{self.variant}"
                f"/s{self.split}-r{self.restart}")


@functools.lru_cache(maxsize=1024)
def _config_parts(method: str, params, profile, settings) -> tuple[str, str, str]:
    """The sorted JSON of a config's parts that do not depend on the split and restart: every
    setting of the method, defaults included (a changed default is a new config), the profile
    less what only sizes the sweep (splits, restarts, description) and less precision at its
    default fp32 (Profile.as_config), the dataset's settings."""
    from methods.registry import method_spec  # read from the plugin's source: no torch

    return (json.dumps(method_spec(method).settings(dict(params)), sort_keys=True),
            json.dumps(profile.as_config(), sort_keys=True),
            json.dumps(settings.as_config(), sort_keys=True))
