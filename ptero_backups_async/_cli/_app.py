"""Running one command: configuration, the event loop, signals, logging, errors → exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .._errors import InvalidArgumentError, PteroError
from .._panel import RATE_WINDOW
from .._sansio import redact
from . import _commands as c
from ._console import consoles
from ._context import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_USAGE,
    KEY_ENV,
    URL_ENV,
    Context,
    Failed,
    Interrupted,
    Refused,
    UsageError,
)
from ._demo import cmd_demo
from ._describe import error_line
from ._documents import emit_json, failure_json
from ._signals import STOP_MESSAGES, interruptible
from ._text import safe_markup, visible

__all__ = ["COMMANDS", "Command", "run"]

#: A subcommand: it gets the context and the parsed arguments, and returns the exit code.
Command = Callable[[Context, argparse.Namespace], Coroutine[Any, Any, int]]

#: The subcommands by name (``args.command``).
COMMANDS: dict[str, Command] = {
    "servers": c.cmd_servers,
    "list": c.cmd_list,
    "create": c.cmd_create,
    "wait": c.cmd_wait,
    "download": c.cmd_download,
    "sync": c.cmd_sync,
    "prune": c.cmd_prune,
    "lock": c.cmd_lock,
    "unlock": c.cmd_unlock,
    "delete": c.cmd_delete,
    "restore": c.cmd_restore,
    "events": c.cmd_events,
    "demo": cmd_demo,
}


#: Options of the top-level parser that configure a real panel; ``demo`` ignores them.
_PANEL_OPTIONS = ("--panel-url", "--api-key", "--rate-limit-window")


class _VisibleFormatter(logging.Formatter):
    """Log lines for a terminal: panel text in a message (an error body, a URL) is sanitized.

    Each line is sanitized on its own, so that a traceback keeps its line breaks.
    """

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(visible(line) for line in super().format(record).split("\n"))


def _verbose(level: int) -> Callable[[], None]:
    """Send the SDK's log to stderr for the duration of the command; returns the undo."""
    if level <= 0:
        return lambda: None
    logger = logging.getLogger("ptero_backups_async")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_VisibleFormatter("%(asctime)s %(levelname)s %(message)s"))
    old_level = logger.level
    logger.setLevel(logging.DEBUG if level > 1 else logging.INFO)
    logger.addHandler(handler)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    return undo


def _quiet_stdout() -> None:
    """After a broken pipe: send what is left of stdout nowhere, so that Python's own flush at
    exit does not fail again (it would print a warning and exit 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


def _check_configuration(ctx: Context, args: argparse.Namespace) -> None:
    """``UsageError`` for a panel that is not configured, or configured for the demo."""
    if args.command != "demo":
        ctx.panel()
        return
    if any(hasattr(args, option.strip("-").replace("-", "_")) for option in _PANEL_OPTIONS):
        raise UsageError(
            f"demo runs its own fake panel: it takes none of {', '.join(_PANEL_OPTIONS)}"
        )


def run(args: argparse.Namespace) -> int:
    """Run the parsed command and return its exit code (see the package's docstring)."""
    out, err = consoles()
    json_mode: bool = getattr(args, "json", False)
    panel_url = getattr(args, "panel_url", None) or os.environ.get(URL_ENV) or None
    api_key = getattr(args, "api_key", None) or os.environ.get(KEY_ENV) or None
    ctx = Context(
        out=out,
        err=err,
        json=json_mode,
        panel_url=panel_url,
        api_key=api_key,
        rate_limit_window=getattr(args, "rate_limit_window", RATE_WINDOW),
    )

    def fail(code: int, exc: BaseException, prefix: str = "error") -> int:
        line = error_line(exc)
        if api_key:
            line = redact(line, api_key)
        err.print(f"{prefix}: {safe_markup(line)}")
        if json_mode:
            emit_json(failure_json(exc))
        return code

    undo = _verbose(getattr(args, "verbose", 0) or 0)
    try:
        _check_configuration(ctx, args)  # a usage error before any event loop
        command = COMMANDS[args.command]
        code = asyncio.run(interruptible(command(ctx, args)))
    except UsageError as exc:
        return fail(EXIT_USAGE, exc, f"ptero-backups {args.command}: error")
    except InvalidArgumentError as exc:
        return fail(EXIT_USAGE, exc)
    except (Refused, Failed) as exc:
        return fail(EXIT_FAILED, exc)
    except BrokenPipeError:
        # The reader went away (``| head``): nothing is wrong and nobody is left to tell.
        _quiet_stdout()
        return EXIT_PIPE
    except (PteroError, OSError) as exc:
        return fail(EXIT_FAILED, exc)
    except KeyboardInterrupt as exc:
        code = exc.code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    finally:
        undo()
    if code in STOP_MESSAGES:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            err.print(STOP_MESSAGES[code])
    return code
