"""Every Markdown, LaTeX and HTML file the harness writes is written here, with one stylesheet
and one LaTeX path: the log-likelihood tables (the paper's colouring: best mean red and bold; rows
whose t-test against the best gives p > 0.01 blue and bold), the side-by-side comparison with the
paper (benchmark.analyses.compare), timing tables (benchmark.timing), the claims report
(benchmark.analyses.claims, through the small document model below) and the results page
(benchmark.index_page).

The LaTeX files are table floats that compile with booktabs, xcolor and graphicx (their first
lines say so): text is escaped (latex_escape), rules are booktabs', dataset names are grouped
over their columns, and each tabular shrinks to the text width when it is wider."""

from __future__ import annotations

import html
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tabulate import tabulate

from .labels import DATASET_LABELS

if TYPE_CHECKING:  # specs imports the plugins (torch); analyses that render need neither
    from .aggregate import Cell
    from .specs import TableSpec

# the one stylesheet: every page, the results page included
PAGE_CSS = (
    "body{font-family:sans-serif;margin:16px;max-width:1600px}"
    "table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px} .na{color:#999}"
    "table.text td{text-align:left;vertical-align:top} small{color:#666}"
    "section{margin-bottom:32px;overflow-x:auto} nav a{margin-right:12px}"
    "figure{display:inline-block;margin:8px} figure img{max-width:100%}"
    "pre{background:#f6f6f6;padding:8px}"
)
FLOOR_MARGIN_NATS = 100.0  # a trained model must beat the mean-image model by at least this


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
    # {(dataset, dim): {(method, variant): {split: value}}}: each cell's best-restart value per
    # split (split_values), for the paired differences of the comparison with the paper
    splits: dict = field(default_factory=dict)
    # {dataset: likelihood_text.ColumnLikelihood}; empty: specs/datasets.yaml's
    likelihoods: dict = field(default_factory=dict)

    @property
    def columns(self) -> list[tuple[str, int]]:
        return [(ds, dim) for ds in self.spec.datasets for dim in self.spec.dims]


