"""Edges of the downloader that the mutation run showed no test was watching.

Each test downloads over real loopback sockets (FakePanel's link host and its scripted faults,
or a small hostile aiohttp server of the test's own, whose URL FakePanel hands out through
``FakeBackup.link_factory``) and names the behaviour it pins down. Every test is bounded by
``anyio.fail_after``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import os
import pathlib
import re
import socket
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import pytest
from aiohttp import web

from ptero_backups_async import (
    BackupFailedError,
    BackupNotCompletedError,
    BackupState,
    ChecksumMismatchError,
    DownloadError,
    DownloadProgress,
    InvalidArgumentError,
    PteroClient,
)
from ptero_backups_async.testing import DownloadFault, FakePanel

from .conftest import register_key

pytestmark = pytest.mark.anyio

CONTENT = os.urandom(3 * 1024 * 1024 + 999)


@pytest.fixture
async def s3() -> AsyncIterator[FakePanel]:
    async with FakePanel(storage="s3") as fake:
        register_key(fake.api_key)
        yield fake


class Host:
    """A link host of the test's own: one aiohttp handler at ``/file``, counting requests."""

    def __init__(self, handler: Callable[[web.Request], Any]) -> None:
        self.handler = handler
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response: web.StreamResponse = await self.handler(request)
        return response

    async def __aenter__(self) -> Host:
        app = web.Application()
        app.router.add_get("/file", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/file?token=secret"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


# ------------------------------------------------------------------ pacing between attempts


async def test_link_retries_back_off_and_each_asks_for_a_fresh_link(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[: 64 * 1024])
    panel.script_download(backup, *[DownloadFault.status(503)] * 3)
    with anyio.fail_after(10):
        result = await client.backups(server.identifier).download(
            backup.uuid, tmp_path, max_attempts=4
        )
    assert result.attempts == 4
    assert result.path.read_bytes() == CONTENT[: 64 * 1024]
    times = [r.time for r in panel.link_requests()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # 0.2 s, then 0.4 s, then 0.8 s: a struggling host is not hammered, and a short outage
    # does not cost minutes either.
    assert len(gaps) == 3
    assert 0.18 <= gaps[0] < 0.6, gaps
    assert 0.38 <= gaps[1] < 0.75, gaps
    assert 0.78 <= gaps[2] < 1.5, gaps
    assert backup.links_issued == 4
    # Every attempt asks the host not to compress: the bytes on disk are the bytes hashed.
    assert all(r.headers["accept-encoding"].lower() == "identity" for r in panel.link_requests())


# ------------------------------------------------------------------ progress


async def test_progress_names_the_download_and_is_not_repeated_while_the_body_stalls(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    panel.script_download(backup, DownloadFault.stall(1024 * 1024, 0.6))
    seen: list[DownloadProgress] = []
    with anyio.fail_after(10):
        await client.backups(server.identifier).download(
            backup.uuid, tmp_path, progress=seen.append, read_timeout=5
        )
    assert {(p.server, p.backup_uuid, p.bytes_total) for p in seen} == {
        (server.identifier, backup.uuid, len(CONTENT))
    }
    assert seen[-1].bytes_done == len(CONTENT)
    # About six ticks pass during the stall; none of them reports the same figure again (the
    # last call may repeat the total once).
    repeats = collections.Counter(p.bytes_done for p in seen)
    assert repeats[1024 * 1024] == 1, repeats
    assert max(repeats.values()) <= 2, repeats


# ------------------------------------------------------------------ min_rate


async def test_min_rate_holds_in_every_window_not_only_the_first(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    body = CONTENT[: 256 * 1024 + 4096]

    async def fast_then_trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: 256 * 1024])
        try:
            for i in range(256 * 1024, len(body)):
                await anyio.sleep(0.05)
                await response.write(body[i : i + 1])
        except (ConnectionError, OSError):
            pass  # the client gave up: the point of the test
        return response

    server = panel.add_server()
    backup = panel.add_backup(server, content=body)
    async with Host(fast_then_trickle) as host:
        backup.link_factory = lambda: host.url
        with anyio.fail_after(5), pytest.raises(DownloadError) as info:
            await client.backups(server.identifier).download(
                backup.uuid, tmp_path, read_timeout=0.3, min_rate=1024, max_attempts=1
            )
    (entry,) = info.value.history
    assert "below min_rate=1024 B/s" in entry
    # It names what came in the slow window, not the 256 KiB of the fast one before it.
    sent = re.search(r"sent (\d+) bytes in", entry)
    assert sent is not None
    assert int(sent.group(1)) < 1024, entry
    assert not list(tmp_path.iterdir())


async def test_a_body_steadily_above_min_rate_is_never_failed(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # 4 KiB/s measured over 0.25 s windows: about 1 KiB a window, four times min_rate.
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:4096])
    panel.script_download(backup, DownloadFault.trickle(4096))
    with anyio.fail_after(10):
        result = await client.backups(server.identifier).download(
            backup.uuid, tmp_path, read_timeout=0.25, min_rate=1024, max_attempts=1
        )
    assert result.attempts == 1
    assert result.path.read_bytes() == CONTENT[:4096]


# ------------------------------------------------------------------ the .part file


async def test_short_writes_still_land_byte_exact(
    s3: FakePanel, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A regular file may take less than pwritev was given (NFS, FUSE, a signal). The spy
    # passes on only the first buffer of each call, to the real pwritev.
    real_pwritev = os.pwritev
    short = []

    def first_buffer_only(fd: int, buffers: Sequence[bytes], offset: int) -> int:
        buffers = list(buffers)
        if len(buffers) > 1:
            short.append(len(buffers))
        return real_pwritev(fd, buffers[:1], offset)

    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    monkeypatch.setattr(os, "pwritev", first_buffer_only)
    async with PteroClient(s3.url, s3.api_key) as client:
        with anyio.fail_after(10):
            result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert short, "the body never came in more than one buffer: the test proved nothing"
    assert result.verified
    assert result.path.read_bytes() == CONTENT


# ------------------------------------------------------------------ what a failure says


async def test_a_link_host_that_never_accepts_the_connection_fails_within_read_timeout(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # A listening socket whose accept queue is full drops new SYNs, as a blackholed host
    # does: the connection neither succeeds nor is refused.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        queued.append(filler)
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    backup.link_factory = lambda: f"http://127.0.0.1:{port}/file?token=secret"
    try:
        with anyio.fail_after(3), pytest.raises(DownloadError) as info:
            await client.backups(server.identifier).download(
                backup.uuid, tmp_path, read_timeout=0.3, max_attempts=1
            )
    finally:
        for sock in (*queued, listener):
            sock.close()
    assert "no data within read_timeout" in info.value.history[0]


async def test_a_stall_says_how_far_the_body_got(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    panel.script_download(backup, DownloadFault.stall(100_000, 5))
    with anyio.fail_after(5), pytest.raises(DownloadError) as info:
        await client.backups(server.identifier).download(
            backup.uuid, tmp_path, read_timeout=0.3, max_attempts=1
        )
    (entry,) = info.value.history
    assert "stalled" in entry
    assert f"after 100000 of {len(CONTENT)} bytes" in entry


# ------------------------------------------------------------------ the size is a ceiling


class DiskWatch:
    """A spy on ``os.writev`` that calls through and notes how big each file it wrote got."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.largest = 0
        real_writev = os.writev

        def writev(fd: int, buffers: Sequence[bytes]) -> int:
            written = real_writev(fd, buffers)
            self.largest = max(self.largest, os.fstat(fd).st_size)
            return written

        monkeypatch.setattr(os, "writev", writev)


async def test_bytes_past_the_size_in_a_later_read_never_reach_the_disk(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = CONTENT[: 64 * 1024]

    async def then_a_little_more(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body)
        await anyio.sleep(0.1)  # the client has read the whole body by now
        try:
            await response.write(b"0123456789")
            await response.write_eof()
        except (ConnectionError, OSError):
            pass
        return response

    server = panel.add_server()
    backup = panel.add_backup(server, content=body)
    disk = DiskWatch(monkeypatch)
    async with Host(then_a_little_more) as host:
        backup.link_factory = lambda: host.url
        with anyio.fail_after(5), pytest.raises(DownloadError) as info:
            await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=1)
    assert f"more than the {len(body)} bytes announced" in info.value.history[0]
    assert disk.largest <= len(body)
    assert not list(tmp_path.iterdir())


async def test_a_resumed_body_that_runs_past_the_size_is_cut_and_the_next_attempt_restarts(
    s3: FakePanel, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = CONTENT + os.urandom(3 * 1024 * 1024)  # over 6 MiB
    kept = 5 * 1024 * 1024
    server = s3.add_server()
    backup = s3.add_backup(server, content=content)
    # Attempt 1 breaks after 5 MiB; attempt 2 resumes from there, and the host sends the
    # rest and then zeros without end; attempt 3 is the plain file.
    s3.script_download(backup, DownloadFault.drop_after(kept), DownloadFault.endless())
    disk = DiskWatch(monkeypatch)
    async with PteroClient(s3.url, s3.api_key) as client:
        with anyio.fail_after(10):
            result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    first, second, third = s3.link_requests()
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={kept}-"
    # The resumed body was cut where the backup ends: the disk never held more.
    assert disk.largest <= len(content)
    # A body that ran past the size is suspect as a whole: the next attempt starts afresh.
    assert "range" not in third.headers
    assert result.attempts == 3
    assert result.path.read_bytes() == content


async def test_a_5xx_on_a_resume_attempt_keeps_the_bytes_already_on_disk(
    s3: FakePanel, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, DownloadFault.drop_after(1_000_000), DownloadFault.status(503))
    async with PteroClient(s3.url, s3.api_key) as client:
        with anyio.fail_after(10):
            result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    first, second, third = s3.link_requests()
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=1000000-"
    assert third.headers["range"] == "bytes=1000000-", "the 503 must not cost the first MB"
    assert third.bytes_sent == len(CONTENT) - 1_000_000
    assert result.attempts == 3
    assert result.path.read_bytes() == CONTENT


async def test_bytes_reach_the_disk_while_the_body_still_streams(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # Memory stays bounded: full batches go to the .part as they come, not at the end.
    content = CONTENT + os.urandom(3 * 1024 * 1024)
    server = panel.add_server()
    backup = panel.add_backup(server, content=content)
    panel.script_download(backup, DownloadFault.stall(5 * 1024 * 1024, 1.0))
    part = tmp_path / f"{backup.uuid}.tar.gz.part"
    on_disk: list[int] = []

    async def watch() -> None:
        with anyio.move_on_after(0.9):
            while not on_disk or on_disk[-1] < 4 * 1024 * 1024:
                await anyio.sleep(0.01)
                on_disk.append(part.stat().st_size if part.exists() else 0)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            result = await client.backups(server.identifier).download(
                backup.uuid, tmp_path, read_timeout=5
            )
    assert max(on_disk) >= 4 * 1024 * 1024, "nothing was written while the body stalled"
    assert result.attempts == 1
    assert result.path.read_bytes() == content


async def test_without_a_size_from_the_panel_the_content_length_is_the_total(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The panel's record says 0 bytes (a size it does not know); the link host says how long
    # the body is, and progress reports that as the total.
    body = CONTENT[:100_000]

    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body)

    server = panel.add_server()
    backup = panel.add_backup(server, content=b"")
    seen: list[DownloadProgress] = []
    async with Host(plain) as host:
        backup.link_factory = lambda: host.url
        with anyio.fail_after(5):
            result = await client.backups(server.identifier).download(
                backup.uuid, tmp_path, verify=False, progress=seen.append
            )
    assert result.bytes == len(body)
    assert not result.verified
    assert seen[-1].bytes_total == len(body)
    assert seen[-1].bytes_done == len(body)


# ------------------------------------------------------------------ a ranged host of its own


class RangedHost:
    """Answers the n-th GET with ``steps[n]``; notes each request's ``Range`` header."""

    def __init__(self, body: bytes, *steps: Callable[[web.Request], Any]) -> None:
        self.body = body
        self.steps = list(steps)
        self.ranges: list[str | None] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.ranges.append(request.headers.get("Range"))
        response: web.StreamResponse = await self.steps[len(self.ranges) - 1](request)
        return response

    def broken_200(self, n_bytes: int) -> Callable[[web.Request], Any]:
        """The whole body announced, with ``Accept-Ranges``; the connection drops after n."""

        async def step(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Accept-Ranges": "bytes"})
            response.content_length = len(self.body)
            await response.prepare(request)
            await response.write(self.body[:n_bytes])
            await anyio.sleep(0.05)  # the client reads what came before the drop
            assert request.transport is not None
            request.transport.close()
            return response

        return step

    def partial(self, start: int, *, total: str, length: int | None = None) -> Callable[..., Any]:
        """206 from ``start`` to the end, ``Content-Range`` total as given; ``length`` bytes."""

        async def step(request: web.Request) -> web.StreamResponse:
            part = self.body[start:]
            if length is not None:
                part = part[:length]
            content_range = f"bytes {start}-{len(self.body) - 1}/{total}"
            return web.Response(status=206, body=part, headers={"Content-Range": content_range})

        return step

    def unlabelled(self, start: int) -> Callable[[web.Request], Any]:
        """206 with no ``Content-Range``: bytes from ``start``, whatever was asked."""

        async def step(request: web.Request) -> web.StreamResponse:
            return web.Response(status=206, body=self.body[start:])

        return step

    def whole(self) -> Callable[[web.Request], Any]:
        async def step(request: web.Request) -> web.StreamResponse:
            return web.Response(body=self.body, headers={"Accept-Ranges": "bytes"})

        return step

    @staticmethod
    def refused(status: int) -> Callable[[web.Request], Any]:
        async def step(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text="no")

        return step


async def download_from(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path, host: RangedHost
) -> Any:
    server = panel.add_server()
    backup = panel.add_backup(server, content=host.body)
    async with Host(host) as served:
        backup.link_factory = lambda: served.url
        with anyio.fail_after(10):
            return await client.backups(server.identifier).download(backup.uuid, tmp_path)


async def test_a_206_of_unknown_total_length_is_resumed(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # RFC 9110 lets a host answer "bytes 100000-…/*" when it does not know the full length.
    host = RangedHost(CONTENT[:300_000])
    host.steps = [host.broken_200(100_000), host.partial(100_000, total="*")]
    result = await download_from(panel, client, tmp_path, host)
    assert host.ranges == [None, "bytes=100000-"]
    assert result.attempts == 2
    assert result.path.read_bytes() == host.body


async def test_a_206_whose_length_disagrees_is_refused_before_a_byte_is_kept(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    host = RangedHost(CONTENT[:300_000])
    total = str(len(host.body))
    host.steps = [
        host.broken_200(100_000),
        host.partial(100_000, total=total, length=5_000),  # says the rest, sends 5 kB
        host.partial(100_000, total=total),
    ]
    result = await download_from(panel, client, tmp_path, host)
    # The short 206 was refused at its headers: the next attempt asks from the same byte.
    assert host.ranges == [None, "bytes=100000-", "bytes=100000-"]
    assert result.attempts == 3
    assert result.path.read_bytes() == host.body


async def test_a_206_without_content_range_is_never_spliced_in(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # One byte came before the drop; the next answer is a 206 that does not say which bytes
    # it holds (here: the file from byte 0). Splicing it after the first byte would write a
    # file that is one byte off everywhere.
    host = RangedHost(CONTENT[:300_000])
    host.steps = [host.broken_200(1), host.unlabelled(0)]
    server = panel.add_server()
    backup = panel.add_backup(server, content=host.body)
    async with Host(host) as served:
        backup.link_factory = lambda: served.url
        with anyio.fail_after(10), pytest.raises(DownloadError) as info:
            await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=2)
    assert not isinstance(info.value, ChecksumMismatchError)
    assert host.ranges == [None, "bytes=1-"]
    assert "206 with Content-Range None for a request from byte 1" in info.value.history[1]
    assert not list(tmp_path.iterdir())


async def test_after_a_416_the_next_attempt_starts_from_zero(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # 416: the host no longer has the range asked for; only the whole object can help.
    host = RangedHost(CONTENT[:300_000])
    host.steps = [host.broken_200(100_000), host.refused(416), host.whole()]
    result = await download_from(panel, client, tmp_path, host)
    assert host.ranges == [None, "bytes=100000-", None]
    assert result.attempts == 3
    assert result.path.read_bytes() == host.body


# ------------------------------------------------------------------ before the first byte


async def test_a_completed_backup_object_needs_no_second_look(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT[:10_000])
    backups = client.backups(server.identifier)
    backup = await backups.get(made.uuid)
    panel.clear_requests()
    result = await backups.download(backup, tmp_path)
    assert result.verified
    # Only the link was asked for: the Backup in hand already said it was complete.
    assert [r.path.rsplit("/", 1)[-1] for r in panel.api_requests()] == ["download"]


async def test_a_stale_backup_object_is_looked_up_again(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT[:10_000], state="creating")
    backups = client.backups(server.identifier)
    stale = await backups.get(made.uuid)
    assert stale.state is BackupState.CREATING
    made.complete()
    result = await backups.download(stale, tmp_path)
    assert result.path.read_bytes() == CONTENT[:10_000]


async def test_unfinished_and_failed_backups_are_refused_with_the_backup_in_hand(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    creating = panel.add_backup(server, state="creating")
    failed = panel.add_backup(server, state="failed")
    backups = client.backups(server.identifier)
    with pytest.raises(BackupNotCompletedError) as not_yet:
        await backups.download(creating.uuid, tmp_path)
    with pytest.raises(BackupFailedError) as gone:
        await backups.download(failed.uuid, tmp_path)
    for info, made, state in ((not_yet, creating, "creating"), (gone, failed, "failed")):
        error = info.value
        assert error.backup is not None
        assert (error.backup.uuid, error.backup.state.value) == (made.uuid, state)
        assert f"of server {server.identifier}" in str(error)
    assert not panel.link_requests()


@pytest.mark.parametrize(("raw", "said"), [(None, "no checksum"), ("sha1:zz", "'sha1:zz'")])
async def test_an_unverifiable_checksum_is_named_for_what_it_is(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path, raw: str | None, said: str
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"data", checksum=raw)
    with pytest.raises(DownloadError) as info:
        await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert said in str(info.value)
    assert ("cannot verify" in str(info.value)) is (raw is not None)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"read_timeout": 0}, "read_timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"min_rate": 0}, "min_rate"),
    ],
)
async def test_download_options_are_refused_by_name_before_any_request(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
    options: dict[str, Any],
    named: str,
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server)
    panel.clear_requests()
    with pytest.raises(InvalidArgumentError, match=named):
        await client.backups(server.identifier).download(backup.uuid, tmp_path, **options)
    assert not panel.requests


async def test_a_deep_destination_is_fine_when_each_name_fits(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # 255 bytes is the limit of one name, not of a path.
    deep = tmp_path / ("d" * 120) / ("e" * 120) / ("f" * 120) / "mirror.tar.gz"
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    result = await client.backups(server.identifier).download(backup.uuid, deep)
    assert result.path == deep
    assert deep.read_bytes() == CONTENT[:10_000]


async def test_a_file_name_must_leave_room_for_its_part_lock_and_journal_files(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    backups = client.backups(server.identifier)
    fits = tmp_path / ("a" * 247)  # + ".journal" is 255 bytes: the most a name may have
    result = await backups.download(backup.uuid, fits)
    assert fits.read_bytes() == CONTENT[:10_000]
    assert result.path == fits
    panel.clear_requests()
    with pytest.raises(InvalidArgumentError, match="too long"):
        await backups.download(backup.uuid, tmp_path / ("b" * 248))
    assert not panel.requests, "refused before the panel was asked anything"


async def test_a_min_rate_under_one_byte_a_second_is_a_valid_floor(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    result = await client.backups(server.identifier).download(backup.uuid, tmp_path, min_rate=0.5)
    assert result.path.read_bytes() == CONTENT[:10_000]


async def test_min_rate_none_is_accepted_and_turns_the_check_off(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    result = await client.backups(server.identifier).download(backup.uuid, tmp_path, min_rate=None)
    assert result.verified
    assert result.path.read_bytes() == CONTENT[:10_000]


async def test_the_archive_gets_ordinary_file_permissions(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    # rw-r--r-- less the umask: an archive is neither executable nor writable by others.
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644 & ~umask


# ------------------------------------------------------------------ giving up


async def test_the_last_attempt_fails_at_once_without_a_pause_after_it(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server)
    panel.script_download(backup, DownloadFault.status(503, retry_after=3))
    with anyio.fail_after(1.5), pytest.raises(DownloadError) as info:
        await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=1)
    assert info.value.attempts == 1


async def test_a_mismatch_on_the_only_attempt_is_a_checksum_mismatch(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    panel.script_download(backup, DownloadFault.corrupt(7))
    with pytest.raises(ChecksumMismatchError) as info:
        await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=1)
    assert len(panel.link_requests()) == 1
    assert info.value.attempts == 1
    (entry,) = info.value.history
    assert entry.startswith("checksum mismatch")
    assert not list(tmp_path.iterdir())


async def test_a_second_mismatch_lists_both_attempts(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    panel.script_download(backup, DownloadFault.corrupt(7), DownloadFault.corrupt(9))
    with pytest.raises(ChecksumMismatchError) as info:
        await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert info.value.attempts == 2
    assert [entry.split(":")[0] for entry in info.value.history] == ["checksum mismatch"] * 2


# ------------------------------------------------------------------ the lock


async def test_a_verified_file_is_found_at_once_while_another_process_holds_the_lock(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # A verified file only ever appears by an atomic rename, so it can be read without the
    # lock: a download that finds one does not queue behind a writer in another process.
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:10_000])
    target = tmp_path / "mirror.tar.gz"
    target.write_bytes(CONTENT[:10_000])
    fd = os.open(tmp_path / "mirror.tar.gz.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process's download would
        with anyio.fail_after(2):
            result = await client.backups(server.identifier).download(backup.uuid, target)
    finally:
        os.close(fd)
    assert result.skipped
    assert result.verified
    assert not panel.link_requests()


async def test_a_symlink_at_the_lock_path_does_not_let_two_downloads_interleave(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    panel.script_download(backup, DownloadFault.stall(1024 * 1024, 0.5))
    target = tmp_path / "mirror.tar.gz"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / "mirror.tar.gz.lock").symlink_to(victim)
    backups = client.backups(server.identifier)
    results: list[Any] = []

    async def fetch() -> None:
        results.append(await backups.download(backup.uuid, target))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            while not (tmp_path / "mirror.tar.gz.part").exists():  # noqa: ASYNC110
                await anyio.sleep(0.01)
            tg.start_soon(fetch)
    assert sorted(r.skipped for r in results) == [False, True]
    assert len(panel.link_requests()) == 1, "the second download must wait, then find the file"
    assert target.read_bytes() == CONTENT
    assert victim.read_bytes() == b"keep me"
