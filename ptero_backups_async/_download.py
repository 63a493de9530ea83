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
import hashlib
import logging
import os
import pathlib
import re
import stat
import sys
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

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
from ._models import Backup, BackupState, Checksum, DownloadProgress, DownloadResult
from ._sansio import backup_uuid, check_int, check_number, parse_retry_after

if sys.version_info < (3, 11):  # pragma: no cover - depends on the interpreter
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "BATCH",
    "DEFAULT_MIN_RATE",
    "BackupSource",
    "LinkSession",
    "ProgressCallback",
    "download_backup",
    "hash_file",
]

logger = logging.getLogger("ptero_backups_async")

ProgressCallback = Callable[[DownloadProgress], object]
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
#: The longest pause a link host's Retry-After can impose between attempts.
MAX_LINK_RETRY_AFTER = 30.0
#: ``min_rate`` by default: an attempt averaging less than 1 KiB/s over ``read_timeout``
#: seconds is given up (a trickle that never stalls would otherwise take hours).
DEFAULT_MIN_RATE = 1024.0

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_URL_QUERY = re.compile(r"(\w+://[^\s'\"?]*)\?[^\s'\"]*")


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
    """The ``.part`` file and the running hash. Every method blocks: call it from a thread."""

    def __init__(self, path: pathlib.Path, algorithm: str) -> None:
        self.path = path
        self.algorithm = algorithm
        self.digest = _new_hash(algorithm)
        self.size = 0
        self.fd: int | None = None
        self.identity: tuple[int, int] | None = None

    def open(self) -> None:
        # The caller holds the path's lock, so a .part already there belongs to no running
        # download: a stale one (from a crash) goes; a symlink there is removed, not followed.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(self.path, flags, 0o644)
        info = os.fstat(self.fd)
        self.identity = (info.st_dev, info.st_ino)

    def _still_there(self) -> bool:
        """Whether the file at ``path`` is still the one this sink opened."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (info.st_dev, info.st_ino) == self.identity

    def hash(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.digest.update(chunk)

    def write(self, chunks: list[bytes]) -> None:
        assert self.fd is not None
        total = sum(map(len, chunks))
        written = os.writev(self.fd, chunks)
        if written < total:  # rare on regular files, but allowed
            rest = memoryview(b"".join(chunks))[written:]
            while rest:
                rest = rest[os.write(self.fd, rest) :]
        self.size += total

    def restart(self) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.digest = _new_hash(self.algorithm)
        self.size = 0

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

    def discard(self) -> None:
        try:
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


class _AttemptFailed(Exception):
    """One attempt went wrong in a way a fresh link may fix."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_delay(failures: int, retry_after: float | None) -> float:
    """A short pause before the next link: links are cheap, a struggling host is not."""
    if retry_after is not None:
        return min(retry_after, MAX_LINK_RETRY_AFTER)
    return min(0.2 * 2.0 ** (failures - 1), 5.0)


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
    if len(path.name.encode()) + max(len(".part"), len(LOCK_SUFFIX)) > NAME_MAX:
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
        sink = _Sink(self.part, self.algorithm)
        try:
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
                )
        finally:
            # Shielded: it must finish even while this task is being cancelled.
            await _fs.run_shielded(sink.discard)

    async def _thread(self, func: Callable[..., T], *args: object) -> T:
        try:
            return await _fs.run(func, *args)
        except OSError as exc:
            raise self._fail(f"{exc.strerror or exc} ({self.part})", exc) from exc

    async def _restart(self, sink: _Sink) -> None:
        await self._thread(sink.restart)
        self.etag = None
        self.progress.reset(0)

    async def _attempt(self, sink: _Sink) -> None:
        # Errors of the panel API (the backup vanished, the key was revoked) propagate as is.
        url = await self.source.download_url(self.backup.uuid)
        offset = sink.size
        headers = {"Accept-Encoding": "identity"}
        if offset and self.ranges:
            headers["Range"] = f"bytes={offset}-"
            if self.etag:
                headers["If-Range"] = self.etag
        elif offset:
            await self._restart(sink)
            offset = 0
        session = self.links()
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.read_timeout, sock_read=self.read_timeout
        )
        try:
            async with session.get(url, headers=headers, timeout=timeout) as resp:
                offset = await self._check_response(resp, sink, offset)
                await self._stream(resp, sink)
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
            self.ranges = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
            self.etag = resp.headers.get("ETag")
            if offset:
                logger.info("backup %s: link host ignored Range; restarting", self.backup.uuid)
                await self._restart(sink)
                offset = 0
            self._check_length(resp.content_length, self.total)
            if self.total is None and resp.content_length is not None:
                self.total = self.progress.total = resp.content_length
            return offset
        if resp.status == 206 and offset:
            match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
            start = int(match.group(1)) if match else -1
            size = match.group(3) if match else None
            if start != offset or (self.total and size not in (str(self.total), "*")):
                self.ranges = False
                raise _AttemptFailed(
                    f"206 with Content-Range {resp.headers.get('Content-Range')!r} "
                    f"for a request from byte {offset}"
                )
            self._check_length(resp.content_length, self.total and self.total - offset)
            self.progress.reset(offset)
            return offset
        self.ranges = self.ranges and resp.status != 416
        raise _AttemptFailed(
            f"the link host answered {resp.status} {_visible(resp.reason or '')}".strip(),
            parse_retry_after(resp.headers.get("Retry-After")),
        )

    @staticmethod
    def _check_length(announced: int | None, expected: int | None) -> None:
        if announced is not None and expected is not None and announced != expected:
            raise _AttemptFailed(f"the link host announced {announced} bytes, the panel {expected}")

    async def _stream(self, resp: aiohttp.ClientResponse, sink: _Sink) -> None:
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

        ticking = anyio.CancelScope()

        async def tick() -> None:
            with ticking:
                while True:
                    self.progress.flush()
                    await anyio.sleep(PROGRESS_INTERVAL)

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
                if self.progress.callback is not None:
                    tg.start_soon(tick)
                async with hash_send, write_send:
                    try:
                        batch: list[bytes] = []
                        size = 0
                        received = 0
                        try:
                            while data := await content.readany():
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