def split_values(frame) -> dict:
    """TableData.splits from a records frame (benchmark.aggregate.records_frame): per cell the
    value of the restart kept for each split (the best validation IWAE, as in the table)."""
    from .aggregate import best_restarts

    out: dict = {}
    for row in best_restarts(frame).itertuples(index=False):
        cell = out.setdefault((row.dataset, int(row.dim)), {}).setdefault((row.method, row.variant), {})
        cell[int(row.split)] = float(row.value)
    return out


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
    body = styled(mean, "red" if cell.best else "blue" if cell.tie else None, fmt)
    suffix = f" ({note})" if note else ""
    if fmt == "tex":
        return rf"{body}$^{{{std}}}${latex_escape(suffix)}" if std else f"{body}{latex_escape(suffix)}"
    if fmt == "html":
        return f"{body}{f'<sup>{std}</sup>' if std else ''}{html.escape(suffix)}"
    return f"{body}{f' ± {std}' if std else ''}{suffix}"


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
    tabular = latex_tabular(
        [rf"DIM($\mathbf{{z}}$) = {dim}" for _, dim in data.columns],
        [[label, *row] for label, row in zip(labels, cells, strict=True)],
        groups=[(latex_escape(DATASET_LABELS.get(ds, ds)), sum(1 for d, _ in data.columns if d == ds))
                for ds in data.spec.datasets if any(d == ds for d, _ in data.columns)],
        rule_before=(len(labels) - 1,))  # a rule above the floor row
    notes = "; ".join(f"({letter}) {latex_escape(note)}" for note, letter in marks.items())
    not_run = "--: not run." if any(c.startswith("--") for r in cells for c in r) else ""
    legend = " ".join(filter(None, [latex_escape(data.legend), not_run, notes + "." if notes else ""]))
    title = re.sub(r"^Table \S+?\.\s*", "", data.spec.title)  # \caption numbers the float
    caption = latex_escape(" ".join(filter(None, [f"{title}.", data.caption])))
    return latex_float(tabular, caption=caption, label=f"tab:{data.spec.name}",
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


def latex_float(tabulars: str | Sequence[str], *, caption: str, label: str, legend: str = "",
                title: str = "") -> str:
    """A table float around `tabulars` (LaTeX, one or several stacked; `caption` and `legend`
    already escaped), each shrunk to the text width only when wider, after a comment naming the
    packages it needs."""
    tabulars = [tabulars] if isinstance(tabulars, str) else list(tabulars)
    boxes = "\\par\\medskip\n".join(
        "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
        f"{t.rstrip()}%\n}}\n" for t in tabulars)
    return (
        f"% {' '.join((title or label).split())}: written by gpvae-bench (reproduce.py).\n"
        "% Needs in the preamble (the next line without its %):\n"
        f"% \\usepackage{{{','.join(LATEX_PACKAGES)}}}\n"
        "\\begin{table}[htbp]\n\\centering\n\\small\n"
        f"\\caption{{{caption}}}\n\\label{{{label}}}\n"
        + boxes
        + (f"\\par\\smallskip{{\\footnotesize\\raggedright {legend}\\par}}\n" if legend else "")
        + "\\end{table}\n"
    )


def latex_tabular(headers: Sequence[str], rows: Sequence[Sequence[str]], *,
                  groups: Sequence[tuple[str, int]] = (), column_format: str | None = None,
                  rule_before: Sequence[int] = (), corner: str = "") -> str:
    """A booktabs tabular: a first column of row labels, then `headers` (LaTeX, escaped by the
    caller), optionally under `groups` ((label, number of columns) spanning them, each with its
    own rule beneath); a \\midrule before each row index in `rule_before`."""
    column_format = column_format or "l" + "r" * len(headers)
    lines = [f"\\begin{{tabular}}{{{column_format}}}", "\\toprule"]
    if groups:
        lines.append(f"{corner} & " + " & ".join(
            f"\\multicolumn{{{n}}}{{c}}{{{text}}}" if n > 1 else text for text, n in groups)
            + " \\\\")
        spans, start = [], 2
        for _, n in groups:
            spans.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
            start += n
        lines.append("".join(spans))
        corner = ""
    lines += [f"{corner} & " + " & ".join(headers) + " \\\\", "\\midrule"]
    for i, row in enumerate(rows):
        if i in rule_before:
            lines.append("\\midrule")
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def latex_caption(title: str, *rest: str) -> str:
    """A float's caption (escaped) from a spec title without its "Table N." (\\caption numbers the
    float) and further sentences."""
    title = re.sub(r"^Table \S+?\.\s*", "", title)
    return latex_escape(" ".join(filter(None, [title.rstrip(".") + ".", *rest])))


# ------------------------------------------------------------------------- Markdown and HTML


def styled(text: str, colour: str | None, fmt: str) -> str:
    """`text` (already escaped for `fmt`) bold in `colour`, or as it is when there is none."""
    if not colour:
        return text
    if fmt == "md":
        return f'<span style="color:{colour}">**{text}**</span>'
    if fmt == "tex":
        return rf"\textbf{{\textcolor{{{colour}}}{{{text}}}}}"
    if fmt == "ansi":
        code = {"red": "\033[1;31m", "blue": "\033[1;34m"}.get(colour, "\033[1m")
        return f"{code}{text}\033[0m"
    return f'<span style="color:{colour};font-weight:bold">{text}</span>'


def md_table(headers: list[str], rows: list[list[str]], colalign=None) -> str:
    """A Markdown pipe table of text cells (numbers are not reformatted)."""
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True,
                    **({"colalign": colalign} if colalign else {}))


