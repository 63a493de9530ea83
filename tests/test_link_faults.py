"""The link host's scripted faults, and downloads that must get each of them right.

The first half drives FakePanel's link host with a raw aiohttp client, to show each fault does
what it says. The second half runs ``client.backups(server).download(...)`` against those
faults; each test names the downloader behaviour it pins down (a test that cannot fail when
that behaviour is removed proves nothing).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import anyio
import pytest

from ptero_backups_async import (
    DownloadError,
    DownloadProgress,
    PteroClient,
    RateLimitError,
)
from ptero_backups_async.testing import DownloadFault, FakeBackup, FakePanel, RecordedRequest

from .conftest import register_key

pytestmark = pytest.mark.anyio

CONTENT = os.urandom(3 * 1024 * 1024 + 4321)
#: A new version of the object, as long as the first.
NEW_VERSION = os.urandom(len(CONTENT))
#: Where a first attempt is cut.
CUT = 1_000_000


def _tar_gz(size: int) -> bytes:
    payload = os.urandom(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("world/region.dat")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), mtime=0)


#: A real .tar.gz: what the panel's checksum describes and what must land on disk.
ARCHIVE = _tar_gz(1024 * 1024)


def etag_of(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


@pytest.fixture(params=["wings", "s3"])
async def storage_panel(request: pytest.FixtureRequest) -> AsyncIterator[FakePanel]:
    async with FakePanel(storage=request.param) as panel:
        register_key(panel.api_key)
        yield panel


@pytest.fixture
async def s3_panel() -> AsyncIterator[FakePanel]:
    async with FakePanel(storage="s3") as panel:
        register_key(panel.api_key)
        yield panel


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def link(http: aiohttp.ClientSession, panel: FakePanel, backup: FakeBackup) -> str:
    """A fresh download link, asked of the panel's API without the SDK."""
    async with http.get(
        f"{panel.url}/api/client/servers/{backup.server.identifier}/backups/{backup.uuid}/download",
        headers={"Authorization": f"Bearer {panel.api_key}", "Accept": "application/json"},
    ) as resp:
        assert resp.status == 200
        url: str = (await resp.json())["attributes"]["url"]
        return url


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Wait until `condition()` holds (polled), failing after `within` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the panel's log has no event to wait on
            await anyio.sleep(0.01)


async def settled(panel: FakePanel, index: int) -> RecordedRequest:
    """The link request number `index` once the link host has finished answering it."""

    def done() -> bool:
        # A record is replaced when its handler ends; until then its status is 0.
        links = panel.link_requests()
        return len(links) > index and links[index].status != 0

    await eventually(done)
    return panel.link_requests()[index]


# ---- the fake itself: each fault, seen by a raw client -------------------------------------


@pytest.mark.parametrize("storage", ["wings", "s3"])
async def test_ignore_range_answers_200_with_everything(
    http: aiohttp.ClientSession, storage: str
) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        backup = panel.add_backup(panel.add_server(), content=b"0123456789" * 100)
        panel.script_download(backup, DownloadFault.ignore_range())
        async with http.get(await link(http, panel, backup), headers={"Range": "bytes=10-"}) as r:
            assert r.status == 200
            assert "Content-Range" not in r.headers
            assert "Accept-Ranges" not in r.headers
            assert r.headers["Content-Length"] == "1000"
            assert await r.read() == backup.content
        (rec,) = panel.link_requests()
        assert rec.headers["range"] == "bytes=10-"
        assert (rec.status, rec.fault, rec.bytes_sent) == (200, "ignore_range", 1000)


