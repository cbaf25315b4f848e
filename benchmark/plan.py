"""Expand a table spec x profile into run tasks and sort them by the state of their records (and
claims: a run another process is training is "in progress"), as the results store reads them."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .keys import RunKey
from .profiles import Profile
from .specs import Row, TableSpec, load_dataset_settings
from .store import ClaimInfo, ResultsStore
from .tasks import RunTask

STATES = ("done", "failed", "in progress", "missing", "stale", "corrupt")


@dataclass
class Plan:
    tasks: list[RunTask] = field(default_factory=list)
    states: dict[RunKey, str] = field(default_factory=dict)  # one of STATES
    rows_without_plugin: list[Row] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # dataset -> why it is not run
    why: dict[RunKey, str] = field(default_factory=dict)  # what is wrong with a corrupt/stale record
    claims: dict[RunKey, ClaimInfo] = field(default_factory=dict)  # live (in progress) and dead
    made_at: float = field(default_factory=time.time)

    def pending(self, retry_failed: bool = False, force: bool = False) -> list[RunTask]:
        """The tasks to launch, each told what it may replace (it checks again under its claim);
        never one in progress in another process."""
        redo = {"missing", "stale", "corrupt"} | ({"failed"} if retry_failed else set())
        return [dataclasses.replace(t, force=force, retry_failed=retry_failed,
                                    planned_at=self.made_at)
                for t in self.tasks if self.states[t.key] != "in progress"
                and (force or self.states[t.key] in redo)]

    def in_progress(self) -> list[tuple[RunKey, ClaimInfo]]:
        return [(t.key, self.claims[t.key]) for t in self.tasks
                if self.states[t.key] == "in progress"]

    def dead_claims(self) -> list[tuple[RunKey, ClaimInfo]]:
        """Claims left by processes that are gone: the run's next worker takes them over."""
        return [(t.key, self.claims[t.key]) for t in self.tasks
                if t.key in self.claims and self.states[t.key] != "in progress"]

    def summary(self) -> str:
        counts = Counter(self.states.values())
        parts = [f"{counts[s]} {s}" for s in STATES if counts[s]]
        return f"{len(self.tasks)} runs: " + (", ".join(parts) or "none")


def make_plan(
    spec: TableSpec,
    profile: Profile,
    *,
    data_root: str,
    results_dir: str,
    device: str = "cpu",
    threads: int | None = None,
    download: bool = False,
    methods: set[str] | None = None,
    dataset_filter: set[str] | None = None,
    dims: set[int] | None = None,
) -> Plan:
    plan, store = Plan(), ResultsStore(results_dir)
    settings_of = {}
    for ds in spec.datasets:
        if dataset_filter is not None and ds not in dataset_filter:
            plan.unavailable[ds] = "not selected"
            continue
        settings_of[ds] = load_dataset_settings(ds)
        if settings_of[ds].loader(ds) not in _loaders():
            plan.unavailable[ds] = "no loader yet"
    rows = []
    for row in spec.rows:
        if not row.has_plugin:
            plan.rows_without_plugin.append(row)
        elif row.selected_by(methods):
            rows.append(row)
    for ds in spec.datasets:
        if ds in plan.unavailable:
            continue
        settings = settings_of[ds]
        for dim in spec.dims:
            if dims is not None and dim not in dims:
                continue
            for row in rows:
                for split in range(profile.splits):
                    for restart in range(profile.restarts):
                        key = RunKey(profile.name, spec.name, ds, dim, row.method, row.variant,
                                     split, restart)
                        task = RunTask(key, row.params, profile.at_dim(dim), settings, str(data_root),
                                       str(results_dir), device, threads, download)
                        plan.tasks.append(task)
                        _examine(plan, store, task)
    return plan


def _loaders():
    from . import datasets  # torch: imported when a plan is made, not when plan is imported

    return datasets.LOADERS


def _examine(plan: Plan, store: ResultsStore, task: RunTask) -> None:
    key = task.key
    claim = store.claim_info(key)
    if claim is not None:
        plan.claims[key] = claim
        if claim.dead_because() is None:
            plan.states[key] = "in progress"
            return
    plan.states[key], why = store.examine(key, task.config_hash())
    if why:
        plan.why[key] = why


def records_dir(results_dir: str | Path, profile: Profile, spec: TableSpec) -> Path:
    return ResultsStore(results_dir).runs_dir(profile.name, spec.name)
