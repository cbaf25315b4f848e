"""results/tables/index.html: every rendered table and every figure on one self-contained page.
The verdicts on the paper's claims (tableN_claims.html, `--claims`) come first.

The page (benchmark.render writes it, with the tables' one stylesheet) has inline CSS and the
figures as base64 data URIs, so it opens from disk (or an e-mail attachment) with no network and
no sibling files. It is rebuilt whenever a table or figure is written, from what exists under
RESULTS/tables/*.html and RESULTS/figures/*.{png,json}.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path

from .render import results_page
from .store import ResultsStore, write_text_atomic

INDEX_NAME = "index.html"
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)
_TABLE_ORDER = re.compile(r"^table(\d+)?(.*)$")


def _sort_key(path: Path):
    """The paper's claims first (what a reader of a reproduction wants first: tableN_claims,
    benchmark/analyses/claims.py), then the tables in numeric order, each followed by its comparisons."""
    m = _TABLE_ORDER.match(path.stem)
    num = int(m.group(1)) if m and m.group(1) else 10**6
    return not path.stem.endswith("_claims"), num, path.stem


def _table_body(path: Path) -> str:
    text = path.read_text()
    m = _BODY.search(text)
    return m.group(1) if m else text


def build_index(results_dir: Path | str) -> str:
    results_dir = Path(results_dir)
    tables = sorted((p for p in ResultsStore(results_dir).tables_dir().glob("*.html")
                     if p.name != INDEX_NAME),
                    key=_sort_key)
    fig_dir = ResultsStore(results_dir).figures_dir()
    pngs = sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    notes = sorted(fig_dir.glob("*.json")) if fig_dir.is_dir() else []
    return results_page(
        str(results_dir), f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        [(p.stem, _table_body(p)) for p in tables],
        [(p.name, base64.b64encode(p.read_bytes()).decode("ascii")) for p in pngs],
        [(n.name, n.read_text()) for n in notes])


def write_index(results_dir: Path | str) -> Path:
    path = ResultsStore(results_dir).tables_dir() / INDEX_NAME
    write_text_atomic(path, build_index(results_dir))
    return path
