"""The streaming downloader: signed link → ``.part`` + hash → verify → fsync → atomic rename.

One download per final path at a time, across tasks and processes (``_filelock``): the
second waits, then finds the verified file. Each attempt asks the panel for a fresh link
(Wings links are single-use and short-lived), streams the body with no panel header and no
decompression, and hands batches of at least ``BATCH`` bytes to two worker threads, one
hashing and one writing, while the event loop reads the next batch. A body that runs past the
announced size, or that arrives slower than ``min_rate``, fails the attempt. A failed attempt
resumes with ``Range`` where the link host has shown it honours ranges, and restarts from
zero (with a fresh hash) where it answers 200. Before the rename, the ``.part`` at the path
must still be the file that was written and hashed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import pathlib
import stat
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeVar, Union

import aiohttp
import anyio
import anyio.abc

from . import _fs
from ._errors import (
    MAX_HISTORY_ENTRY,
    BackupFailedError,
    BackupNotCompletedError,
    ChecksumMismatchError,
    DestinationExistsError,
    DownloadError,
    InvalidArgumentError,
    PteroError,
    bound_text,
)
from ._filelock import LOCK_SUFFIX, PathLock
from ._journal import (
    JOURNAL_BYTES,
    JOURNAL_INTERVAL,
    JOURNAL_SUFFIX,
    Checkpoint,
    Found,
    Journal,
    Piece,
    ResumeKey,
)
from ._linkget import (
    _AttemptFailed,
    _describe,
    _Pace,
    _retry_delay,
    _without_link_secret,
    check_length,
    check_resumed,
    link_headers,
    link_timeout,
    refused,
)
from ._models import Backup, BackupState, Checksum, DownloadProgress, DownloadResult
from ._sansio import backup_uuid, check_int, check_number
from ._segments import (
    AUTO_MIN_BYTES,
    AUTO_ONE_STREAM_RATE,
    AUTO_STREAMS,
    PIECE,
    NoRanges,
    PieceGaveUp,
    SegmentedFetch,
)

if sys.version_info < (3, 11):  # pragma: no cover - depends on the interpreter
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "BATCH",
    "DEFAULT_MIN_RATE",
    "BackupSource",
    "LinkSession",
    "ProgressCallback",
    "Segments",
    "check_segments",
    "download_backup",
    "hash_file",
    "resolve_completed",
]

logger = logging.getLogger("ptero_backups_async")

ProgressCallback = Callable[[DownloadProgress], object]
#: ``download(segments=...)``: ``"auto"``, or how many ranged streams at most (1: one stream).
Segments = Union[Literal["auto"], int]  # noqa: UP007 - evaluated at runtime on Python 3.10
#: Hands out the session for signed links (no panel header, cookie or decompression).
LinkSession = Callable[[], aiohttp.ClientSession]


class BackupSource(Protocol):
    """What the downloader needs of the panel: the backup's record and a fresh link."""

    @property
    def server(self) -> str:
        """The server's id, for messages."""

    async def get(self, backup_or_uuid: Backup | str) -> Backup:
        """The backup as the panel sees it now."""

    async def download_url(self, backup_or_uuid: Backup | str) -> str:
        """A fresh signed link to the archive."""


T = TypeVar("T")

#: Bytes handed to the worker thread at once: large enough that the thread hop is noise.
BATCH = 4 * 1024 * 1024
#: How often progress callbacks run at most (the last call always comes).
PROGRESS_INTERVAL = 0.1
#: Bytes read at once when hashing an existing file.
HASH_BLOCK = 4 * 1024 * 1024
#: The longest file name most filesystems take, in bytes.
NAME_MAX = 255
#: ``min_rate`` by default: an attempt averaging less than 1 KiB/s over ``read_timeout``
#: seconds is given up (a trickle that never stalls would otherwise take hours).
DEFAULT_MIN_RATE = 1024.0
#: The most ranged streams one download may open.
MAX_SEGMENTS = 32


def _new_hash(algorithm: str) -> hashlib._Hash:
    return hashlib.new(algorithm)


def hash_file(path: pathlib.Path, algorithm: str) -> Checksum:
    """The checksum of a file on disk (blocking: run it in a thread)."""
    digest = _new_hash(algorithm)
    with open(path, "rb", buffering=0) as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return Checksum(algorithm, digest.hexdigest())


