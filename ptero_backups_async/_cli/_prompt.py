"""Questions on the terminal before a destructive command: ``confirm`` and ``require_terminal``."""

from __future__ import annotations

import contextlib
import sys

from rich.console import Console

from ._context import Refused, UsageError
from ._signals import raising_signals

__all__ = ["confirm", "require_terminal"]


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def require_terminal() -> None:
    """``UsageError`` unless stdin is a terminal: nobody could answer a question.

    Scripts, pipes and closed stdins get no prompt: a destructive command there needs
    ``--yes``, and without it the command line is incomplete (exit 2, nothing sent).
    """
    if not _stdin_is_terminal():
        raise UsageError(
            "refusing without confirmation: stdin is not a terminal (pass --yes); "
            "nothing was changed"
        )


def confirm(err: Console, question: str) -> None:
    """Ask ``question`` (markup) on stderr, read a line from the terminal; ``Refused`` unless yes.

    Anything but ``y`` or ``yes`` (an empty line, end of input) declines: exit 1, nothing done.

    Ctrl-C, SIGTERM and SIGHUP interrupt the prompt itself (exit 130, 143, 129).
    """
    require_terminal()
    err.print(f"{question} [bold]\\[y/N][/] ", end="")
    with raising_signals():
        try:
            answer = input()
        except EOFError:
            err.print()
            raise Refused("not confirmed (end of input); nothing was changed") from None
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                err.print()  # end the prompt's line before "interrupted"
            raise
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused("not confirmed; nothing was changed")
