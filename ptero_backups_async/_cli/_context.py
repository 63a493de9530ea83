"""What every command shares: the context, the command line's own errors and its exit codes.

A leaf: it imports nothing else from ``_cli``, and ``rich`` only for type checking, so that
``main()`` can use the exit codes before it knows whether ``rich`` is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._client import PteroClient

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "EXIT_FAILED",
    "EXIT_HANGUP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "KEY_ENV",
    "URL_ENV",
    "Context",
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
EXIT_TERMINATED = 143

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

    def panel(self) -> tuple[str, str]:
        """The panel's URL and API key; ``UsageError`` when either is not configured."""
        if not self.panel_url:
            raise UsageError(f"no panel URL: pass --panel-url or set {URL_ENV}")
        if not self.api_key:
            raise UsageError(f"no API key: pass --api-key or set {KEY_ENV}")
        return self.panel_url, self.api_key

    def client(self) -> PteroClient:
        """A client for the configured panel (use it with ``async with``)."""
        return PteroClient(*self.panel())

    def note(self, markup: str) -> None:
        """A human message on stderr (nothing in ``--json`` mode)."""
        if not self.json:
            self.err.print(markup)
