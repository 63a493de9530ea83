"""``b.stream(...)``: a backup's bytes handed on as they arrive, checked on the way.

Everything runs over real loopback sockets: FakePanel and its link host with scripted faults,
small aiohttp servers of the test's own (through ``FakeBackup.link_factory``) for what FakePanel
cannot script, an aiohttp.web app that proxies a stream to an aiohttp client, and moto's S3
server for a multipart copy. Every test is bounded by ``anyio.fail_after``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, Literal

import aiohttp
import anyio
import pytest
from aiohttp import web

from ptero_backups_async import (
    BackupFailedError,
    BackupNotCompletedError,
    BackupStream,
    Checksum,
    ChecksumMismatchError,
    DownloadError,
    InvalidArgumentError,
    NotFoundError,
    PteroClient,
    PteroError,
)
from ptero_backups_async.testing import DownloadFault, FakePanel, RecordedRequest

from ._rangehost import Fault, RangeHost, Seen
from .conftest import register_key

pytestmark = pytest.mark.anyio

CONTENT = os.urandom(3 * 1024 * 1024 + 777)
#: Where a first attempt is cut.
CUT = 1_000_000


def sha1(data: bytes) -> Checksum:
    return Checksum("sha1", hashlib.sha1(data).hexdigest())


def etag_of(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


@pytest.fixture(params=["wings", "s3"])
async def storage_panel(request: pytest.FixtureRequest) -> AsyncIterator[FakePanel]:
    async with FakePanel(storage=request.param) as fake:
        register_key(fake.api_key)
        yield fake


@pytest.fixture
async def s3_panel() -> AsyncIterator[FakePanel]:
    async with FakePanel(storage="s3") as fake:
        register_key(fake.api_key)
        yield fake


class Reader:
    """A consumer: keeps every chunk, and how many link requests there were at each one."""

    def __init__(self, panel: FakePanel | None = None) -> None:
        self.panel = panel
        self.chunks: list[bytes] = []
        self.requests_seen: list[int] = []

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def received(self) -> int:
        return sum(map(len, self.chunks))

    async def read(self, body: BackupStream) -> bytes:
        async for chunk in body:
            assert isinstance(chunk, bytes)
            assert chunk, "an empty chunk was handed on"
            self.chunks.append(chunk)
            if self.panel is not None:
                self.requests_seen.append(len(self.panel.link_requests()))
        return self.data


async def stream_all(client: PteroClient, server: str, uuid: str, **options: Any) -> bytes:
    async with client.backups(server).stream(uuid, **options) as body:
        return await Reader().read(body)


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the panel's log has no event to wait on
            await anyio.sleep(0.01)


async def settled(panel: FakePanel, index: int) -> RecordedRequest:
    """The link request number ``index`` once the link host has finished answering it."""

    def done() -> bool:
        links = panel.link_requests()
        return len(links) > index and links[index].status != 0

    await eventually(done)
    return panel.link_requests()[index]


class Host:
    """A link host of the test's own: one aiohttp handler at ``/file``, counting requests."""

    def __init__(self, handler: Callable[[web.Request], Any]) -> None:
        self.handler = handler
        self.requests: list[web.Request] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        response: web.StreamResponse = await self.handler(request)
        return response

    async def __aenter__(self) -> Host:
        app = web.Application()
        app.router.add_get("/file", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/file?token=SECRET-TOKEN"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


# ------------------------------------------------------------------ the happy path


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
async def test_the_archive_streams_exactly_with_what_the_panel_announced(
    storage_panel: FakePanel, algorithm: Literal["sha1", "sha256"]
) -> None:
    panel = storage_panel
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT, checksum_algorithm=algorithm)
    reader = Reader()
    async with PteroClient(panel.url, panel.api_key) as client:
        with anyio.fail_after(10):
            async with client.backups(server.identifier).stream(made.uuid) as body:
                assert body.size == len(CONTENT)
                assert body.checksum == Checksum(
                    algorithm, hashlib.new(algorithm, CONTENT).hexdigest()
                )
                assert body.backup.uuid == made.uuid
                assert made.uuid in repr(body)
                assert await reader.read(body) == CONTENT
    assert len(reader.chunks) > 1, "the body came as one piece: nothing was streamed"
    (request,) = panel.link_requests()
    assert "range" not in request.headers
    assert request.headers["accept-encoding"].lower() == "identity"
    assert "authorization" not in request.headers


