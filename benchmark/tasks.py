"""RunTask: a run's key (benchmark.keys) with everything its run needs, small and picklable; its
config hash tells a current record from a stale one, and its results folder (benchmark.store)
where the record, checkpoint and claim go. Planning (benchmark.plan) makes tasks without any
training code."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .keys import RunKey, _config_parts
from .store import ResultsStore

if TYPE_CHECKING:
    from .profiles import Profile
    from .specs import DatasetSettings


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
