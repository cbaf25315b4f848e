"""Our table next to the paper's: cells side by side, and per column how well the two agree.

Per column (dataset, dim), over the rows both tables have:
- Kendall's tau (scipy.stats.kendalltau, tau-b) between our means and the paper's, with its
  p-value and n. Ranks are what is comparable (our sigma_x differs from the paper's, see
  specs/datasets.yaml), and tau is the same whether higher or lower is better.
- the significance pattern: each row is 'best' (red), 'tie' (blue: p > 0.01 against the best) or
  'plain' in our table and in the paper's. The paper's best is its best printed mean (the caption's
  definition of red); its blue rows come from the printed boldface where the text preserves it
  ('printed'), else from a Welch t-test recomputed from the printed mean ± std with the paper's
  n splits ('reconstructed'); with no printed spread there is no pattern ('unknown').
This module computes; benchmark.render writes tableN_vs_paper.{md,tex,html}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from .. import render
from ..aggregate import ALPHA
from ..paper_tables import PaperCell, PaperTable
from ..render import TableData
from ..store import write_text_atomic


@dataclass(frozen=True)
class ColumnComparison:
    column: tuple[str, int]
    n: int  # rows with a number in both tables
    tau: float  # nan when n < 2 or a side is constant
    p_value: float
    our_best: str | None
    paper_best: str | None
    pattern_source: str  # printed | reconstructed | unknown
    agree: int  # rows (of those with a mark on both sides) whose marks agree
    compared: int
    differences: tuple[str, ...]  # "SA(1): ours tie, paper plain"

    @property
    def pattern(self) -> str:
        if self.pattern_source == "unknown":
            return "unknown (the paper prints no marks or spread here)"
        if not self.compared:
            return "nothing to compare (no row tested on both sides)"
        verdict = "matches" if self.agree == self.compared else "differs"
        return f"{verdict} ({self.agree}/{self.compared} rows, paper marks {self.pattern_source})"


def paper_marks(paper: PaperTable, column: tuple[str, int]) -> tuple[dict, str]:
    """{(method, variant): 'best' | 'tie' | 'plain'} for the paper's column, and its source."""
    cells: dict[tuple[str, str], PaperCell] = paper.column(*column)
    if not cells:
        return {}, "unknown"
    pick = max if paper.higher_is_better else min
    best = pick(cells, key=lambda k: cells[k].mean)
    if paper.marks_known(*column):
        return {k: "best" if k == best else "tie" if c.bold else "plain"
                for k, c in cells.items()}, "printed"
    b = cells[best]
    if b.std is None or not paper.splits or any(c.std is None for c in cells.values()):
        return {best: "best"}, "unknown"
    marks = {}
    for k, c in cells.items():
        if k == best:
            marks[k] = "best"
            continue
        p = stats.ttest_ind_from_stats(c.mean, c.std, paper.splits, b.mean, b.std, paper.splits,
                                       equal_var=False).pvalue
        marks[k] = "tie" if p > ALPHA else "plain"
    return marks, "reconstructed"


def our_marks(data: TableData, column: tuple[str, int]) -> dict:
    """Marks of our tested cells (cells too small for a t-test have none)."""
    out = {}
    for key, cell in data.cells.get(column, {}).items():
        if cell.best:
            out[key] = "best"
        elif cell.p_value is not None:
            out[key] = "tie" if cell.tie else "plain"
    return out


def compare_column(data: TableData, paper: PaperTable, column: tuple[str, int]) -> ColumnComparison:
    labels = {(r.method, r.variant): r.label for r in (*paper.rows, *data.spec.rows)}
    ours = {k: c.mean for k, c in data.cells.get(column, {}).items() if not math.isnan(c.mean)}
    theirs = {k: c.mean for k, c in paper.column(*column).items()}
    common = [(r.method, r.variant) for r in data.spec.rows
              if (r.method, r.variant) in ours and (r.method, r.variant) in theirs]
    if len(common) >= 2:
        res = stats.kendalltau([ours[k] for k in common], [theirs[k] for k in common])
        tau, p = float(res.statistic), float(res.pvalue)
    else:
        tau = p = math.nan
    mine = our_marks(data, column)
    paper_m, source = paper_marks(paper, column)
    shared = [k for k in common if k in mine and k in paper_m] if source != "unknown" else []
    diffs = tuple(f"{labels[k]}: ours {mine[k]}, paper {paper_m[k]}" for k in shared
                  if mine[k] != paper_m[k])
    our_best = next((labels[k] for k, m in mine.items() if m == "best" and k in labels), None)
    paper_best = next((labels[k] for k, m in paper_m.items() if m == "best"), None)
    return ColumnComparison(column, len(common), tau, p, our_best, paper_best, source,
                            len(shared) - len(diffs), len(shared), diffs)


def compare(data: TableData, paper: PaperTable) -> list[ColumnComparison]:
    return [compare_column(data, paper, c) for c in data.columns]


# ---------------------------------------------------------------- rendering (benchmark.render)


def _render_args(data: TableData, paper: PaperTable) -> tuple:
    return data, paper, compare(data, paper), {c: paper_marks(paper, c) for c in data.columns}


def to_markdown(data: TableData, paper: PaperTable) -> str:
    return render.comparison_markdown(*_render_args(data, paper))


def to_latex(data: TableData, paper: PaperTable) -> str:
    return render.comparison_latex(*_render_args(data, paper))


def to_html(data: TableData, paper: PaperTable) -> str:
    return render.comparison_html(*_render_args(data, paper))


def write_comparison(data: TableData, paper: PaperTable, tables_dir) -> list:
    """tableN_vs_paper.{md,tex,html} under `tables_dir`."""
    paths = []
    for suffix, write in (("md", to_markdown), ("tex", to_latex), ("html", to_html)):
        path = Path(tables_dir) / f"{data.spec.name}_vs_paper.{suffix}"
        write_text_atomic(path, write(data, paper))
        paths.append(path)
    return paths