async def test_a_completed_backup_in_hand_needs_only_the_link(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT[:10_000])
    backups = client.backups(server.identifier)
    backup = await backups.get(made.uuid)
    panel.clear_requests()
    with anyio.fail_after(5):
        async with backups.stream(backup) as body:
            assert body.backup is backup
            assert await Reader().read(body) == CONTENT[:10_000]
    assert [r.path.rsplit("/", 1)[-1] for r in panel.api_requests()] == ["download"]


# ------------------------------------------------------------------ recovery after bytes went out


async def test_a_drop_on_s3_resumes_with_range_from_what_was_handed_on(
    s3_panel: FakePanel,
) -> None:
    server = s3_panel.add_server()
    made = s3_panel.add_backup(server, content=CONTENT)
    s3_panel.script_download(made, DownloadFault.drop_after(CUT))
    reader = Reader(s3_panel)
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        with anyio.fail_after(10):
            async with client.backups(server.identifier).stream(made.uuid) as body:
                assert await reader.read(body) == CONTENT
    first, second = s3_panel.link_requests()
    assert "range" not in first.headers
    # The second GET asks for what the consumer has not had yet, and only that.
    handed_on = sum(
        len(c) for c, seen in zip(reader.chunks, reader.requests_seen, strict=True) if seen == 1
    )
    assert 0 < handed_on <= CUT
    assert second.headers["range"] == f"bytes={handed_on}-"
    assert second.headers["if-range"] == etag_of(CONTENT)
    assert second.status == 206
    assert second.bytes_sent == len(CONTENT) - handed_on


@pytest.mark.parametrize(
    ("storage", "faults"),
    [
        ("wings", (DownloadFault.drop_after(CUT),)),
        # S3 behind a proxy that does not do ranges: 200 and the whole object.
        ("s3", (DownloadFault.drop_after(CUT), DownloadFault.ignore_range())),
    ],
)
async def test_a_host_without_ranges_is_read_again_and_the_bytes_handed_on_are_skipped(
    storage: str, faults: tuple[DownloadFault, ...]
) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        register_key(panel.api_key)
        server = panel.add_server()
        made = panel.add_backup(server, content=CONTENT)
        panel.script_download(made, *faults)
        reader = Reader(panel)
        async with PteroClient(panel.url, panel.api_key) as client:
            with anyio.fail_after(10):
                async with client.backups(server.identifier).stream(made.uuid) as body:
                    assert await reader.read(body) == CONTENT
        first, second = panel.link_requests()
    assert reader.requests_seen[0] == 1, "nothing was handed on before the drop"
    assert 2 in reader.requests_seen
    assert "range" not in first.headers
    if storage == "wings":
        assert "range" not in second.headers  # Wings has never shown it honours ranges
    assert second.status == 200
    assert second.bytes_sent == len(CONTENT)  # read again from zero, each byte handed on once


async def test_a_206_whose_content_range_does_not_match_is_refused(s3_panel: FakePanel) -> None:
    server = s3_panel.add_server()
    made = s3_panel.add_backup(server, content=CONTENT)
    s3_panel.script_download(
        made, DownloadFault.drop_after(CUT), DownloadFault.wrong_content_range(-100)
    )
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        with anyio.fail_after(10):
            data = await stream_all(client, server.identifier, made.uuid)
    assert data == CONTENT
    _, second, third = s3_panel.link_requests()
    assert second.headers["range"].startswith("bytes=")
    assert second.status == 206  # refused at its headers: none of its bytes were used
    # A host that answers the wrong range is not asked for a range again: the third GET reads
    # from zero and skips what was handed on.
    assert "range" not in third.headers
    assert third.bytes_sent == len(CONTENT)


