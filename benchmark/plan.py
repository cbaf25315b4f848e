"""Expand a table spec x profile into run tasks and sort them by the state of their records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import datasets
from .keys import RunKey
from .profiles import Profile
from .records import record_state
from .run import RunTask
from .specs import Row, TableSpec, load_dataset_settings


@dataclass
class Plan:
    tasks: list[RunTask] = field(default_factory=list)
    states: dict[RunKey, str] = field(default_factory=dict)  # done/failed/missing/stale/corrupt
    rows_without_plugin: list[Row] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # dataset -> why it is not run

    def pending(self, retry_failed: bool = False, force: bool = False) -> list[RunTask]:
        redo = {"missing", "stale", "corrupt"} | ({"failed"} if retry_failed else set())
        return [t for t in self.tasks if force or self.states[t.key] in redo]

    def summary(self) -> str:
        counts = Counter(self.states.values())
        parts = [f"{counts[s]} {s}" for s in ("done", "failed", "missing", "stale", "corrupt")
                 if counts[s]]
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
    plan = Plan()
    settings_of = {}
    for ds in spec.datasets:
        if dataset_filter is not None and ds not in dataset_filter:
            plan.unavailable[ds] = "not selected"
            continue
        settings_of[ds] = load_dataset_settings(ds)
        if settings_of[ds].loader(ds) not in datasets.LOADERS:
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
                        task = RunTask(key, row.params, profile, settings, str(data_root),
                                       str(results_dir), device, threads, download)
                        plan.tasks.append(task)
                        plan.states[key] = record_state(task.record_path, task.config_hash())
    return plan


def records_dir(results_dir: str | Path, profile: Profile, spec: TableSpec) -> Path:
    return Path(results_dir) / "runs" / profile.name / spec.name
