"""Our table next to the paper's: what transfers first, then the cells side by side.

What transfers between our numbers and the paper's is the ranking and each method's difference from
the VAE, not the nats themselves: at a given reconstruction error, gaps between methods scale with
the likelihood's scale (about 1 / sigma_x^2 for a Gaussian decoder), and the paper gives no sigma_x
(docs/likelihood.md). Per column (dataset, dim), over the rows both tables have:
- Kendall's tau (scipy.stats.kendalltau, tau-b) between our means and the paper's, with its
  p-value and n; tau is the same whether higher or lower is better.
- each row's difference from the VAE (log-likelihood tables): ours the mean and sample std of the
  per-split paired differences over the splits both rows share (the difference of the cell means
  when the table carries no per-split values), the paper's the difference of its printed means;
  and how many rows have the same sign on both sides.
- our likelihood (benchmark.likelihood_text) and the ceiling it implies: a paper cell above it
  (only under a fixed sigma_x; Bernoulli's ceiling is 0) is out of reach for any model of ours.
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
from ..likelihood_text import ColumnLikelihood, column_likelihoods
from ..paper_tables import PaperCell, PaperTable
from ..render import TableData
from ..store import write_text_atomic

REFERENCE = ("vae", "default")  # the row every difference is taken from


@dataclass(frozen=True)
class VaeDifference:
    """One row's difference from the VAE in one column (nats; nan where a side is missing)."""

    key: tuple[str, str]  # (method, variant)
    label: str
    ours: float  # mean of the per-split paired differences (or of the cell means, `paired` False)
    ours_std: float  # their sample std; nan with fewer than 2 pairs or unpaired
    n: int  # splits both rows share (paired), or 0
    paired: bool
    paper: float  # the paper's difference of printed means

    @property
    def same_sign(self) -> bool | None:
        """Whether ours and the paper's point the same way; None when a side is missing or 0."""
        if math.isnan(self.ours) or math.isnan(self.paper) or self.ours == 0 or self.paper == 0:
            return None
        return (self.ours > 0) == (self.paper > 0)


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
    vae_differences: tuple[VaeDifference, ...] = ()  # one per row but the VAE (log-likelihoods)
    likelihood: ColumnLikelihood | None = None  # ours (log-likelihood tables)
    out_of_reach: tuple[tuple[str, str], ...] = ()  # paper cells above our ceiling

    @property
    def ceiling(self) -> float | None:
        return self.likelihood.ceiling if self.likelihood is not None else None

    @property
    def sign_agreement(self) -> tuple[int, int]:
        """(rows whose difference from the VAE has the same sign as the paper's, rows with both)."""
        signs = [d.same_sign for d in self.vae_differences if d.same_sign is not None]
        return sum(signs), len(signs)

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


def compare_column(data: TableData, paper: PaperTable, column: tuple[str, int],
                   likelihood: dict[str, ColumnLikelihood] | None = None) -> ColumnComparison:
    """`likelihood`: our likelihood per dataset (default: likelihoods(data))."""
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
    extra = {}
    if not data.spec.timing:
        lik = ((likelihood or likelihoods(data)).get(column[0])
               or column_likelihoods([column[0]])[column[0]])
        ceiling = lik.ceiling
        out = tuple(k for k, c in paper.column(*column).items()
                    if ceiling is not None and paper.higher_is_better and c.mean > ceiling)
        extra = dict(vae_differences=vae_differences(data, paper, column, labels), likelihood=lik,
                     out_of_reach=out)
    return ColumnComparison(column, len(common), tau, p, our_best, paper_best, source,
                            len(shared) - len(diffs), len(shared), diffs, **extra)


def likelihoods(data: TableData) -> dict[str, ColumnLikelihood]:
    """Our likelihood per dataset: the table's own (`data.likelihoods`, set by whoever built it)
    or specs/datasets.yaml's, which is what the table's current records were run with."""
    return data.likelihoods or column_likelihoods(data.spec.datasets)


def vae_differences(data: TableData, paper: PaperTable, column: tuple[str, int],
                    labels: dict | None = None) -> tuple[VaeDifference, ...]:
    """Each row's difference from the VAE in `column`, ours and the paper's (none without a VAE
    row in the spec)."""
    rows = [(r.method, r.variant) for r in data.spec.rows]
    if REFERENCE not in rows:
        return ()
    labels = labels or {(r.method, r.variant): r.label for r in data.spec.rows}
    cells, theirs = data.cells.get(column, {}), paper.column(*column)
    splits = data.splits.get(column, {})
    out = []
    for key in rows:
        if key == REFERENCE:
            continue
        ours, std, n, paired = math.nan, math.nan, 0, bool(splits)
        if paired and key in splits and REFERENCE in splits:
            a, b = splits[key], splits[REFERENCE]
            diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
            n = len(diffs)
            if n:
                ours = sum(diffs) / n
            if n > 1:
                std = math.sqrt(sum((d - ours) ** 2 for d in diffs) / (n - 1))
        elif not paired and key in cells and REFERENCE in cells:
            ours = cells[key].mean - cells[REFERENCE].mean
        paper_diff = (theirs[key].mean - theirs[REFERENCE].mean
                      if key in theirs and REFERENCE in theirs else math.nan)
        out.append(VaeDifference(key, labels.get(key, key[0]), ours, std, n, paired, paper_diff))
    return tuple(out)


def compare(data: TableData, paper: PaperTable) -> list[ColumnComparison]:
    liks = None if data.spec.timing else likelihoods(data)
    return [compare_column(data, paper, c, liks) for c in data.columns]


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
