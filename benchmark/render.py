"""Render an aggregated table as Markdown, LaTeX and HTML, with the paper's colouring: best mean
red and bold; rows whose t-test against the best gives p > 0.01 blue and bold. The LaTeX is a
float that compiles with booktabs, xcolor and graphicx (its first lines say so): pandas' Styler
lays out the grouped dataset / DIM(z) header, text is escaped, and the tabular shrinks to the
text width when it is wider."""

from __future__ import annotations

import html
import math
import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
from tabulate import tabulate

from .aggregate import Cell

if TYPE_CHECKING:  # specs imports the plugins (torch); analyses that render need neither
    from .specs import TableSpec

PAGE_CSS = ("body{font-family:sans-serif} table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} .na{color:#999}")
FLOOR_MARGIN_NATS = 100.0  # a trained model must beat the mean-image model by at least this
DATASET_LABELS = {"mnist": "MNIST", "omniglot": "OMNIGLOT", "svhn": "SVHN", "cifar10": "CIFAR10",
                  "celeba": "CelebA", "binarized_mnist": "Binary MNIST (CNN)",
                  "binarized_mnist_fc": "Binary MNIST (FC)"}


@dataclass
class TableData:
    """Everything rendering needs; built by the orchestrator from the plan and the records."""

    spec: TableSpec
    cells: dict  # {(dataset, dim): {(method, variant): Cell}}
    floors: dict  # {(dataset, dim): float}
    unavailable: dict = field(default_factory=dict)  # dataset -> reason it was not run
    failed: dict = field(default_factory=dict)  # {(dataset, dim, method, variant): count}
    caption: str = ""
    legend: str = ""

    @property
    def columns(self) -> list[tuple[str, int]]:
        return [(ds, dim) for ds in self.spec.datasets for dim in self.spec.dims]


def _number(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.1f}"


def _status(data: TableData, row, column) -> tuple[Cell | None, str]:
    """The cell for (row, column), or the reason why there is none."""
    ds, dim = column
    if not row.has_plugin:
        return None, "no plugin"
    if ds in data.unavailable:
        return None, f"not run ({data.unavailable[ds]})"
    cell = data.cells.get(column, {}).get((row.method, row.variant))
    failed = data.failed.get((ds, dim, row.method, row.variant), 0)
    if cell is None:
        return None, f"failed ({failed})" if failed else "not run"
    flags = []
    if cell.note:
        flags.append(cell.note)
    if failed:
        flags.append(f"{failed} failed")
    floor = data.floors.get(column)
    if floor is not None and cell.mean - floor < FLOOR_MARGIN_NATS:
        flags.append("below floor")
    return cell, "; ".join(flags)


def _cell_text(cell: Cell | None, note: str, fmt: str) -> str:
    if cell is None:
        return note if fmt != "html" else f'<span class="na">{html.escape(note)}</span>'
    mean = _number(cell.mean)
    std = None if math.isnan(cell.std) else _number(cell.std)  # one split: no spread to show
    colour = "red" if cell.best else "blue" if cell.tie else None
    suffix = f" ({note})" if note else ""
    plus_minus = f" ± {std}" if std else ""
    if fmt == "md":
        body = f"**{mean}**" if colour else mean
        body = f'<span style="color:{colour}">{body}</span>' if colour else body
        return f"{body}{plus_minus}{suffix}"
    if fmt == "tex":
        body = rf"\textbf{{\textcolor{{{colour}}}{{{mean}}}}}" if colour else mean
        suffix = latex_escape(suffix)
        return rf"{body}$^{{{std}}}${suffix}" if std else f"{body}{suffix}"
    if fmt == "ansi":
        code = {"red": "\033[1;31m", "blue": "\033[1;34m"}.get(colour, "")
        return f"{code}{mean}\033[0m{plus_minus}{suffix}" if code else f"{mean}{plus_minus}{suffix}"
    style = f' style="color:{colour};font-weight:bold"' if colour else ""
    spread = f"<sup>{std}</sup>" if std else ""
    return f"<span{style}>{mean}</span>{spread}{html.escape(suffix)}"


def _headers(data: TableData, fmt: str) -> list[str]:
    sep = "<br>" if fmt in ("md", "html") else " "
    return [""] + [f"{DATASET_LABELS.get(ds, ds)}{sep}dim(z)={dim}" for ds, dim in data.columns]


def _body(data: TableData, fmt: str) -> list[list[str]]:
    rows = []
    for row in data.spec.rows:
        cells = [_cell_text(*_status(data, row, c), fmt) for c in data.columns]
        rows.append([row.label, *cells])
    floor_row = ["mean-image floor"]
    for c in data.columns:
        floor_row.append(_number(data.floors[c]) if c in data.floors else "")
    rows.append(floor_row)
    return rows


def to_markdown(data: TableData, ansi: bool = False) -> str:
    fmt = "ansi" if ansi else "md"
    table = tabulate(_body(data, fmt), headers=_headers(data, fmt), tablefmt="pipe",
                     disable_numparse=True)
    return f"**{data.spec.title}**\n\n{data.caption}\n\n{table}\n\n{data.legend}\n"