async def test_a_changed_object_is_caught_when_the_start_is_read_again(
    s3_panel: FakePanel,
) -> None:
    # After bytes went out, the object is replaced: If-Range no longer matches, S3 answers 200
    # with the new bytes, whose start differs from what the consumer already has.
    other = os.urandom(len(CONTENT))
    server = s3_panel.add_server()
    made = s3_panel.add_backup(server, content=CONTENT)
    s3_panel.script_download(made, DownloadFault.drop_after(CUT), DownloadFault.change_etag(other))
    reader = Reader()
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        with anyio.fail_after(10):
            async with client.backups(server.identifier).stream(made.uuid) as body:
                with pytest.raises(DownloadError) as info:
                    await reader.read(body)
    assert not isinstance(info.value, ChecksumMismatchError)
    assert "differ from those already handed on" in str(info.value)
    assert info.value.attempts == 2
    assert reader.data == CONTENT[: reader.received]
    assert len(s3_panel.link_requests()) == 2, "a changed object is not worth more attempts"


# ------------------------------------------------------------------ the last chunk is held back


@pytest.mark.parametrize("where", ["start", "end"])
async def test_a_wrong_checksum_raises_from_the_iterator_before_the_last_chunk(
    storage_panel: FakePanel, where: str
) -> None:
    panel = storage_panel
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT)
    panel.script_download(made, DownloadFault.corrupt(0 if where == "start" else len(CONTENT) - 1))
    reader = Reader()
    async with PteroClient(panel.url, panel.api_key) as client:
        with anyio.fail_after(10):
            async with client.backups(server.identifier).stream(made.uuid) as body:
                with pytest.raises(ChecksumMismatchError) as info:
                    await reader.read(body)
    error = info.value
    assert error.expected == sha1(CONTENT)
    assert error.actual != sha1(CONTENT)
    assert error.attempts == 1
    assert len(panel.link_requests()) == 1  # bytes already handed on cannot be taken back
    # The final chunk never reached the consumer: a proxied response stays incomplete.
    assert 0 < reader.received < len(CONTENT)
    if where == "end":
        assert reader.data == CONTENT[: reader.received]


async def test_a_short_body_that_never_recovers_raises_before_the_end(
    storage_panel: FakePanel,
) -> None:
    panel = storage_panel
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT)
    short = DownloadFault.short_body(len(CONTENT) - 10)
    # On S3 the second GET asks for the rest: a body that ends before it is short too.
    later = short if panel.storage == "wings" else DownloadFault.short_body(0)
    panel.script_download(made, short, later, later)
    reader = Reader()
    async with PteroClient(panel.url, panel.api_key) as client:
        with anyio.fail_after(10):
            async with client.backups(server.identifier).stream(made.uuid, max_attempts=2) as body:
                with pytest.raises(DownloadError) as info:
                    await reader.read(body)
    error = info.value
    assert not isinstance(error, ChecksumMismatchError)
    assert error.attempts == 2
    for entry in error.history:
        assert "the body ended after" in entry
        assert f"of {len(CONTENT)} bytes" in entry
    assert reader.received < len(CONTENT) - 10
    assert reader.data == CONTENT[: reader.received]


async def test_bytes_past_the_announced_size_are_refused(
    panel: FakePanel, client: PteroClient
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
    made = panel.add_backup(server, content=body)
    reader = Reader()
    async with Host(then_a_little_more) as host:
        made.link_factory = lambda: host.url
        with anyio.fail_after(5):
            async with client.backups(server.identifier).stream(made.uuid, max_attempts=1) as b:
                with pytest.raises(DownloadError) as info:
                    await reader.read(b)
    assert f"more than the {len(body)} bytes announced" in info.value.history[0]
    assert reader.received < len(body)


async def test_a_content_length_over_the_size_is_refused_at_the_headers(
    panel: FakePanel, client: PteroClient
) -> None:
    body = CONTENT[:10_000]

    async def longer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body + b"extra")

    server = panel.add_server()
    made = panel.add_backup(server, content=body)
    reader = Reader()
    async with Host(longer) as host:
        made.link_factory = lambda: host.url
        with anyio.fail_after(5):
            async with client.backups(server.identifier).stream(made.uuid, max_attempts=1) as b:
                with pytest.raises(DownloadError) as info:
                    await reader.read(b)
    assert f"announced {len(body) + 5} bytes, the panel {len(body)}" in info.value.history[0]
    assert reader.received == 0


