"""Reading the Markdown tables the analyses print, for tests: one parser, shared."""


def cells(line: str) -> list[str]:
    """The stripped cells of one Markdown table row."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table(lines: list[str], header_start: str) -> tuple[list[str], list[list[str]]]:
    """The first table whose header row starts with `header_start`: (header cells, body rows as
    cells), the body ending at the first line that is not a table row."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append(cells(line))
    return cells(lines[start]), body
