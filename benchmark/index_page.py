"""results/tables/index.html: every rendered table and every figure on one self-contained page.
The verdicts on the paper's claims (tableN_claims.html, `--claims`) come first.

The page has inline CSS and the figures as base64 data URIs, so it opens from disk (or an e-mail
attachment) with no network and no sibling files. It is rebuilt whenever a table or figure is
written, from what exists under RESULTS/tables/*.html and RESULTS/figures/*.{png,json}.
"""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime
from pathlib import Path

from .store import ResultsStore, write_text_atomic

INDEX_NAME = "index.html"
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)
_TABLE_ORDER = re.compile(r"^table(\d+)?(.*)$")
CSS = (
    "body{font-family:sans-serif;margin:16px;max-width:1600px}"
    "table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px} .na{color:#999}"
    "small{color:#666} section{margin-bottom:32px;overflow-x:auto} nav a{margin-right:12px}"
    "figure{display:inline-block;margin:8px} figure img{max-width:100%} pre{background:#f6f6f6;"
    "padding:8px}"
)


def _sort_key(path: Path):
    """The paper's claims first (what a reader of a reproduction wants first: tableN_claims,
    benchmark/claims.py), then the tables in numeric order, each followed by its comparisons."""
    m = _TABLE_ORDER.match(path.stem)
    num = int(m.group(1)) if m and m.group(1) else 10**6
    return not path.stem.endswith("_claims"), num, path.stem


def _table_body(path: Path) -> str:
    text = path.read_text()
    m = _BODY.search(text)
    return m.group(1) if m else text


def _figure_html(png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    name = html.escape(png.name)
    return (f"<figure><img alt='{name}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{name}</figcaption></figure>")


def build_index(results_dir: Path | str) -> str:
    results_dir = Path(results_dir)
    tables = sorted((p for p in ResultsStore(results_dir).tables_dir().glob("*.html")
                     if p.name != INDEX_NAME),
                    key=_sort_key)
    fig_dir = ResultsStore(results_dir).figures_dir()
    pngs = sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    notes = sorted(fig_dir.glob("*.json")) if fig_dir.is_dir() else []
    nav = " ".join(f"<a href='#{p.stem}'>{html.escape(p.stem)}</a>" for p in tables)
    if pngs:
        nav += " <a href='#figures'>figures</a>"
    parts = [f"<section id='{p.stem}'>{_table_body(p)}</section>" for p in tables]
    if pngs or notes:
        parts.append("<section id='figures'><h2>Figures</h2>"
                     + "".join(_figure_html(p) for p in pngs)
                     + "".join(f"<h4>{html.escape(n.name)}</h4><pre>"
                               f"{html.escape(n.read_text())}"
                               "</pre>" for n in notes)
                     + "</section>")
    if not parts:
        parts.append("<p>No tables or figures yet: run reproduce.py --table N.</p>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>gpvae-bench results</title>"
        f"<style>{CSS}</style></head><body><h1>gpvae-bench results</h1>"
        f"<p>Built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from {html.escape(str(results_dir))}."
        f"</p><nav>{nav}</nav>{''.join(parts)}</body></html>\n"
    )


def write_index(results_dir: Path | str) -> Path:
    path = ResultsStore(results_dir).tables_dir() / INDEX_NAME
    write_text_atomic(path, build_index(results_dir))
    return path