class _Sink:
    """The ``.part`` file and the running hash. Every method blocks: call it from a thread.

    ``size`` bytes from the start are written and hashed (one stream writes at ``size``;
    segments write anywhere with ``write_at`` and move ``size`` as the hash catches up).
    """

    def __init__(self, path: pathlib.Path, algorithm: str, journal: Journal | None) -> None:
        self.path = path
        self.algorithm = algorithm
        self.journal = journal
        self.digest = _new_hash(algorithm)
        self.size = 0
        self.hashed = 0
        self.etag: str | None = None  # what the journal records with its checkpoints
        self.fd: int | None = None
        self.identity: tuple[int, int] | None = None
        self._due = time.monotonic() + JOURNAL_INTERVAL  # the next checkpoint, by time
        self._next = JOURNAL_BYTES  # or by bytes hashed, whichever comes first
        self._sync_due = time.monotonic() + JOURNAL_INTERVAL  # the next fsync of the journal
        self._pending: Checkpoint | None = None
        self._buffer: bytearray | None = None  # for hash_back
        self._lock = threading.Lock()  # _pending is set by the hash thread, taken by another
        #: Checkpoints only where a resume can use them: the host has shown it honours ranges.
        self.resumable = False
        #: Segments: the pieces written in full ahead of the prefix, for the journal.
        self.ahead: Callable[[], Sequence[Piece]] | None = None

    def open(self) -> None:
        # The caller holds the path's lock, so a .part already there belongs to no running
        # download: a stale one (from a crash, not resumed) goes; a symlink there is removed,
        # not followed.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(self.path, flags, 0o644)
        info = os.fstat(self.fd)
        self.identity = (info.st_dev, info.st_ino)

    def adopt(self, found: Found) -> list[Piece]:
        """Keep the longest prefix of an existing ``.part`` that a checkpoint vouches for.

        Re-hashes the file up to the last checkpoint, then checks the CRC of each piece
        recorded past the prefix kept. Sets ``size`` to the prefix kept (0: none, and nothing
        is open) and returns the pieces that still match.
        """
        checkpoints = found.checkpoints
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return []
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return []
        digest = _new_hash(self.algorithm)
        kept: tuple[int, hashlib._Hash] | None = None
        done = 0
        for point in checkpoints:
            while done < point.prefix:
                block = os.pread(fd, min(HASH_BLOCK, point.prefix - done), done)
                if not block:
                    break
                digest.update(block)
                done += len(block)
            if done == point.prefix and digest.hexdigest() == point.digest:
                kept = (done, digest.copy())
        if kept is None:
            os.close(fd)
            return []
        self.fd = fd
        self.identity = (info.st_dev, info.st_ino)
        self.size = self.hashed = kept[0]
        self.digest = kept[1]
        pieces = []
        for piece in found.pieces:
            if piece.start < self.size or piece.end > info.st_size:
                continue
            blocks = self.read_at(piece.start, piece.end - piece.start)
            crc = 0
            for block in blocks:
                crc = zlib.crc32(block, crc)
            if crc != piece.crc:
                continue
            if piece.start == self.size:
                # Right after the prefix: it joins it (its bytes are at hand for the hash).
                for block in blocks:
                    self.digest.update(block)
                self.size = self.hashed = piece.end
            else:
                pieces.append(piece)
        self._next = self.size + JOURNAL_BYTES
        os.ftruncate(fd, max([self.size, *(p.end for p in pieces)]))
        return pieces

    def _still_there(self) -> bool:
        """Whether the file at ``path`` is still the one this sink opened."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (info.st_dev, info.st_ino) == self.identity

    def hash(self, chunks: list[bytes]) -> None:
        digest = self.digest
        for chunk in chunks:
            digest.update(chunk)
        self.hashed += sum(map(len, chunks))
        self._mark()

    def _mark(self) -> None:
        """Take a checkpoint of the hash if one is due (on the thread that hashes)."""
        digest = self.digest
        if self.journal is not None and self.resumable:
            now = time.monotonic()
            if now >= self._due or self.hashed >= self._next:
                self._due = now + JOURNAL_INTERVAL
                self._next = self.hashed + JOURNAL_BYTES
                with self._lock:
                    self._pending = Checkpoint(self.hashed, digest.copy().hexdigest())

    def checkpoint(self, written: int) -> None:
        """Record the newest checkpoint in the journal once ``written`` bytes cover it."""
        with self._lock:
            pending = self._pending
            journal = self.journal
            if pending is None or pending.prefix > written or journal is None:
                return
            self._pending = None
        # Every checkpoint survives kill -9 (the page cache keeps it); one every
        # JOURNAL_INTERVAL is fsynced, and survives a power loss too.
        now = time.monotonic()
        durable = now >= self._sync_due
        if durable:
            self._sync_due = now + JOURNAL_INTERVAL
        pieces = self.ahead() if self.ahead is not None else ()
        try:
            journal.save(pending, self.etag, durable=durable, pieces=pieces)
        except OSError as exc:
            # The journal only saves time after a crash: a download goes on without it.
            logger.warning("%s cannot be written (%s); no resume after a crash", exc.filename, exc)
            self.journal = None
            journal.remove()

    def save_now(self) -> None:
        """Segments, while no hash runs: a checkpoint at the frontier, with the pieces ahead."""
        if self.journal is None or not self.resumable or not self.hashed:
            return
        with self._lock:
            self._pending = Checkpoint(self.hashed, self.digest.copy().hexdigest())
        self.checkpoint(self.size)

    def write(self, chunks: list[bytes]) -> None:
        self.write_at(chunks, self.size)
        self.size += sum(map(len, chunks))
        self.checkpoint(self.size)

    def write_at(self, chunks: list[bytes], offset: int) -> None:
        assert self.fd is not None
        total = sum(map(len, chunks))
        written = os.pwritev(self.fd, chunks, offset)
        if written < total:  # rare on regular files, but allowed
            rest = memoryview(b"".join(chunks))[written:]
            while rest:
                n = os.pwrite(self.fd, rest, offset + total - len(rest))
                rest = rest[n:]

    def read_at(self, offset: int, size: int) -> list[bytes]:
        assert self.fd is not None
        blocks = []
        end = offset + size
        while offset < end:
            block = os.pread(self.fd, min(HASH_BLOCK, end - offset), offset)
            if not block:
                raise OSError(errno.EIO, f"{self.path} is shorter than what was written to it")
            blocks.append(block)
            offset += len(block)
        return blocks

    def hash_back(self, offset: int, size: int) -> None:
        """Segments: hash bytes already written, read back from the file (the hash frontier
        is at ``offset``), through one reused buffer."""
        assert self.fd is not None
        if self._buffer is None:
            self._buffer = bytearray(HASH_BLOCK)
        view = memoryview(self._buffer)
        end = offset + size
        digest = self.digest
        at = offset
        while at < end:
            n = os.preadv(self.fd, [view[: min(HASH_BLOCK, end - at)]], at)
            if not n:
                raise OSError(errno.EIO, f"{self.path} is shorter than what was written to it")
            digest.update(view[:n])
            at += n
        self.hashed += size
        self._mark()
        self.size = end
        self.checkpoint(end)

    def hash_in_order(self, chunks: list[bytes], upto: int) -> None:
        """Segments: hash the batch that ends at ``upto``; everything below is written."""
        self.hash(chunks)
        self.size = upto
        self.checkpoint(upto)

    def truncate(self) -> None:
        """Drop what lies past ``size`` (written ahead of the hash by segments)."""
        assert self.fd is not None
        os.ftruncate(self.fd, self.size)

    def restart(self) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        self.digest = _new_hash(self.algorithm)
        self.size = self.hashed = 0
        self._next = JOURNAL_BYTES
        self._pending = None
        if self.journal is not None:
            self.journal.forget()

    def checksum(self) -> Checksum:
        return Checksum(self.algorithm, self.digest.hexdigest())

    def finish(self, final: pathlib.Path) -> None:
        assert self.fd is not None
        os.fsync(self.fd)
        if not self._still_there():
            # Something that ignores the lock replaced or removed the .part: what sits at the
            # path now is not what was hashed, and must not become the final file.
            raise _PartReplaced(self.path)
        os.close(self.fd)
        self.fd = None
        os.replace(self.path, final)
        _fsync_dir(final.parent)
        if self.journal is not None:
            self.journal.remove()

    def discard(self) -> None:
        try:
            if self.journal is not None:
                self.journal.remove()
            if self.identity is not None and self._still_there():
                os.unlink(self.path)  # only our own file: never another writer's
        finally:
            if self.fd is not None:
                try:
                    os.close(self.fd)
                finally:
                    self.fd = None


class _PartReplaced(Exception):
    """The ``.part`` at the path is no longer the file the download wrote."""

    def __init__(self, path: pathlib.Path) -> None:
        super().__init__(path)
        self.path = path


def _fsync_dir(directory: pathlib.Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is done regardless
    finally:
        os.close(fd)


class _Progress:
    """Rate-limited progress reports; the final one always goes out.

    ``advance`` only counts (it runs per chunk); a ticker calls ``flush`` every
    ``PROGRESS_INTERVAL`` while a body streams, so a bar also moves up to the last byte
    before a stall.
    """

    def __init__(
        self, callback: ProgressCallback | None, server: str, uuid: str, total: int | None
    ) -> None:
        self.callback = callback
        self.server = server
        self.uuid = uuid
        self.total = total
        self.done = 0
        self._reported: int | None = None

    def advance(self, n: int) -> None:
        self.done += n

    def flush(self) -> None:
        if self.callback is not None and self.done != self._reported:
            self._report()

    def reset(self, done: int) -> None:
        self.done = done
        if self.callback is not None:
            self._report()

    def final(self) -> None:
        if self.callback is not None:
            self._report()

    def _report(self) -> None:
        assert self.callback is not None
        self._reported = self.done
        self.callback(DownloadProgress(self.server, self.uuid, self.done, self.total))


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group.exceptions[0]


def _names_a_directory(raw: str) -> bool:
    """Whether a destination string ends in a separator (``"backups/"``): a directory."""
    return raw.endswith(os.sep) or (os.altsep is not None and raw.endswith(os.altsep))


async def _destination(dest: str | os.PathLike[str], uuid: str) -> pathlib.Path:
    """The final path for ``dest``.

    An existing directory, or a path ending in a separator (created later), receives
    ``<uuid>.tar.gz``; anything else is the file path itself.
    """
    raw = os.fspath(dest)
    if not isinstance(raw, str) or not raw or "\x00" in raw:
        raise InvalidArgumentError(f"invalid destination {raw!r}")
    try:
        encoded = os.fsencode(raw)
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"destination {raw!r} cannot be encoded for this filesystem"
        ) from None
    if any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise InvalidArgumentError(f"destination {raw[:60]!r}… has a name over {NAME_MAX} bytes")
    path = pathlib.Path(os.path.expanduser(raw))  # noqa: ASYNC240 - no I/O: reads $HOME
    if _names_a_directory(raw) or await _fs.is_dir(path):
        # The name comes from the validated UUID, never from a header or the backup's name.
        return path / f"{uuid}.tar.gz"
    longest_suffix = max(len(".part"), len(LOCK_SUFFIX), len(JOURNAL_SUFFIX))
    if len(path.name.encode()) + longest_suffix > NAME_MAX:
        raise InvalidArgumentError(f"destination file name {path.name[:60]!r}… is too long")
    return path


class _Download:
    """One ``download()`` call: its state across attempts."""

    def __init__(
        self,
        source: BackupSource,
        links: LinkSession,
        backup: Backup,
        final: pathlib.Path,
        *,
        verify: bool,
        progress: ProgressCallback | None,
        read_timeout: float,
        max_attempts: int,
        min_rate: float | None,
        segments: Segments,
        connections: anyio.CapacityLimiter | None,
    ) -> None:
        self.source = source
        self.server = source.server
        self.links = links
        self.backup = backup
        self.final = final
        self.part = final.with_name(final.name + ".part")
        self.expected = backup.checksum if verify else None
        self.algorithm = backup.checksum.algorithm if backup.checksum else "sha256"
        self.total: int | None = backup.bytes or None
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.min_rate = min_rate
        self.progress = _Progress(progress, source.server, backup.uuid, self.total)
        self.history: list[str] = []
        self.ranges = False  # the link host has shown it honours Range
        self.etag: str | None = None
        self.mismatch_retried = False
        self.segments = segments
        self.connections = connections
        self.streams = 1  # the most streams one attempt used
        # False once a piece came back as anything but its range: the rest is one stream.
        self.split_ok = True
        self.resumed_from = 0
        self.present: list[Piece] = []  # pieces an interrupted run wrote past its prefix
        self.journal = Journal(
            final, ResumeKey(backup.uuid, backup.checksum_raw, self.total, self.algorithm)
        )

    def _fail(self, message: str, exc: BaseException | None = None) -> DownloadError:
        error = DownloadError(
            f"download of backup {self.backup.uuid} (server {self.server}) to "
            f"{self.final} failed: {message}",
            attempts=len(self.history),
            history=tuple(self.history),
        )
        error.__cause__ = exc
        return error

    async def run(self) -> DownloadResult:
        sink = _Sink(self.part, self.algorithm, self.journal)
        try:
            await self._resume(sink)
            if sink.fd is None:
                await self._thread(sink.open)
            while True:
                if len(self.history) >= self.max_attempts:
                    raise self._fail(
                        f"gave up after {self.max_attempts} attempts; the last: {self.history[-1]}"
                    )
                try:
                    await self._attempt(sink)
                except _AttemptFailed as exc:
                    # Bounded where it is made: the log line below repeats it on every attempt.
                    self.history.append(bound_text(str(exc), MAX_HISTORY_ENTRY))
                    # Log text, not the exception: its traceback holds the stream's buffers.
                    logger.info(
                        "backup %s: attempt %d failed: %s",
                        self.backup.uuid,
                        len(self.history),
                        self.history[-1],
                    )
                    if len(self.history) < self.max_attempts:
                        await anyio.sleep(_retry_delay(len(self.history), exc.retry_after))
                    continue
                actual = sink.checksum()
                if self.expected is not None and actual != self.expected:
                    self.history.append(f"checksum mismatch: got {actual}")
                    if self.mismatch_retried or len(self.history) >= self.max_attempts:
                        raise ChecksumMismatchError(
                            f"backup {self.backup.uuid} (server {self.server}): the "
                            f"downloaded bytes hash to {actual}, the panel announced "
                            f"{self.expected}",
                            expected=self.expected,
                            actual=actual,
                            attempts=len(self.history),
                            history=tuple(self.history),
                        )
                    self.mismatch_retried = True
                    await self._restart(sink)
                    continue
                self.history.append("ok")
                try:
                    await self._thread(sink.finish, self.final)
                except _PartReplaced as exc:
                    raise self._fail(
                        f"{exc.path} was replaced or removed by another program during the "
                        "download; the file there is not the one that was verified, so nothing "
                        "was renamed"
                    ) from None
                self.progress.final()
                return DownloadResult(
                    path=self.final,
                    bytes=sink.size,
                    checksum=actual,
                    verified=self.expected is not None,
                    attempts=len(self.history),
                    segments=self.streams,
                    resumed_from=self.resumed_from,
                )
        finally:
            # Shielded: it must finish even while this task is being cancelled.
            await _fs.run_shielded(sink.discard)

    async def _thread(self, func: Callable[..., T], *args: object) -> T:
        try:
            return await _fs.run(func, *args)
        except OSError as exc:
            raise self._fail(f"{exc.strerror or exc} ({self.part})", exc) from exc

    async def _resume(self, sink: _Sink) -> None:
        """Keep what an interrupted run left, if its journal vouches for it."""
        found = await self._thread(self.journal.load)
        if found is None:
            return
        pieces = await self._thread(sink.adopt, found) if found.checkpoints else []
        kept = sink.size
        if kept == self.total and self.expected is not None and sink.checksum() != self.expected:
            # Every byte is there, and they are not the backup: fetched again from zero, with
            # the retry after a mismatch still in hand.
            await self._thread(sink.restart)
            kept = 0
        if not kept:
            logger.info("backup %s: the earlier run's .part did not verify", self.backup.uuid)
            return
        logger.info("backup %s: %d bytes kept from an earlier run", self.backup.uuid, kept)
        self.resumed_from = kept
        # The checkpoint that vouched for these bytes stays in the journal: should this run
        # die too before its first checkpoint reaches the disk, the next one starts from it.
        self.journal.checkpoints = [c for c in found.checkpoints if c.prefix <= kept][-1:]
        # Pieces written ahead of the prefix are kept for segments; one stream rewrites them.
        self.present = pieces
        self.ranges = sink.resumable = True  # to be shown: a host that ignores Range sends 200
        self.etag = sink.etag = found.etag
        self.progress.reset(kept)

    async def _restart(self, sink: _Sink) -> None:
        await self._thread(sink.restart)
        self.etag = sink.etag = None
        self.resumed_from = 0
        self.present = []
        self.progress.reset(0)

    async def _attempt(self, sink: _Sink) -> None:
        if self.resumed_from and sink.size == self.total:
            # An earlier run wrote every byte and died before its rename: there is nothing to
            # ask for ("Range: bytes=<size>-" is a 416), only to verify.
            return
        # Errors of the panel API (the backup vanished, the key was revoked) propagate as is.
        url = await self.source.download_url(self.backup.uuid)
        offset = sink.size
        if offset and not self.ranges:
            await self._restart(sink)
            offset = 0
        headers = link_headers(offset, etag=self.etag) if offset else link_headers()
        if self.progress.done != offset:
            # A failed attempt counted bytes it never wrote (cut off past the size, too slow).
            self.progress.reset(offset)
        session = self.links()
        timeout = link_timeout(self.read_timeout)
        try:
            async with session.get(url, headers=headers, timeout=timeout) as resp:
                offset = await self._check_response(resp, sink, offset)
                streams = self._streams(offset)
                # With segments, this answer carries the first piece and shows how fast one
                # stream runs; the rest comes in ranged pieces unless one stream keeps up.
                split = await self._stream(resp, sink, split_at=offset + PIECE, streams=streams)
                if split:
                    resp.close()
                    await self._segmented(url, sink, streams)
        except aiohttp.ClientSSLError as exc:
            # A certificate that fails now fails on every fresh link too.
            raise self._fail(f"TLS with the link host failed: {exc}", exc) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            text = _describe(exc, sink.size, self.total)
            raise _AttemptFailed(_without_link_secret(text, url)) from exc
        if self.total is not None and sink.size != self.total:
            raise _AttemptFailed(f"the body ended after {sink.size} of {self.total} bytes")

    async def _check_response(self, resp: aiohttp.ClientResponse, sink: _Sink, offset: int) -> int:
        if resp.status == 200:
            if offset:
                logger.info("backup %s: link host ignored Range; restarting", self.backup.uuid)
                await self._restart(sink)
                offset = 0
            self.ranges = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
            sink.resumable = self.ranges
            self.etag = sink.etag = resp.headers.get("ETag")
            check_length(resp.content_length, self.total)
            if self.total is None and resp.content_length is not None:
                self.total = self.progress.total = resp.content_length
            return offset
        if resp.status == 206 and offset:
            try:
                check_resumed(resp, offset, self.total, self.etag)
            except _AttemptFailed:
                self.ranges = False  # the next attempt starts from zero
                raise
            check_length(resp.content_length, self.total and self.total - offset)
            self.progress.reset(offset)
            return offset
        self.ranges = self.ranges and resp.status != 416
        raise refused(resp)

    def _streams(self, offset: int) -> int:
        """How many ranged streams to fetch the rest with (1: this answer alone)."""
        if self.segments == 1 or not self.split_ok or not self.ranges or self.total is None:
            return 1
        rest = self.total - offset
        if self.segments == "auto":
            return AUTO_STREAMS if rest >= AUTO_MIN_BYTES else 1
        # The first piece comes on this answer; splitting pays from two pieces after it.
        return self.segments if rest > 2 * PIECE else 1

    async def _segmented(self, url: str, sink: _Sink, streams: int) -> None:
        assert self.total is not None
        segments = SegmentedFetch(
            uuid=self.backup.uuid,
            url=url,
            fresh_url=lambda: self.source.download_url(self.backup.uuid),
            session=self.links(),
            start=sink.size,
            end=self.total,
            etag=self.etag,
            streams=streams,
            max_attempts=self.max_attempts,
            read_timeout=self.read_timeout,
            min_rate=self.min_rate,
            write_at=sink.write_at,
            hash_back=sink.hash_back,
            hash_step=sink.hash_in_order,
            advance=self.progress.advance,
            run=self._thread,
            connections=self.connections,
            present=[p for p in self.present if p.start >= sink.size],
            idle=sink.save_now,
            idle_every=max(JOURNAL_INTERVAL, 0.05),
        )
        # The pieces left by an earlier run are used now, or lost with this attempt's failure.
        self.present = []
        sink.ahead = segments.ahead
        try:
            async with anyio.create_task_group() as tg:
                ticking = self._ticker(tg)
                try:
                    await segments.run_all()
                finally:
                    ticking.cancel()
        except BaseExceptionGroup as group:
            first = _first_error(group)
            if isinstance(first, NoRanges):
                # The next attempt starts over as one stream: a host that got one piece wrong
                # (or whose object changed) would get the next segmented attempt wrong too.
                self.split_ok = False
                self.ranges = first.ranges_work
                raise _AttemptFailed(str(first)) from None
            if isinstance(first, PieceGaveUp):
                raise self._fail(f"{first} (after {len(segments.history)} piece retries)") from None
            raise first from first.__cause__
        else:
            self.resumed_from += segments.reused
        finally:
            sink.ahead = None
            self.streams = max(self.streams, segments.used)
            if sink.size < self.total:
                # Bytes written ahead of the hash are dropped: the next attempt asks for them.
                await _fs.run_shielded(sink.truncate)
                self.progress.reset(sink.size)

    def _ticker(self, tg: anyio.abc.TaskGroup) -> anyio.CancelScope:
        """Progress flushed every ``PROGRESS_INTERVAL`` while a body streams."""
        scope = anyio.CancelScope()

        async def tick() -> None:
            with scope:
                while True:
                    self.progress.flush()
                    await anyio.sleep(PROGRESS_INTERVAL)

        if self.progress.callback is not None:
            tg.start_soon(tick)
        return scope

    def _one_stream_keeps_up(self, received: int, started: float) -> bool:
        if self.segments != "auto":
            return False
        rate = received / max(time.monotonic() - started, 1e-6)
        if rate < AUTO_ONE_STREAM_RATE:
            return False
        logger.debug(
            "backup %s: one stream runs at %.0f MiB/s: no segments",
            self.backup.uuid,
            rate / 2**20,
        )
        return True

    async def _stream(
        self, resp: aiohttp.ClientResponse, sink: _Sink, *, split_at: int, streams: int
    ) -> bool:
        """The body into the sink; True if it stopped at ``split_at`` to go on in segments.

        With ``streams`` > 1, the body is cut at ``split_at`` (an offset in the file) unless
        ``segments="auto"`` and one stream delivered its bytes up to there fast enough.
        """
        started = time.monotonic()
        probe: int | None = split_at - sink.size if streams > 1 else None
        split = False
        # Two workers, each on its own thread: one hashes, one writes. The stream then runs at
        # the slower of the two rather than at their sum, while the loop reads ahead.
        hash_send, hash_receive = anyio.create_memory_object_stream[list[bytes]](1)
        write_send, write_receive = anyio.create_memory_object_stream[list[bytes]](1)

        async def work(
            receive: anyio.abc.ObjectReceiveStream[list[bytes]],
            step: Callable[[list[bytes]], None],
        ) -> None:
            async with receive:
                async for batch in receive:
                    await self._thread(step, batch)

        content = resp.content
        advance = self.progress.advance
        # The announced size is a ceiling: bytes past it are never written.
        room = None if self.total is None else self.total - sink.size
        pace = _Pace(self.min_rate, self.read_timeout)
        broken: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(work, hash_receive, sink.hash)
                tg.start_soon(work, write_receive, sink.write)
                ticking = self._ticker(tg)
                async with hash_send, write_send:
                    try:
                        batch: list[bytes] = []
                        size = 0
                        received = 0
                        try:
                            while data := await content.readany():
                                if probe is not None and received + len(data) >= probe:
                                    if self._one_stream_keeps_up(received + len(data), started):
                                        probe = None
                                    else:
                                        data = data[: probe - received]
                                        split = True
                                received += len(data)
                                if room is not None and received > room:
                                    self.ranges = False  # the whole body is suspect: restart
                                    raise _AttemptFailed(
                                        f"the link host sent more than the {self.total} bytes "
                                        "announced; the body was cut off there"
                                    )
                                pace.check(received)
                                batch.append(data)
                                size += len(data)
                                advance(len(data))
                                if size >= BATCH:
                                    await hash_send.send(batch)
                                    await write_send.send(batch)
                                    batch, size = [], 0
                                if split:
                                    break
                        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                            broken = exc  # keep what arrived: the next attempt may resume after it
                        if batch:
                            await hash_send.send(batch)
                            await write_send.send(batch)
                    finally:
                        ticking.cancel()
        except BaseExceptionGroup as group:
            first = _first_error(group)
            raise first from first.__cause__
        if broken is not None:
            raise broken
        return split


async def resolve_completed(
    source: BackupSource, backup_or_uuid: Backup | str, *, verify: bool, verb: str
) -> Backup:
    """The backup as a completed record, or the error that says why it cannot be fetched.

    A completed ``Backup`` in hand needs no request; anything else is looked up.
    """
    uuid = backup_uuid(backup_or_uuid)
    server = source.server
    backup = backup_or_uuid if isinstance(backup_or_uuid, Backup) else None
    if backup is None or backup.state is not BackupState.COMPLETED:
        backup = await source.get(uuid)
    if backup.state is BackupState.CREATING:
        raise BackupNotCompletedError(
            f"backup {uuid} of server {server} is still being created; wait() for it first",
            backup=backup,
        )
    if backup.state is BackupState.FAILED:
        raise BackupFailedError(
            f"backup {uuid} of server {server} failed and has no archive", backup=backup
        )
    if verify and backup.checksum is None:
        raise DownloadError(
            f"backup {uuid} of server {server} has "
            + (
                f"a checksum the SDK cannot verify: {backup.checksum_raw!r}"
                if backup.checksum_raw
                else "no checksum"
            )
            + f"; pass verify=False to {verb} it unchecked"
        )
    return backup


def check_segments(segments: object) -> None:
    """Refuse a ``segments`` that is neither ``"auto"`` nor 1 to ``MAX_SEGMENTS``."""
    if segments != "auto" and (
        isinstance(segments, bool)
        or not isinstance(segments, int)
        or not 1 <= segments <= MAX_SEGMENTS
    ):
        raise InvalidArgumentError(
            f'segments must be "auto" or an integer from 1 to {MAX_SEGMENTS}, not {segments!r}'
        )


def _check_min_rate(min_rate: float | None) -> float | None:
    return None if min_rate is None else check_number("min_rate", min_rate)


async def _existing(
    final: pathlib.Path, uuid: str, checksum: Checksum | None, overwrite: bool
) -> DownloadResult | None:
    """What is at the final path: a verified copy (returned), nothing, or in the way.

    A verified file can be read without the lock, since it only ever appears there by an
    atomic rename.
    """
    if not await _fs.exists(final):
        return None
    info = await _fs.stat(final)  # a symlink to a verified copy counts; None if dangling
    if checksum is not None and info is not None and stat.S_ISREG(info.st_mode):
        existing = await _fs.run(hash_file, final, checksum.algorithm)
        if existing == checksum:
            return DownloadResult(
                path=final,
                bytes=info.st_size,
                checksum=existing,
                verified=True,
                attempts=0,
                skipped=True,
            )
    if not overwrite:
        raise DestinationExistsError(
            f"{final} exists and does not match backup {uuid}; pass overwrite=True to replace it"
        )
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise DownloadError(f"{final} is a directory; cannot replace it with a file")
    return None


async def download_backup(
    source: BackupSource,
    links: LinkSession,
    backup_or_uuid: Backup | str,
    dest: str | os.PathLike[str],
    *,
    verify: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    read_timeout: float = 60.0,
    max_attempts: int = 5,
    min_rate: float | None = DEFAULT_MIN_RATE,
    segments: Segments = "auto",
    connections: anyio.CapacityLimiter | None = None,
) -> DownloadResult:
    """Download a completed backup to ``dest``, verified and atomically; see ``download``.

    ``source`` answers for the backup's record and fresh links; ``links`` hands out the
    session the link GETs go through. ``connections``, when given, is a budget shared with
    other downloads: each stream past the first takes one of its tokens.
    """
    uuid = backup_uuid(backup_or_uuid)
    check_int("max_attempts", max_attempts, minimum=1)
    check_segments(segments)
    read_timeout = check_number("read_timeout", read_timeout)
    min_rate = _check_min_rate(min_rate)
    final = await _destination(dest, uuid)
    backup = await resolve_completed(source, backup_or_uuid, verify=verify, verb="download")
    lock = PathLock(final)
    try:
        try:
            await _fs.makedirs(final.parent)
            existing = await _existing(final, uuid, backup.checksum, overwrite)
            if existing is not None:
                return existing
            # One download per final path: another one (here or in another process) may be
            # writing it; wait for it, then look again.
            await lock.acquire()
            existing = await _existing(final, uuid, backup.checksum, overwrite)
            if existing is not None:
                return existing
        except OSError as exc:
            if isinstance(exc, PteroError):
                raise
            raise DownloadError(f"cannot prepare {final}: {exc}") from exc
        return await _Download(
            source,
            links,
            backup,
            final,
            verify=verify,
            progress=progress,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
            min_rate=min_rate,
            segments=segments,
            connections=connections,
        ).run()
    finally:
        await lock.release()