@pytest.mark.parametrize("storage", ["wings", "s3"])
async def test_wrong_content_range_serves_the_shifted_range(
    http: aiohttp.ClientSession, storage: str
) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        content = bytes(range(256)) * 40  # 10240 bytes
        backup = panel.add_backup(panel.add_server(), content=content)
        panel.script_download(
            backup,
            DownloadFault.wrong_content_range(-100),
            DownloadFault.wrong_content_range(50),
            DownloadFault.wrong_content_range(7),
        )
        async with http.get(await link(http, panel, backup), headers={"Range": "bytes=1000-"}) as r:
            # Same length as asked, from 100 bytes earlier: only the start tells.
            assert r.status == 206
            assert r.headers["Content-Range"] == "bytes 900-10139/10240"
            assert r.headers["Content-Length"] == str(10240 - 1000)
            assert await r.read() == content[900:10140]
        async with http.get(await link(http, panel, backup), headers={"Range": "bytes=1000-"}) as r:
            # Clamped to the file: shorter than asked, and the header says so.
            assert r.headers["Content-Range"] == "bytes 1050-10239/10240"
            assert await r.read() == content[1050:]
        async with http.get(await link(http, panel, backup)) as r:
            # Without Range the fault has nothing to get wrong.
            assert r.status == 200
            assert await r.read() == content
        recs = panel.link_requests()
        assert [r.fault for r in recs] == ["wrong_range"] * 3
        assert [r.headers.get("range") for r in recs] == ["bytes=1000-", "bytes=1000-", None]
    with pytest.raises(ValueError, match="shift"):
        DownloadFault.wrong_content_range(0)


async def test_if_range_and_new_versions_on_s3(http: aiohttp.ClientSession) -> None:
    async with FakePanel(storage="s3") as panel:
        content = b"abcdefghij" * 1000
        backup = panel.add_backup(panel.add_server(), content=content)
        replacement = b"ABCDEFGHIJ" * 900
        panel.script_download(
            backup, None, None, DownloadFault.change_etag(), None, None, None, None, None
        )

        async with http.get(await link(http, panel, backup)) as r:
            first_etag, first_modified = r.headers["ETag"], r.headers["Last-Modified"]
            assert first_etag == etag_of(content)
            await r.read()

        async def get(if_range: str) -> tuple[int, bytes, aiohttp.ClientResponse]:
            headers = {"Range": "bytes=100-", "If-Range": if_range}
            async with http.get(await link(http, panel, backup), headers=headers) as r:
                return r.status, await r.read(), r

        # The validator matches: the range is served.
        status, body, _ = await get(first_etag)
        assert (status, body) == (206, content[100:])
        # A new version (same bytes): the old ETag no longer matches, so 200 and everything.
        status, body, resp = await get(first_etag)
        assert (status, body) == (200, content)
        new_etag = resp.headers["ETag"]
        assert new_etag != first_etag
        assert resp.headers["Last-Modified"] != first_modified
        assert "Content-Range" not in resp.headers
        # The new ETag matches; a weak one never does (If-Range compares strongly).
        assert (await get(new_etag))[0] == 206
        assert (await get("W/" + new_etag))[0] == 200
        # A date validator matches only the exact Last-Modified.
        assert (await get(resp.headers["Last-Modified"]))[0] == 206
        assert (await get(first_modified))[0] == 200
        assert backup.object_version == 1

        # A new version with other bytes: the panel's record (size, checksum) stays.
        panel.script_download(backup, DownloadFault.change_etag(replacement))
        async with http.get(await link(http, panel, backup)) as r:
            assert r.headers["ETag"] not in (first_etag, new_etag)
            assert await r.read() == replacement
        assert backup.served_content == replacement
        assert backup.size == len(content)
        assert backup.object_version == 2
        recs = panel.link_requests()
        assert recs[2].headers["if-range"] == first_etag
        assert recs[2].fault == "change_etag"


@pytest.mark.parametrize("storage", ["wings", "s3"])
async def test_gzip_sends_the_stored_bytes_with_content_encoding(storage: str) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        backup = panel.add_backup(panel.add_server(), content=ARCHIVE)
        panel.script_download(backup, DownloadFault.gzip(), DownloadFault.gzip())
        async with aiohttp.ClientSession(auto_decompress=False) as raw:
            async with raw.get(await link(raw, panel, backup)) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                assert r.headers["Content-Length"] == str(len(ARCHIVE))
                # The bytes on the wire are the archive, the thing the checksum describes.
                assert await r.read() == ARCHIVE
        async with aiohttp.ClientSession() as decoding:
            async with decoding.get(await link(decoding, panel, backup)) as r:
                # A client that decodes gets the tar inside: other bytes, another length.
                assert await r.read() == gzip.decompress(ARCHIVE)
        assert [r.fault for r in panel.link_requests()] == ["gzip", "gzip"]


