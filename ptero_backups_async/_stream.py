"""A verified stream of a backup's bytes (``b.stream(...)``), for web backends and copies.

The bytes go to the caller as they arrive, with no file in between; their length and hash are
checked on the way. The last chunk received is always held back: it is handed on only once
the body's end has been seen and the length and the hash match, so a short, long or corrupt
body raises from the iterator *before* its final bytes reach the consumer (a web response
that proxies them is aborted instead of completed with wrong bytes).

Each GET of a fresh link is one attempt. Until something has been handed on, a failed
attempt is simply repeated. After that, the next attempt resumes with ``Range`` where the
link host has shown it honours ranges (S3), and otherwise reads the archive again from the
start (Wings), hashing the bytes already handed on, checking that they are the same ones, and
dropping them. A mismatch at the end is not retried: the bytes before it are gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager

import aiohttp
import anyio

from ._download import BackupSource, LinkSession, _check_min_rate, resolve_completed
from ._errors import (
    MAX_HISTORY_ENTRY,
    ChecksumMismatchError,
    DownloadError,
    PteroError,
    bound_text,
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
from ._models import Backup, Checksum
from ._sansio import backup_uuid, check_int, check_number

__all__ = ["BackupStream", "open_stream"]

logger = logging.getLogger("ptero_backups_async")


class _Reader:
    """The state of one stream across its attempts.

    ``digest`` covers exactly the bytes handed on (``sent`` of them); the chunk held back is
    hashed only when it goes out, so a failed attempt can drop it and resume at ``sent``.
    """

    def __init__(
        self,
        source: BackupSource,
        links: LinkSession,
        backup: Backup,
        *,
        verify: bool,
        read_timeout: float,
        max_attempts: int,
        min_rate: float | None,
    ) -> None:
        self.source = source
        self.server = source.server
        self.links = links
        self.backup = backup
        self.expected = backup.checksum if verify else None
        self.algorithm = backup.checksum.algorithm if backup.checksum else "sha256"
        self.digest = hashlib.new(self.algorithm)
        self.total: int | None = backup.bytes or None
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.min_rate = min_rate
        self.sent = 0
        self.history: list[str] = []
        self.ranges = False  # the link host has shown it honours Range
        self.etag: str | None = None
        self.cause: BaseException | None = None  # behind the last failed attempt

    def _fail(self, message: str, exc: BaseException | None = None) -> DownloadError:
        error = DownloadError(
            f"stream of backup {self.backup.uuid} (server {self.server}) failed after "
            f"{self.sent} bytes were handed on: {message}",
            attempts=len(self.history),
            history=tuple(self.history),
        )
        error.__cause__ = exc
        return error

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        while True:
            if len(self.history) >= self.max_attempts:
                raise self._fail(
                    f"gave up after {self.max_attempts} attempts; the last: {self.history[-1]}",
                    self.cause,
                )
            # Errors of the panel API (the backup vanished, the key was revoked) propagate as is.
            url = await self.source.download_url(self.backup.uuid)
            try:
                # Closed with the stream: a consumer that stops early must not leave the
                # attempt (and its connection) to the garbage collector.
                async with aclosing(self._attempt(url)) as attempt:
                    async for chunk in attempt:
                        yield chunk
            except _AttemptFailed as exc:
                self.history.append(bound_text(str(exc), MAX_HISTORY_ENTRY))
                self.cause = exc.__cause__
                logger.info(
                    "backup %s: stream attempt %d failed: %s",
                    self.backup.uuid,
                    len(self.history),
                    self.history[-1],
                )
                if len(self.history) < self.max_attempts:
                    await anyio.sleep(_retry_delay(len(self.history), exc.retry_after))
                continue
            return

    async def _attempt(self, url: str) -> AsyncGenerator[bytes, None]:
        """One GET: yields what may be handed on, ends after the last chunk was verified."""
        offset = self.sent
        headers = link_headers(offset, etag=self.etag) if offset and self.ranges else link_headers()
        timeout = link_timeout(self.read_timeout)
        session = self.links()
        resp: aiohttp.ClientResponse | None = None
        finished = False
        where = offset  # the archive offset of the next byte the body brings
        held = b""  # the last chunk received: handed on only after the next one, or the end
        try:
            try:
                resp = await session.get(url, headers=headers, timeout=timeout)
                where = self._check_response(resp, offset)
                # On a restart from zero, the bytes already handed on come again: they are
                # hashed to check they are the same ones, and dropped.
                skip = offset - where
                again = hashlib.new(self.algorithm) if skip else None
                room = None if self.total is None else self.total - where
                pace = _Pace(self.min_rate, self.read_timeout)
                received = 0
                content = resp.content
                while data := await content.readany():
                    received += len(data)
                    where += len(data)
                    if room is not None and received > room:
                        self.ranges = False  # the whole body is suspect: restart
                        raise _AttemptFailed(
                            f"the link host sent more than the {self.total} bytes announced; "
                            "the body was cut off there"
                        )
                    pace.check(received)
                    if skip:
                        assert again is not None
                        take = min(skip, len(data))
                        again.update(memoryview(data)[:take])
                        skip -= take
                        if not skip:
                            self._check_same_start(again)
                        data = data[take:]
                        if not data:
                            continue
                    if held:
                        # Chunks of one socket read (≤ 256 KiB): hashing one takes well under
                        # a millisecond, so it stays on the loop.
                        self.digest.update(held)
                        self.sent += len(held)
                        paused = time.monotonic()
                        yield held
                        # The time the consumer holds a chunk is not the link host's.
                        pace.since += time.monotonic() - paused
                    held = data
                if skip:
                    raise _AttemptFailed(
                        f"the body ended after {where} bytes, before the {offset} already handed on"
                    )
                done = self.sent + len(held)
                if self.total is not None and done != self.total:
                    raise _AttemptFailed(f"the body ended after {done} of {self.total} bytes")
                self._verify(held)
                finished = True
            except aiohttp.ClientSSLError as exc:
                # A certificate that fails now fails on every fresh link too.
                raise self._fail(f"TLS with the link host failed: {exc}", exc) from exc
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                text = _describe(exc, where, self.total)
                raise _AttemptFailed(_without_link_secret(text, url)) from exc
        finally:
            if resp is not None:
                if finished:
                    resp.release()
                else:
                    resp.close()  # a body not read to its end: the connection goes
        self.history.append("ok")
        if held:
            self.digest.update(held)
            self.sent += len(held)
            yield held

    def _check_response(self, resp: aiohttp.ClientResponse, offset: int) -> int:
        """Where in the archive the body starts: ``offset`` (206) or 0 (200)."""
        if resp.status == 200:
            self.ranges = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
            self.etag = resp.headers.get("ETag")
            if offset:
                logger.info(
                    "backup %s: reading the stream again from the start to byte %d",
                    self.backup.uuid,
                    offset,
                )
            check_length(resp.content_length, self.total)
            if self.total is None and resp.content_length is not None:
                self.total = resp.content_length
            return 0
        if resp.status == 206 and offset:
            try:
                check_resumed(resp, offset, self.total, self.etag)
            except _AttemptFailed:
                self.ranges = False  # the next attempt reads again from the start
                raise
            check_length(resp.content_length, self.total and self.total - offset)
            return offset
        self.ranges = self.ranges and resp.status != 416
        raise refused(resp)

    def _check_same_start(self, again: hashlib._Hash) -> None:
        if again.digest() != self.digest.digest():
            # The consumer holds bytes of another version (or a corrupt read): nothing that
            # comes next can make the stream right.
            self.history.append(f"the first {self.sent} bytes differ from those handed on")
            raise self._fail(
                f"read again from the start, the archive's first {self.sent} bytes differ from "
                "those already handed on (the object changed, or one of the reads was corrupt)"
            )

    def _verify(self, held: bytes) -> None:
        if self.expected is None:
            return
        digest = self.digest.copy()
        digest.update(held)
        actual = Checksum(self.algorithm, digest.hexdigest())
        if actual != self.expected:
            self.history.append(f"checksum mismatch: got {actual}")
            raise ChecksumMismatchError(
                f"backup {self.backup.uuid} (server {self.server}): the streamed bytes hash "
                f"to {actual}, the panel announced {self.expected}; the last "
                f"{len(held)} bytes were held back",
                expected=self.expected,
                actual=actual,
                attempts=len(self.history),
                history=tuple(self.history),
            )


class BackupStream:
    """The verified bytes of one backup as they arrive: ``async for chunk in body``.

    Made by ``BackupsResource.stream()``, not directly. It can be iterated once, inside its
    ``async with``; the first GET of a link happens when the first chunk is asked for.

    Args:
        reader: The stream's state across its attempts.

    Raises:
        DownloadError: From the iteration, before the last chunk is handed on, when the body
            ends short and cannot be recovered, runs past the announced size, or when every
            attempt failed.
        ChecksumMismatchError: From the iteration, before the last chunk is handed on, when
            the bytes do not hash to the announced checksum.
        PteroError: When the stream is iterated a second time, or outside its ``async with``.
    """

    def __init__(self, reader: _Reader) -> None:
        self.backup: Backup = reader.backup
        """The backup's record, as the panel reported it."""
        self.size: int | None = reader.backup.bytes or None
        """The archive's size as the panel announced it; None when it did not say."""
        self.checksum: Checksum | None = reader.backup.checksum
        """The checksum the bytes are checked against; None only with ``verify=False``."""
        self._reader = reader
        self._chunks: AsyncGenerator[bytes, None] | None = None
        self._closed = False
        self._ended = False

    def __repr__(self) -> str:
        return f"<BackupStream {self.backup.uuid} size={self.size} checksum={self.checksum}>"

    def __aiter__(self) -> BackupStream:
        if self._closed:
            raise PteroError(
                f"the stream of backup {self.backup.uuid} is closed: iterate it inside its "
                "`async with`"
            )
        if self._chunks is not None:
            raise PteroError(
                f"the stream of backup {self.backup.uuid} can be iterated once; "
                "open another with b.stream()"
            )
        self._chunks = self._reader.chunks()
        return self

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            raise PteroError("iterate a BackupStream with `async for`")
        if self._closed and not self._ended:
            # A closed generator would end quietly: a consumer must never take that for the end.
            raise PteroError(f"the stream of backup {self.backup.uuid} was closed before its end")
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._ended = True
            raise

    async def aclose(self) -> None:
        """Close the stream and its connection (leaving the ``async with`` does it).

        Iterating a stream closed before its end raises ``PteroError`` rather than ending
        quietly.
        """
        self._closed = True
        if self._chunks is not None:
            await self._chunks.aclose()


@asynccontextmanager
async def open_stream(
    source: BackupSource,
    links: LinkSession,
    backup_or_uuid: Backup | str,
    *,
    verify: bool,
    read_timeout: float,
    max_attempts: int,
    min_rate: float | None,
) -> AsyncIterator[BackupStream]:
    """Resolve the backup, then hand out its verified stream; see ``BackupsResource.stream``.

    Nothing is fetched from the link host before the first chunk is asked for; leaving the
    block closes whatever connection is open.
    """
    backup_uuid(backup_or_uuid)
    check_int("max_attempts", max_attempts, minimum=1)
    read_timeout = check_number("read_timeout", read_timeout)
    min_rate = _check_min_rate(min_rate)
    backup = await resolve_completed(source, backup_or_uuid, verify=verify, verb="stream")
    stream = BackupStream(
        _Reader(
            source,
            links,
            backup,
            verify=verify,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
            min_rate=min_rate,
        )
    )
    try:
        yield stream
    finally:
        await stream.aclose()
