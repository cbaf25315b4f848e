"""The paper's published numbers (benchmark/paper/tableN.yaml), keyed like the harness's cells.

A file lists `columns` as [dataset, dim] pairs (dim null: the paper does not say, so it matches any
dim the spec runs) and `rows`, each a row id written as in the table specs plus one printed value
per column: "685.1 ± 1.8", "3.6" (no spread printed) or "-" (not reported). An optional `bold`
list per row records the paper's boldface where the text preserves it (see table1.yaml).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .specs import Row, _parse_row
from .yamlio import ConfigError, read_yaml_mapping

PAPER_DIR = Path(__file__).with_name("paper")
_VALUE = re.compile(r"^(-?\d+(?:\.\d+)?)(?:\s*±\s*(\d+(?:\.\d+)?))?$")


@dataclass(frozen=True)
class PaperCell:
    mean: float
    std: float | None = None  # None: the paper prints no spread
    bold: bool | None = None  # None: the text does not say


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    higher_is_better: bool
    splits: int | None  # runs behind each printed mean ± std, when the paper says
    columns: tuple[tuple[str, int | None], ...]
    rows: tuple[Row, ...]
    cells: dict  # {(dataset, dim|None): {(method, variant): PaperCell}}

    def column(self, dataset: str, dim: int) -> dict:
        """The paper's cells for our column (dataset, dim); {} when the paper has no such column."""
        return self.cells.get((dataset, dim)) or self.cells.get((dataset, None)) or {}

    def marks_known(self, dataset: str, dim: int) -> bool:
        col = self.column(dataset, dim)
        return bool(col) and all(c.bold is not None for c in col.values())


def parse_value(text: str, source: str) -> tuple[float, float | None] | None:
    """'685.1 ± 1.8' -> (685.1, 1.8); '3.6' -> (3.6, None); '-' -> None."""
    text = str(text).strip()
    if text == "-":
        return None
    m = _VALUE.match(text)
    if not m:
        raise ConfigError(f"{source}: cannot read value {text!r} (expected 'mean ± std', 'mean' or '-')")
    return float(m.group(1)), None if m.group(2) is None else float(m.group(2))


def paper_table_names() -> list[str]:
    return sorted(p.stem for p in PAPER_DIR.glob("table*.yaml"))


def load_paper_table(name: str) -> PaperTable:
    """`name` is the spec name, e.g. 'table1'."""
    path = PAPER_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"the paper has no published numbers for {name}; tables with numbers: "
                          + ", ".join(paper_table_names()))
    data = read_yaml_mapping(path)
    columns = tuple((str(ds), None if dim is None else int(dim)) for ds, dim in data["columns"])
    rows, cells = [], {c: {} for c in columns}
    for item in data["rows"]:
        row = _parse_row(item["row"], path)
        values, bold = item["values"], item.get("bold", [None] * len(columns))
        if len(values) != len(columns) or len(bold) != len(columns):
            raise ConfigError(f"{path}: row {row.label} has {len(values)} values and {len(bold)} "
                              f"marks for {len(columns)} columns")
        rows.append(row)
        for col, text, b in zip(columns, values, bold, strict=True):
            parsed = parse_value(text, f"{path}, row {row.label}")
            if parsed is not None:
                cells[col][(row.method, row.variant)] = PaperCell(*parsed, bold=b)
    return PaperTable(name, str(data["title"]), bool(data["higher_is_better"]),
                      data.get("splits"), columns, tuple(rows), cells)
