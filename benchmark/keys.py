"""RunKey names one training run; its fields give the seeds (and, through benchmark.store, the
record's path). RunTask is a key with everything its run needs; its config hash tells a current
record from a stale one. Both live here so that planning (benchmark.plan) needs no training code."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .profiles import SWEEP_ONLY  # what only sizes the sweep: not part of a run's config

if TYPE_CHECKING:
    from .profiles import Profile
    from .specs import DatasetSettings
    from .store import ResultsStore


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


@dataclass(frozen=True)
class RunTask:
    """Everything one run needs; small and picklable, so it can travel to a Slurm node."""

    key: RunKey
    params: tuple[tuple[str, object], ...]
    profile: Profile
    settings: DatasetSettings
    data_root: str
    results_dir: str
    device: str = "cpu"
    threads: int | None = None
    download: bool = False
    # what an existing current record lets this run do (it looks again once it holds the claim):
    # --force recomputes a done or failed one, --retry-failed a failed one, each only if the record
    # was written before `planned_at` (so two forced launchers do not each redo the other's run)
    force: bool = False
    retry_failed: bool = False
    planned_at: float = float("inf")
    # the local launcher (pid, start time): its worker stops when it is gone; None elsewhere
    launcher: tuple[int, int | None] | None = None
    # --keep-weights: save the trained model's state_dict beside the record (not in the config:
    # the same run with or without it gives the same result)
    keep_weights: bool = False

    @property
    def store(self) -> ResultsStore:
        from .store import ResultsStore  # store imports this module (RunKey)

        return ResultsStore(self.results_dir)

    @property
    def record_path(self) -> Path:
        return self.store.record_path(self.key)

    @property
    def data_name(self) -> str:
        """The loader in benchmark.datasets: the column's dataset unless its settings name one."""
        return self.settings.loader(self.key.dataset)

    @property
    def checkpoint_path(self) -> Path:
        return self.store.checkpoint_path(self.key)

    def config(self) -> dict:
        """What determines the result; its hash tells a stale record from a current one."""
        params, profile, settings = (json.loads(part) for part in self._shared_config())
        return {"key": dataclasses.asdict(self.key), "params": params, "profile": profile,
                "settings": settings}

    def config_hash(self) -> str:
        # json.dumps(self.config(), sort_keys=True), assembled from the parts many tasks share
        params, profile, settings = self._shared_config()
        text = (f'{{"key": {json.dumps(dataclasses.asdict(self.key), sort_keys=True)}, '
                f'"params": {params}, "profile": {profile}, "settings": {settings}}}')
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _shared_config(self) -> tuple[str, str, str]:
        try:
            return _config_parts(self.key.method, self.params, self.profile, self.settings)
        except TypeError:  # an unhashable part (a list in a profile field): not cached
            return _config_parts.__wrapped__(self.key.method, self.params, self.profile,
                                             self.settings)


@functools.lru_cache(maxsize=1024)
def _config_parts(method: str, params, profile, settings) -> tuple[str, str, str]:
    """The sorted JSON of a config's parts that do not depend on the split and restart: every
    setting of the method, defaults included (a changed default is a new config), the profile
    less what only sizes the sweep (splits, restarts, description), the dataset's settings."""
    from methods.registry import method_spec  # read from the plugin's source: no torch

    return (json.dumps(method_spec(method).settings(dict(params)), sort_keys=True),
            json.dumps({k: v for k, v in profile.as_dict().items()
                        if k not in SWEEP_ONLY}, sort_keys=True),
            json.dumps(settings.as_config(), sort_keys=True))
