"""One tidy export of every run record under a results folder: RESULTS/tables/records.csv, one row
per run, so a sweep loads with `pandas.read_csv` (and records.parquet too where pyarrow is
installed). Written with the tables; records are read and validated by benchmark.store, so a
corrupt one is skipped here as the tables skip it.

Columns: the run's key (profile, table, dataset, dim, method, variant, label = the row as the
table prints it, split, restart), params (every setting of the method, JSON), config_hash,
status, error, every metric the records hold (test_iwae, val_iwae, test_elbo, mean_image_floor,
... one column each), wall_seconds, device, host, threads, git_commit, and the record's path
relative to the results folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .store import CorruptRecord, ResultsStore, parse_record_text, warn_once, write_atomic, write_text_atomic

log = logging.getLogger("gpvae_bench")

KEY_COLUMNS = ["profile", "table", "dataset", "dim", "method", "variant", "label", "split", "restart"]
RUN_COLUMNS = ["params", "config_hash", "status", "error"]
FIRST_METRICS = ["test_iwae", "val_iwae", "test_elbo", "mean_image_floor"]
TAIL_COLUMNS = ["wall_seconds", "device", "host", "threads", "git_commit", "record"]


def record_paths(results_dir: str | Path) -> list[Path]:
    """Every run record under RESULTS/runs, as the store lists them (a folder at a record's path
    is the store's to report)."""
    return [p for p in ResultsStore(results_dir).record_paths() if p.is_file()]


def load_records(results_dir: str | Path) -> list[tuple[Path, dict]]:
    """(path, record) for every readable record; a corrupt one is skipped with a warning."""
    out = []
    for path in record_paths(results_dir):
        try:
            out.append((path, parse_record_text(path.read_text(), path).data))
        except UnicodeDecodeError as err:  # the store's one warning per corrupt record
            warn_once("corrupt", path, "%s: corrupt record (%s): not used", path, err)
        except CorruptRecord as err:
            warn_once("corrupt", path, "%s: not used; a run sets it aside and redoes it", err)
    return out


def row_labels(specs: Iterable = ()) -> dict:
    """{(table, method, variant): label} from the tables' specs (those of benchmark/specs and
    `specs`, e.g. a table spec given by path)."""
    from .specs import load_table_spec, table_names

    labels = {}
    all_specs = list(specs)
    for name in table_names():
        try:
            all_specs.append(load_table_spec(name))
        except Exception as err:  # a broken spec must not stop the export
            log.warning("records.csv: no row labels for table %s (%s)", name, err)
    for spec in all_specs:
        for row in spec.rows:
            labels.setdefault((spec.name, row.method, row.variant), row.label)
    return labels


def records_table(records: Iterable[tuple[Path | None, dict]], labels: dict | None = None,
                  results_dir: str | Path | None = None) -> pd.DataFrame:
    """The tidy frame: one row per record, columns as the module docstring lists them."""
    labels = labels or {}
    rows, metric_names = [], []
    for path, rec in records:
        rec = getattr(rec, "data", rec)  # a parsed record object keeps the stored dict as .data
        key = rec.get("key", {})
        config = rec.get("config") or {}
        provenance = rec.get("provenance") or {}
        metrics = rec.get("metrics") or {}
        for name in metrics:
            if name not in metric_names:
                metric_names.append(name)
        where = None
        if path is not None:
            where = str(Path(path).relative_to(results_dir)) if results_dir else str(path)
        rows.append({
            **{k: key.get(k) for k in KEY_COLUMNS if k != "label"},
            "label": labels.get((key.get("table"), key.get("method"), key.get("variant")),
                                f"{key.get('method')}-{key.get('variant')}"),
            "params": json.dumps(config.get("params"), sort_keys=True) if "params" in config else None,
            "config_hash": rec.get("config_hash"), "status": rec.get("status"),
            "error": rec.get("error"),
            **{_metric_column(name): value for name, value in metrics.items()},
            "wall_seconds": rec.get("wall_seconds"), "device": provenance.get("device"),
            "host": provenance.get("host"), "threads": provenance.get("threads"),
            "git_commit": provenance.get("git_commit"), "record": where,
        })
    metrics_order = [m for m in FIRST_METRICS if m in metric_names] + sorted(
        m for m in metric_names if m not in FIRST_METRICS)
    columns = KEY_COLUMNS + RUN_COLUMNS + [_metric_column(m) for m in metrics_order] + TAIL_COLUMNS
    frame = pd.DataFrame(rows, columns=columns)
    if not frame.empty:
        frame = frame.sort_values(["profile", "table", "dataset", "dim", "method", "variant",
                                   "split", "restart"], kind="stable").reset_index(drop=True)
    return frame


def _metric_column(name: str) -> str:
    fixed = set(KEY_COLUMNS + RUN_COLUMNS + TAIL_COLUMNS)
    return f"metric_{name}" if name in fixed else name


def write_records_export(results_dir: str | Path, specs: Iterable = ()) -> list[Path]:
    """Write RESULTS/tables/records.csv (and records.parquet where pyarrow is installed) from every
    record under RESULTS/runs; the paths written."""
    results_dir = Path(results_dir)
    frame = records_table(load_records(results_dir), row_labels(specs), results_dir)
    out = results_dir / "tables"
    csv = out / "records.csv"
    write_text_atomic(csv, frame.to_csv(index=False))
    paths = [csv]
    try:
        import pyarrow  # noqa: F401 - optional: Parquet only where it is already installed
    except ImportError:
        return paths
    parquet = out / "records.parquet"
    write_atomic(parquet, lambda f: frame.to_parquet(f, index=False))
    paths.append(parquet)
    return paths
