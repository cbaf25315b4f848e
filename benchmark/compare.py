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
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from scipy import stats
from tabulate import tabulate

from .aggregate import ALPHA
from .paper_tables import PaperCell, PaperTable
from .render import DATASET_LABELS, TableData, _cell_text, _status
from .store import write_text_atomic

MARK_COLOUR = {"best": "red", "tie": "blue", "plain": None}


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


# ---------------------------------------------------------------- rendering


def _paper_text(paper: PaperTable, column, key, fmt: str) -> str:
    cell = paper.column(*column).get(key)
    if cell is None:
        return "-"
    mean = f"{cell.mean:g}" if cell.std is None else f"{cell.mean:.1f}"
    marks, source = paper_marks(paper, column)
    colour = MARK_COLOUR[marks[key]] if source == "printed" or marks.get(key) == "best" else None
    if fmt == "tex":
        body = rf"\textbf{{\textcolor{{{colour}}}{{{mean}}}}}" if colour else mean
        return body + (rf"$^{{{cell.std:.1f}}}$" if cell.std is not None else "")
    if fmt == "html":
        style = f' style="color:{colour};font-weight:bold"' if colour else ""
        sup = f"<sup>{cell.std:.1f}</sup>" if cell.std is not None else ""
        return f"<span{style}>{mean}</span>{sup}"
    body = f'<span style="color:{colour}">**{mean}**</span>' if colour else mean
    return body + (f" ± {cell.std:.1f}" if cell.std is not None else "")


def _side_by_side_rows(data: TableData, paper: PaperTable, fmt: str) -> list[list[str]]:
    sep = {"md": "<br>paper: ", "html": "<br><small>paper: </small>", "tex": " / "}[fmt]
    rows = []
    for row in data.spec.rows:
        key = (row.method, row.variant)
        cells = [_cell_text(*_status(data, row, c), fmt) + sep + _paper_text(paper, c, key, fmt)
                 for c in data.columns]
        rows.append([row.label if fmt != "html" else html.escape(row.label), *cells])
    return rows


def _column_label(column, sep=" ") -> str:
    ds, dim = column
    return f"{DATASET_LABELS.get(ds, ds)}{sep}dim(z)={dim}"


def _f(x: float, digits=2) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def _stats_rows(comparisons: list[ColumnComparison]) -> list[list[str]]:
    return [[_column_label(c.column), str(c.n), _f(c.tau), _f(c.p_value, 3), c.our_best or "-",
             c.paper_best or "-", c.pattern + ("; " + "; ".join(c.differences) if c.differences
                                                 else "")]
            for c in comparisons]


STATS_HEADERS = ["column", "n", "Kendall tau", "p", "our best", "paper best",
                 "significance pattern vs the paper"]


def _intro(paper: PaperTable) -> str:
    return (f"Ours (top) and the paper's Table {paper.name.removeprefix('table')} "
            "(below, as printed) per cell. Colours: ours as in our table; the paper's best mean "
            "red, its blue rows only where the text preserves its boldface. Kendall tau: our "
            "ranking of the rows both tables have against the paper's (tau-b, two-sided p).")


def to_markdown(data: TableData, paper: PaperTable) -> str:
    headers = [""] + [_column_label(c, "<br>") for c in data.columns]
    side = tabulate(_side_by_side_rows(data, paper, "md"), headers=headers, tablefmt="pipe",
                    disable_numparse=True)
    agree = tabulate(_stats_rows(compare(data, paper)), headers=STATS_HEADERS, tablefmt="pipe",
                     disable_numparse=True)
    return (f"**{data.spec.title}: ours vs the paper**\n\n{_intro(paper)}\n\n{data.caption}\n\n"
            f"{side}\n\n{agree}\n")


def to_latex(data: TableData, paper: PaperTable) -> str:
    headers = [""] + [_column_label(c) for c in data.columns]
    side = tabulate(_side_by_side_rows(data, paper, "tex"), headers=headers,
                    tablefmt="latex_raw", disable_numparse=True)
    agree = tabulate(_stats_rows(compare(data, paper)), headers=STATS_HEADERS, tablefmt="latex",
                     disable_numparse=True)
    return (
        "% needs \\usepackage{xcolor}; cells are ours / paper\n"
        "\\begin{table}\n\\centering\n\\scriptsize\n"
        f"\\caption{{{data.spec.title}: ours / the paper. {data.caption}}}\n"
        f"{side}\n\n\\medskip\n{agree}\n\\end{{table}}\n"
    )


def to_html(data: TableData, paper: PaperTable) -> str:
    def table(headers, rows, escape_cells):
        head = "".join(f"<th>{h}</th>" for h in headers)
        body = "".join("<tr>" + "".join(
            f"<td>{html.escape(c) if escape_cells or not i else c}</td>" for i, c in enumerate(r))
            + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    title = f"{data.spec.title}: ours vs the paper"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif} table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} .na{color:#999}"
        "small{color:#666}</style></head><body>"
        f"<h3>{html.escape(title)}</h3><p>{html.escape(_intro(paper))}</p>"
        f"<p>{html.escape(data.caption)}</p>"
        + table([""] + [_column_label(c, "<br>") for c in data.columns],
                _side_by_side_rows(data, paper, "html"), False)
        + table([html.escape(h) for h in STATS_HEADERS], _stats_rows(compare(data, paper)), True)
        + "</body></html>\n"
    )


def write_comparison(data: TableData, paper: PaperTable, tables_dir) -> list:
    """tableN_vs_paper.{md,tex,html} under `tables_dir`."""
    paths = []
    for suffix, render in (("md", to_markdown), ("tex", to_latex), ("html", to_html)):
        path = Path(tables_dir) / f"{data.spec.name}_vs_paper.{suffix}"
        write_text_atomic(path, render(data, paper))
        paths.append(path)
    return paths
