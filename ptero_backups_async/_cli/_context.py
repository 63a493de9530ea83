"""What every command shares: the context, the command line's own errors and its exit codes.

A leaf: it imports nothing else from ``_cli``, and ``rich`` only for type checking, so that
``main()`` can use the exit codes before it knows whether ``rich`` is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._client import PteroClient
from .._errors import InvalidArgumentError
from .._panel import RATE_WINDOW
from .._sansio import check_api_key, normalize_panel_url

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "EXIT_FAILED",
    "EXIT_HANGUP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "KEY_ENV",
    "URL_ENV",
    "Context",
    "Failed",
    "Interrupted",
    "Refused",
    "UsageError",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: 128 + the signal's number, as shells report a process killed by it.
EXIT_HANGUP = 129
EXIT_INTERRUPTED = 130
#: stdout was closed early (SIGPIPE's number: a reader such as ``head`` exited).
EXIT_PIPE = 141
EXIT_TERMINATED = 143

URL_ENV = "PTERODACTYL_URL"
KEY_ENV = "PTERODACTYL_API_KEY"


class UsageError(Exception):
    """A usage or configuration error, found before anything is sent: one line, exit 2."""


class Failed(Exception):
    """The command could not do what was asked (the command line found it, not the SDK):
    one line on stderr, exit 1."""


class Refused(Exception):
    """The user declined at the confirmation prompt: one line on stderr, exit 1.

    Nobody to ask (stdin not a terminal, no ``--yes``) is a ``UsageError`` instead.
    """


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
    rate_limit_window: float = RATE_WINDOW

    def panel(self) -> tuple[str, str]:
        """The panel's URL and API key; ``UsageError`` when either is missing or unusable."""
        if not self.panel_url:
            raise UsageError(f"no panel URL: pass --panel-url or set {URL_ENV}")
        if not self.api_key:
            raise UsageError(f"no API key: pass --api-key or set {KEY_ENV}")
        try:
            normalize_panel_url(self.panel_url)
            check_api_key(self.api_key)  # its message never shows the key
        except InvalidArgumentError as exc:
            raise UsageError(str(exc)) from None
        return self.panel_url, self.api_key

    def client(self) -> PteroClient:
        """A client for the configured panel (use it with ``async with``)."""
        return PteroClient(*self.panel(), rate_limit_window=self.rate_limit_window)

    def note(self, markup: str) -> None:
        """A human message on stderr (nothing in ``--json`` mode)."""
        if not self.json:
            self.err.print(markup)

    def say(self, markup: str) -> None:
        """A line about the result (a summary, a title): on stdout when it is a terminal, else
        on stderr, so that a pipe gets only the table (nothing in ``--json`` mode)."""
        if not self.json:
            (self.out if self.out.is_terminal else self.err).print(markup)