def md_compact_table(headers: list[str], rows: list[list[str]], align: str) -> str:
    """A Markdown pipe table without padding; `align` has an l or r per column."""
    rule = {"l": ":--", "r": "---:"}
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def html_table(headers: list[str], rows: list[list[str]], escape: bool = True,
               css_class: str = "", escape_headers: bool = True) -> str:
    """An HTML table of text cells; `escape=False` for cells that already hold HTML."""
    cell = html.escape if escape else str
    head = "".join(f"<th>{html.escape(h) if escape_headers else h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    attr = f" class='{css_class}'" if css_class else ""
    return f"<table{attr}><tr>{head}</tr>{body}</table>"


def html_document(title: str, body: str) -> str:
    """A self-contained HTML page with the one stylesheet; `body` is HTML."""
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>"
            f"{body}</body></html>\n")


def html_page(title: str, body: str) -> str:
    """A table's page: `title` as <title> and <h3>, then `body` (HTML). The results page
    (index_page) lifts everything inside <body>."""
    return html_document(title, f"<h3>{html.escape(title)}</h3>{body}")


def html_paragraphs(*texts: str) -> str:
    return "".join(f"<p>{html.escape(t)}</p>" for t in texts if t)


def to_html(data: TableData) -> str:
    rows = [[html.escape(r[0]), *r[1:]] for r in _body(data, "html")]
    return html_page(data.spec.title,
                     f"<p>{html.escape(data.caption)}</p>"
                     + html_table(_headers(data, "html"), rows, escape=False, escape_headers=False)
                     + f"<p>{html.escape(data.legend)}</p>")


# -------------------------------------------------------- a small document model (claims, ...)


@dataclass(frozen=True)
class Marked:
    """A table cell shown bold in `colour` (a verdict)."""

    text: str
    colour: str


@dataclass(frozen=True)
class Block:
    """One block of a document: kind 'p' (paragraph), 'strong' (a bold paragraph, plain in
    Markdown), 'heading', 'table' (headers, rows of str or Marked) or 'list' (items)."""

    kind: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple, ...] = ()
    items: tuple[str, ...] = ()


def document_markdown(title: str, blocks: Sequence[Block]) -> str:
    out = [f"**{title}**", ""]
    for b in blocks:
        if b.kind in ("p", "strong"):
            out += [b.text, ""]
        elif b.kind == "heading":
            out += [f"**{b.text}**", ""]
        elif b.kind == "table":
            rows = [[f"**{c.text}**" if isinstance(c, Marked) else c.replace("|", "/")
                     for c in r] for r in b.rows]
            out += [md_table(list(b.headers), rows), ""]
        elif b.kind == "list":
            out += [f"- {item}" for item in b.items] + [""]
    return "\n".join(out)


def document_html(title: str, blocks: Sequence[Block]) -> str:
    body = []
    for b in blocks:
        if b.kind == "p":
            body.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "strong":
            body.append(f"<p><b>{html.escape(b.text)}</b></p>")
        elif b.kind == "heading":
            body.append(f"<h4>{html.escape(b.text)}</h4>")
        elif b.kind == "table":
            rows = [[styled(html.escape(c.text), c.colour, "html") if isinstance(c, Marked)
                     else html.escape(c) for c in r] for r in b.rows]
            body.append(html_table(list(b.headers), rows, escape=False, css_class="text"))
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
    return html_page(title, "".join(body))


# ------------------------------------------------------------- our table next to the paper's


def column_label(column: tuple[str, int], sep: str = " ") -> str:
    ds, dim = column
    return f"{DATASET_LABELS.get(ds, ds)}{sep}dim(z)={dim}"


OUT_OF_REACH = {"md": " (out of reach)", "html": " (out of reach)", "tex": r"\,$^{\dagger}$"}
OUT_OF_REACH_TEX_NOTE = r"$^{\dagger}$: above our ceiling, out of reach."