@pytest.mark.parametrize("storage", ["wings", "s3"])
async def test_short_body_ends_cleanly_without_a_length(
    http: aiohttp.ClientSession, storage: str
) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        backup = panel.add_backup(panel.add_server(), content=CONTENT)
        panel.script_download(backup, DownloadFault.short_body(12345))
        async with http.get(await link(http, panel, backup)) as r:
            assert r.status == 200
            assert "Content-Length" not in r.headers
            assert r.headers["Transfer-Encoding"] == "chunked"
            assert await r.read() == CONTENT[:12345]  # no ClientPayloadError: a clean end
        rec = await settled(panel, 0)
        assert (rec.fault, rec.bytes_sent) == ("short", 12345)
    with pytest.raises(ValueError, match="n_bytes"):
        DownloadFault.short_body(-1)


async def test_link_host_503_carries_retry_after(http: aiohttp.ClientSession) -> None:
    for storage in ("wings", "s3"):
        async with FakePanel(storage=storage) as panel:
            backup = panel.add_backup(panel.add_server(), content=b"x" * 100)
            panel.script_download(backup, DownloadFault.status(503, retry_after=1))
            async with http.get(await link(http, panel, backup)) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "1"


@pytest.mark.parametrize("storage", ["wings", "s3"])
async def test_endless_streams_until_the_client_leaves(
    http: aiohttp.ClientSession, storage: str
) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        content = os.urandom(100_000)
        backup = panel.add_backup(panel.add_server(), content=content)
        panel.script_download(backup, DownloadFault.endless())
        extra = 4 * 1024 * 1024
        with anyio.fail_after(10):
            async with http.get(await link(http, panel, backup)) as r:
                assert r.status == 200
                assert "Content-Length" not in r.headers
                assert await r.content.readexactly(len(content)) == content
                assert await r.content.readexactly(extra) == bytes(extra)
                # The client stops reading: the server waits instead of spinning or buffering.
                cpu = time.process_time()
                await anyio.sleep(0.5)
                idle_cpu = time.process_time() - cpu
            # Leaving the block closes the connection mid-body.
            rec = await settled(panel, 0)
        assert rec.fault == "endless"
        assert rec.status == 200
        assert idle_cpu < 0.25, f"{idle_cpu:.2f} s of CPU in 0.5 s while the client was idle"
        # What was sent is what was read plus socket buffers, not an unbounded pile.
        assert len(content) + extra <= rec.bytes_sent < len(content) + extra + 64 * 1024 * 1024


async def test_endless_does_not_hold_up_close(http: aiohttp.ClientSession) -> None:
    panel = FakePanel(storage="s3")
    await panel.start()
    backup = panel.add_backup(panel.add_server(), content=b"z" * 1000)
    panel.script_download(backup, DownloadFault.endless())
    async with http.get(await link(http, panel, backup)) as r:
        await r.content.readexactly(100_000)
        started = time.monotonic()
        await panel.aclose()  # the client holds the stream and reads nothing
        assert time.monotonic() - started < 1.0
        with pytest.raises(aiohttp.ClientError):
            await r.read()


