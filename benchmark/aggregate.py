"""Records -> pandas frame -> best restart per split -> mean/std per cell -> t-tests vs the best.

Statistics (documented here because the paper leaves them implicit):
- per (row, dataset, dim, split) the restart with the highest validation IWAE is kept;
- a cell shows the mean and the sample standard deviation (ddof=1) over splits;
- the best row of a column is the highest mean; every other row is compared with it by a
  two-sided t-test over splits: Welch's unequal-variance test by default (scipy.stats.ttest_ind,
  equal_var=False), or with `paired=True` a paired t-test over the splits both rows share
  (scipy.stats.ttest_rel): splits are identical across methods, so pairing removes the
  split-to-split spread;
- p > alpha (0.01, the paper's) marks a row as not distinguishable from the best (blue);
- with fewer than 2 splits in either cell there is no test, and the cell says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .store import Record

if TYPE_CHECKING:  # pandas and scipy are imported where used: planning needs neither
    import pandas as pd

ALPHA = 0.01
KEY_COLUMNS = ["dataset", "dim", "method", "variant"]


def records_frame(records: Iterable[Record | Mapping], metric: str = "test_iwae") -> pd.DataFrame:
    """One row per successful run, with the metric, validation IWAE, floor and timing. Records are
    benchmark.store's typed records (read and validated by the store); a mapping is validated the
    same way (store.CorruptRecord if it is not a record)."""
    import pandas as pd

    rows = []
    for rec in map(Record.of, records):
        if not rec.ok:
            continue
        key, m = rec.key, rec.metrics
        rows.append({"dataset": key.dataset, "dim": key.dim, "method": key.method,
                     "variant": key.variant, "split": key.split, "restart": key.restart,
                     "value": m.value(metric), "val_iwae": m.val_iwae,
                     "floor": m.mean_image_floor, "wall_seconds": rec.wall_seconds})
    columns = KEY_COLUMNS + ["split", "restart", "value", "val_iwae", "floor", "wall_seconds"]
    return pd.DataFrame(rows, columns=columns)


def best_restarts(frame: pd.DataFrame) -> pd.DataFrame:
    """Per split, the restart with the best validation log-likelihood."""
    if frame.empty:
        return frame
    idx = frame.groupby(KEY_COLUMNS + ["split"])["val_iwae"].idxmax()
    return frame.loc[idx].reset_index(drop=True)


@dataclass(frozen=True)
class Cell:
    n: int
    mean: float
    std: float
    best: bool = False
    p_value: float | None = None  # against the column's best; None when untested
    tie: bool = False  # p > alpha: no evidence of a difference from the best
    note: str = ""


def _p_value(a: pd.Series, b: pd.Series, paired: bool) -> float | None:
    from scipy import stats

    if paired:
        common = a.index.intersection(b.index)
        if len(common) < 2:
            return None
        x, y = a.loc[common], b.loc[common]
        if (x - y).std(ddof=1) == 0:
            return 1.0 if (x == y).all() else 0.0
        return float(stats.ttest_rel(x, y).pvalue)
    if len(a) < 2 or len(b) < 2:
        return None
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def summarize(frame: pd.DataFrame, *, paired: bool = False, alpha: float = ALPHA) -> dict:
    """{(dataset, dim): {(method, variant): Cell}} from best-restart rows."""
    table: dict = {}
    for (dataset, dim), col in best_restarts(frame).groupby(["dataset", "dim"]):
        per_row = {mv: g.set_index("split")["value"] for mv, g in col.groupby(["method", "variant"])}
        best = max(per_row, key=lambda mv: per_row[mv].mean())
        cells = {}
        for mv, values in per_row.items():
            n = len(values)
            std = float(values.std(ddof=1)) if n > 1 else math.nan
            if mv == best:
                note = "" if n > 1 else "n<2: no test"
                cells[mv] = Cell(n, float(values.mean()), std, best=True, note=note)
                continue
            p = _p_value(values, per_row[best], paired)
            note = "" if p is not None else "n<2: no test"
            cells[mv] = Cell(n, float(values.mean()), std, p_value=p,
                             tie=p is not None and p > alpha, note=note)
        table[(dataset, int(dim))] = cells
    return table


def low_power_note(table: dict, *, paired: bool = False, alpha: float = ALPHA,
                   few_splits: int = 5) -> str:
    """A caveat for the legend when a t-test has a cell (the row's or the best's) with fewer than
    `few_splits` splits, or ''. It names the weakest test's bound: p <= alpha needs |t| above the
    critical value at the test's largest possible degrees of freedom (Welch's df <= n_a + n_b - 2;
    paired: shared splits - 1), e.g. 9.9 at n = 2 against 2.9 at the paper's 10 splits."""
    from scipy import stats

    weakest = None  # (t needed, smaller n of the pair)
    for cells in table.values():
        best = next((c for c in cells.values() if c.best), None)
        for cell in cells.values():
            if cell.p_value is None or best is None or min(cell.n, best.n) >= few_splits:
                continue
            df = min(cell.n, best.n) - 1 if paired else cell.n + best.n - 2
            t_needed = float(stats.t.ppf(1 - alpha / 2, df))
            if weakest is None or t_needed > weakest[0]:
                weakest = (t_needed, min(cell.n, best.n))
    if weakest is None:
        return ""
    t_needed, n = weakest
    return (f"Few splits: a test with a cell of n = {n} needs |t| > {t_needed:.1f} for "
            f"p <= {alpha}, so a blue mark here says the test could not tell the rows apart at "
            "this size, not that they tie.")


def floors(frame: pd.DataFrame) -> dict:
    """Mean-image log-likelihood per (dataset, dim) column (the same model for every dim)."""
    if frame.empty:
        return {}
    return {(d, int(k)): float(v) for (d, k), v in frame.groupby(["dataset", "dim"])["floor"].mean()
            .items()}
