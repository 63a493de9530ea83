"""Tables that fit: aligned columns cut to a terminal's width, or tab-separated text for a pipe.

A ``FitTable`` is built once and shown either way by ``show()``:

- **On a terminal** (rich's ``Console.is_terminal``: a tty, or ``TTY_COMPATIBLE=1``) it lays
  itself out for the console's width when printed: columns two spaces apart, no borders, no line
  wider than the terminal. Flexible columns (a name, a path, an error) take the width left over
  and are cut with an ellipsis, never wrapped. When even their minimum does not fit, the table's
  ``steps`` apply one at a time, in their stated order, until it fits: a column is shortened
  (a UUID to its first 8 characters, a checksum to its first 8 hex digits) or dropped. Columns
  no step names are always shown; past the last step, the widest columns are cut.
- **Anywhere else** (a pipe, a file) it is TSV: one header line, then one line per row, fields
  separated by one tab, every field whole (``--json`` is the exact form). No field holds a tab
  or a line break: panel text is sanitized by ``visible()`` first, which writes them as ``\\t``
  and ``\\n``. The columns are fixed per table, whatever the width, so ``cut -f`` and
  ``awk -F'\\t'`` keep working.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from ._text import visible

__all__ = ["GAP", "Col", "Drop", "FitTable", "Shorten", "cut", "show"]

#: Spaces between two columns on a terminal.
GAP = 2
ELLIPSIS = "…"


@dataclass(frozen=True)
class Col:
    """A column on the terminal.

    ``flex``: when > 0 the column is flexible: it takes the width the others leave, down to
    ``flex`` cells, and longer cells end in an ellipsis (at the start with ``cut_start``, for
    paths, whose end matters most). ``max_width`` caps a cell (panel text: an id the panel made
    up can be any length).
    """

    key: str
    header: str
    justify: Literal["left", "right"] = "left"
    flex: int = 0
    max_width: int | None = None
    cut_start: bool = False


@dataclass(frozen=True)
class Shorten:
    """A layout step: show the column's short form (a UUID's first 8 characters)."""

    key: str


@dataclass(frozen=True)
class Drop:
    """A layout step: leave the column out."""

    key: str


Step = Shorten | Drop
Cell = Text | str


def _text(cell: Cell) -> Text:
    return cell.copy() if isinstance(cell, Text) else Text(cell)


def cut(text: Text, width: int, *, at_start: bool = False) -> Text:
    """``text`` in at most ``width`` cells: cut with an ellipsis at its end (or start)."""
    if text.cell_len <= width:
        return text.copy()
    if width <= 0:
        return Text()
    if not at_start:
        cut_text = text.copy()
        cut_text.truncate(width, overflow="ellipsis")
        return cut_text
    kept = 0
    used = 0
    for char in reversed(text.plain):
        size = cell_len(char)
        if used + size > width - 1:
            break
        used += size
        kept += 1
    tail = text[len(text.plain) - kept :] if kept else Text()
    return Text.assemble(Text(ELLIPSIS, style=text.style), tail)


@dataclass
class _Row:
    cells: dict[str, Text]
    short: dict[str, Text]
    fields: tuple[str, ...]


@dataclass
class FitTable:
    """Columns, the order in which they give way, and rows; see the module's docstring.

    ``fields`` names the TSV columns (they may differ from the terminal's: exact bytes and
    timestamps instead of ``3.0 MiB`` and ``2 h ago``); each row brings its values for both.
    """

    columns: Sequence[Col]
    steps: Sequence[Step]
    fields: Sequence[str]
    title: str | None = None
    rows: list[_Row] = field(default_factory=list)

    def add_row(
        self,
        cells: Mapping[str, Cell],
        fields: Iterable[object],
        short: Mapping[str, Cell] | None = None,
    ) -> None:
        """A row: terminal cells by column key (sanitized ``Text``), its short forms, and its
        TSV values in ``fields`` order (sanitized here)."""
        values = tuple(visible(value) for value in fields)
        if len(values) != len(self.fields):
            raise ValueError(f"{len(values)} values for {len(self.fields)} fields")
        self.rows.append(
            _Row(
                {key: _text(cell) for key, cell in cells.items()},
                {key: _text(cell) for key, cell in (short or {}).items()},
                values,
            )
        )

    # ------------------------------------------------------------------ terminal

    def _cell(self, row: _Row, col: Col, shortened: set[str]) -> Text:
        if col.key in shortened and col.key in row.short:
            return row.short[col.key]
        return row.cells.get(col.key, Text())

    def _natural(self, col: Col, shortened: set[str]) -> int:
        width = max(
            [Text(col.header).cell_len]
            + [self._cell(row, col, shortened).cell_len for row in self.rows]
        )
        return min(width, max(col.max_width, len(col.header))) if col.max_width else width

    def layout(self, width: int) -> tuple[list[Col], dict[str, int], set[str]]:
        """The columns shown at ``width``, their widths, and the columns shown short."""
        shown = list(self.columns)
        shortened: set[str] = set()
        steps = iter(self.steps)
        while True:
            natural = {c.key: self._natural(c, shortened) for c in shown}
            least = {
                c.key: min(natural[c.key], c.flex) if c.flex else natural[c.key] for c in shown
            }
            if sum(least.values()) + GAP * (len(shown) - 1) <= width:
                break
            step = next(steps, None)
            if step is None:
                break
            if isinstance(step, Drop):
                shown = [c for c in shown if c.key != step.key]
            else:
                shortened.add(step.key)
        widths = dict(least)
        spare = width - sum(widths.values()) - GAP * (len(shown) - 1)
        for col in shown:  # flexible columns grow back, left to right, up to their content
            if col.flex and spare > 0:
                grow = min(spare, natural[col.key] - widths[col.key])
                widths[col.key] += grow
                spare -= grow
        while spare < 0:  # narrower than every step allows: cut the widest column
            key = max(reversed(shown), key=lambda c: widths[c.key]).key
            if widths[key] <= 1:
                break
            widths[key] -= 1
            spare += 1
        return shown, widths, shortened

    def lines(self, width: int) -> list[Text]:
        """The table as terminal lines, none wider than ``width`` cells."""
        shown, widths, shortened = self.layout(width)
        out: list[Text] = []
        if self.title:
            out.append(cut(Text(self.title, style="italic"), width))

        def line(cells: list[Text]) -> Text:
            joined = Text()
            for index, (col, cell) in enumerate(zip(shown, cells, strict=True)):
                if index:
                    joined.append(" " * GAP)
                fitted = cut(cell, widths[col.key], at_start=col.cut_start)
                fitted.align(col.justify, widths[col.key])
                joined.append_text(fitted)
            joined.rstrip()
            return joined

        out.append(line([Text(c.header, style="bold") for c in shown]))
        out.extend(line([self._cell(row, c, shortened) for c in shown]) for row in self.rows)
        for text in out:
            text.no_wrap = True
            text.overflow = "ellipsis"
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.lines(options.max_width)

    # ------------------------------------------------------------------ pipe

    def tsv(self) -> str:
        """The table as tab-separated text: a header line and a line per row."""
        lines = ["\t".join(self.fields), *("\t".join(row.fields) for row in self.rows)]
        return "".join(f"{line}\n" for line in lines)


def show(console: Console, table: FitTable, *, notes: Console | None = None) -> None:
    """Print ``table``: laid out for the width on a terminal, TSV anywhere else.

    Off a terminal the title goes to ``notes`` (stderr), if given, so that stdout holds only
    the table; without ``notes`` it is left out.
    """
    if console.is_terminal:
        console.print(table)
        return
    if notes is not None and table.title:
        notes.print(Text(table.title))
    # Written as is (rich would expand the tabs), a line at a time: a reader that stops
    # early (``| head``) is noticed before everything is written.
    for line in table.tsv().splitlines(keepends=True):
        console.file.write(line)
    console.file.flush()
