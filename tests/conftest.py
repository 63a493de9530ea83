"""Shared fixtures: the asyncio backend, FakePanel instances, and a session-wide key guard."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from ptero_backups_async import PteroClient
from ptero_backups_async._cli import main
from ptero_backups_async.testing import FakePanel

#: A JSON Web Token: the node's websocket tokens look like this.
JWT = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+")

#: Every API key a FakePanel handed out during the session.
ISSUED_KEYS: set[str] = set()


class _Everything(logging.Handler):
    """Keeps every formatted log line of the session."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="session", autouse=True)
def _no_key_in_any_log_line() -> Iterator[None]:
    """Capture all log output of the session (the SDK's at DEBUG) and look for whole keys."""
    handler = _Everything()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    sdk = logging.getLogger("ptero_backups_async")
    old_level = sdk.level
    sdk.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        sdk.setLevel(old_level)
    if ISSUED_KEYS:
        # Clients talked to panels: with the SDK at DEBUG, there must be lines to look at.
        assert handler.lines, "the SDK logged nothing at DEBUG: the guard would prove nothing"
    leaks = [line for line in handler.lines for key in ISSUED_KEYS if key in line]
    assert not leaks, f"{len(leaks)} log lines contain a whole API key, e.g. {leaks[0][:200]!r}"
    # The node's websocket tokens (JWTs) are credentials too.
    tokens = [line for line in handler.lines if JWT.search(line)]
    assert not tokens, f"{len(tokens)} log lines contain a token, e.g. {tokens[0][:200]!r}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def register_key(key: str) -> str:
    ISSUED_KEYS.add(key)
    return key


@pytest.fixture
async def panel() -> AsyncIterator[FakePanel]:
    async with FakePanel() as fake:
        register_key(fake.api_key)
        yield fake


@pytest.fixture
async def client(panel: FakePanel) -> AsyncIterator[PteroClient]:
    async with PteroClient(panel.url, panel.api_key) as c:
        yield c


async def cli(*argv: str) -> int:
    """Run the CLI in a worker thread (it owns its event loop) and return the exit code."""
    return await anyio.to_thread.run_sync(main, list(argv))


@pytest.fixture
def env(panel: FakePanel, monkeypatch: pytest.MonkeyPatch) -> FakePanel:
    """Configure the CLI for the panel through the environment (the key stays off argv)."""
    monkeypatch.setenv("PTERODACTYL_URL", panel.url)
    monkeypatch.setenv("PTERODACTYL_API_KEY", panel.api_key)
    return panel
