"""Segmented downloads: several ranged GETs of one link, written in place, hashed in order.

Everything runs over real loopback sockets: FakePanel's S3-style and Wings-style link hosts
(with their scripted ``DownloadFault``s), moto's real S3 server behind presigned URLs, and
``RangeHost`` (``tests/_rangehost.py``), a ranged host of the tests' own that can refuse links,
fail particular ranges and count the GETs in flight. Each test names the behaviour it pins
down and is bounded by ``anyio.fail_after``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pathlib
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest

from ptero_backups_async import (
    ChecksumMismatchError,
    DownloadError,
    DownloadProgress,
    InvalidArgumentError,
    PteroClient,
    _download,
    _segments,
)
from ptero_backups_async._segments import PIECE
from ptero_backups_async.testing import DownloadFault, FakeBackup, FakePanel, RecordedRequest

from ._rangehost import Fault, RangeHost, Seen
from .conftest import register_key
from .faults._tools import established_connections, open_fds, settle

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: Five pieces: four streams, and one piece left over for whichever stream is free first.
CONTENT = os.urandom(4 * PIECE + 12_345)
#: Three pieces.
SMALLER = CONTENT[: 2 * PIECE + 4321]


def pieces(total: int, start: int = 0) -> list[str]:
    """The bounded ranges the pieces after the first are asked for, in file order."""
    return [f"bytes={a}-{min(a + PIECE, total) - 1}" for a in range(start + PIECE, total, PIECE)]


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


@pytest.fixture
async def s3() -> AsyncIterator[FakePanel]:
    async with FakePanel(storage="s3") as fake:
        register_key(fake.api_key)
        yield fake


@pytest.fixture
async def s3_client(s3: FakePanel) -> AsyncIterator[PteroClient]:
    async with PteroClient(s3.url, s3.api_key) as c:
        yield c


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - a log to poll, no event to wait on
            await anyio.sleep(0.01)


async def link_log(panel: FakePanel) -> list[RecordedRequest]:
    """The link host's log once every handler has finished (dropped ones included)."""
    await eventually(
        lambda: all(r.status or r.fault == "drop" for r in panel.link_requests()), within=5
    )
    return panel.link_requests()


async def fetch(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
    content: bytes = CONTENT,
    *,
    within: float = 10,
    **options: Any,
) -> tuple[FakeBackup, Any]:
    server = panel.add_server()
    backup = panel.add_backup(server, content=content)
    with anyio.fail_after(within):
        result = await client.backups(server.identifier).download(backup.uuid, tmp_path, **options)
    return backup, result


async def fetch_from(
    host: RangeHost,
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
    *,
    within: float = 10,
    **options: Any,
) -> tuple[FakeBackup, Any]:
    server = panel.add_server()
    backup = panel.add_backup(server, content=host.body)
    backup.link_factory = host.new_link
    with anyio.fail_after(within):
        result = await client.backups(server.identifier).download(backup.uuid, tmp_path, **options)
    return backup, result


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ the plain case


async def test_s3_pieces_are_bounded_ranges_each_answered_206(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    backup, result = await fetch(s3, s3_client, tmp_path, segments=4)
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.segments, result.resumed_from) == (
        True,
        1,
        4,
        0,
    )
    first, *rest = await link_log(s3)
    # The first GET asks for everything; its answer carries the first piece and is closed.
    assert "range" not in first.headers
    assert first.status == 200
    # Every other piece is one bounded range, asked with the ETag, answered 206; together
    # they are the rest of the file, each byte asked for once.
    assert sorted(r.headers["range"] for r in rest) == sorted(pieces(len(CONTENT)))
    assert {r.status for r in rest} == {206}
    assert {r.headers.get("if-range") for r in rest} == {md5_etag(CONTENT)}
    # One link serves every stream.
    assert backup.links_issued == 1