@pytest.mark.parametrize("storage", ["wings", "s3"])
async def test_trickle_is_slow_but_never_silent_for_a_second(
    http: aiohttp.ClientSession, storage: str
) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        backup = panel.add_backup(panel.add_server(), content=b"0123456789" * 4)
        panel.script_download(backup, DownloadFault.trickle(40))
        with anyio.fail_after(5):
            async with http.get(await link(http, panel, backup)) as r:
                assert r.headers["Content-Length"] == "40"
                started = last = time.monotonic()
                gaps, body = [], b""
                while chunk := await r.content.readany():
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now
                    body += chunk
        assert body == backup.content
        # 40 bytes at 40 B/s: the last byte is due 39/40 s after the first.
        assert 0.8 <= last - started < 3.0
        assert len(gaps) >= 10, "the body came in a few large pieces"
        assert max(gaps) < 0.5


async def test_trickle_at_one_byte_a_second_and_a_client_that_leaves(
    http: aiohttp.ClientSession,
) -> None:
    async with FakePanel() as panel:
        backup = panel.add_backup(panel.add_server(), content=b"x" * 1000)
        panel.script_download(backup, DownloadFault.trickle(1))
        with anyio.fail_after(5):
            async with http.get(await link(http, panel, backup)) as r:
                assert await r.content.readexactly(1) == b"x"
                started = time.monotonic()
                assert await r.content.readexactly(1) == b"x"
                gap = time.monotonic() - started
            left = time.monotonic()
            rec = await settled(panel, 0)
        assert 0.8 <= gap < 1.3
        # The host noticed the client leaving between two bytes, and sent nothing more.
        assert time.monotonic() - left < 0.5
        assert rec.bytes_sent == 2
    for rate in (0, 0.5, float("nan")):
        with pytest.raises(ValueError, match="bytes_per_second"):
            DownloadFault.trickle(rate)


# ---- the downloader against them ----------------------------------------------------------


async def test_part_and_directory_are_fsynced_around_the_rename(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kills: no fsync of the .part; no fsync of the directory (or either in the wrong order)."""
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    dest = tmp_path / "out"
    dest.mkdir()
    final = dest / f"{backup.uuid}.tar.gz"
    part = dest / f"{backup.uuid}.tar.gz.part"
    calls: list[tuple[str, bool]] = []
    lock = threading.Lock()
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        with lock:
            calls.append((target, final.exists()))
        real_fsync(fd)

    if not os.path.isdir("/proc/self/fd"):  # pragma: no cover - Linux CI
        pytest.skip("needs /proc/self/fd to name what was fsynced")
    monkeypatch.setattr(os, "fsync", spy)
    result = await client.backups(server.identifier).download(backup.uuid, dest)
    monkeypatch.undo()
    assert result.path == final
    assert final.read_bytes() == CONTENT

    part_syncs = [i for i, (path, _) in enumerate(calls) if path == str(part)]
    dir_syncs = [i for i, (path, _) in enumerate(calls) if path == str(dest)]
    assert part_syncs, f"the .part was never fsynced: {calls}"
    assert dir_syncs, f"the directory was never fsynced: {calls}"
    # The data is on disk before the name points at it ...
    assert not calls[part_syncs[-1]][1], "the .part was fsynced after the rename"
    # ... and the rename itself is made durable afterwards.
    assert calls[dir_syncs[-1]][1], "the directory was fsynced before the rename"
    assert part_syncs[-1] < dir_syncs[-1]


async def test_a_wrong_content_range_start_is_never_spliced_in(
    s3_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """Kills: no check of the Content-Range start (verify=False: nothing else would notice)."""
    server = s3_panel.add_server()
    backup = s3_panel.add_backup(server, content=CONTENT)
    # The resume gets a 206 of the right length and total, but from 4 KiB earlier.
    s3_panel.script_download(
        backup, DownloadFault.drop_after(CUT), DownloadFault.wrong_content_range(-4096)
    )
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        result = await client.backups(server.identifier).download(
            backup.uuid, tmp_path, verify=False
        )
    assert result.path.read_bytes() == CONTENT
    _, resumed, restarted = s3_panel.link_requests()
    assert resumed.headers["range"].startswith("bytes=")
    assert (resumed.status, resumed.fault) == (206, "wrong_range")
    # A host that got the range wrong is not asked for one again: a clean restart.
    assert "range" not in restarted.headers
    assert restarted.status == 200
    assert result.attempts == 3


async def test_a_200_to_a_range_request_restarts_from_zero(
    s3_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """Kills: no restart when the host answers 200 to a Range request."""
    server = s3_panel.add_server()
    backup = s3_panel.add_backup(server, content=CONTENT)
    s3_panel.script_download(backup, DownloadFault.drop_after(CUT), DownloadFault.ignore_range())
    seen: list[DownloadProgress] = []
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        result = await client.backups(server.identifier).download(
            backup.uuid, tmp_path, verify=False, progress=seen.append
        )
    assert result.path.read_bytes() == CONTENT
    assert result.attempts == 2
    _, second = s3_panel.link_requests()
    assert second.headers["range"].startswith("bytes=")
    assert second.status == 200
    # Progress went back to zero for the restart, honestly, and ended at the total.
    assert 0 in [p.bytes_done for p in seen[1:]]
    assert seen[-1].bytes_done == len(CONTENT)


async def test_the_link_hosts_retry_after_is_honoured(
    storage_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """Kills: ignoring the link host's Retry-After (the default pause is 0.2 s)."""
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.status(503, retry_after=1))
    async with PteroClient(storage_panel.url, storage_panel.api_key) as client:
        result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert result.path.read_bytes() == CONTENT
    refused, served = storage_panel.link_requests()
    assert (refused.status, served.status) == (503, 200)
    assert 0.9 <= served.time - refused.time < 5.0


