"""The two consoles (stdout, stderr) and section headings."""

from __future__ import annotations

import sys

from rich.console import Console

from ._text import safe_markup

__all__ = ["PIPE_WIDTH", "consoles", "heading"]

#: Width of tables when stdout is not a terminal (a file or a pipe): wide enough for UUIDs
#: and checksums side by side, so each row stays on one line.
PIPE_WIDTH = 200


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles; wide and colourless when not writing to a terminal."""
    # emoji=False: a name like ":warning:" is shown as written (markup is escaped separately).
    out = Console(file=sys.stdout, highlight=False, emoji=False)
    if not out.is_terminal:
        out = Console(file=sys.stdout, highlight=False, emoji=False, width=PIPE_WIDTH)
    err = Console(file=sys.stderr, highlight=False, emoji=False)
    if not err.is_terminal:
        err = Console(file=sys.stderr, highlight=False, emoji=False, width=PIPE_WIDTH)
    return out, err


def heading(console: Console, text: str) -> None:
    """A section heading (``text`` may hold panel text: it is escaped)."""
    console.print()
    if console.is_terminal:
        console.rule(f"[bold]{safe_markup(text)}", align="left")
    else:
        console.print(f"== {safe_markup(text)} ==", style="bold")
