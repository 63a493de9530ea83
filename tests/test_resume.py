"""Resuming across runs: the ``.journal`` beside a ``.part`` and what a later run makes of it.

One test kills a real download (a subprocess, ``SIGKILL``) and resumes it here. The others
plant a ``.part`` and a journal written by ``_journal.Journal`` itself, then download: a
journal that vouches for the bytes is resumed with ``Range`` and ``If-Range``; one that names
another backup, size, checksum or algorithm, that does not parse, or whose digests no longer
match the file, is ignored (or an older checkpoint that still matches is used); a host that
answers the resume with ``200`` gets a restart from zero. Everything runs over loopback
sockets: FakePanel's link hosts and ``RangeHost`` (``tests/_rangehost.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import pytest

from ptero_backups_async import (
    DownloadError,
    DownloadProgress,
    InvalidArgumentError,
    PteroClient,
    _download,
)
from ptero_backups_async._journal import Checkpoint, Journal, Piece, ResumeKey
from ptero_backups_async._segments import PIECE
from ptero_backups_async.testing import DownloadFault, FakeBackup, FakePanel, RecordedRequest

from ._rangehost import Fault, RangeHost
from .conftest import register_key

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
CONTENT = os.urandom(6 * MiB + 777)
#: Where the planted journals' checkpoints fall.
CUT = 2 * MiB + 5
LATER = 4 * MiB + 11


def digest(data: bytes, algorithm: str = "sha1") -> str:
    return hashlib.new(algorithm, data).hexdigest()


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


def part_of(final: pathlib.Path) -> pathlib.Path:
    return final.with_name(final.name + ".part")


def journal_of(final: pathlib.Path) -> pathlib.Path:
    return final.with_name(final.name + ".journal")


def key_of(fake: FakeBackup, content: bytes = CONTENT, **changes: Any) -> ResumeKey:
    """The resume key a download of ``fake`` looks for, with ``changes`` made to it."""
    fields: dict[str, Any] = {
        "backup": fake.uuid,
        "checksum": f"sha1:{digest(content)}",
        "size": len(content),
        "algorithm": "sha1",
    }
    fields.update(changes)
    return ResumeKey(**fields)


def plant(
    final: pathlib.Path,
    key: ResumeKey,
    part: bytes,
    checkpoints: list[Checkpoint],
    etag: str | None,
    pieces: Sequence[Piece] = (),
) -> None:
    """A ``.part`` and the journal a crashed run would have left beside it."""
    part_of(final).write_bytes(part)
    journal = Journal(final, key)
    for checkpoint in checkpoints:
        journal.save(checkpoint, etag, pieces=pieces)
    written = journal.path.read_bytes()
    journal.remove()  # closes it, and takes it away...
    journal.path.write_bytes(written)  # ...to be left on disk, as a crash leaves it


def point(prefix: int, content: bytes = CONTENT, algorithm: str = "sha1") -> Checkpoint:
    return Checkpoint(prefix, digest(content[:prefix], algorithm))


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def eager_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint at every write, and a write every 256 KiB: a short download journals."""
    monkeypatch.setattr(_download, "JOURNAL_INTERVAL", 0.0)
    monkeypatch.setattr(_download, "BATCH", 256 * 1024)


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
        while not condition():  # noqa: ASYNC110 - files and logs to poll, no event
            await anyio.sleep(0.01)


async def link_log(panel: FakePanel) -> list[RecordedRequest]:
    await eventually(lambda: all(r.status for r in panel.link_requests()), within=5)
    return panel.link_requests()


async def download(
    panel: FakePanel,
    client: PteroClient,
    backup: FakeBackup,
    final: pathlib.Path,
    **options: Any,
) -> Any:
    with anyio.fail_after(10):
        return await client.backups(backup.server.identifier).download(
            backup.uuid, final, **options
        )


# ------------------------------------------------------------------ a real crash

#: The downloader of the crash test: one stream, killed part way.
CRASHING_RUN = """
import asyncio, os, sys
from ptero_backups_async import PteroClient

async def main():
    async with PteroClient(os.environ["PANEL_URL"], os.environ["PANEL_KEY"]) as client:
        await client.backups(sys.argv[1]).download(
            sys.argv[2], sys.argv[3], segments=int(sys.argv[4])
        )
    print("finished", flush=True)

asyncio.run(main())
"""