def _paper_text(cell, mark: str | None, printed: bool, fmt: str, out_of_reach: bool = False) -> str:
    """A paper cell (PaperCell or None) as printed, coloured by its mark where known, and marked
    when it is above our likelihood's ceiling."""
    if cell is None:
        return "-"
    mean = f"{cell.mean:g}" if cell.std is None else f"{cell.mean:.1f}"
    colour = MARK_COLOUR[mark] if mark and (printed or mark == "best") else None
    body = styled(mean, colour, fmt)
    if cell.std is not None:
        body += {"tex": rf"$^{{{cell.std:.1f}}}$", "html": f"<sup>{cell.std:.1f}</sup>",
                 "md": f" ± {cell.std:.1f}"}[fmt]
    return body + (OUT_OF_REACH[fmt] if out_of_reach else "")


MARK_COLOUR = {"best": "red", "tie": "blue", "plain": None}
COMPARISON_STATS_HEADERS = ["column", "n", "Kendall tau", "p", "same sign vs VAE", "our best",
                            "paper best", "significance pattern vs the paper"]
_PAPER_SEP = {"md": "<br>paper: ", "html": "<br><small>paper: </small>", "tex": " / "}
_LABEL = {"md": str, "html": html.escape, "tex": latex_escape}


def _ceiling_text(comparison, fmt: str) -> str:
    lik = comparison.likelihood
    if lik is None or lik.kind == "unknown":
        return "not known"
    if lik.kind == "bernoulli":
        return "0 (Bernoulli)"
    if lik.learned:
        return _LABEL[fmt]("none (sigma_x learned)")
    return _number(lik.ceiling) if lik.ceiling is not None else "not known"


def _side_by_side_rows(data: TableData, paper, paper_marks: dict, comparisons,
                       fmt: str) -> list[list[str]]:
    by_column = {c.column: c for c in comparisons}
    rows = []
    for row in data.spec.rows:
        key = (row.method, row.variant)
        cells = []
        for c in data.columns:
            marks, source = paper_marks[c]
            theirs = _paper_text(paper.column(*c).get(key), marks.get(key), source == "printed",
                                 fmt, key in by_column[c].out_of_reach)
            cells.append(_cell_text(*_status(data, row, c), fmt) + _PAPER_SEP[fmt] + theirs)
        rows.append([_LABEL[fmt](row.label), *cells])
    if any(c.likelihood is not None for c in comparisons):
        rows.append(["our ceiling (nats)", *(_ceiling_text(by_column[c], fmt) for c in data.columns)])
    return rows


def _fraction(x: float, digits=2) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def _stats_rows(comparisons) -> list[list[str]]:
    def sign(c) -> str:
        same, n = c.sign_agreement
        return f"{same}/{n}" if n else "-"

    return [[column_label(c.column), str(c.n), _fraction(c.tau), _fraction(c.p_value, 3), sign(c),
             c.our_best or "-", c.paper_best or "-",
             c.pattern + ("; " + "; ".join(c.differences) if c.differences else "")]
            for c in comparisons]


def _signed(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:+.1f}"


def _difference_text(d, fmt: str, row_ran: bool = False) -> str:
    """Ours and the paper's difference from the VAE in one cell: '+12.3 ± 2.1<br>paper: +11.4'
    ('no VAE': the row ran, the VAE did not)."""
    if math.isnan(d.ours):
        ours = "no VAE" if row_ran else "not run"
    elif not d.paired:
        ours = f"{_signed(d.ours)} (means)"
    elif d.n < 2:
        ours = f"{_signed(d.ours)} (1 split)"
    else:
        std = _number(d.ours_std)
        ours = _signed(d.ours) + {"md": f" ± {std}", "html": f"<sup>{std}</sup>",
                                  "tex": f"$^{{{std}}}$"}[fmt]
    return ours + _PAPER_SEP[fmt] + _signed(d.paper)