async def test_an_endless_body_is_cut_at_the_size_and_the_next_attempt_restarts(
    s3_panel: FakePanel,
) -> None:
    server = s3_panel.add_server()
    made = s3_panel.add_backup(server, content=CONTENT)
    s3_panel.script_download(made, DownloadFault.endless())
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        with anyio.fail_after(10):
            data = await stream_all(client, server.identifier, made.uuid)
    assert data == CONTENT
    first, second = s3_panel.link_requests()
    assert first.fault == "endless"
    # A body that ran past the size is suspect as a whole: no Range for the next one.
    assert "range" not in second.headers


# ------------------------------------------------------------------ before anything went out


async def test_failures_before_anything_was_handed_on_are_invisible(s3_panel: FakePanel) -> None:
    server = s3_panel.add_server()
    made = s3_panel.add_backup(server, content=CONTENT)
    # A 503, then a drop within the first chunk (which was held back, so never handed on).
    s3_panel.script_download(made, DownloadFault.status(503), DownloadFault.drop_after(1000))
    reader = Reader(s3_panel)
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        with anyio.fail_after(10):
            async with client.backups(server.identifier).stream(made.uuid) as body:
                assert await reader.read(body) == CONTENT
    requests = s3_panel.link_requests()
    assert [r.fault for r in requests] == ["status", "drop", None]
    assert all("range" not in r.headers for r in requests)
    assert set(reader.requests_seen) == {3}, "a byte went out before the last attempt"
    assert made.links_issued == 3


async def test_exhausted_attempts_are_a_download_error_with_history(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT)
    panel.script_download(made, DownloadFault.status(503), DownloadFault.drop_after(0))
    reader = Reader()
    with anyio.fail_after(10):
        async with client.backups(server.identifier).stream(made.uuid, max_attempts=2) as body:
            with pytest.raises(DownloadError) as info:
                await reader.read(body)
    error = info.value
    assert error.attempts == 2
    assert len(error.history) == 2
    assert "503" in error.history[0]
    assert "the connection broke after 0" in error.history[1]
    assert "gave up after 2 attempts" in str(error)
    # What aiohttp raised is the cause, never the error itself.
    assert isinstance(error.__cause__, aiohttp.ClientError)
    assert reader.received == 0
    assert len(panel.link_requests()) == 2


async def test_panel_errors_while_asking_for_a_link_keep_their_class(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT[:1000])
    panel.inject(method="GET", path=r"/download$", status=404, times=5)
    with anyio.fail_after(5):
        async with client.backups(server.identifier).stream(made.uuid) as body:
            with pytest.raises(NotFoundError):
                await Reader().read(body)
    assert not panel.link_requests()


async def test_backups_that_cannot_be_streamed_are_refused_before_any_link(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    creating = panel.add_backup(server, state="creating")
    failed = panel.add_backup(server, state="failed")
    unchecked = panel.add_backup(server, content=b"data", checksum=None)
    malformed = panel.add_backup(server, content=b"data", checksum="sha1:zz")
    backups = client.backups(server.identifier)
    with pytest.raises(BackupNotCompletedError) as not_yet:
        async with backups.stream(creating.uuid):
            pytest.fail("entered")
    assert not_yet.value.backup is not None
    with pytest.raises(BackupFailedError):
        async with backups.stream(failed.uuid):
            pytest.fail("entered")
    with pytest.raises(DownloadError, match="no checksum"):
        async with backups.stream(unchecked.uuid):
            pytest.fail("entered")
    with pytest.raises(DownloadError, match="'sha1:zz'"):
        async with backups.stream(malformed.uuid):
            pytest.fail("entered")
    assert not panel.link_requests()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"read_timeout": 0}, "read_timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"min_rate": 0}, "min_rate"),
    ],
)
async def test_options_are_refused_by_name_before_any_request(
    panel: FakePanel, client: PteroClient, options: dict[str, Any], named: str
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server)
    panel.clear_requests()
    with pytest.raises(InvalidArgumentError, match=named):
        async with client.backups(server.identifier).stream(made.uuid, **options):
            pytest.fail("entered")
    with pytest.raises(InvalidArgumentError):
        async with client.backups(server.identifier).stream("not-a-uuid"):
            pytest.fail("entered")
    assert not panel.requests


