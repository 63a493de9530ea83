"""Events from the node: ``client.events()``, ``wait()`` on events and its fallbacks,
``restore(wait=True)``, against FakePanel's node over real websockets."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import anyio
import pytest

from ptero_backups_async import (
    BackupCompleted,
    BackupFailedError,
    EventsUnavailableError,
    NodeEvent,
    PteroClient,
    RestoreCompleted,
    StatusChanged,
    WaitTimeoutError,
)
from ptero_backups_async.testing import FakePanel, SocketFault

from .conftest import register_key

pytestmark = pytest.mark.anyio

LOGGER = "ptero_backups_async"


@pytest.fixture
async def fake() -> AsyncIterator[FakePanel]:
    async with FakePanel(backup_duration=0.4) as panel:
        register_key(panel.api_key)
        yield panel


def client_for(panel: FakePanel, **options: float) -> PteroClient:
    return PteroClient(panel.url, panel.api_key, node_timeout=options.pop("node_timeout", 2.0))


def api_paths(panel: FakePanel) -> list[str]:
    return [f"{r.method} {r.path}" for r in panel.api_requests()]


async def test_wait_returns_on_the_event_with_three_requests(fake: FakePanel) -> None:
    server = fake.add_server()
    async with client_for(fake) as client:
        b = client.backups(server.identifier)
        created = await b.create(name="evented")
        fake.clear_requests()
        with anyio.fail_after(10):
            done = await b.wait(created, poll_interval=30)  # polling would take 30 s
    assert done.uuid == created.uuid
    assert done.state.value == "completed"
    paths = api_paths(fake)
    assert len(paths) <= 3, paths
    assert paths[0].endswith("/websocket")
    assert all(p.startswith("GET") for p in paths)
    (connection,) = fake.node_connections(server)
    assert connection.origin == fake.url.rstrip("/")


async def test_a_backup_finished_before_the_socket_is_caught_by_the_first_look(
    fake: FakePanel,
) -> None:
    server = fake.add_server()
    backup = fake.add_backup(server)  # already complete: no event will ever come
    async with client_for(fake) as client:
        with anyio.fail_after(5):
            done = await client.backups(server.identifier).wait(backup.uuid, via="events")
    assert done.uuid == backup.uuid


async def test_a_failed_backup_event_raises_backup_failed_error(fake: FakePanel) -> None:
    server = fake.add_server()
    fake.fail_next_backup(server)
    async with client_for(fake) as client:
        b = client.backups(server.identifier)
        created = await b.create()
        with anyio.fail_after(10), pytest.raises(BackupFailedError) as info:
            await b.wait(created, via="events")
    assert info.value.backup is not None
    assert info.value.backup.state.value == "failed"


async def test_the_event_stream_is_typed(fake: FakePanel) -> None:
    server = fake.add_server()
    seen: list[object] = []
    async with client_for(fake) as client, client.events(server.identifier) as events:
        b = client.backups(server.identifier)
        created = await b.create()
        with anyio.fail_after(10):
            async for event in events:
                seen.append(event)
                if isinstance(event, BackupCompleted):
                    break
    assert any(isinstance(e, StatusChanged) for e in seen)
    done = seen[-1]
    assert isinstance(done, BackupCompleted)
    assert done.backup_uuid == created.uuid
    assert done.is_successful
    assert done.server == server.identifier
    assert done.checksum is not None
    assert done.bytes > 0


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("no_websocket_permission", "websocket"),
        ("no_backup_read", "backup.read"),
        ("origin_refused", "refused the websocket upgrade"),
    ],
)
async def test_auto_falls_back_to_polling_and_events_raises(
    fake: FakePanel, setup: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = fake.add_server()
    if setup == "no_websocket_permission":
        server.permissions = ["backup.read", "backup.create"]
    elif setup == "no_backup_read":
        server.permissions = ["websocket.connect", "backup.create"]
    else:
        fake.script_socket(server, *[SocketFault.refuse(403)] * 10)
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with client_for(fake) as client:
        b = client.backups(server.identifier)
        created = await b.create()
        with anyio.fail_after(10):
            done = await b.wait(created, poll_interval=0.1)
        assert done.state.value == "completed"
        assert any("polling instead of node events" in r.getMessage() for r in caplog.records)
        again = await b.create()
        with anyio.fail_after(10), pytest.raises(EventsUnavailableError, match=reason):
            await b.wait(again, via="events")


async def test_a_completion_missed_by_the_socket_is_found_after_the_reconnect(
    fake: FakePanel,
) -> None:
    server = fake.add_server()
    fake.script_socket(server, SocketFault.miss_events())  # the first socket swallows it
    async with client_for(fake) as client:
        b = client.backups(server.identifier)
        created = await b.create()
        async with anyio.create_task_group() as tg:
            result: list[object] = []

            async def waiting() -> None:
                result.append(await b.wait(created, via="events"))

            tg.start_soon(waiting)
            with anyio.fail_after(10):
                while fake.backup(created.uuid).state != "completed":  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                await anyio.sleep(0.2)  # the event was swallowed; nothing happens
                assert not result
                # The node ends the first socket: the waiter reconnects and looks again.
                fake.send_node_frame(server, json.dumps({"event": "token expired"}))
                while not result:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
    assert len(fake.node_connections(server)) == 2


async def test_a_dropped_socket_is_reconnected(fake: FakePanel) -> None:
    server = fake.add_server()
    fake.script_socket(server, SocketFault.drop_after(0.1))
    async with client_for(fake) as client:
        b = client.backups(server.identifier)
        created = await b.create()
        with anyio.fail_after(10):
            done = await b.wait(created, via="events")
    assert done.uuid == created.uuid


async def test_a_token_expiring_mid_wait_is_renewed_on_the_same_socket() -> None:
    async with FakePanel(
        backup_duration=3.0, ws_token_lifetime=2.0, ws_check_interval=0.1
    ) as panel:
        register_key(panel.api_key)
        server = panel.add_server()
        async with client_for(panel) as client:
            b = client.backups(server.identifier)
            created = await b.create()
            with anyio.fail_after(15):
                await b.wait(created, via="events")
        connections = panel.node_connections(server)
    assert len(connections) == 1
    assert connections[0].auth_count >= 2


async def test_a_silent_node_falls_back_to_polling(fake: FakePanel) -> None:
    server = fake.add_server()
    fake.script_socket(server, *[SocketFault.silent()] * 5)
    async with client_for(fake, node_timeout=0.3) as client:
        b = client.backups(server.identifier)
        created = await b.create()
        with anyio.fail_after(15):
            done = await b.wait(created, poll_interval=0.1)
    assert done.uuid == created.uuid


async def test_waiters_share_one_socket_and_the_last_one_closes_it(fake: FakePanel) -> None:
    server = fake.add_server(backup_limit=10)
    async with client_for(fake) as client:
        b = client.backups(server.identifier)
        first, second = await b.create(), await b.create()
        fake.backup(first.uuid).begin(None)  # never finishes on its own
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.wait, first.uuid)
            done = await b.wait(second, via="events")
            assert done.uuid == second.uuid
            connections = fake.node_connections(server)
            assert len(connections) == 1
            assert connections[0].closed_at is None  # the other waiter still listens
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            while connections[0].closed_at is None:  # noqa: ASYNC110
                await anyio.sleep(0.02)


async def test_bad_frames_do_not_kill_the_stream(fake: FakePanel) -> None:
    server = fake.add_server()
    async with client_for(fake) as client, client.events(server.identifier) as events:
        seen: list[object] = []

        async def read() -> None:
            async for event in events:
                seen.append(event)
                if isinstance(event, BackupCompleted):
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            with anyio.fail_after(5):
                while not fake.node_connections(server) or not seen:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            fake.send_node_frame(server, "not json at all")
            fake.send_node_frame(server, json.dumps({"event": "console output", "args": ["hi"]}))
            fake.send_node_frame(server, json.dumps({"event": "x", "args": ["y" * 2_000_000]}))
            fake.send_node_frame(server, b"\x00binary")
            # The oversized frame ends that socket; the stream goes on on a new one.
            with anyio.fail_after(10):
                while not [c for c in fake.node_connections(server)[1:] if c.auth_count]:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            await client.backups(server.identifier).create()
            with anyio.fail_after(10):
                while not any(isinstance(e, BackupCompleted) for e in seen):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
    names = [e.name for e in seen if isinstance(e, NodeEvent)]
    assert "console output" in names


@pytest.mark.parametrize("dialect", ["pterodactyl", "pelican"])
async def test_restore_can_be_awaited(dialect: str) -> None:
    async with FakePanel(dialect=dialect, restore_duration=0.5) as panel:  # type: ignore[arg-type]
        register_key(panel.api_key)
        server = panel.add_server()
        backup = panel.add_backup(server)
        async with client_for(panel) as client:
            b = client.backups(server.identifier)
            with anyio.fail_after(15):
                await b.restore(backup.uuid, wait=True)
            assert panel.server(server.identifier).status is None
        paths = api_paths(panel)
    token = next(i for i, p in enumerate(paths) if p.endswith("/websocket"))
    restore = next(i for i, p in enumerate(paths) if p.endswith("/restore"))
    assert token < restore, "the token comes before the restore (409 during one)"


async def test_restore_wait_times_out(fake: FakePanel) -> None:
    server = fake.add_server()
    backup = fake.add_backup(server)
    fake.script_socket(server, SocketFault.miss_events())
    async with client_for(fake) as client:
        fake.restore_duration = 60
        with anyio.fail_after(10), pytest.raises(WaitTimeoutError):
            await client.backups(server.identifier).restore(backup.uuid, wait=True, timeout=0.5)


async def test_restore_completed_reaches_the_stream(fake: FakePanel) -> None:
    server = fake.add_server()
    backup = fake.add_backup(server)
    async with client_for(fake) as client, client.events(server.identifier) as events:
        fake.restore_duration = 0.2
        await client.backups(server.identifier).restore(backup.uuid)
        with anyio.fail_after(10):
            async for event in events:
                if isinstance(event, RestoreCompleted):
                    break


async def test_no_token_in_logs_or_errors(
    fake: FakePanel, caplog: pytest.LogCaptureFixture
) -> None:
    server = fake.add_server()
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    fake.script_socket(server, SocketFault.refuse(403))
    async with client_for(fake) as client:
        b = client.backups(server.identifier)
        created = await b.create()
        await b.wait(created, poll_interval=0.1)
        fake.script_socket(server, *[SocketFault.refuse(403)] * 5)
        again = await b.create()
        with pytest.raises(EventsUnavailableError) as info:
            await b.wait(again, via="events")
    tokens = [
        frame["args"][0]
        for connection in fake.node_connections(server)
        for frame in connection.received
        if frame.get("event") == "auth"
    ]
    issued = [r for r in fake.api_requests() if r.path.endswith("/websocket")]
    assert issued
    text = "\n".join(r.getMessage() for r in caplog.records) + str(info.value)
    for token in tokens:
        assert token not in text
    assert "eyJ" not in text  # no JWT at all


async def test_via_is_validated(fake: FakePanel) -> None:
    async with client_for(fake) as client:
        with pytest.raises(ValueError, match="via"):
            await client.backups("d3aac109").wait(
                "0e9d0c6e-4b50-4f64-9fc4-0d6c8d1b9e2a",
                via="socket",  # type: ignore[arg-type]
            )


async def test_a_restore_that_ends_while_the_socket_reconnects_is_seen_at_once() -> None:
    async with FakePanel(restore_duration=1.0) as panel:
        register_key(panel.api_key)
        server = panel.add_server()
        backup = panel.add_backup(server)
        panel.script_socket(server, SocketFault.drop_after(0.9))
        async with client_for(panel) as client:
            started = anyio.current_time()
            with anyio.fail_after(15):
                await client.backups(server.identifier).restore(backup.uuid, wait=True)
            # Not the 30 s status poll: the reconnect looks at the server's status.
            assert anyio.current_time() - started < 10


async def test_a_token_renewal_refused_during_a_restore_keeps_the_socket() -> None:
    async with FakePanel(
        restore_duration=5.0, ws_token_lifetime=6.0, ws_check_interval=0.25
    ) as panel:
        register_key(panel.api_key)
        server = panel.add_server()
        backup = panel.add_backup(server)
        async with client_for(panel) as client:
            with anyio.fail_after(15):
                await client.backups(server.identifier).restore(backup.uuid, wait=True)
        (connection,) = panel.node_connections(server)
    assert "backup restore completed" in connection.events_sent()
    refused = [r for r in panel.api_requests() if r.path.endswith("/websocket") and r.status == 409]
    assert refused, "the renewal was asked for during the restore, and refused"


async def test_an_awaited_restore_with_events_never_polls_the_server(fake: FakePanel) -> None:
    # The node's event ends the wait: no GET of the server is needed, whatever else the node
    # says meanwhile (a status change is not the end of a restore).
    server = fake.add_server()
    backup = fake.add_backup(server)
    fake.restore_duration = 2.5
    async with client_for(fake) as client:
        b = client.backups(server.identifier)

        async def chatter() -> None:
            await anyio.sleep(0.5)
            fake.send_node_frame(server, json.dumps({"event": "status", "args": ["running"]}))

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(chatter)
                await b.restore(backup.uuid, wait=True)
    polls = [p for p in api_paths(fake) if p == f"GET /api/client/servers/{server.identifier}"]
    assert polls == []
    assert fake.server(server.identifier).status is None


async def test_an_awaited_restore_without_events_polls_every_two_seconds_at_first(
    fake: FakePanel,
) -> None:
    server = fake.add_server(permissions=["backup.read", "backup.restore"])  # no websocket
    backup = fake.add_backup(server)
    fake.restore_duration = 1.0
    async with client_for(fake) as client:
        started = anyio.current_time()
        with anyio.fail_after(15):
            await client.backups(server.identifier).restore(backup.uuid, wait=True)
        took = anyio.current_time() - started
    polls = [p for p in api_paths(fake) if p == f"GET /api/client/servers/{server.identifier}"]
    # One look at 2 s finds the restore over (it took 1 s); not a look later than that.
    assert len(polls) == 1
    assert 1.9 <= took < 2.9
