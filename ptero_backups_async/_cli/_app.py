"""Running one command: configuration, the event loop, signals, errors and exit codes.

SIGINT (Ctrl-C), SIGTERM (a service manager stopping us) and SIGHUP (the terminal went away)
all cancel the running command, so that downloads remove their ``.part`` files, and then exit
128 + the signal's number: 130, 143, 129.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from .._client import PteroClient
from .._errors import InvalidArgumentError, PteroError
from .._sansio import redact
from ._render import consoles, emit_json, error_line, failure_json, safe_markup, visible

__all__ = [
    "EXIT_FAILED",
    "EXIT_HANGUP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Context",
    "Interrupted",
    "Refused",
    "UsageError",
    "confirm",
    "require_terminal",
    "run",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: 128 + the signal's number, as shells report a process killed by it.
EXIT_HANGUP = 129
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

#: The signals that stop a command cleanly, with their exit codes and what stderr says.
_STOP_SIGNALS: dict[str, tuple[int, str]] = {
    "SIGINT": (EXIT_INTERRUPTED, "interrupted"),
    "SIGTERM": (EXIT_TERMINATED, "terminated (SIGTERM)"),
    "SIGHUP": (EXIT_HANGUP, "hung up (SIGHUP)"),  # not on Windows
}
_MESSAGES = {code: message for code, message in _STOP_SIGNALS.values()}


def _stop_signals() -> dict[signal.Signals, int]:
    """The stop signals this platform has, with their exit codes."""
    found = {}
    for name, (code, _) in _STOP_SIGNALS.items():
        signum = getattr(signal, name, None)
        if signum is not None:
            found[signal.Signals(signum)] = code
    return found


URL_ENV = "PTERODACTYL_URL"
KEY_ENV = "PTERODACTYL_API_KEY"


class UsageError(Exception):
    """A usage or configuration error: one line on stderr, exit 2."""


class Refused(Exception):
    """The user did not confirm a destructive command: one line on stderr, exit 1."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP while blocked in a prompt: like Ctrl-C there, with its own code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Context:
    """What every command gets: consoles, output mode and the panel's configuration."""

    out: Console
    err: Console
    json: bool
    panel_url: str | None = None
    api_key: str | None = None

    def client(self) -> PteroClient:
        """A client for the configured panel (use it with ``async with``)."""
        if not self.panel_url:
            raise UsageError(f"no panel URL: pass --panel-url or set {URL_ENV}")
        if not self.api_key:
            raise UsageError(f"no API key: pass --api-key or set {KEY_ENV}")
        return PteroClient(self.panel_url, self.api_key)

    def emit(self, doc: Any) -> None:
        """Print the command's JSON document on stdout."""
        emit_json(doc)

    def note(self, markup: str) -> None:
        """A human message on stderr (nothing in ``--json`` mode)."""
        if not self.json:
            self.err.print(markup)

    def confirm(self, question: str) -> None:
        """Ask on the terminal; raise ``Refused`` unless the answer is yes."""
        confirm(self.err, question)


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def require_terminal() -> None:
    """``Refused`` unless stdin is a terminal: nobody could answer a question.

    Scripts, pipes and closed stdins get no prompt and the answer no: destructive commands
    in scripts need ``--yes``.
    """
    if not _stdin_is_terminal():
        raise Refused(
            "refusing without confirmation: stdin is not a terminal (pass --yes); "
            "nothing was changed"
        )


def confirm(err: Console, question: str) -> None:
    """Ask ``question`` on stderr and read a line from the terminal; ``Refused`` unless yes."""
    require_terminal()
    err.print(f"{question} [bold]\\[y/N][/] ", end="")
    # The event loop's signal handlers would only run after input() returns: let Ctrl-C,
    # SIGTERM and SIGHUP interrupt the prompt itself (KeyboardInterrupt → exit 130, 143, 129).
    main = threading.current_thread() is threading.main_thread()
    previous: dict[signal.Signals, Any] = {}
    if main:
        for signum, code in _stop_signals().items():
            previous[signum] = signal.getsignal(signum)
            if signum == signal.SIGINT:
                signal.signal(signum, signal.default_int_handler)
            else:
                signal.signal(signum, _raiser(code))
    try:
        answer = input()
    except EOFError:
        err.print()
        raise Refused("not confirmed (end of input); nothing was changed") from None
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            err.print()  # end the prompt's line before "interrupted"
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused("not confirmed; nothing was changed")


def _raiser(code: int) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(code)

    return handler


async def _interruptible(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro``; the first SIGINT, SIGTERM or SIGHUP cancels it and cleanup runs.

    The command then returns 128 + that signal's number. During the cleanup a second Ctrl-C
    interrupts it (KeyboardInterrupt); further SIGTERM and SIGHUP are ignored, because they
    come in pairs (a closing terminal's shell and then the kernel both send SIGHUP), and the
    cleanup is what they are waiting for.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    exit_code: int | None = None

    def on_signal(signum: signal.Signals, code: int) -> None:
        nonlocal exit_code
        if exit_code is not None:
            return
        exit_code = code
        if signal.SIGINT in installed:
            loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C raises
            installed.remove(signal.SIGINT)
        if task is not None:
            task.cancel()

    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for signum, code in _stop_signals().items():
            try:
                loop.add_signal_handler(signum, on_signal, signum, code)
            except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt as usual
                break
            installed.append(signum)
    try:
        return await coro
    except asyncio.CancelledError:
        if exit_code is not None:
            return exit_code
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


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


Command = Callable[[Context, argparse.Namespace], Coroutine[Any, Any, int]]


def _commands() -> dict[str, Command]:
    from . import _commands as c
    from ._demo import cmd_demo

    return {
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
        "demo": cmd_demo,
    }


def run(args: argparse.Namespace) -> int:
    """Run the parsed command and return its exit code."""
    out, err = consoles()
    json_mode: bool = getattr(args, "json", False)
    panel_url = getattr(args, "panel_url", None) or os.environ.get(URL_ENV) or None
    api_key = getattr(args, "api_key", None) or os.environ.get(KEY_ENV) or None
    ctx = Context(out=out, err=err, json=json_mode, panel_url=panel_url, api_key=api_key)

    def fail(code: int, exc: BaseException, prefix: str = "error") -> int:
        line = error_line(exc)
        if api_key:
            line = redact(line, api_key)
        err.print(f"{prefix}: {safe_markup(line)}", soft_wrap=True)
        if json_mode:
            emit_json(failure_json(exc))
        return code

    undo = _verbose(getattr(args, "verbose", 0) or 0)
    try:
        if args.command != "demo":
            _check_config(panel_url, api_key)
        command = _commands()[args.command]
        code = asyncio.run(_interruptible(command(ctx, args)))
    except UsageError as exc:
        return fail(EXIT_USAGE, exc, f"ptero-backups {args.command}: error")
    except InvalidArgumentError as exc:
        return fail(EXIT_USAGE, exc)
    except Refused as exc:
        return fail(EXIT_FAILED, exc)
    except (PteroError, OSError) as exc:
        return fail(EXIT_FAILED, exc)
    except KeyboardInterrupt as exc:
        code = exc.code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    finally:
        undo()
    if code in _MESSAGES:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            err.print(_MESSAGES[code])
    return code


def _check_config(panel_url: str | None, api_key: str | None) -> None:
    if not panel_url:
        raise UsageError(f"no panel URL: pass --panel-url or set {URL_ENV}")
    if not api_key:
        raise UsageError(f"no API key: pass --api-key or set {KEY_ENV}")