async def test_verify_false_streams_what_the_host_sends(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    unchecked = panel.add_backup(server, content=CONTENT, checksum=None)
    with anyio.fail_after(10):
        async with client.backups(server.identifier).stream(unchecked.uuid, verify=False) as body:
            assert body.checksum is None
            assert await Reader().read(body) == CONTENT
    # Unverified means unverified: a flipped byte goes through.
    corrupt = panel.add_backup(server, content=CONTENT)
    panel.script_download(corrupt, DownloadFault.corrupt(5))
    with anyio.fail_after(10):
        data = await stream_all(client, server.identifier, corrupt.uuid, verify=False)
    assert len(data) == len(CONTENT)
    assert data[5] != CONTENT[5]


# ------------------------------------------------------------------ pace


async def test_a_trickle_below_min_rate_fails_the_attempt(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT[:100_000])
    panel.script_download(made, DownloadFault.trickle(200))
    with anyio.fail_after(5):
        async with client.backups(server.identifier).stream(
            made.uuid, read_timeout=0.3, min_rate=1024, max_attempts=1
        ) as body:
            with pytest.raises(DownloadError) as info:
                await Reader().read(body)
    assert "below min_rate=1024 B/s" in info.value.history[0]


async def test_a_slow_consumer_is_not_taken_for_a_slow_host(
    panel: FakePanel, client: PteroClient
) -> None:
    # The host sends everything at once; the consumer takes 0.35 s over each chunk. The time a
    # chunk spends with the consumer is not the host's, so min_rate never trips.
    pieces = [CONTENT[i * 20_000 : (i + 1) * 20_000] for i in range(4)]
    body = b"".join(pieces)

    async def in_pieces(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await anyio.sleep(0.01)
        await response.write_eof()
        return response

    server = panel.add_server()
    made = panel.add_backup(server, content=body)
    got: list[bytes] = []
    async with Host(in_pieces) as host:
        made.link_factory = lambda: host.url
        with anyio.fail_after(10):
            async with client.backups(server.identifier).stream(
                made.uuid, read_timeout=0.3, min_rate=10_000_000, max_attempts=1
            ) as stream:
                async for chunk in stream:
                    got.append(chunk)
                    await anyio.sleep(0.35)
    assert b"".join(got) == body
    assert len(got) >= 2


# ------------------------------------------------------------------ leaving early, cancellation


@contextlib.contextmanager
def finalized_by_the_gc() -> Iterator[list[str]]:
    """Names of the SDK's async generators that were left for the GC to close."""
    hooks = sys.get_asyncgen_hooks()
    left: list[str] = []

    def finalizer(agen: AsyncGenerator[Any, Any]) -> None:
        name = str(getattr(agen, "__qualname__", ""))
        if name.startswith("_Reader."):
            left.append(name)
        if hooks.finalizer is not None:
            hooks.finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        yield left
    finally:
        sys.set_asyncgen_hooks(*hooks)


async def test_leaving_the_loop_early_closes_the_connection(panel: FakePanel) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT)
    panel.script_download(made, DownloadFault.endless())
    async with PteroClient(panel.url, panel.api_key) as client:
        with anyio.fail_after(5), finalized_by_the_gc() as left:
            async with client.backups(server.identifier).stream(made.uuid) as body:
                async for chunk in body:
                    assert CONTENT.startswith(chunk)
                    break
                with pytest.raises(PteroError, match="iterated once"):
                    async for _ in body:
                        pass
            gc.collect()
            # The connection is closed when the block is left, not whenever the GC gets to it.
            assert left == []
            # The endless body ends only when the client goes away.
            rec = await settled(panel, 0)
            with pytest.raises(PteroError, match="closed"):
                async for _ in body:
                    pass
    assert rec.fault == "endless"
    assert len(panel.link_requests()) == 1


async def test_an_iterator_kept_past_the_block_never_ends_quietly(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT)
    with anyio.fail_after(5):
        async with client.backups(server.identifier).stream(made.uuid) as body:
            chunks = aiter(body)
            assert CONTENT.startswith(await anext(chunks))
        # A closed stream that simply stopped would pass for a complete (short) archive.
        with pytest.raises(PteroError, match="closed before its end"):
            await anext(chunks)
        await settled(panel, 0)


async def test_an_error_of_the_consumer_propagates_and_closes_the_connection(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT)
    panel.script_download(made, DownloadFault.endless())

    async def consume() -> None:
        async with client.backups(server.identifier).stream(made.uuid) as body:
            async for _ in body:
                raise KeyError("consumer")

    with anyio.fail_after(5):
        with pytest.raises(KeyError, match="consumer"):
            await consume()
        await settled(panel, 0)


async def test_cancellation_mid_body_propagates_and_closes_the_connection(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT[:200_000])
    panel.script_download(made, DownloadFault.trickle(20_000))
    reader = Reader()
    caught: list[BaseException] = []

    async def consume() -> None:
        try:
            async with client.backups(server.identifier).stream(made.uuid) as body:
                await reader.read(body)
        except BaseException as exc:
            caught.append(exc)
            raise

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await eventually(lambda: reader.received > 0)
            tg.cancel_scope.cancel()
        rec = await settled(panel, 0)
    assert [type(e) for e in caught] == [anyio.get_cancelled_exc_class()]
    assert rec.bytes_sent < 200_000
    assert 0 < reader.received < 200_000


async def test_cancellation_during_the_pause_between_attempts(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT[:1000])
    panel.script_download(made, DownloadFault.status(503, retry_after=20))
    started = time.monotonic()
    with anyio.move_on_after(0.5) as scope:
        async with client.backups(server.identifier).stream(made.uuid) as body:
            await Reader().read(body)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 2
    assert len(panel.link_requests()) == 1


# ------------------------------------------------------------------ secrets


async def test_no_link_secret_in_errors_or_logs(
    panel: FakePanel, client: PteroClient, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens there once the socket is closed
    links = iter(
        [
            f"http://127.0.0.1:{closed_port}/download/backup?token=SECRET-ONE",
            "http://127.0.0.1:99999/download/backup?token=SECRET-TWO",
        ]
    )
    server = panel.add_server()
    made = panel.add_backup(server, content=CONTENT[:1000])
    made.link_factory = lambda: next(links)
    caplog.set_level(logging.DEBUG, logger="ptero_backups_async")
    with anyio.fail_after(5):
        async with client.backups(server.identifier).stream(made.uuid, max_attempts=2) as body:
            with pytest.raises(DownloadError) as info:
                await Reader().read(body)
    error = info.value
    assert error.attempts == 2
    assert isinstance(error.__cause__, aiohttp.ClientError)
    text = "\n".join([str(error), *error.history, *(r.getMessage() for r in caplog.records)])
    assert "SECRET" not in text
    assert panel.api_key not in text


# ------------------------------------------------------------------ an aiohttp.web proxy


class Proxy:
    """An aiohttp.web app that streams a backup to its client: ``GET /archive/{uuid}``."""

    def __init__(self, client: PteroClient, server: str) -> None:
        self.client = client
        self.server = server
        self.errors: list[BaseException] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def archive(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["uuid"]
        try:
            async with self.client.backups(self.server).stream(uuid) as body:
                response = web.StreamResponse(headers={"Content-Type": "application/gzip"})
                response.content_length = body.size
                await response.prepare(request)
                async for chunk in body:
                    await response.write(chunk)
                await response.write_eof()
                return response
        except PteroError as exc:
            # Raised after the headers went out: aiohttp drops the connection, so the client
            # sees an incomplete body rather than a complete wrong one.
            self.errors.append(exc)
            raise

    async def __aenter__(self) -> Proxy:
        app = web.Application()
        app.router.add_get("/archive/{uuid}", self.archive)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_an_aiohttp_proxy_delivers_a_good_backup_and_aborts_a_corrupt_one(
    s3_panel: FakePanel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="aiohttp.server")  # the aborted request's trace
    server = s3_panel.add_server()
    good = s3_panel.add_backup(server, content=CONTENT)
    corrupt = s3_panel.add_backup(server, content=CONTENT)
    # The good one recovers from a drop behind the proxy's back; the corrupt one cannot.
    s3_panel.script_download(good, DownloadFault.drop_after(CUT))
    s3_panel.script_download(corrupt, DownloadFault.corrupt(len(CONTENT) // 2))
    async with (
        PteroClient(s3_panel.url, s3_panel.api_key) as client,
        Proxy(client, server.identifier) as proxy,
        aiohttp.ClientSession() as http,
    ):
        with anyio.fail_after(10):
            async with http.get(f"{proxy.url}/archive/{good.uuid}") as resp:
                assert resp.status == 200
                assert resp.content_length == len(CONTENT)
                assert await resp.read() == CONTENT
            received = bytearray()

            async def read_into(resp: aiohttp.ClientResponse) -> None:
                async for chunk in resp.content.iter_any():
                    received.extend(chunk)

            async with http.get(f"{proxy.url}/archive/{corrupt.uuid}") as resp:
                assert resp.status == 200  # the headers went out before the end was known
                with pytest.raises(aiohttp.ClientPayloadError):
                    await read_into(resp)
    assert 0 < len(received) < len(CONTENT)
    assert bytes(received) != CONTENT
    assert [type(e) for e in proxy.errors] == [ChecksumMismatchError]


# ------------------------------------------------------------------ S3 multipart copy (moto)


#: S3's smallest part, except for the last one.
PART = 5 * 1024 * 1024
BUCKET = "copies"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


async def test_a_stream_is_copied_into_s3_with_a_multipart_upload(
    s3_endpoint: str, s3_panel: FakePanel
) -> None:
    content = os.urandom(2 * PART + 12_345)
    server = s3_panel.add_server()
    made = s3_panel.add_backup(server, content=content)
    s3_panel.script_download(made, DownloadFault.drop_after(3 * 1024 * 1024))
    s3 = s3_client(s3_endpoint)
    key = f"{server.identifier}/{made.uuid}.tar.gz"
    await anyio.to_thread.run_sync(lambda: s3.create_bucket(Bucket=BUCKET))
    upload = await anyio.to_thread.run_sync(
        lambda: s3.create_multipart_upload(Bucket=BUCKET, Key=key)
    )
    upload_id = upload["UploadId"]
    parts: list[dict[str, Any]] = []

    async def send(data: bytes) -> None:
        number = len(parts) + 1
        answer = await anyio.to_thread.run_sync(
            lambda: s3.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    buffer = bytearray()
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        with anyio.fail_after(20):
            async with client.backups(server.identifier).stream(made.uuid) as body:
                async for chunk in body:
                    buffer += chunk
                    while len(buffer) >= PART:
                        await send(bytes(buffer[:PART]))
                        del buffer[:PART]
            if buffer or not parts:
                await send(bytes(buffer))  # the last part may be smaller
            await anyio.to_thread.run_sync(
                lambda: s3.complete_multipart_upload(
                    Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            )
            stored = await anyio.to_thread.run_sync(
                lambda: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            )
    assert len(parts) == 3
    assert stored == content
    assert s3_panel.link_requests()[1].headers["range"].startswith("bytes=")


async def test_a_resumed_answer_of_another_etag_is_never_handed_on(
    panel: FakePanel, client: PteroClient
) -> None:
    # The object is replaced after the first bytes went out, by a host that ignores If-Range:
    # its 206 carries the new ETag, and none of its bytes may reach the consumer.
    replacement = os.urandom(len(CONTENT))
    async with RangeHost(CONTENT, if_range=False, rate=4 * 1024 * 1024) as host:

        def drop_first_then_replace(seen: Seen) -> Fault | None:
            if seen.range is None:
                return Fault(drop_after=1024 * 1024)
            if host.body is CONTENT:
                host.replace(replacement)
            return None

        host.fault = drop_first_then_replace
        server = panel.add_server()
        backup = panel.add_backup(server, content=CONTENT)
        backup.link_factory = host.new_link
        got = bytearray()

        async def consume() -> None:
            async with client.backups(server.identifier).stream(backup.uuid) as body:
                async for chunk in body:
                    got.extend(chunk)

        with anyio.fail_after(20), pytest.raises(DownloadError) as info:
            await consume()
    assert any("the object changed" in entry for entry in info.value.history)
    assert bytes(got) == CONTENT[: len(got)], "only bytes of the first object went out"