def _difference_rows(data: TableData, comparisons, fmt: str) -> list[list[str]]:
    by_column = {c.column: {d.key: d for d in c.vae_differences} for c in comparisons}
    rows = []
    for row in data.spec.rows:
        key = (row.method, row.variant)
        if not all(key in by_column[c] for c in data.columns):
            continue
        rows.append([_LABEL[fmt](row.label),
                     *(_difference_text(by_column[c][key], fmt, key in data.cells.get(c, {}))
                       for c in data.columns)])
    return rows


def _paper_gaps(data: TableData, paper) -> str:
    """'MNIST: +11.4 / +13.6 / +27.2 at d = 10 / 20 / 50': the paper's GPVAE - VAE per dataset."""
    parts = []
    for ds in data.spec.datasets:
        dims, gaps = [], []
        for d, dim in data.columns:
            cells = paper.column(d, dim) if d == ds else {}
            if ("gpvae", "default") in cells and ("vae", "default") in cells:
                dims.append(str(dim))
                gaps.append(_signed(cells[("gpvae", "default")].mean - cells[("vae", "default")].mean))
        if gaps:
            parts.append(f"{DATASET_LABELS.get(ds, ds)}: {' / '.join(gaps)} at d = {' / '.join(dims)}")
    return "; ".join(parts)


def comparison_texts(data: TableData, paper, comparisons, fmt: str = "md") -> list[str]:
    """The comparison's paragraphs, what transfers first: rankings and differences from the VAE,
    why nats do not, our likelihood and its ceilings, then how the cells are coloured."""
    number = paper.name.removeprefix("table")
    where = {"md": ("(top)", "(below, as printed)"), "html": ("(top)", "(below, as printed)"),
             "tex": ("(left)", "(right of the slash, as printed)")}[fmt]
    colours = (f"Cells: ours {where[0]} and the paper's Table {number} {where[1]}. Colours: ours as "
               "in our table; the paper's best mean red, its blue rows only where the text "
               "preserves its boldface. Kendall tau: our ranking of the rows both tables have "
               "against the paper's (tau-b, two-sided p).")
    liks = list({c.likelihood.dataset: c.likelihood for c in comparisons
                 if c.likelihood is not None}.values())
    if not liks:  # a timing table: no likelihood, nothing out of reach
        return [colours]
    from .likelihood_text import caption_of

    texts = ["What transfers from the paper's numbers to ours: the ranking of the rows (Kendall tau "
             "per column) and each method's difference from the VAE (ours: mean ± sample std of "
             "the per-split paired differences; the paper's: the difference of its printed means), "
             "above all its sign ('same sign vs VAE' counts the rows that agree)."]
    if any(lik.kind == "gaussian" for lik in liks):
        gaps = _paper_gaps(data, paper)
        texts.append(
            "The nats themselves do not transfer: at a given reconstruction error, gaps between "
            "methods scale with the likelihood's scale, about 1/sigma_x^2 for a Gaussian decoder, "
            "and the paper does not give its sigma_x. So the paper's "
            + (f"GPVAE - VAE gaps ({gaps})" if gaps else "differences from the VAE")
            + " are targets only under its convention.")
    else:
        texts.append("Bernoulli columns: the paper's likelihood too, so nats are on its scale.")
    texts.append(caption_of(liks, lead="Our likelihood"))
    fixed = [c for c in comparisons if c.likelihood is not None and c.likelihood.fixed_sigma]
    if fixed:
        n_out = sum(len(c.out_of_reach) for c in fixed)
        n_all = sum(len(paper.column(*c.column)) for c in fixed)
        texts.append(f"Paper cells above our ceiling are marked out of reach ({n_out} of {n_all} "
                     "in the fixed-sigma_x columns): no model under our likelihood can score them.")
    elif any(lik.kind == "gaussian" for lik in liks):
        texts.append("A learned sigma_x has no fixed ceiling: no paper cell is out of reach.")
    return [*texts, colours]


def _title(data: TableData) -> str:
    return f"{data.spec.title}: ours vs the paper"