async def test_a_short_body_is_not_accepted(
    storage_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """Kills: accepting a body that ends early (verify=False: no checksum to catch it)."""
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.short_body(CUT))
    async with PteroClient(storage_panel.url, storage_panel.api_key) as client:
        result = await client.backups(server.identifier).download(
            backup.uuid, tmp_path, verify=False
        )
    assert result.path.read_bytes() == CONTENT
    assert result.attempts == 2
    short, rest = storage_panel.link_requests()
    assert short.fault == "short"
    if storage_panel.storage == "s3":
        # What did arrive was kept: the next attempt resumes after it.
        assert rest.headers["range"] == f"bytes={CUT}-"
        assert rest.status == 206
    else:
        assert "range" not in rest.headers


async def test_if_range_keeps_two_versions_from_being_spliced(
    s3_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """Kills: no If-Range. The object changes between attempts; without If-Range the resume
    appends the new version's tail to the old version's head (verify=False lets it through).
    """
    server = s3_panel.add_server()
    backup = s3_panel.add_backup(server, content=CONTENT)
    s3_panel.script_download(
        backup, DownloadFault.drop_after(CUT), DownloadFault.change_etag(NEW_VERSION)
    )
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        result = await client.backups(server.identifier).download(
            backup.uuid, tmp_path, verify=False
        )
    # One whole version, never a mix: the restart fetched the new one from byte 0.
    assert result.path.read_bytes() == NEW_VERSION
    assert result.attempts == 2
    _, second = s3_panel.link_requests()
    assert second.headers["if-range"] == etag_of(CONTENT)
    assert second.headers["range"].startswith("bytes=")
    assert second.status == 200


async def test_if_range_with_a_new_etag_restarts_and_verifies(
    s3_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """Kills: no If-Range (same bytes, new ETag: the resume must be a full 200 restart)."""
    server = s3_panel.add_server()
    backup = s3_panel.add_backup(server, content=CONTENT)
    s3_panel.script_download(backup, DownloadFault.drop_after(CUT), DownloadFault.change_etag())
    async with PteroClient(s3_panel.url, s3_panel.api_key) as client:
        result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert result.path.read_bytes() == CONTENT
    assert result.verified
    assert result.attempts == 2
    second = s3_panel.link_requests()[1]
    assert second.headers["if-range"] == etag_of(CONTENT)
    assert second.status == 200


async def test_a_content_length_other_than_the_backups_size_fails_at_the_headers(
    storage_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """Kills: no Content-Length check. The body is trickled: a client that reads it before
    noticing the wrong length takes 2 s and makes the host send all of it.
    """
    server = storage_panel.add_server()
    content = os.urandom(60_000)
    backup = storage_panel.add_backup(server, content=content)
    # The stored object is shorter than what the panel recorded (and still announces).
    backup.served_content = content[:40_000]
    storage_panel.script_download(backup, DownloadFault.trickle(20_000))
    async with PteroClient(storage_panel.url, storage_panel.api_key) as client:
        started = time.monotonic()
        with pytest.raises(DownloadError):
            await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=1)
        elapsed = time.monotonic() - started
    rec = await settled(storage_panel, 0)
    assert rec.status == 200
    assert rec.bytes_sent < 40_000, "the client read a body whose length was already wrong"
    assert elapsed < 1.5
    assert list(tmp_path.iterdir()) == []


async def test_a_gzip_encoded_archive_is_saved_exactly_as_sent(
    storage_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """Kills: a link session that decompresses (it would store the inner tar, not the archive)."""
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=ARCHIVE)
    storage_panel.script_download(backup, *[DownloadFault.gzip()] * 5)
    async with PteroClient(storage_panel.url, storage_panel.api_key) as client:
        result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert result.path.read_bytes() == ARCHIVE
    assert result.verified
    assert result.attempts == 1
    (rec,) = storage_panel.link_requests()
    assert rec.fault == "gzip"


# ---- pacing of the panel API after a 429 ---------------------------------------------------


async def test_a_429_paces_the_next_request(panel: FakePanel) -> None:
    """Kills: no pacing after a 429. The 429 is not retried (max_retries=0); the next call,
    a different request, must still wait out the Retry-After.
    """
    server = panel.add_server()
    backup = panel.add_backup(server)
    panel.inject(method="GET", path=r"/backups$", status=429, headers={"Retry-After": "1"})
    async with PteroClient(panel.url, panel.api_key, max_retries=0) as client:
        backups = client.backups(server.identifier)
        with pytest.raises(RateLimitError) as info:
            await backups.list_page()
        assert info.value.retry_after == 1
        await backups.get(backup.uuid)
    limited, following = panel.api_requests()
    assert (limited.status, following.status) == (429, 200)
    assert 0.9 <= following.time - limited.time < 5.0


async def test_a_429_paces_requests_of_other_tasks(panel: FakePanel) -> None:
    """Kills: no pacing after a 429, with the 429 retried while other tasks go on."""
    server = panel.add_server()
    backup = panel.add_backup(server)
    panel.inject(method="GET", path=r"/backups$", status=429, headers={"Retry-After": "1"})
    async with PteroClient(panel.url, panel.api_key) as client:
        backups = client.backups(server.identifier)
        async with anyio.create_task_group() as tg:
            tg.start_soon(backups.list_page)
            await eventually(lambda: any(r.status == 429 for r in panel.api_requests()))
            await backups.get(backup.uuid)
    limited = next(r for r in panel.api_requests() if r.status == 429)
    other = next(r for r in panel.api_requests() if r.path.endswith(backup.uuid))
    assert 0.9 <= other.time - limited.time < 5.0


async def test_an_exhausted_rate_limit_is_waited_out_before_a_429() -> None:
    """The rate-limit headers alone (remaining 0) hold the next request until the window
    turns; the panel never has to answer 429.
    """
    async with FakePanel(rate_limit=3, rate_limit_period=1.0) as limited_panel:
        register_key(limited_panel.api_key)
        server = limited_panel.add_server()
        async with PteroClient(
            limited_panel.url, limited_panel.api_key, max_retry_after=1.0
        ) as client:
            backups = client.backups(server.identifier)
            for _ in range(4):
                await backups.list_page()
        requests = limited_panel.api_requests()
    assert [r.status for r in requests] == [200] * 4
    assert 0.9 <= requests[3].time - requests[2].time < 5.0
    assert requests[2].time - requests[0].time < 0.5