class CountingProxy:
    """A TCP proxy that keeps the request head of each connection (moto closes after one)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> CountingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def ranges(self) -> list[str | None]:
        """The Range header of each GET (None: the whole object)."""
        found = []
        for head in self.heads:
            match = re.search(rb"\r\nrange: *([^\r]+)", head, re.IGNORECASE)
            found.append(match.group(1).decode() if match else None)
        return found

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        head = b""

        async def upstream() -> None:
            nonlocal head
            while data := await reader.read(65536):
                head += data
                up_writer.write(data)
                await up_writer.drain()

        pump = asyncio.ensure_future(upstream())
        try:
            while data := await up_reader.read(256 * 1024):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            pump.cancel()
            self.heads.append(head)
            up_writer.close()
            writer.close()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[tuple[str, Any]]:
    """moto's S3 server with SMALLER stored; its endpoint and a boto3 client."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="backups")
        s3.put_object(Bucket="backups", Key="archive.tar.gz", Body=SMALLER)
        yield endpoint, boto3
    finally:
        server.stop()


async def test_moto_s3_presigned_url_is_fetched_in_several_ranged_gets(
    moto_s3: tuple[str, Any], panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    endpoint, boto3 = moto_s3
    async with CountingProxy(int(endpoint.rsplit(":", 1)[1])) as proxy:
        signer = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{proxy.port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        server = panel.add_server()
        backup = panel.add_backup(server, content=SMALLER)
        backup.link_factory = lambda: signer.generate_presigned_url(
            "get_object", Params={"Bucket": "backups", "Key": "archive.tar.gz"}, ExpiresIn=300
        )
        with anyio.fail_after(15):
            result = await client.backups(server.identifier).download(
                backup.uuid, tmp_path, segments=4
            )
        await settle(lambda: len(proxy.heads) >= 3)
    assert result.path.read_bytes() == SMALLER
    assert result.verified
    # Three pieces: the first answer carries the first, two streams fetch the other two.
    assert result.segments == 2
    assert sorted(proxy.ranges, key=str) == sorted([None, *pieces(len(SMALLER))], key=str)


# ------------------------------------------------------------------ when one stream it is


async def test_wings_links_stay_one_stream(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    _, result = await fetch(panel, client, tmp_path, segments=4)
    assert result.path.read_bytes() == CONTENT
    assert result.segments == 1
    (only,) = await link_log(panel)
    assert "range" not in only.headers


async def test_a_host_that_does_not_announce_ranges_stays_one_stream(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # It would honour a Range, but without Accept-Ranges nothing says so: one GET.
    async with RangeHost(CONTENT, accept_ranges=False) as host:
        _, result = await fetch_from(host, panel, client, tmp_path, segments=4)
    assert result.path.read_bytes() == CONTENT
    assert result.segments == 1
    assert [s.range for s in host.seen] == [None]


async def test_auto_keeps_a_small_backup_to_one_stream(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    _, result = await fetch(s3, s3_client, tmp_path, SMALLER)  # under AUTO_MIN_BYTES
    assert result.segments == 1
    assert result.path.read_bytes() == SMALLER
    (only,) = await link_log(s3)
    assert "range" not in only.headers


async def test_auto_splits_a_large_rest_up_to_the_pieces_there_are(
    s3: FakePanel,
    s3_client: PteroClient,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_download, "AUTO_MIN_BYTES", 2 * PIECE)
    # A link whose one stream is slower than AUTO_ONE_STREAM_RATE (as any would be).
    monkeypatch.setattr(_download, "AUTO_ONE_STREAM_RATE", float("inf"))
    _, result = await fetch(s3, s3_client, tmp_path, SMALLER)
    # AUTO_STREAMS (8) at most, but the two pieces after the first make two streams.
    assert result.segments == 2
    assert result.path.read_bytes() == SMALLER
    assert len(await link_log(s3)) == 3


async def test_auto_keeps_one_stream_that_keeps_up(
    s3: FakePanel,
    s3_client: PteroClient,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One stream that delivered its first piece at AUTO_ONE_STREAM_RATE or more is left alone:
    # the disk and the hash set the pace there, not the connection.
    monkeypatch.setattr(_download, "AUTO_MIN_BYTES", 2 * PIECE)
    monkeypatch.setattr(_download, "AUTO_ONE_STREAM_RATE", 0.0)
    _, result = await fetch(s3, s3_client, tmp_path, SMALLER)
    assert result.segments == 1
    assert result.path.read_bytes() == SMALLER
    (only,) = await link_log(s3)
    assert "range" not in only.headers
    # An explicit number of segments is not second-guessed.
    _, result = await fetch(s3, s3_client, tmp_path / "asked", SMALLER, segments=3)
    assert result.segments == 2


@pytest.mark.parametrize("segments", [1, 8])
async def test_one_piece_or_less_is_one_stream_whatever_was_asked(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path, segments: int
) -> None:
    content = CONTENT[: 2 * PIECE + 1]
    _, result = await fetch(s3, s3_client, tmp_path, content, segments=segments)
    # Two pieces and a byte: after the first piece, two pieces are left for two streams,
    # split only when more than one stream was asked for.
    assert result.segments == min(segments, 2)
    assert result.path.read_bytes() == content
    # Two pieces: after the first, one is left, and one stream fetches it as well as any.
    _, result = await fetch(s3, s3_client, tmp_path / "exact", CONTENT[: 2 * PIECE], segments=8)
    assert result.segments == 1


@pytest.mark.parametrize("segments", [0, -1, True, False, "x", "AUTO", 33, 2.0, None])
async def test_invalid_segments_are_refused_before_any_request(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path, segments: Any
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"x")
    panel.clear_requests()
    with pytest.raises(InvalidArgumentError, match="segments"):
        await client.backups(server.identifier).download(backup.uuid, tmp_path, segments=segments)
    assert not panel.requests
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------ a piece goes wrong


async def test_a_first_answer_dropped_before_its_first_piece_resumes_then_splits(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # Until the first piece is in, the download is one stream: a drop there is a failed
    # attempt, and the next one resumes with Range and splits from there.
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, DownloadFault.drop_after(3 * MiB // 2))
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4
        )
    assert result.path.read_bytes() == CONTENT
    # The rest after the resumed first piece is three pieces: three streams.
    assert (result.verified, result.attempts, result.segments) == (True, 2, 3)
    first, resumed, *rest = await link_log(s3)
    assert "range" not in first.headers
    assert resumed.headers["range"] == f"bytes={3 * MiB // 2}-"
    assert resumed.status == 206
    assert sorted(r.headers["range"] for r in rest) == sorted(
        pieces(len(CONTENT), start=3 * MiB // 2)
    )
    assert backup.links_issued == 2


@pytest.mark.parametrize("get", [1, 3])
async def test_a_dropped_piece_is_retried_alone_from_where_it_broke(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path, get: int
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, *[None] * get, DownloadFault.drop_after(3 * MiB // 2))
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4
        )
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.segments) == (True, 1, 4)
    log = await link_log(s3)
    (dropped,) = [r for r in log if r.fault == "drop"]
    first, last = map(int, dropped.headers["range"].removeprefix("bytes=").split("-"))
    assert dropped.bytes_sent == 3 * MiB // 2
    # The retry asks for the rest of that piece only: nothing else is fetched twice.
    retry = f"bytes={first + 3 * MiB // 2}-{last}"
    assert sorted(r.headers.get("range", "") for r in log) == sorted(
        ["", *pieces(len(CONTENT)), retry]
    )
    assert "range" not in log[0].headers
    assert backup.links_issued == 1


async def test_a_stalled_piece_is_retried_alone_after_read_timeout(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    # The second GET (the first ranged piece) goes silent after 1 MiB for longer than the
    # read timeout; the other pieces go on meanwhile.
    s3.script_download(backup, None, DownloadFault.stall(MiB, seconds=3))
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4, read_timeout=0.5
        )
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.segments) == (True, 1, 4)
    log = await link_log(s3)
    (stalled,) = [r for r in log if r.fault == "stall"]
    first, last = map(int, stalled.headers["range"].removeprefix("bytes=").split("-"))
    assert sorted(r.headers.get("range", "") for r in log) == sorted(
        ["", *pieces(len(CONTENT)), f"bytes={first + MiB}-{last}"]
    )


async def test_single_use_links_that_honour_ranges_go_on_as_one_stream(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # A host that answers ranges but takes each link once (a second GET: 404, as Wings does
    # for a used token): the pieces cannot share the link, so the download goes on as one
    # stream with a fresh link, resuming with Range from what is hashed.
    async with RangeHost(CONTENT) as host:

        def once(seen: Seen) -> Fault | None:
            if sum(s.token == seen.token for s in host.seen) > 1:
                return Fault(status=404)
            return None

        host.fault = once
        backup, result = await fetch_from(host, panel, client, tmp_path, segments=4)
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts) == (True, 2)
    resumed = [s for s in host.seen if s.status == 206 and str(s.range).endswith("-")]
    assert [s.range for s in resumed] == [f"bytes={PIECE}-"]
    assert backup.links_issued == 2


async def test_an_expired_link_is_renewed_once_for_every_stream(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    async with RangeHost(CONTENT) as host:

        def expire_after_the_first_get(seen: Seen) -> Fault | None:
            # The first link dies once its first GET is under way: every piece asked with it
            # is refused, as S3 refuses a presigned URL past its expiry.
            if seen.token == host.tokens[0] and seen.range is not None:
                host.dead.add(seen.token)
                return Fault(status=403)
            return None

        host.fault = expire_after_the_first_get
        backup, result = await fetch_from(host, panel, client, tmp_path, segments=4)
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts) == (True, 1)
    # Four streams saw the link refused at once; the panel was asked for one fresh link.
    assert backup.links_issued == 2
    old, new = host.tokens
    refused = [s for s in host.seen if s.token == old and s.range is not None]
    assert len(refused) == 4
    assert {s.status for s in refused} == {403}
    renewed = [s for s in host.seen if s.token == new]
    assert {s.status for s in renewed} == {206}
    assert sorted(str(s.range) for s in renewed) == sorted(pieces(len(CONTENT)))


async def test_a_host_that_announces_ranges_but_ignores_them_is_fetched_as_one_stream(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # Accept-Ranges: bytes, and a 200 with everything for every Range: the segmented attempt
    # ends at the first piece, and the download goes on as one stream rather than trying
    # segments again on every attempt.
    async with RangeHost(SMALLER, ranges=False) as host:
        _, result = await fetch_from(host, panel, client, tmp_path, segments=4)
    assert result.path.read_bytes() == SMALLER
    assert result.verified
    assert result.attempts == 2
    ranged = [s for s in host.seen if s.range is not None]
    assert ranged, "the first attempt tried ranges"
    assert {s.status for s in ranged} == {200}
    # The second attempt: one GET, from the start, all of it.
    assert host.seen[-1].range is None
    assert host.seen[-1].sent == len(SMALLER)
    assert all(s.start < host.seen[-1].start for s in ranged)


async def test_a_weak_etag_is_never_sent_as_if_range(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # RFC 9110 forbids a weak validator in If-Range, and a host compares it strongly: sent,
    # it would make every piece a 200. The ETag is still compared on each 206.
    async with RangeHost(CONTENT, weak=True) as host:
        _, result = await fetch_from(host, panel, client, tmp_path, segments=4)
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.segments) == (True, 1, 4)
    assert [s.if_range for s in host.seen] == [None] * 5
    assert sorted(str(s.range) for s in host.ranged) == sorted(pieces(len(CONTENT)))


async def test_a_piece_answered_200_once_is_retried_alone(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, None, DownloadFault.ignore_range())
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4
        )
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.segments) == (True, 1, 4)
    log = await link_log(s3)
    (whole,) = [r for r in log if r.fault is not None]
    assert whole.status == 200
    # That piece is asked for again, alone; nothing else twice, and no restart.
    asked = [r.headers.get("range", "") for r in log]
    assert sorted(asked) == sorted(["", *pieces(len(CONTENT)), whole.headers["range"]])


async def test_an_object_that_changed_sends_the_download_back_to_one_stream(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # From the second GET on, the object is another version: If-Range gets a 200 for every
    # piece. A second such answer ends the segments, and the download starts over.
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, None, DownloadFault.change_etag())
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4
        )
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts) == (True, 2)
    log = await link_log(s3)
    after = [r for r in log if r.time > max(x.time for x in log if "range" in x.headers)]
    assert len(after) == 1
    assert "range" not in after[0].headers
    assert after[0].status == 200
    assert after[0].bytes_sent == len(CONTENT)


async def test_a_piece_with_a_wrong_content_range_is_never_spliced_in(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # verify=False: only the Content-Range check stands between the shifted bytes and the file.
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, None, DownloadFault.wrong_content_range(-100))
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4, verify=False
        )
    assert result.path.read_bytes() == CONTENT
    assert not result.verified
    assert result.attempts == 1
    log = await link_log(s3)
    (shifted,) = [r for r in log if r.fault == "wrong_range"]
    assert shifted.status == 206
    # Its bytes were refused, and its range asked for again, alone.
    asked = [r.headers.get("range", "") for r in log]
    assert asked.count(shifted.headers["range"]) == 2


async def test_a_host_that_keeps_refusing_ranges_is_left_after_the_second_refusal(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(
        backup, None, DownloadFault.wrong_content_range(-100), DownloadFault.ignore_range()
    )
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4
        )
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts) == (True, 2)
    assert "range" not in (await link_log(s3))[-1].headers


async def test_a_piece_of_another_etag_is_never_spliced_in(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The object is replaced (same size, other bytes) while the pieces are fetched, by a host
    # that ignores If-Range: its 206s carry the new ETag. verify=False, so only the ETag check
    # keeps the file from being half of each; the restart fetches the new object whole.
    replacement = os.urandom(len(CONTENT))
    async with RangeHost(CONTENT, if_range=False) as host:

        def replace_at_the_first_piece(seen: Seen) -> Fault | None:
            if seen.range is not None and host.body is CONTENT:
                host.replace(replacement)
            return None

        host.fault = replace_at_the_first_piece
        _, result = await fetch_from(host, panel, client, tmp_path, segments=4, verify=False)
    assert result.path.read_bytes() == replacement
    assert result.attempts == 2
    assert host.seen[-1].range is None  # the restart: one stream, from the start
    assert host.seen[-1].sent == len(replacement)


async def test_a_piece_that_runs_past_its_range_is_cut_and_counted_once(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The last piece (600 kB, under one write batch) is a 206 with the right Content-Range, no
    # Content-Length, and a kilobyte too many at its end, arriving in the same read as the
    # range's last bytes: what came before that read is counted but not yet written.
    body = CONTENT[: 2 * PIECE + 600_000]
    async with RangeHost(body) as host:
        overlong: list[Seen] = []

        def long_last_piece(seen: Seen) -> Fault | None:
            span = seen.span
            if span is not None and span[0] == 2 * PIECE and not overlong:
                overlong.append(seen)
                return Fault(overlong=1000)
            return None

        host.fault = long_last_piece
        seen: list[DownloadProgress] = []
        _, result = await fetch_from(
            host, panel, client, tmp_path, segments=4, progress=seen.append
        )
    assert result.path.read_bytes() == body
    assert (result.verified, result.attempts) == (True, 1)
    # The piece was cut where its range ends and asked for again from where it was cut.
    assert [s.range for s in host.seen if s.range and s.span and s.span[0] >= 2 * PIECE] == [
        f"bytes={2 * PIECE}-{len(body) - 1}",
        f"bytes={len(body) - 1024}-{len(body) - 1}",
    ]
    done = [p.bytes_done for p in seen]
    assert done == sorted(done)
    # Bytes counted for the piece that was cut are not counted again when it is retried.
    assert max(done) == done[-1] == len(body)


async def test_a_piece_failing_max_attempts_times_is_a_download_error_naming_it(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_download, "JOURNAL_INTERVAL", 0.0)  # a journal exists to be removed
    async with RangeHost(CONTENT) as host:

        def third_piece_fails(seen: Seen) -> Fault | None:
            span = seen.span
            if span is not None and 2 * PIECE <= span[0] < 3 * PIECE:
                return Fault(status=503)
            return None

        host.fault = third_piece_fails
        server = panel.add_server()
        backup = panel.add_backup(server, content=CONTENT)
        backup.link_factory = host.new_link
        with anyio.fail_after(10), pytest.raises(DownloadError) as info:
            await client.backups(server.identifier).download(
                backup.uuid, tmp_path, segments=4, max_attempts=3
            )
    assert not isinstance(info.value, ChecksumMismatchError)
    assert f"bytes {2 * PIECE}-{3 * PIECE - 1} failed 3 times" in str(info.value)
    assert "503" in str(info.value)
    assert len([s for s in host.seen if s.status == 503]) == 3
    assert leftovers(tmp_path) == []


async def test_a_checksum_mismatch_is_retried_once_then_raised(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    wrong = "sha1:" + "0" * 40
    backup = s3.add_backup(server, content=CONTENT, checksum=wrong)
    with anyio.fail_after(10), pytest.raises(ChecksumMismatchError) as info:
        await s3_client.backups(server.identifier).download(backup.uuid, tmp_path, segments=4)
    assert info.value.attempts == 2
    assert [h.split(":")[0] for h in info.value.history] == ["checksum mismatch"] * 2
    assert info.value.actual.hexdigest == hashlib.sha1(CONTENT).hexdigest()
    # Two whole segmented attempts, the second from the start.
    log = await link_log(s3)
    assert len(log) == 2 * 5
    assert ["range" in r.headers for r in log].count(False) == 2
    assert leftovers(tmp_path) == []


async def test_a_corrupt_piece_is_caught_and_the_retry_verifies(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, DownloadFault.corrupt(5))  # in the first piece
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4
        )
    assert result.path.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.segments) == (True, 2, 4)


# ------------------------------------------------------------------ hashing in order


async def test_without_a_reorder_window_pieces_are_read_back_and_still_verify(
    s3: FakePanel,
    s3_client: PteroClient,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_segments, "WINDOW", 0)
    with caplog.at_level(logging.DEBUG, logger="ptero_backups_async"):
        _, result = await fetch(s3, s3_client, tmp_path, segments=4)
    assert result.path.read_bytes() == CONTENT
    assert result.verified
    (line,) = [r.getMessage() for r in caplog.records if "hashed from the file" in r.getMessage()]
    match = re.search(r"(\d+) bytes hashed from the file", line)
    assert match is not None
    read_back = int(match.group(1))
    # Everything that arrived ahead of the hash went through the file.
    assert 0 < read_back < len(CONTENT)


async def test_progress_is_monotonic_and_ends_at_the_total(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, None, None, DownloadFault.drop_after(MiB + 17))
    seen: list[DownloadProgress] = []
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, segments=4, progress=seen.append
        )
    assert result.attempts == 1
    done = [p.bytes_done for p in seen]
    assert done == sorted(done)
    assert done[-1] == len(CONTENT)
    assert {p.bytes_total for p in seen} == {len(CONTENT)}


async def test_progress_of_one_stream_forgets_what_a_failed_attempt_never_wrote(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The same promise for one stream: the first body runs past the size before its first
    # write, so its bytes were counted and none kept; the next attempt counts from zero again.
    content = CONTENT[:MiB]
    server = s3.add_server()
    backup = s3.add_backup(server, content=content)
    s3.script_download(backup, DownloadFault.endless())
    seen: list[DownloadProgress] = []
    with anyio.fail_after(10):
        result = await s3_client.backups(server.identifier).download(
            backup.uuid, tmp_path, progress=seen.append
        )
    assert (result.attempts, result.segments) == (2, 1)
    done = [p.bytes_done for p in seen]
    assert max(done) == done[-1] == len(content)
    assert 0 in done[1:], "it went back to zero, honestly, before the second body"


# ------------------------------------------------------------------ limits and cancellation


async def test_download_many_keeps_its_connection_budget_with_segments(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # 64 MiB/s per answer: a piece takes an eighth of a second, so streams overlap.
    async with RangeHost(CONTENT, rate=64 * MiB) as host:
        server = panel.add_server()
        one = panel.add_backup(server, content=CONTENT)
        two = panel.add_backup(server, content=CONTENT)
        one.link_factory = two.link_factory = host.new_link
        with anyio.fail_after(15):
            outcomes = await client.download_many(
                [(server.identifier, one.uuid), (server.identifier, two.uuid)],
                tmp_path,
                concurrency=2,
                segments=4,
            )
        assert all(o.result is not None and o.result.verified for o in outcomes), outcomes
        assert host.peak == 2
        # Each file holds one token for its first stream; a stream past it needs the other's,
        # so neither file can have used three (a worker that never got a token is no stream).
        assert all(o.result and o.result.segments in (1, 2) for o in outcomes), outcomes
        # The counter does see parallel streams: one download alone, unbudgeted, opens four.
        host.peak = 0
        backup = panel.add_backup(server, content=CONTENT)
        backup.link_factory = host.new_link
        with anyio.fail_after(10):
            alone = await client.backups(server.identifier).download(
                backup.uuid, tmp_path / "alone", segments=4
            )
        assert alone.segments == 4
        assert host.peak == 4
    for outcome in outcomes:
        assert outcome.result is not None
        assert outcome.result.path.read_bytes() == CONTENT


async def test_cancelling_mid_segments_leaves_nothing_behind(
    s3: FakePanel, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_download, "JOURNAL_INTERVAL", 0.0)  # a journal exists to be removed
    fds_before = open_fds()
    journal = tmp_path / "out.tar.gz.journal"
    async with RangeHost(CONTENT, rate=32 * MiB) as host:
        server = s3.add_server()
        backup = s3.add_backup(server, content=CONTENT)
        backup.link_factory = host.new_link
        scope = anyio.CancelScope()
        there: list[bool] = []

        def cancel_midway(progress: DownloadProgress) -> None:
            if progress.bytes_done > 2 * PIECE and not there:
                there.append(journal.exists() and (tmp_path / "out.tar.gz.part").exists())
                scope.cancel()

        async with PteroClient(s3.url, s3.api_key) as client:
            with anyio.fail_after(10), scope:
                await client.backups(server.identifier).download(
                    backup.uuid, tmp_path / "out.tar.gz", segments=4, progress=cancel_midway
                )
            assert scope.cancelled_caught
            assert there == [True], "the .part and the journal were there when it was cancelled"
            assert len({s.range for s in host.seen}) >= 4, "several streams were under way"
            assert leftovers(tmp_path) == []
        assert await settle(lambda: established_connections([host.port]) == 0), "connections leaked"
    assert await settle(lambda: open_fds() <= fds_before), "file descriptors leaked"