def comparison_markdown(data: TableData, paper, comparisons, paper_marks: dict) -> str:
    """What transfers (rankings, differences from the VAE), then ours next to the paper's
    (`paper_marks`: {column: (marks, source)}, benchmark.analyses.compare)."""
    headers = [""] + [column_label(c, "<br>") for c in data.columns]
    parts = [f"**{_title(data)}**", *comparison_texts(data, paper, comparisons, "md"),
             md_table(COMPARISON_STATS_HEADERS, _stats_rows(comparisons))]
    diffs = _difference_rows(data, comparisons, "md")
    if diffs:
        parts += ["Difference from the VAE (nats), ours and the paper's:", md_table(headers, diffs)]
    parts += [f"Our table: {data.caption}" if data.caption else "",
              md_table(headers, _side_by_side_rows(data, paper, paper_marks, comparisons, "md"))]
    return "\n\n".join(p for p in parts if p) + "\n"


def comparison_latex(data: TableData, paper, comparisons, paper_marks: dict) -> str:
    datasets = [ds for ds in data.spec.datasets if any(d == ds for d, _ in data.columns)]
    groups = [(latex_escape(DATASET_LABELS.get(ds, ds)), sum(1 for d, _ in data.columns if d == ds))
              for ds in datasets]
    dim_headers = [rf"DIM($\mathbf{{z}}$) = {dim}" for _, dim in data.columns]
    stats_rows = [[latex_escape(c) for c in r] for r in _stats_rows(comparisons)]
    tabulars = [latex_tabular([latex_escape(h) for h in COMPARISON_STATS_HEADERS[1:]], stats_rows,
                              column_format="lrrrrllp{0.33\\linewidth}",
                              corner=latex_escape(COMPARISON_STATS_HEADERS[0]))]
    diffs = _difference_rows(data, comparisons, "tex")
    if diffs:
        tabulars.append(latex_tabular(dim_headers, diffs, groups=groups,
                                      corner=r"$-$ VAE"))
    side = _side_by_side_rows(data, paper, paper_marks, comparisons, "tex")
    has_ceiling = len(side) > len(data.spec.rows)
    tabulars.append(latex_tabular(dim_headers, side, groups=groups,
                                  rule_before=(len(side) - 1,) if has_ceiling else ()))
    caption = latex_caption(
        data.spec.title, "What transfers (rankings; differences from the VAE, ours / the paper's), "
        "then ours / the paper's per cell.", data.caption)
    legend = latex_escape(" ".join(comparison_texts(data, paper, comparisons, "tex")))
    if any(c.out_of_reach for c in comparisons):
        legend += " " + OUT_OF_REACH_TEX_NOTE
    return latex_float(tabulars, caption=caption, label=f"tab:{data.spec.name}-vs-paper",
                       legend=legend, title=_title(data))


def comparison_html(data: TableData, paper, comparisons, paper_marks: dict) -> str:
    headers = [""] + [column_label(c, "<br>") for c in data.columns]
    body = (html_paragraphs(*comparison_texts(data, paper, comparisons, "html"))
            + html_table(COMPARISON_STATS_HEADERS, _stats_rows(comparisons)))
    diffs = _difference_rows(data, comparisons, "html")
    if diffs:
        body += (html_paragraphs("Difference from the VAE (nats), ours and the paper's:")
                 + html_table(headers, diffs, escape=False, escape_headers=False))
    body += (html_paragraphs(f"Our table: {data.caption}" if data.caption else "")
             + html_table(headers, _side_by_side_rows(data, paper, paper_marks, comparisons, "html"),
                          escape=False, escape_headers=False))
    return html_page(_title(data), body)


# ---------------------------------------------------------------------------- timing tables


