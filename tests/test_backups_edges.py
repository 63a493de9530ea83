"""Edges of ``client.backups(server)`` that the mutation run showed no test was watching.

Each test runs against FakePanel on loopback and names the behaviour it pins down: what is
sent when an argument is left out, what a rotated create keeps, where validation stops a call
before the panel sees it, how lock() copes with a panel that ignores toggles, and which
request a failed call names.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from ptero_backups_async import (
    APIStatusError,
    BackupsResource,
    BackupState,
    InvalidArgumentError,
    PteroClient,
    PteroError,
    TooManyBackupsError,
    UnsupportedOperationError,
    WaitTimeoutError,
)
from ptero_backups_async.testing import FakePanel

from .conftest import register_key

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: Polling only, for the tests of the poll loop: ``wait(via="poll")`` where ``wait`` can also
#: listen to the node's events (the contract's ``via``); a client without ``via`` only polls.
POLL_ONLY: dict[str, Any] = (
    {"via": "poll"} if "via" in inspect.signature(BackupsResource.wait).parameters else {}
)


def posts(panel: FakePanel, suffix: str) -> list[Any]:
    return [r for r in panel.api_requests() if r.method == "POST" and r.path.endswith(suffix)]


@pytest.fixture
async def pelican() -> AsyncIterator[FakePanel]:
    async with FakePanel(dialect="pelican") as fake:
        register_key(fake.api_key)
        yield fake


# ------------------------------------------------------------------ create


async def test_create_with_no_arguments_sends_an_empty_body_and_is_unlocked(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    created = await client.backups(server.identifier).create()
    (request,) = posts(panel, "/backups")
    assert json.loads(request.body) == {}  # no name, no patterns, and above all no is_locked
    assert not created.is_locked
    assert not panel.backup(created.uuid).is_locked


async def test_a_rotated_create_sends_the_same_name_patterns_and_lock(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server(backup_limit=1)
    oldest = panel.add_backup(server, created_at=START)
    created = await client.backups(server.identifier).create(
        name="nightly", ignored=["*.log", "cache/"], is_locked=True, rotate=True
    )
    first, second = posts(panel, "/backups")
    assert json.loads(first.body) == json.loads(second.body)
    assert json.loads(second.body)["name"] == "nightly"
    assert (created.name, created.ignored_files, created.is_locked) == (
        "nightly",
        ("*.log", "cache/"),
        True,
    )
    assert panel.backup(oldest.uuid).deleted


async def test_rotate_with_nothing_rotatable_is_too_many_backups_and_deletes_nothing(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server(backup_limit=1)
    panel.add_backup(server, locked=True, created_at=START)  # never rotated away
    with pytest.raises(TooManyBackupsError):
        await client.backups(server.identifier).create(name="no room", rotate=True)
    assert not [r for r in panel.api_requests() if r.method == "DELETE"]
    assert len(posts(panel, "/backups")) == 1


# ------------------------------------------------------------------ prune and validation


async def test_prune_keep_zero_deletes_every_unlocked_successful_backup(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server(backup_limit=10)
    made = [panel.add_backup(server, created_at=START + timedelta(days=i)) for i in range(3)]
    locked = panel.add_backup(server, locked=True, created_at=START)
    deleted = await client.backups(server.identifier).prune(keep=0)
    assert [b.uuid for b in deleted] == [b.uuid for b in made]
    assert [b.uuid for b in server.backups] == [locked.uuid]


@pytest.mark.parametrize("keep", [-1, True, "2", 1.5, None])
async def test_prune_refuses_a_keep_that_is_not_a_count_before_any_request(
    panel: FakePanel, client: PteroClient, keep: object
) -> None:
    server = panel.add_server()
    panel.add_backup(server)
    with pytest.raises(InvalidArgumentError) as info:
        await client.backups(server.identifier).prune(keep=keep)  # type: ignore[arg-type]
    assert "keep" in str(info.value)
    assert repr(keep) in str(info.value)
    assert not panel.api_requests()
    assert len(server.backups) == 1


async def test_non_bool_flags_are_refused_by_name_before_any_request(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server)
    backups = client.backups(server.identifier)
    with pytest.raises(InvalidArgumentError, match=r"truncate.*'yes'"):
        await backups.restore(backup.uuid, truncate="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"is_locked.*1"):
        await backups.create(is_locked=1)  # type: ignore[arg-type]
    assert not panel.api_requests()


async def test_bad_options_are_named_as_they_are_spelled(
    panel: FakePanel, client: PteroClient, tmp_path: Any
) -> None:
    # The message names the argument exactly as the caller wrote it, as a whole word.
    server = panel.add_server()
    backup = panel.add_backup(server)
    backups = client.backups(server.identifier)
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("wait", lambda: backups.restore(backup.uuid, wait="yes")),  # type: ignore[arg-type]
        ("timeout", lambda: backups.restore(backup.uuid, wait=True, timeout=-1)),
        ("timeout", lambda: backups.wait(backup.uuid, timeout=-1)),
        ("poll_interval", lambda: backups.wait(backup.uuid, poll_interval=0)),
        ("read_timeout", lambda: backups.download(backup.uuid, tmp_path, read_timeout=0)),
        ("min_rate", lambda: backups.download(backup.uuid, tmp_path, min_rate=-1)),
        ("keep", lambda: backups.prune(keep=-1)),
    ]
    for name, call in calls:
        with pytest.raises(InvalidArgumentError) as info:
            await call()
        assert re.search(rf"(?<![\w]){name}(?![\w])", str(info.value)), (name, str(info.value))
    assert not panel.api_requests()


async def test_an_awaited_restore_shorter_than_its_timeout_is_not_given_up(
    client: PteroClient, panel: FakePanel
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server)
    panel.restore_duration = 0.2
    with anyio.fail_after(10):
        await client.backups(server.identifier).restore(backup.uuid, wait=True, timeout=0.9)
    assert panel.server(server.identifier).status is None


# ------------------------------------------------------------------ lock and unlock


async def test_lock_keeps_toggling_until_the_panel_takes_it(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server)
    # Someone else's toggle (or a flaky proxy) swallows the first two: each answers 204 and
    # changes nothing. The third one lands.
    panel.inject(method="POST", path=r"/lock$", kind="empty", status=204, times=2)
    locked = await client.backups(server.identifier).lock(backup.uuid)
    assert locked.is_locked
    assert panel.backup(backup.uuid).is_locked
    assert len(posts(panel, "/lock")) == 3


@pytest.mark.parametrize(("start_locked", "now"), [(False, "unlocked"), (True, "locked")])
async def test_lock_and_unlock_give_up_after_three_ignored_toggles_and_say_where_it_stands(
    panel: FakePanel, client: PteroClient, start_locked: bool, now: str
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, locked=start_locked)
    panel.inject(method="POST", path=r"/lock$", kind="empty", status=204, times=3)
    backups = client.backups(server.identifier)
    set_lock = backups.unlock if start_locked else backups.lock
    with pytest.raises(PteroError) as info:
        await set_lock(backup.uuid)
    assert str(info.value).endswith(f"it is now {now}")
    assert backup.uuid in str(info.value)
    assert len(posts(panel, "/lock")) == 3
    assert panel.backup(backup.uuid).is_locked is start_locked


# ------------------------------------------------------------------ errors name the request


@pytest.mark.parametrize(
    ("operation", "method", "suffix"),
    [
        ("get", "GET", "/backups/{uuid}"),
        ("download_url", "GET", "/backups/{uuid}/download"),
        ("create", "POST", "/backups"),
        ("delete", "DELETE", "/backups/{uuid}"),
        ("restore", "POST", "/backups/{uuid}/restore"),
        ("toggle_lock", "POST", "/backups/{uuid}/lock"),
        ("rename", "PUT", "/backups/{uuid}/rename"),
    ],
)
async def test_a_refused_call_names_its_method_and_url(
    pelican: FakePanel, operation: str, method: str, suffix: str
) -> None:
    server = pelican.add_server()
    backup = pelican.add_backup(server)
    path = suffix.format(uuid=backup.uuid)
    pelican.inject(method=method, path=f"{path}$", status=403)
    async with PteroClient(pelican.url, pelican.api_key) as client:
        backups = client.backups(server.identifier)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get": lambda: backups.get(backup.uuid),
            "download_url": lambda: backups.download_url(backup.uuid),
            "create": lambda: backups.create(),
            "delete": lambda: backups.delete(backup.uuid),
            "restore": lambda: backups.restore(backup.uuid),
            "toggle_lock": lambda: backups.toggle_lock(backup.uuid),
            "rename": lambda: backups.rename(backup.uuid, "renamed"),
        }
        with pytest.raises(APIStatusError) as info:
            await calls[operation]()
    assert info.value.status == 403
    assert info.value.method == method
    assert info.value.url is not None
    assert info.value.url.endswith(path)
    assert f"{method} " in str(info.value)


@pytest.mark.parametrize("dialect", ["pterodactyl", "pelican"])
async def test_a_panel_without_rename_says_it_cannot_rename(dialect: str) -> None:
    # Pterodactyl has no route (404 for an existing backup); a proxy may answer 405.
    async with FakePanel(dialect=dialect) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        backup = panel.add_backup(server, name="before")
        if dialect == "pelican":
            panel.inject(method="PUT", path=r"/rename$", status=405)
        async with PteroClient(panel.url, register_key(panel.api_key)) as client:
            with pytest.raises(UnsupportedOperationError, match="cannot rename") as info:
                await client.backups(server.identifier).rename(backup.uuid, "after")
        assert isinstance(info.value.__cause__, APIStatusError)
        assert info.value.__cause__.status == (404 if dialect == "pterodactyl" else 405)
        assert panel.backup(backup.uuid).name == "before"


# ------------------------------------------------------------------ wait


@pytest.mark.parametrize(
    ("limit", "poll_interval", "named"),
    [
        (0, 1.0, "timeout"),
        (-1, 1.0, "timeout"),
        (1.0, 0, "poll_interval"),
        (1.0, -1, "poll_interval"),
    ],
)
async def test_wait_refuses_a_timeout_or_poll_interval_that_is_not_positive(
    panel: FakePanel, client: PteroClient, limit: float, poll_interval: float, named: str
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, state="creating")
    with pytest.raises(InvalidArgumentError, match=named):
        await client.backups(server.identifier).wait(backup.uuid, limit, poll_interval)
    assert not panel.api_requests()


async def test_wait_with_a_timeout_under_a_second_still_polls_until_done(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, state="creating")

    async def finish_soon() -> None:
        await anyio.sleep(0.15)
        backup.complete()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_soon)
            done = await client.backups(server.identifier).wait(
                backup.uuid, timeout=0.8, poll_interval=0.05, **POLL_ONLY
            )
    assert done.state is BackupState.COMPLETED


async def test_wait_backs_off_gently_and_says_the_last_state_it_saw(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, state="creating")
    with anyio.fail_after(5), pytest.raises(WaitTimeoutError) as info:
        await client.backups(server.identifier).wait(
            backup.uuid, timeout=0.9, poll_interval=0.1, **POLL_ONLY
        )
    assert "(last state: creating)" in str(info.value)
    polls = [r.time for r in panel.api_requests() if r.path.endswith(backup.uuid)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    # 0.1 s, then half as long again each time (0.15, 0.225, 0.34): a poll never comes
    # sooner than the last gap, and the gaps do not run away either.
    assert len(gaps) >= 3, gaps
    assert 0.09 <= gaps[0] < 0.2, gaps
    for earlier, later in itertools.pairwise(gaps):
        assert 1.25 <= later / earlier <= 1.9, gaps


async def test_wait_ends_at_its_timeout_even_when_the_panel_hangs(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, state="creating")
    panel.inject(method="GET", path=f"/backups/{backup.uuid}$", kind="stall", delay=5, times=5)
    with anyio.fail_after(2), pytest.raises(WaitTimeoutError) as info:
        await client.backups(server.identifier).wait(
            backup.uuid, timeout=0.4, poll_interval=0.1, **POLL_ONLY
        )
    assert "(last state: unknown)" in str(info.value)
