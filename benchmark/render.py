"""Render an aggregated table as Markdown, LaTeX (xcolor) and HTML, with the paper's colouring:
best mean red and bold; rows whose t-test against the best gives p > 0.01 blue and bold."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    table = tabulate(_body(data, "tex"), headers=_headers(data, "tex"), tablefmt="latex_raw",
                     disable_numparse=True)
    return (
        "% needs \\usepackage{xcolor}\n"
        "\\begin{table}\n\\centering\n\\scriptsize\n"
        f"\\caption{{{data.spec.title}. {data.caption} {data.legend}}}\n"
        f"{table}\n\\end{{table}}\n"
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
