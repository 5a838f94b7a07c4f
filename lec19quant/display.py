"""Tables for the notebooks: rows of dicts shown as Markdown in Jupyter and the book, text elsewhere."""
from collections.abc import Callable, Mapping, Sequence


class Table:
    """A table of `rows` (dicts with the same keys); `formats` maps a column to a format spec such
    as ",d" or ".1f", or to a function of the value returning text."""

    def __init__(self, rows: Sequence[Mapping], formats: Mapping[str, str | Callable] | None = None):
        if not rows:
            raise ValueError("a table needs at least one row")
        self.columns = list(rows[0])
        for i, row in enumerate(rows):
            if list(row) != self.columns:
                raise ValueError(f"row {i} has columns {list(row)}, expected {self.columns}")
        unknown = set(formats or {}) - set(self.columns)
        if unknown:
            raise ValueError(f"formats name columns that the rows lack: {sorted(unknown)}")
        self.formats = dict(formats or {})
        self.cells = [[self._cell(col, row[col]) for col in self.columns] for row in rows]

    def _cell(self, column: str, value) -> str:
        fmt = self.formats.get(column)
        if callable(fmt):
            return fmt(value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        return format(value, fmt) if fmt else str(value)

    def _repr_markdown_(self) -> str:
        def escape(cell: str) -> str:  # a cell is one line, and | would end it
            return " ".join(cell.split()).replace("|", "\\|")

        lines = [self.columns, ["---"] * len(self.columns), *self.cells]
        return "\n".join("| " + " | ".join(map(escape, line)) + " |" for line in lines)

    def __repr__(self) -> str:
        widths = [max(len(line[i]) for line in [self.columns, *self.cells]) for i in range(len(self.columns))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                         for line in [self.columns, *self.cells])
