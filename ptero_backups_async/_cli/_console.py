"""The two consoles (stdout, stderr) and section headings."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

from ._text import safe_markup

__all__ = ["PIPE_WIDTH", "consoles", "heading"]

#: Width of a console that is not a terminal (a file or a pipe). Its lines are never wrapped
#: (``soft_wrap``: a message stays one line, for grep) and its tables are TSV, so this only
#: sizes what rich lays out itself.
PIPE_WIDTH = 200


def _console(file: TextIO) -> Console:
    # emoji=False: a name like ":warning:" is shown as written (markup is escaped separately).
    console = Console(file=file, highlight=False, emoji=False)
    if console.is_terminal:  # a tty, or TTY_COMPATIBLE=1 / FORCE_COLOR: its width, wrapped
        return console
    return Console(file=file, highlight=False, emoji=False, width=PIPE_WIDTH, soft_wrap=True)


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles: on a terminal, lines fit its width; elsewhere a message is
    one line, whatever its length, and colourless."""
    return _console(sys.stdout), _console(sys.stderr)


def heading(console: Console, text: str) -> None:
    """A section heading (``text`` may hold panel text: it is escaped)."""
    console.print()
    if console.is_terminal:
        console.rule(f"[bold]{safe_markup(text)}", align="left")
    else:
        console.print(f"== {safe_markup(text)} ==", style="bold")
