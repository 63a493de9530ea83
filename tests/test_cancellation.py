"""Cancellation everywhere: it propagates, unwrapped, and leaves nothing behind.

``list``, ``wait``, ``download``, ``download_many`` (and a call sleeping between retries) are
cancelled at several points of their life (before the first request, waiting for the panel,
streaming, stalled) by an anyio cancel scope, by ``asyncio.wait_for`` and by the failure of a
sibling task. Each time: the cancellation reaches the caller as itself (never swallowed, never
turned into an SDK error), no final file appears unless it is complete and verified, no
``.part`` remains, and once the client is closed the process's file descriptors and
connections are back where they were.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import anyio
import pytest

from ptero_backups_async import PteroClient
from ptero_backups_async.testing import DownloadFault, FakePanel

from .conftest import register_key
from .faults._tools import established_connections, open_fds, settle

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

CONTENT = os.urandom(4 * 1024 * 1024)
SEED = int(os.environ.get("PTERO_CANCEL_SEED", random.SystemRandom().randrange(2**32)))
_rng = random.Random(SEED)
# Fixed points that hit each phase, plus two random ones (their values are the test ids;
# PTERO_CANCEL_SEED=<n> repeats a run's choice).
DELAYS = [
    0.0,
    0.01,
    0.03,
    0.08,
    0.2,
    round(_rng.uniform(0, 0.1), 3),
    round(_rng.uniform(0, 0.3), 3),
]


class Env(NamedTuple):
    panel: FakePanel
    client: PteroClient
    server: str
    dest: pathlib.Path
    backups: list[Any]


Operation = Callable[[Env], Awaitable[Any]]


async def op_list(env: Env) -> Any:
    return [b async for b in env.client.backups(env.server).list(per_page=10)]


async def op_list_retrying(env: Env) -> Any:
    """Cancelled while sleeping between retries (the panel answers 503 for a while)."""
    return await env.client.backups(env.server).list_page()


async def op_wait(env: Env) -> Any:
    return await env.client.backups(env.server).wait(
        env.backups[-1].uuid, timeout=60, poll_interval=0.05
    )


async def op_download(env: Env) -> Any:
    return await env.client.backups(env.server).download(
        env.backups[0].uuid, env.dest, read_timeout=30
    )


async def op_download_many(env: Env) -> Any:
    targets = [(env.server, b.uuid) for b in env.backups[:3]]
    return await env.client.download_many(targets, env.dest, concurrency=2, read_timeout=30)


OPERATIONS: dict[str, Operation] = {
    "list": op_list,
    "list_retrying": op_list_retrying,
    "wait": op_wait,
    "download": op_download,
    "download_many": op_download_many,
}


@pytest.fixture
async def env(tmp_path: pathlib.Path) -> AsyncIterator[Env]:
    async with FakePanel() as panel:
        register_key(panel.api_key)
        server = panel.add_server(backup_limit=100)
        backups = [panel.add_backup(server, content=CONTENT) for _ in range(3)]
        for i in range(70):
            panel.add_backup(server, name=f"filler {i}", content=b"f" * 100)
        backups.append(panel.add_backup(server, state="creating"))  # never finishes
        for backup in backups[:3]:
            panel.script_download(backup, DownloadFault.stall(1_000_000, 30))
        # Every API answer takes a moment, so that cancellation can land while waiting.
        panel.inject(method="GET", path="/backups$", kind="stall", delay=0.06, times=1000)
        panel.inject(method="GET", path=r"/download$", kind="stall", delay=0.05, times=1000)
        panel.inject(
            method="GET", path=r"/backups/[0-9a-f-]{36}$", kind="stall", delay=0.02, times=1000
        )
        ports = {int(panel.url.rsplit(":", 1)[1]), int(panel.link_url.rsplit(":", 1)[1])}
        fds_before = open_fds()
        dest = tmp_path / "dest"
        dest.mkdir()
        client = PteroClient(panel.url, panel.api_key, timeout=10)
        try:
            yield Env(panel, client, server.identifier, dest, backups)
        finally:
            await client.aclose()
        assert await settle(lambda: established_connections(ports) == 0), "connections leaked"
        assert await settle(lambda: open_fds() <= fds_before), (
            f"file descriptors leaked: {open_fds()} open, {fds_before} before"
        )


def assert_nothing_left(env: Env) -> None:
    for path in env.dest.iterdir():
        assert not path.name.endswith(".part"), f"{path.name} left behind"
        # A final file only if the download had completed and verified before the cancel.
        assert path.read_bytes() == CONTENT, f"{path.name} is not a complete archive"


async def _run_marked(operation: Operation, env: Env, reached: list[str]) -> None:
    await operation(env)
    reached.append("the operation returned")


def _prepare(name: str, env: Env) -> None:
    if name == "list_retrying":
        env.panel.clear_faults()
        env.panel.inject(method="GET", path="/backups$", status=503, times=1000)


def ids(values: list[float]) -> list[str]:
    return [f"{d}s" for d in values]


@pytest.mark.parametrize("delay", DELAYS, ids=ids(DELAYS))
@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_cancel_scope(env: Env, name: str, delay: float) -> None:
    _prepare(name, env)
    reached: list[str] = []
    with anyio.move_on_after(delay) as scope:
        await _run_marked(OPERATIONS[name], env, reached)
    assert scope.cancelled_caught, "the cancellation was swallowed"
    assert reached == []
    assert_nothing_left(env)


@pytest.mark.parametrize("delay", DELAYS, ids=ids(DELAYS))
@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_asyncio_wait_for(env: Env, name: str, delay: float) -> None:
    _prepare(name, env)
    reached: list[str] = []
    with pytest.raises(asyncio.TimeoutError) as info:
        await asyncio.wait_for(_run_marked(OPERATIONS[name], env, reached), delay)
    # asyncio's own TimeoutError (the builtin one from 3.11), made from the cancellation: not
    # an SDK error.
    assert type(info.value) is asyncio.TimeoutError, f"the cancellation became {info.value!r}"
    assert reached == []
    assert_nothing_left(env)


class Boom(Exception):
    """The sibling's failure."""


@pytest.mark.parametrize("delay", DELAYS, ids=ids(DELAYS))
@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_failing_sibling(env: Env, name: str, delay: float) -> None:
    _prepare(name, env)
    reached: list[str] = []

    async def sibling() -> None:
        await anyio.sleep(delay)
        raise Boom

    async def together() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run_marked, OPERATIONS[name], env, reached)
            tg.start_soon(sibling)

    with pytest.raises(BaseExceptionGroup) as info:
        await together()
    # Only the sibling's error: the cancelled operation added nothing of its own.
    assert [type(e) for e in info.value.exceptions] == [Boom], info.value.exceptions
    assert reached == []
    assert_nothing_left(env)


async def test_native_task_cancel_propagates_out_of_download(env: Env) -> None:
    task = asyncio.get_running_loop().create_task(op_download(env))
    await asyncio.sleep(0.15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert_nothing_left(env)


async def test_the_client_still_works_after_cancellations(env: Env) -> None:
    for delay in (0.0, 0.01, 0.05):
        with anyio.move_on_after(delay):
            await op_list(env)
    env.panel.clear_faults()
    page = await env.client.backups(env.server).list_page(per_page=5)
    assert len(page.items) == 5