def to_latex(data: TableData) -> str:
    """A table float in the paper's layout: dataset names over their DIM(z) columns, mean with the
    standard deviation as a superscript, red / blue bold marks; a cell's notes (failed runs,
    below floor, ...) are letters explained under the table; "--" is a cell not run."""
    marks: dict[str, str] = {}

    def mark(note: str) -> str:
        if note not in marks:
            i = len(marks)
            marks[note] = string.ascii_lowercase[i % 26] * (i // 26 + 1)
        return rf"\,(\textit{{{marks[note]}}})"

    labels = [latex_escape(row.label) for row in data.spec.rows]
    cells = [[_latex_cell(*_status(data, row, c), mark) for c in data.columns]
             for row in data.spec.rows]
    floor_label = "mean-image floor"
    labels.append(floor_label)
    cells.append([_number(data.floors[c]) if c in data.floors else "" for c in data.columns])
    header = pd.MultiIndex.from_tuples(
        [(latex_escape(DATASET_LABELS.get(ds, ds)), rf"DIM($\mathbf{{z}}$) = {dim}")
         for ds, dim in data.columns])
    frame = pd.DataFrame(cells, index=labels, columns=header)
    tabular = frame.style.to_latex(hrules=True, multicol_align="c",
                                   column_format="l" + "r" * len(data.columns))
    lines = tabular.splitlines()
    # booktabs: a rule under each dataset's name, spanning its dims; a rule above the floor row
    spans, start = [], 2
    for ds in data.spec.datasets:
        n = sum(1 for d, _ in data.columns if d == ds)
        spans.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    lines.insert(lines.index(r"\toprule") + 2, "".join(spans))
    floor_at = next(i for i, line in enumerate(lines) if line.startswith(floor_label))
    lines.insert(floor_at, r"\midrule")
    notes = "; ".join(f"({letter}) {latex_escape(note)}" for note, letter in marks.items())
    not_run = "--: not run." if any(c.startswith("--") for r in cells for c in r) else ""
    legend = " ".join(filter(None, [latex_escape(data.legend), not_run, notes + "." if notes else ""]))
    title = re.sub(r"^Table \S+?\.\s*", "", data.spec.title)  # \caption numbers the float
    caption = latex_escape(" ".join(filter(None, [f"{title}.", data.caption])))
    return latex_float("\n".join(lines), caption=caption, label=f"tab:{data.spec.name}",
                       legend=legend, title=data.spec.title)


def _latex_cell(cell: Cell | None, note: str, mark) -> str:
    if cell is None:
        return "--" if note in ("not run", "not run (not selected)") else "--" + mark(note)
    mean = _number(cell.mean)
    colour = "red" if cell.best else "blue" if cell.tie else None
    body = rf"\textbf{{\textcolor{{{colour}}}{{{mean}}}}}" if colour else mean
    if not math.isnan(cell.std):  # one split: no spread to show
        body += f"$^{{{_number(cell.std)}}}$"
    return body + "".join(mark(flag) for flag in note.split("; ") if flag)


# ------------------------------------------------------------------------------- LaTeX helpers

LATEX_PACKAGES = ("booktabs", "xcolor", "graphicx")
_LATEX_TEXT = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    # OT1, LaTeX's default font encoding, prints < > | as other glyphs (¡ ¿ —)
    "<=": r"\ensuremath{\leq}", ">=": r"\ensuremath{\geq}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}",
    # signs pdflatex's utf8 input does not set up without textcomp / math
    "±": r"\ensuremath{\pm}", "×": r"\ensuremath{\times}", "≤": r"\ensuremath{\leq}",
    "≥": r"\ensuremath{\geq}", "−": r"\ensuremath{-}",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in sorted(_LATEX_TEXT, key=len, reverse=True)))
_OPENING_QUOTE = re.compile(r"(?<!\w)'(?=\S)")  # 'quick' -> `quick' (an apostrophe stays)


def latex_escape(text: str) -> str:
    """`text` as LaTeX text: the special characters, < > |, a few signs and opening quotes."""
    return _OPENING_QUOTE.sub("`", _LATEX_RE.sub(lambda m: _LATEX_TEXT[m.group()], str(text)))


def latex_float(tabular: str, *, caption: str, label: str, legend: str = "", title: str = "") -> str:
    """A table float around `tabular` (LaTeX; `caption` and `legend` already escaped), shrunk to
    the text width only when wider, after a comment naming the packages it needs."""
    return (
        f"% {' '.join((title or label).split())}: written by gpvae-bench (reproduce.py).\n"
        "% Needs in the preamble (the next line without its %):\n"
        f"% \\usepackage{{{','.join(LATEX_PACKAGES)}}}\n"
        "\\begin{table}[htbp]\n\\centering\n\\small\n"
        f"\\caption{{{caption}}}\n\\label{{{label}}}\n"
        "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
        f"{tabular.rstrip()}%\n}}\n"
        + (f"\\par\\smallskip{{\\footnotesize\\raggedright {legend}\\par}}\n" if legend else "")
        + "\\end{table}\n"
    )


def to_html(data: TableData) -> str:
    head = "".join(f"<th>{h}</th>" for h in _headers(data, "html"))
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i else html.escape(c)}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in _body(data, "html")
    )
    return html_page(data.spec.title,
                     f"<p>{html.escape(data.caption)}</p><table><tr>{head}</tr>{body}</table>"
                     f"<p>{html.escape(data.legend)}</p>")


# ------------------------------------------------- helpers for other reports (claims, ...)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table of text cells (numbers are not reformatted)."""
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def html_table(headers: list[str], rows: list[list[str]], escape: bool = True) -> str:
    """An HTML table of text cells; `escape=False` for cells that already hold HTML."""
    cell = html.escape if escape else str
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(title: str, body: str, extra_css: str = "") -> str:
    """A self-contained page: the tables' stylesheet, `title` as <title> and <h3>, then `body`
    (HTML). The results page (index_page) lifts everything inside <body>."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}{extra_css}</style></head><body>"
        f"<h3>{html.escape(title)}</h3>{body}</body></html>\n"
    )