class _Pace:
    """``min_rate`` over windows of ``window`` seconds: a trickle fails the attempt."""

    def __init__(self, min_rate: float | None, window: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self.since = time.monotonic()
        self.at = 0

    def check(self, received: int) -> None:
        """Called as bytes arrive, with the count so far in this attempt."""
        if self.min_rate is None:
            return
        now = time.monotonic()
        elapsed = now - self.since
        if elapsed < self.window:
            return
        rate = (received - self.at) / elapsed
        if rate < self.min_rate:
            raise _AttemptFailed(
                f"the link host sent {received - self.at} bytes in {elapsed:.1f} s "
                f"({rate:.0f} B/s), below min_rate={self.min_rate:g} B/s"
            )
        self.since, self.at = now, received


def _visible(text: str, limit: int = 200) -> str:
    """Text from the link host, short and with control characters escaped (``\\x1b``)."""
    text = bound_text(text, limit)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _without_link_secret(text: str, url: str) -> str:
    """``text`` with the query (token, signature) of the link, or of any URL, cut to ``?…``.

    aiohttp names the URL in some errors; a link is a bearer credential until it expires.
    """
    _, _, query = url.partition("?")
    if query:
        text = text.replace(query, "…")
    return _URL_QUERY.sub(r"\1?…", text)


def _describe(exc: BaseException, received: int, total: int | None) -> str:
    where = f"after {received}{f' of {total}' if total else ''} bytes"
    if isinstance(exc, asyncio.TimeoutError):
        return f"the link host stalled {where} (no data within read_timeout)"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the connection broke {where} ({exc})"
    return f"{type(exc).__name__} {where}: {exc}"


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
) -> DownloadResult:
    """Download a completed backup to ``dest``, verified and atomically; see ``download``.

    ``source`` answers for the backup's record and fresh links; ``links`` hands out the
    session the link GETs go through.
    """
    uuid = backup_uuid(backup_or_uuid)
    check_int("max_attempts", max_attempts, minimum=1)
    read_timeout = check_number("read_timeout", read_timeout)
    min_rate = _check_min_rate(min_rate)
    final = await _destination(dest, uuid)
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
            + "; pass verify=False to download it unchecked"
        )
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
        ).run()
    finally:
        await lock.release()