def _timing_table(spec, rows, columns, times, missing, fmt: str):
    """(groups, headers, body) of a timing table: per column its ms and the ratio to the first
    row; a dataset whose data is missing has one column saying so."""
    base = rows[0].label if rows else ""
    text = latex_escape if fmt == "tex" else str
    groups, headers = [], []
    for ds, dim in columns:
        label = DATASET_LABELS.get(ds, ds) + (f" dim(z)={dim}" if len(spec.dims) > 1 else "")
        parts = [""] if ds in missing else ["ms", f"x {base}"]
        groups.append((text(label), len(parts)))
        headers += [text(part) for part in parts]
    body = []
    for row in spec.rows:
        line = [text(row.label)]
        for ds, dim in columns:
            if ds in missing:
                line.append("data missing")
                continue
            cell = times.get((ds, dim), {})
            if row.label not in cell:
                line += ["no plugin" if not row.has_plugin else "not selected", ""]
                continue
            ref = cell.get(base)
            line += [f"{cell[row.label]:.1f}", f"{cell[row.label] / ref:.2f}" if ref else ""]
        body.append(line)
    return groups, headers, body


def _flat_headers(groups, headers, sep: str) -> list[str]:
    out, i = [""], 0
    for label, n in groups:
        for part in headers[i:i + n]:
            out.append(f"{label}{sep}{part}" if part else label)
        i += n
    return out


def timing_tables(spec, rows, columns, times, missing, caption: str) -> dict[str, str]:
    """{'md', 'tex', 'html'}: the texts of a timing table (benchmark.timing)."""
    notes = [f"{DATASET_LABELS.get(ds, ds)}: data missing: {why}" for ds, why in missing.items()]
    groups, headers, body = _timing_table(spec, rows, columns, times, missing, "md")
    flat = [h.replace(" dim(z)=", "<br>dim(z)=") for h in _flat_headers(groups, headers, "<br>")]
    md = (f"**{spec.title}**\n\n{caption}\n\n"
          + md_table(flat, body, colalign=("left",) + ("right",) * (len(flat) - 1))
          + "".join(f"\n\n{n}" for n in notes) + "\n")
    t_groups, t_headers, t_body = _timing_table(spec, rows, columns, times, missing, "tex")
    tex = latex_float(latex_tabular(t_headers, t_body, groups=t_groups),
                      caption=latex_caption(spec.title, caption), label=f"tab:{spec.name}",
                      legend=latex_escape(" ".join(notes)), title=spec.title)
    page = html_page(spec.title, f"<p>{html.escape(caption)}</p>"
                     + html_table(_flat_headers(groups, headers, " "), body)
                     + html_paragraphs(*notes))
    return {"md": md, "tex": tex, "html": page}


# ------------------------------------------------------------------------- the results page


def results_page(source: str, built: str, tables: Sequence[tuple[str, str]],
                 figures: Sequence[tuple[str, str]], notes: Sequence[tuple[str, str]]) -> str:
    """results/tables/index.html: `tables` ((anchor, HTML body of its page)), `figures` ((name,
    base64 PNG)) and `notes` ((name, text)) on one page that needs no network."""
    nav = " ".join(f"<a href='#{a}'>{html.escape(a)}</a>" for a, _ in tables)
    if figures:
        nav += " <a href='#figures'>figures</a>"
    parts = [f"<section id='{a}'>{body}</section>" for a, body in tables]
    if figures or notes:
        parts.append("<section id='figures'><h2>Figures</h2>"
                     + "".join(f"<figure><img alt='{html.escape(name)}' "
                               f"src='data:image/png;base64,{data}'>"
                               f"<figcaption>{html.escape(name)}</figcaption></figure>"
                               for name, data in figures)
                     + "".join(f"<h4>{html.escape(name)}</h4><pre>{html.escape(text)}</pre>"
                               for name, text in notes)
                     + "</section>")
    if not parts:
        parts.append("<p>No tables or figures yet: run reproduce.py --table N.</p>")
    return html_document("gpvae-bench results",
                         "<h1>gpvae-bench results</h1>"
                         f"<p>Built {built} from {html.escape(source)}.</p>"
                         f"<nav>{nav}</nav>{''.join(parts)}")
