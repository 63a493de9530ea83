"""The command line on the node's events: ``events``, ``create --wait``, ``restore --wait`` and
``wait --via poll``, each a real ``python -m ptero_backups_async`` subprocess against a FakePanel
served by the test's event loop.

The subprocess gets the key through the environment only; stdout is read as bytes, so that what
a terminal would receive is checked, not what Python decoded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from ptero_backups_async import PteroClient
from ptero_backups_async.testing import FakePanel

from .conftest import register_key

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

#: A backup name a hostile panel (or node) might send: escape sequences, a bell, DEL, C1 (NEL),
#: a right-to-left override, a zero-width space, line breaks, a lone surrogate and an emoji.
HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\x7f\x85\u202etxt.exe\u200b\r\nnext\ud800 \U0001f600"

#: Bytes no line of stdout may hold: C0 controls (the newline ends a line), DEL, C1 in UTF-8,
#: the bidirectional overrides and the zero-width space in UTF-8.
_RAW_CONTROLS = [bytes([c]) for c in range(0x20) if c != 0x0A] + [b"\x7f"]
_RAW_CONTROLS += [chr(c).encode() for c in range(0x80, 0xA0)]
_RAW_CONTROLS += ["\u202e".encode(), "\u200b".encode(), "\u2028".encode()]


def _env(panel: FakePanel) -> dict[str, str]:
    return {**os.environ, "PTERODACTYL_URL": panel.url, "PTERODACTYL_API_KEY": panel.api_key}


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ptero_backups_async", *args]


async def run_cli(panel: FakePanel, *args: str, limit: float = 10) -> tuple[int, bytes, str]:
    """Run one command to its end: (exit code, stdout bytes, stderr text)."""
    with anyio.fail_after(limit):
        done = await anyio.run_process(_argv(*args), env=_env(panel), check=False)
    return done.returncode, done.stdout, done.stderr.decode()


def no_raw_controls(out: bytes) -> None:
    found = [c for c in _RAW_CONTROLS if c in out]
    assert not found, f"raw control bytes on stdout: {found!r}"


def api(panel: FakePanel) -> list[str]:
    return [f"{r.method} {r.path}" for r in panel.api_requests()]


class EventsProcess:
    """``ptero-backups events SERVER`` running; its stdout read line by line."""

    def __init__(self, process: Process, stdout: BufferedByteReceiveStream) -> None:
        self.process = process
        self.stdout = stdout
        self.raw: list[bytes] = []

    async def line(self) -> dict[str, Any]:
        """The next line, parsed (every line must be one JSON object)."""
        raw = await self.stdout.receive_until(b"\n", 1 << 20)
        self.raw.append(raw)
        doc = json.loads(raw)
        assert isinstance(doc, dict), raw
        return doc

    async def until(self, event: str) -> dict[str, Any]:
        """Lines up to the first of ``event``; that one."""
        while True:
            doc = await self.line()
            if doc.get("event") == event:
                return doc


@asynccontextmanager
async def events_process(panel: FakePanel, server: str) -> AsyncIterator[EventsProcess]:
    """``events SERVER`` in a subprocess; it is killed if the body leaves it running."""
    process = await anyio.open_process(
        _argv("events", server), env=_env(panel), stdin=subprocess.DEVNULL
    )
    async with process:
        assert process.stdout is not None
        try:
            yield EventsProcess(process, BufferedByteReceiveStream(process.stdout))
        finally:
            if process.returncode is None:
                process.kill()


async def stop(events: EventsProcess) -> tuple[int, bytes, str]:
    """SIGINT, then the exit code, the rest of stdout and all of stderr."""
    events.process.send_signal(signal.SIGINT)
    assert events.process.stderr is not None
    with anyio.fail_after(5):
        code = await events.process.wait()
        rest = b""
        while True:
            try:
                rest += await events.stdout.receive()
            except anyio.EndOfStream:
                break
        err = b"".join([chunk async for chunk in events.process.stderr])
    return code, rest, err.decode()


# ---------------------------------------------------------------------------------- events


async def test_events_prints_json_lines_and_stops_on_sigint_with_130() -> None:
    async with FakePanel(backup_duration=0.3) as panel:
        register_key(panel.api_key)
        server = panel.add_server()
        async with events_process(panel, server.identifier) as events:
            with anyio.fail_after(10):
                first = await events.until("status")  # sent right after `auth success`
                assert first == {"server": server.identifier, "event": "status", "state": "running"}
                async with PteroClient(panel.url, panel.api_key) as client:
                    created = await client.backups(server.identifier).create(name="from-test")
                done = await events.until("backup completed")
                server.power_state = "offline"
                status = await events.until("status")
            code, rest, err = await stop(events)
        fake = panel.backup(created.uuid)
    assert done == {
        "server": server.identifier,
        "event": "backup completed",
        "backup_uuid": created.uuid,
        "is_successful": True,
        "checksum": fake.wire_checksum,
        "bytes": fake.size,
    }
    assert status == {"server": server.identifier, "event": "status", "state": "offline"}
    for raw in [*events.raw, *rest.splitlines()]:
        assert raw.endswith(b"}") or raw.endswith(b"}\n")  # one object per line, nothing else
        json.loads(raw)
    assert code == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert panel.api_key not in err


async def test_hostile_text_in_events_stays_exact_json_without_raw_controls() -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        uuid = "0b4f63b5-4b8a-4a34-9e2b-5e0f0d7a1c11"
        frames: list[dict[str, Any]] = [
            # Wings' payload with an extra "name": the event keeps the uuid; the name is not
            # part of the line.
            {
                "event": "backup completed",
                "args": [
                    json.dumps(
                        {
                            "checksum": "ab" * 20,
                            "checksum_type": "sha1",
                            "file_size": 7,
                            "is_successful": True,
                            "uuid": uuid,
                            "name": HOSTILE,
                        }
                    )
                ],
            },
            # No usable uuid: printed raw, as the node sent it.
            {"event": "backup completed", "args": [json.dumps({"name": HOSTILE})]},
            {"event": "daemon message", "args": [f"backup {HOSTILE} finished"]},
            {"event": HOSTILE, "args": [HOSTILE, ""]},
        ]
        async with events_process(panel, server.identifier) as events:
            with anyio.fail_after(10):
                await events.until("status")
                for frame in frames:
                    # ensure_ascii: the lone surrogate travels as an escape, as Go would not
                    # send it raw either.
                    assert panel.send_node_frame(server, json.dumps(frame)) == 1
                got = [await events.line() for _ in frames]
            code, rest, err = await stop(events)
    assert got == [
        {
            "server": server.identifier,
            "event": "backup completed",
            "backup_uuid": uuid,
            "is_successful": True,
            "checksum": "sha1:" + "ab" * 20,
            "bytes": 7,
        },
        {
            "server": server.identifier,
            "event": "backup completed",
            "args": frames[1]["args"],
        },
        {"server": server.identifier, "event": "daemon message", "args": frames[2]["args"]},
        {"server": server.identifier, "event": HOSTILE, "args": [HOSTILE, ""]},
    ]
    out = b"".join(events.raw) + rest
    no_raw_controls(out)
    assert "\U0001f600".encode() in out  # printable non-ASCII stays readable UTF-8
    assert code == 130, err
    assert "Traceback" not in err


# ---------------------------------------------------------------------- create, wait, restore


async def test_create_wait_json_is_the_completed_backup_and_uses_the_events() -> None:
    # Polling at the CLI's default 1 s would GET the backup at 0, 1 and 2.5 s: 3 GETs of the
    # backup and no token. On events: the token, a first look, the final GET.
    async with FakePanel(backup_duration=1.5) as panel:
        server = panel.add_server()
        code, out, err = await run_cli(
            panel, "create", server.identifier, "--name", "nightly", "--wait", "--json"
        )
        paths = api(panel)
        connections = panel.node_connections(server)
    assert code == 0, err
    doc = json.loads(out)
    fake = panel.backup(doc["uuid"])
    assert doc == {
        "uuid": fake.uuid,
        "name": "nightly",
        "state": "completed",
        "bytes": fake.size,
        "is_locked": False,
        "checksum": fake.wire_checksum,
        "created_at": fake.created_at.isoformat(),
        "completed_at": fake.completed_at.isoformat() if fake.completed_at else None,
    }
    assert fake.state == "completed"
    assert paths[0] == f"POST /api/client/servers/{server.identifier}/backups"
    gets = [p for p in paths[1:] if p.startswith("GET")]
    assert gets[0] == f"GET /api/client/servers/{server.identifier}/websocket", paths
    assert len(gets) <= 3, paths
    assert gets.count(f"GET /api/client/servers/{server.identifier}/backups/{fake.uuid}") == 2
    assert len(paths) == 1 + len(gets), paths
    assert len(connections) == 1
    assert connections[0].auth_count == 1
    assert "backup completed" in connections[0].events_sent()


@pytest.mark.parametrize("dialect", ["pterodactyl", "pelican"])
async def test_restore_wait_json_after_the_restore_finished(dialect: str) -> None:
    async with FakePanel(dialect=dialect, restore_duration=0.8) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        backup = panel.add_backup(server, name="good")
        code, out, err = await run_cli(
            panel, "restore", server.identifier, backup.uuid, "--wait", "--yes", "--json"
        )
        status = panel.server(server.identifier).status
        paths = api(panel)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"server", "truncate", "restored", "seconds"}
    assert doc["server"] == server.identifier
    assert doc["truncate"] is False
    assert doc["restored"] == backup.uuid
    assert isinstance(doc["seconds"], float)
    assert 0.8 * 0.9 <= doc["seconds"] < 0.8 + 3
    assert status is None  # the fake's restore is over
    assert server.restores == [(backup.uuid, False)]
    token = paths.index(f"GET /api/client/servers/{server.identifier}/websocket")
    restore = paths.index(
        f"POST /api/client/servers/{server.identifier}/backups/{backup.uuid}/restore"
    )
    assert token < restore, paths


async def test_wait_via_poll_polls_and_opens_no_socket() -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        backup = panel.add_backup(server, name="slow", state="creating")  # done when told

        async def finish_after_the_first_poll() -> None:
            # The request log: there is no event to wait for.
            while not panel.api_requests():  # noqa: ASYNC110
                await anyio.sleep(0.02)
            await anyio.sleep(0.1)
            backup.complete()

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_after_the_first_poll)
            code, out, err = await run_cli(
                panel,
                "wait",
                server.identifier,
                backup.uuid,
                "--via",
                "poll",
                "--poll-interval",
                "0.2",
                "--json",
            )
        paths = api(panel)
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["uuid"], doc["state"], doc["bytes"]) == (backup.uuid, "completed", backup.size)
    assert not any(p.endswith("/websocket") for p in paths), paths
    assert panel.node_connections() == []
    polls = paths.count(f"GET /api/client/servers/{server.identifier}/backups/{backup.uuid}")
    assert polls >= 2, paths