async def test_a_killed_download_is_resumed_by_the_next_run(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    big = os.urandom(40 * MiB)
    final = tmp_path / "world.tar.gz"
    # 8 MiB/s: the run lasts five seconds, and writes its first checkpoint after two.
    async with RangeHost(big, rate=8 * MiB) as host:
        server = panel.add_server()
        backup = panel.add_backup(server, content=big)
        backup.link_factory = host.new_link
        env = {**os.environ, "PANEL_URL": panel.url, "PANEL_KEY": panel.api_key}
        argv = [sys.executable, "-c", CRASHING_RUN, server.identifier, backup.uuid, str(final), "1"]
        with open(tmp_path / "stderr", "wb") as stderr:
            process = await anyio.open_process(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
            )
        async with process:
            try:
                with anyio.fail_after(15):
                    while not journal_of(final).exists():  # noqa: ASYNC110 - a file to poll
                        await anyio.sleep(0.02)
                process.send_signal(signal.SIGKILL)
                with anyio.fail_after(5):
                    code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
        assert code == -signal.SIGKILL, (tmp_path / "stderr").read_text()
        assert not final.exists()
        on_disk = part_of(final).stat().st_size
        left = json.loads(journal_of(final).read_bytes())
        assert left["backup"] == backup.uuid
        assert left["etag"] == host.etag
        prefix = left["checkpoints"][-1][0]  # the newest: the longest prefix vouched for
        assert 0 < prefix <= on_disk < len(big)

        host.rate = None  # the next run is not throttled: the test need not wait for it
        host.seen.clear()
        seen: list[DownloadProgress] = []
        result = await download(panel, client, backup, final, progress=seen.append)
    assert result.path.read_bytes() == big
    assert result.verified
    assert result.resumed_from == prefix
    assert seen[0].bytes_done == prefix
    (resumed,) = host.seen
    assert (resumed.range, resumed.if_range, resumed.status) == (
        f"bytes={prefix}-",
        host.etag,
        206,
    )
    assert resumed.sent == len(big) - prefix
    assert leftovers(tmp_path) == ["stderr", "world.tar.gz"]


# ------------------------------------------------------------------ journals that vouch


async def test_a_journal_that_vouches_for_the_part_is_resumed_with_range_and_if_range(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    # Bytes past the checkpoint are in the file too (written before the crash, never vouched
    # for, here not even right): they are cut off, not kept.
    part = CONTENT[:LATER] + b"\xff" * 1000
    plant(final, key_of(backup), part, [point(CUT), point(LATER)], md5_etag(CONTENT))
    seen: list[DownloadProgress] = []
    result = await download(s3, s3_client, backup, final, progress=seen.append)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.resumed_from) == (True, 1, LATER)
    assert seen[0].bytes_done == LATER
    assert seen[-1].bytes_done == len(CONTENT)
    (only,) = await link_log(s3)
    assert only.headers["range"] == f"bytes={LATER}-"
    assert only.headers["if-range"] == md5_etag(CONTENT)
    assert only.status == 206
    assert leftovers(tmp_path) == ["world.tar.gz"]


async def test_a_weak_etag_in_the_journal_is_not_sent_as_if_range(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    async with RangeHost(CONTENT, weak=True) as host:
        backup.link_factory = host.new_link
        plant(final, key_of(backup), CONTENT[:LATER], [point(LATER)], host.etag)
        result = await download(panel, client, backup, final)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.resumed_from) == (True, 1, LATER)
    (only,) = host.seen
    assert (only.range, only.if_range, only.status) == (f"bytes={LATER}-", None, 206)


async def test_a_resume_fetches_the_rest_in_segments(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    big = os.urandom(3 * PIECE + 12_345)
    server = s3.add_server()
    backup = s3.add_backup(server, content=big)
    final = tmp_path / "world.tar.gz"
    plant(final, key_of(backup, big), big[:CUT], [point(CUT, big)], md5_etag(big))
    result = await download(s3, s3_client, backup, final, segments=4)
    assert final.read_bytes() == big
    assert (result.verified, result.attempts, result.resumed_from) == (True, 1, CUT)
    # The rest from the checkpoint: the first piece on the resumed answer, then two pieces
    # for two streams.
    assert result.segments == 2
    first, *rest = await link_log(s3)
    assert first.headers["range"] == f"bytes={CUT}-"
    assert sorted(r.headers["range"] for r in rest) == sorted(
        f"bytes={a}-{min(a + PIECE, len(big)) - 1}" for a in range(CUT + PIECE, len(big), PIECE)
    )
    assert {r.status for r in [first, *rest]} == {206}
    assert leftovers(tmp_path) == ["world.tar.gz"]


@pytest.mark.parametrize("damaged", [False, True])
async def test_pieces_written_ahead_of_the_prefix_are_not_fetched_again(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path, damaged: bool
) -> None:
    # A segmented run died with the prefix at CUT and two pieces further on written in full.
    big = os.urandom(5 * PIECE + 999)
    server = s3.add_server()
    backup = s3.add_backup(server, content=big)
    final = tmp_path / "world.tar.gz"
    ahead = [(2 * PIECE, 3 * PIECE), (4 * PIECE, 5 * PIECE)]
    part = bytearray(len(big))
    part[:CUT] = big[:CUT]
    for a, b in ahead:
        part[a:b] = big[a:b]
    if damaged:
        part[4 * PIECE + 7] ^= 0xFF  # torn after its CRC was recorded
    pieces = [Piece(a, b, zlib.crc32(big[a:b])) for a, b in ahead]
    plant(final, key_of(backup, big), bytes(part), [point(CUT, big)], md5_etag(big), pieces)
    result = await download(s3, s3_client, backup, final, segments=4)
    assert final.read_bytes() == big
    assert result.verified
    asked = [r.headers["range"] for r in await link_log(s3)]
    assert asked[0] == f"bytes={CUT}-"
    # No piece that still matches its CRC is asked for; the damaged one is.
    for a, b in ahead[: 1 if damaged else 2]:
        assert not any(int(r.removeprefix("bytes=").split("-")[0]) in range(a, b) for r in asked), (
            asked
        )
    if damaged:
        assert any(r.startswith(f"bytes={4 * PIECE}-") for r in asked), asked
    kept = CUT + sum(b - a for a, b in ahead[: 1 if damaged else 2])
    assert result.resumed_from == kept
    assert leftovers(tmp_path) == ["world.tar.gz"]


async def test_one_stream_rewrites_pieces_ahead_and_counts_only_the_prefix(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    big = os.urandom(3 * PIECE + 999)
    server = s3.add_server()
    backup = s3.add_backup(server, content=big)
    final = tmp_path / "world.tar.gz"
    part = bytearray(len(big))
    part[:CUT] = big[:CUT]
    part[2 * PIECE : 3 * PIECE] = big[2 * PIECE : 3 * PIECE]
    pieces = [Piece(2 * PIECE, 3 * PIECE, zlib.crc32(big[2 * PIECE : 3 * PIECE]))]
    plant(final, key_of(backup, big), bytes(part), [point(CUT, big)], md5_etag(big), pieces)
    result = await download(s3, s3_client, backup, final, segments=1)
    assert final.read_bytes() == big
    assert (result.verified, result.resumed_from, result.segments) == (True, CUT, 1)
    (only,) = await link_log(s3)
    assert only.headers["range"] == f"bytes={CUT}-"


async def test_a_journal_that_vouches_for_every_byte_needs_no_request(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The run was killed after its last checkpoint and before its rename (a long fsync):
    # the bytes are all there, and only need verifying. A "Range: bytes=<size>-" would get
    # 416 and cost an attempt (the only one, here).
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    plant(final, key_of(backup), CONTENT, [point(len(CONTENT))], md5_etag(CONTENT))
    result = await download(s3, s3_client, backup, final, max_attempts=1)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.resumed_from) == (True, len(CONTENT))
    assert s3.link_requests() == []
    assert leftovers(tmp_path) == ["world.tar.gz"]


async def test_a_complete_part_that_does_not_verify_is_fetched_again(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The journal vouches for every byte (its digest is of the file), but the backup's
    # checksum says otherwise: the bytes are dropped before any request, and fetched again
    # in the one attempt there is.
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    wrong = CONTENT[:-1] + bytes([CONTENT[-1] ^ 1])
    plant(final, key_of(backup), wrong, [point(len(wrong), wrong)], md5_etag(CONTENT))
    result = await download(s3, s3_client, backup, final, max_attempts=1)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.resumed_from, result.attempts) == (True, 0, 1)
    (only,) = await link_log(s3)
    assert "range" not in only.headers


# ------------------------------------------------------------------ journals that do not


@pytest.mark.parametrize("field", ["backup", "size", "checksum", "algorithm"])
async def test_a_journal_of_another_backup_or_version_is_ignored(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path, field: str
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    other = s3.add_backup(server, content=CONTENT)
    algorithm = "sha256" if field == "algorithm" else "sha1"
    changes: dict[str, Any] = {
        "backup": other.uuid,
        "size": len(CONTENT) + 1,
        "checksum": "sha1:" + digest(b"another archive"),
        "algorithm": "sha256",
    }
    change = {field: changes[field]}
    final = tmp_path / "world.tar.gz"
    # The checkpoint itself is right (in the journal's own algorithm): only the key differs.
    checkpoints = [point(LATER, algorithm=algorithm)]
    plant(final, key_of(backup, **change), CONTENT[:LATER], checkpoints, md5_etag(CONTENT))
    result = await download(s3, s3_client, backup, final)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.resumed_from) == (True, 0)
    (only,) = await link_log(s3)
    assert "range" not in only.headers
    assert leftovers(tmp_path) == ["world.tar.gz"]


@pytest.mark.parametrize("damage", ["flipped", "cut short"])
async def test_a_part_that_no_longer_matches_its_checkpoint_is_not_resumed(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path, damage: str
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    part = bytearray(CONTENT[:LATER])
    if damage == "flipped":
        part[CUT // 2] ^= 0x01  # changed after the checkpoint was written
    else:
        del part[CUT // 2 :]  # the checkpoint is ahead of what reached the disk
    plant(final, key_of(backup), bytes(part), [point(LATER)], md5_etag(CONTENT))
    result = await download(s3, s3_client, backup, final)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.resumed_from) == (True, 0)
    (only,) = await link_log(s3)
    assert "range" not in only.headers


@pytest.mark.parametrize("damage", ["flipped", "cut short"])
async def test_an_older_checkpoint_that_still_matches_is_resumed_from(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path, damage: str
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    part = bytearray(CONTENT[:LATER])
    if damage == "flipped":
        part[(CUT + LATER) // 2] ^= 0x01  # between the two checkpoints
    else:
        del part[(CUT + LATER) // 2 :]  # after a power loss: the newer one never hit the disk
    plant(final, key_of(backup), bytes(part), [point(CUT), point(LATER)], md5_etag(CONTENT))
    result = await download(s3, s3_client, backup, final)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.resumed_from) == (True, CUT)
    (only,) = await link_log(s3)
    assert only.headers["range"] == f"bytes={CUT}-"


def _valid_journal(uuid: str) -> dict[str, Any]:
    return {
        "version": 1,
        "backup": uuid,
        "checksum": f"sha1:{digest(CONTENT)}",
        "size": len(CONTENT),
        "algorithm": "sha1",
        "etag": md5_etag(CONTENT),
        "checkpoints": [[LATER, digest(CONTENT[:LATER])]],
    }


@pytest.mark.parametrize(
    "spoil",
    [
        lambda doc: b"\x00\xff not json at all",
        lambda doc: b"",
        lambda doc: json.dumps(doc).encode()[:-20],  # torn by a crash mid-write
        lambda doc: json.dumps({**doc, "version": 2}).encode(),
        lambda doc: json.dumps([doc]).encode(),
        lambda doc: json.dumps({**doc, "checkpoints": [[True, doc["checkpoints"][0][1]]]}).encode(),
        lambda doc: json.dumps({**doc, "checkpoints": [[-5, "00"]]}).encode(),
        lambda doc: json.dumps({**doc, "size": "6292233"}).encode(),
        lambda doc: json.dumps(doc).encode() + b" " * (64 * 1024),  # too large to be ours
    ],
    ids=[
        "binary",
        "empty",
        "torn",
        "version",
        "list",
        "bool-prefix",
        "negative-prefix",
        "string-size",
        "oversized",
    ],
)
async def test_a_journal_that_cannot_be_read_is_ignored(
    s3: FakePanel,
    s3_client: PteroClient,
    tmp_path: pathlib.Path,
    spoil: Callable[[dict[str, Any]], bytes],
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    part_of(final).write_bytes(CONTENT[:LATER])
    journal_of(final).write_bytes(spoil(_valid_journal(backup.uuid)))
    result = await download(s3, s3_client, backup, final)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.resumed_from) == (True, 0)
    (only,) = await link_log(s3)
    assert "range" not in only.headers
    assert leftovers(tmp_path) == ["world.tar.gz"]


async def test_the_well_formed_journal_of_that_parametrisation_is_resumed(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The control of the test above: unspoilt, the same document is a journal.
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    part_of(final).write_bytes(CONTENT[:LATER])
    journal_of(final).write_bytes(json.dumps(_valid_journal(backup.uuid)).encode())
    result = await download(s3, s3_client, backup, final)
    assert (result.verified, result.resumed_from) == (True, LATER)


# ------------------------------------------------------------------ the host says otherwise


async def test_a_changed_object_answers_if_range_with_200_and_the_download_restarts(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    s3.script_download(backup, DownloadFault.change_etag())  # a new version, the same bytes
    final = tmp_path / "world.tar.gz"
    plant(final, key_of(backup), CONTENT[:LATER], [point(LATER)], md5_etag(CONTENT))
    seen: list[DownloadProgress] = []
    result = await download(s3, s3_client, backup, final, progress=seen.append)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.resumed_from) == (True, 1, 0)
    (only,) = await link_log(s3)
    assert only.headers["range"] == f"bytes={LATER}-"
    assert only.headers["if-range"] == md5_etag(CONTENT)
    assert (only.status, only.bytes_sent) == (200, len(CONTENT))
    # Progress went back to zero, honestly, when the kept bytes were dropped.
    done = [p.bytes_done for p in seen]
    assert done[0] == LATER
    assert 0 in done
    assert done[-1] == len(CONTENT)


async def test_a_wings_host_answers_a_resume_with_200_and_the_download_restarts(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    final = tmp_path / "world.tar.gz"
    plant(final, key_of(backup), CONTENT[:LATER], [point(LATER)], None)
    result = await download(panel, client, backup, final)
    assert final.read_bytes() == CONTENT
    assert (result.verified, result.attempts, result.resumed_from) == (True, 1, 0)
    (only,) = await link_log(panel)
    assert only.headers["range"] == f"bytes={LATER}-"
    assert "if-range" not in only.headers  # Wings sends no ETag to name
    assert only.status == 200
    assert leftovers(tmp_path) == ["world.tar.gz"]


# ------------------------------------------------------------------ the journal file itself


class JournalWatch:
    """Polls a journal path while a download runs; keeps what it found there."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.kinds: set[str] = set()

    def look(self) -> str | None:
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return None
        kind = "symlink" if self.path.is_symlink() else "file" if info.st_size else "empty"
        self.kinds.add(kind)
        return kind

    async def run(self) -> None:
        while True:
            self.look()
            await anyio.sleep(0.005)


@contextlib.asynccontextmanager
async def watching(path: pathlib.Path) -> AsyncIterator[JournalWatch]:
    watch = JournalWatch(path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        try:
            yield watch
        finally:
            tg.cancel_scope.cancel()


@pytest.mark.usefixtures("eager_journal")
async def test_a_symlink_at_the_journal_path_is_never_written_through(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "out"
    dest.mkdir()
    final = dest / "world.tar.gz"
    journal_of(final).symlink_to(victim)
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    # 24 MiB/s: a quarter of a second, long enough to see the journal being written.
    async with RangeHost(CONTENT, rate=24 * MiB) as host, watching(journal_of(final)) as watch:
        backup.link_factory = host.new_link
        result = await download(panel, client, backup, final, segments=1)
    assert result.verified
    assert victim.read_bytes() == b"precious"
    assert "file" in watch.kinds, "a journal was written during the download"
    assert leftovers(dest) == ["world.tar.gz"]


async def test_a_symlink_at_the_journal_path_is_never_read_through(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    elsewhere = tmp_path / "elsewhere" / "world.tar.gz"
    elsewhere.parent.mkdir()
    plant(elsewhere, key_of(backup), CONTENT[:LATER], [point(LATER)], md5_etag(CONTENT))
    kept = journal_of(elsewhere).read_bytes()
    final = tmp_path / "world.tar.gz"
    part_of(final).write_bytes(CONTENT[:LATER])
    journal_of(final).symlink_to(journal_of(elsewhere))
    result = await download(s3, s3_client, backup, final)
    assert (result.verified, result.resumed_from) == (True, 0)
    assert journal_of(elsewhere).read_bytes() == kept
    assert leftovers(tmp_path) == ["elsewhere", "world.tar.gz"]


async def test_a_symlink_at_the_part_path_is_never_adopted(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The journal is right, and the bytes it vouches for are behind a symlink: they are not
    # read as the .part, and the file behind it is left alone.
    server = s3.add_server()
    backup = s3.add_backup(server, content=CONTENT)
    target = tmp_path / "target"
    target.write_bytes(CONTENT[:LATER])
    final = tmp_path / "world.tar.gz"
    plant(final, key_of(backup), CONTENT[:LATER], [point(LATER)], md5_etag(CONTENT))
    part_of(final).unlink()
    part_of(final).symlink_to(target)
    result = await download(s3, s3_client, backup, final)
    assert (result.verified, result.resumed_from) == (True, 0)
    assert target.read_bytes() == CONTENT[:LATER]
    assert leftovers(tmp_path) == ["target", "world.tar.gz"]


@pytest.mark.usefixtures("eager_journal")
async def test_the_journal_is_removed_after_a_success(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
) -> None:
    final = tmp_path / "world.tar.gz"
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    async with RangeHost(CONTENT, rate=24 * MiB) as host, watching(journal_of(final)) as watch:
        backup.link_factory = host.new_link
        result = await download(panel, client, backup, final, segments=1)
    assert result.verified
    assert "file" in watch.kinds
    assert leftovers(tmp_path) == ["world.tar.gz"]


@pytest.mark.usefixtures("eager_journal")
async def test_the_journal_is_removed_after_a_failure(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
) -> None:
    final = tmp_path / "world.tar.gz"
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    async with RangeHost(CONTENT) as host, watching(journal_of(final)) as watch:
        host.fault = lambda seen: Fault(drop_after=MiB)  # every GET: a MiB, then nothing
        backup.link_factory = host.new_link
        with anyio.fail_after(10), pytest.raises(DownloadError) as info:
            await client.backups(server.identifier).download(backup.uuid, final, max_attempts=3)
    assert info.value.attempts == 3
    # Each attempt resumed where the last one broke, with the journal in step.
    assert [s.range for s in host.seen] == [None, f"bytes={MiB}-", f"bytes={2 * MiB}-"]
    assert "file" in watch.kinds
    assert leftovers(tmp_path) == []


@pytest.mark.usefixtures("eager_journal")
async def test_the_journal_is_removed_after_a_cancellation(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
) -> None:
    final = tmp_path / "world.tar.gz"
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    async with RangeHost(CONTENT, rate=8 * MiB) as host:
        backup.link_factory = host.new_link
        async with anyio.create_task_group() as tg:

            async def fetch() -> None:
                await client.backups(server.identifier).download(backup.uuid, final, segments=1)

            tg.start_soon(fetch)
            await eventually(lambda: JournalWatch(journal_of(final)).look() == "file", within=5)
            tg.cancel_scope.cancel()
    assert leftovers(tmp_path) == []


@pytest.mark.usefixtures("eager_journal")
async def test_a_journal_that_cannot_be_written_costs_the_resume_not_the_download(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    final = tmp_path / "world.tar.gz"
    journal_of(final).mkdir()  # something in the way that is not ours to remove
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    async with RangeHost(CONTENT) as host:
        backup.link_factory = host.new_link
        result = await download(panel, client, backup, final, segments=1)
    assert result.verified
    assert final.read_bytes() == CONTENT
    assert "no resume after a crash" in caplog.text
    assert leftovers(tmp_path) == ["world.tar.gz", "world.tar.gz.journal"]
    assert journal_of(final).is_dir()


@pytest.mark.usefixtures("eager_journal")
async def test_a_resumed_run_keeps_the_checkpoint_it_resumed_from(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
) -> None:
    # Should the resumed run die before its own first checkpoint, the next run must still
    # find the one this run resumed from.
    final = tmp_path / "world.tar.gz"
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    plant(final, key_of(backup), CONTENT[:LATER], [point(CUT), point(LATER)], None)
    seen: list[list[list[Any]]] = []

    def look(progress: DownloadProgress) -> None:
        with contextlib.suppress(OSError, ValueError):
            seen.append(json.loads(journal_of(final).read_bytes())["checkpoints"])

    async with RangeHost(CONTENT, rate=8 * MiB) as host:
        backup.link_factory = host.new_link
        result = await download(panel, client, backup, final, segments=1, progress=look)
    assert result.resumed_from == LATER
    assert result.verified
    assert seen, "the journal was never seen while the download ran"
    # The planted journal first; then this run's: the checkpoint it resumed from, and its own.
    assert all([LATER, point(LATER).digest] in points for points in seen), seen
    assert any(points[0][0] == LATER and len(points) > 1 for points in seen), seen


async def test_download_many_refuses_bad_segments_before_anything(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT[:1000])
    for bad in (0, 33, "many", True):
        with pytest.raises(InvalidArgumentError, match="segments"):
            await client.download_many(
                [(server.identifier, backup.uuid)],
                tmp_path,
                segments=bad,  # type: ignore[arg-type]
            )
    assert not panel.requests
    assert not list(tmp_path.iterdir())


async def test_pieces_that_arrive_while_the_frontier_waits_are_journaled(
    s3: FakePanel, s3_client: PteroClient, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The piece right after the first stalls; the others arrive meanwhile. A kill now must not
    # lose them: the journal records them while the hash waits.
    monkeypatch.setattr(_download, "JOURNAL_INTERVAL", 0.2)
    big = os.urandom(5 * PIECE + 999)
    server = s3.add_server()
    backup = s3.add_backup(server, content=big)
    s3.script_download(backup, None, DownloadFault.stall(0, seconds=2))
    final = tmp_path / "world.tar.gz"
    recorded: list[list[int]] = []

    async def watch() -> None:
        while not recorded:
            with contextlib.suppress(OSError, ValueError, KeyError):
                recorded.extend(json.loads(journal_of(final).read_bytes())["pieces"])
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        result = await download(s3, s3_client, backup, final, segments=4, read_timeout=5)
    assert result.verified
    assert final.read_bytes() == big
    starts = sorted(start for start, _, _ in recorded)
    assert starts, "no piece was journaled while the frontier waited"
    assert starts[0] >= 2 * PIECE, recorded
    for start, end, crc in recorded:
        assert zlib.crc32(big[start:end]) == crc


async def test_a_killed_segmented_download_keeps_its_pieces(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    big = os.urandom(12 * PIECE + 5)
    final = tmp_path / "world.tar.gz"
    # 16 MiB/s per connection, four connections: the pieces after the first arrive together.
    async with RangeHost(big, rate=16 * MiB) as host:
        server = panel.add_server()
        backup = panel.add_backup(server, content=big)
        backup.link_factory = host.new_link
        env = {**os.environ, "PANEL_URL": panel.url, "PANEL_KEY": panel.api_key}
        argv = [sys.executable, "-c", CRASHING_RUN, server.identifier, backup.uuid, str(final), "4"]
        with open(tmp_path / "stderr", "wb") as stderr:
            process = await anyio.open_process(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
            )
        left: dict[str, Any] = {}
        async with process:
            try:
                with anyio.fail_after(20):
                    while not left.get("pieces"):
                        await anyio.sleep(0.02)
                        with contextlib.suppress(OSError, ValueError):
                            left = json.loads(journal_of(final).read_bytes())
                process.send_signal(signal.SIGKILL)
                with anyio.fail_after(5):
                    await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
        left = json.loads(journal_of(final).read_bytes())
        prefix = left["checkpoints"][-1][0]
        ahead = sum(end - start for start, end, _ in left["pieces"])
        assert ahead > 0
        host.rate = None
        host.seen.clear()
        result = await download(panel, client, backup, final, segments=4)
    assert result.path.read_bytes() == big
    assert result.verified
    assert result.resumed_from == prefix + ahead
    for start, end, _ in left["pieces"]:
        assert not any(
            s.range and start <= int(s.range.removeprefix("bytes=").split("-")[0]) < end
            for s in host.seen
        ), (start, end, [s.range for s in host.seen])
