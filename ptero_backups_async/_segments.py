"""Several ranged GETs of one link at once, written in place and hashed in order.

Object stores cap what one connection carries; several connections, each asking for its own
``Range``, carry several times as much. The rest of the archive is cut into pieces of
``PIECE`` bytes, handed out lowest first to ``streams`` workers; each worker GETs one piece
with ``Range: bytes=a-b`` (and ``If-Range``), checks the ``206`` and its ``Content-Range``,
and writes what arrives at its offset with positional writes.

The hash must see the bytes in order. Batches that arrive at the hashed frontier go straight
to the hash; batches ahead of it wait in memory while the bytes waiting stay under
``WINDOW`` (the reorder window), and those beyond it are written only and read back from the
file when the frontier reaches them. Pieces are handed out in order, so in the normal case
everything is hashed from memory as the contiguous prefix grows, and verification needs no
second pass over the file.

A failed piece is retried alone, from where it broke, up to ``max_attempts`` times (a fresh
link first when the host refused the old one). So is a piece answered with something else
than its range (a ``200``, a wrong ``Content-Range``), once: a second such answer, or a
``206`` of another ETag, ends the segmented attempt (``NoRanges``) and the download goes on
as one stream.
"""

from __future__ import annotations

import collections
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import aiohttp
import anyio
import anyio.abc

from ._journal import Piece
from ._linkget import (
    CONTENT_RANGE,
    _AttemptFailed,
    _describe,
    _Pace,
    _retry_delay,
    _without_link_secret,
    link_headers,
    link_timeout,
)

__all__ = [
    "AUTO_MIN_BYTES",
    "AUTO_ONE_STREAM_RATE",
    "AUTO_STREAMS",
    "PIECE",
    "WINDOW",
    "NoRanges",
    "PieceGaveUp",
    "SegmentedFetch",
]

logger = logging.getLogger("ptero_backups_async")

#: Bytes one GET asks for: large enough that a request's round trip is small beside it.
PIECE = 8 * 1024 * 1024
#: Bytes ahead of the hashed frontier kept in memory for the hash (the reorder window).
WINDOW = 8 * 1024 * 1024
#: Bytes a worker gathers before one positional write.
SEG_BATCH = 512 * 1024
#: ``segments="auto"``: this many streams, for a rest of at least ``AUTO_MIN_BYTES``.
AUTO_STREAMS = 8
AUTO_MIN_BYTES = 64 * 1024 * 1024
#: ``segments="auto"`` keeps one stream when its first piece came at least this fast: the
#: disk and the hash, not the connection, set the pace there, and more streams only add work.
AUTO_ONE_STREAM_RATE = 256 * 1024 * 1024
#: Answers to a piece that mean the link is spent (Wings: used; S3: expired) or was refused.
_DEAD_LINK = frozenset({401, 403})
#: Answers to a piece that mean this link serves one GET only (Wings: a used token is 404).
_SPENT_LINK = frozenset({404, 410})


def _start(piece: Piece) -> int:
    return piece.start


class NoRanges(Exception):
    """The link host did not answer a piece with the range asked for.

    ``ranges_work``: it did honour a range before (the links are single-use), so one stream
    may still resume with ``Range``.
    """

    def __init__(self, message: str, *, ranges_work: bool = False) -> None:
        super().__init__(message)
        self.ranges_work = ranges_work


class PieceGaveUp(Exception):
    """One piece failed ``max_attempts`` times: the download fails."""


class _Piece:
    __slots__ = ("crc", "done", "end", "failures", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end  # exclusive
        self.done = start  # bytes below this are written (and handed to the hash)
        self.failures = 0
        self.crc = 0  # of the bytes written so far, for the journal


def _gaps(start: int, end: int, present: Sequence[Piece]) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` that no piece of ``present`` covers."""
    gaps = []
    at = start
    for piece in sorted(present, key=lambda p: p.start):
        if piece.start > at:
            gaps.append((at, min(piece.start, end)))
        at = max(at, piece.end)
    if at < end:
        gaps.append((at, end))
    return [(a, b) for a, b in gaps if a < b]


class _Reorder:
    """Hands written batches to the hash in file order."""

    def __init__(
        self,
        start: int,
        end: int,
        hash_step: Callable[[list[bytes], int], None],
        hash_back: Callable[[int, int], None],
        run: Callable[..., Awaitable[object]],
        idle: Callable[[], None] | None = None,
        idle_every: float = 2.0,
    ) -> None:
        self.frontier = start
        self.idle = idle
        self.idle_every = idle_every
        self.end = end
        self.hash_step = hash_step
        self.hash_back = hash_back
        self.run = run
        self.ready: dict[int, tuple[int, list[bytes] | None]] = {}
        self.held = 0
        self.read_back = 0  # bytes hashed from the file rather than from memory
        self._changed = anyio.Event()

    def keep(self, offset: int, size: int) -> bool:
        """Whether a batch at ``offset`` is kept in memory for the hash."""
        return offset == self.frontier or self.held + size <= WINDOW

    def add(self, offset: int, size: int, chunks: list[bytes] | None) -> None:
        """A batch is written; ``chunks`` is None when it was not kept in memory."""
        self.ready[offset] = (size, chunks)
        if chunks is not None:
            self.held += size
        self._changed.set()

    async def run_hash(self) -> None:
        while self.frontier < self.end:
            entry = self.ready.pop(self.frontier, None)
            if entry is None:
                with anyio.move_on_after(self.idle_every) as waiting:
                    await self._changed.wait()
                if waiting.cancelled_caught and self.idle is not None:
                    # The frontier is held up while other pieces arrive: ``idle`` may record
                    # them (no hash runs meanwhile).
                    await self.run(self.idle)
                    continue
                self._changed = anyio.Event()
                continue
            size, chunks = entry
            if chunks is None:
                self.read_back += size
                await self.run(self.hash_back, self.frontier, size)
            else:
                self.held -= size
                await self.run(self.hash_step, chunks, self.frontier + size)
            self.frontier += size


class SegmentedFetch:
    """One segmented attempt: ``streams`` workers over ``[start, end)`` of one link."""

    def __init__(
        self,
        *,
        uuid: str,
        url: str,
        fresh_url: Callable[[], Awaitable[str]],
        session: aiohttp.ClientSession,
        start: int,
        end: int,
        etag: str | None,
        streams: int,
        max_attempts: int,
        read_timeout: float,
        min_rate: float | None,
        write_at: Callable[[list[bytes], int], None],
        hash_back: Callable[[int, int], None],
        hash_step: Callable[[list[bytes], int], None],
        advance: Callable[[int], None],
        run: Callable[..., Awaitable[object]],
        connections: anyio.CapacityLimiter | None,
        present: Sequence[Piece] = (),
        idle: Callable[[], None] | None = None,
        idle_every: float = 2.0,
    ) -> None:
        self.uuid = uuid
        self.url = url
        self.fresh_url = fresh_url
        self.session = session
        self.etag = etag
        self.streams = streams
        self.max_attempts = max_attempts
        self.read_timeout = read_timeout
        self.min_rate = min_rate
        self.write_at = write_at
        self.advance = advance
        self.run = run
        self.connections = connections
        self.total = end
        # Pieces an interrupted run wrote ahead of its prefix are not fetched again: they are
        # hashed from the file when the frontier reaches them.
        present = [p for p in present if start <= p.start and p.end <= end]
        self.pending = collections.deque(
            _Piece(a, min(a + PIECE, b))
            for a, b in _gaps(start, end, present)
            for a in range(a, b, PIECE)
        )
        self.reorder = _Reorder(start, end, hash_step, hash_back, run, idle, idle_every)
        self.written = {p.start: p for p in present}
        self.reused = sum(p.end - p.start for p in present)
        for p in present:
            self.reorder.add(p.start, p.end - p.start, None)
        self.history: list[str] = []
        self.refusals = 0  # pieces not answered with their range
        self.used = 1  # streams that fetched: the first, and each worker once it has a piece
        self._refreshing: anyio.Event | None = None

    @property
    def frontier(self) -> int:
        """Bytes from the start that are written and hashed."""
        return self.reorder.frontier

    async def run_all(self) -> None:
        """Fetch every piece, ``streams`` at a time, and hash them in order."""
        async with anyio.create_task_group() as tg:
            # The first stream has its connection already (the caller's budget token); the
            # others take one each from a shared budget, if there is one.
            tg.start_soon(self._pieces)
            for _ in range(min(self.streams, len(self.pending)) - 1):
                tg.start_soon(self._worker)
            await self.reorder.run_hash()
            # Every byte is written and hashed. A worker still waiting for a connection of a
            # shared budget (download_many) must not hold the download up: it is let go.
            tg.cancel_scope.cancel()
        logger.debug(
            "backup %s: %d streams; %d bytes hashed from the file, not from memory",
            self.uuid,
            self.used,
            self.reorder.read_back,
        )

    async def _worker(self) -> None:
        if self.connections is None:
            await self._pieces(extra=True)
            return
        # A worker of a shared budget may wait here until every piece is fetched: it is no
        # stream of this download unless it gets a piece.
        async with self.connections:
            await self._pieces(extra=True)

    async def _pieces(self, *, extra: bool = False) -> None:
        while self.pending:
            if extra:
                self.used += 1
                extra = False
            piece = self.pending.popleft()
            try:
                await self._fetch(piece)
            except _AttemptFailed as exc:
                await self._failed(piece, exc)

    async def _failed(self, piece: _Piece, exc: _AttemptFailed) -> None:
        piece.failures += 1
        entry = f"bytes {piece.done}-{piece.end - 1}: {exc}"
        self.history.append(entry)
        logger.info("backup %s: piece failed: %s", self.uuid, entry)
        if piece.failures >= self.max_attempts:
            raise PieceGaveUp(
                f"bytes {piece.start}-{piece.end - 1} failed {piece.failures} times; "
                f"the last: {exc}"
            )
        self.pending.appendleft(piece)  # the lowest offset holds up the hash: first again
        await anyio.sleep(_retry_delay(piece.failures, exc.retry_after))

    async def _fetch(self, piece: _Piece) -> None:
        url = self.url
        headers = link_headers(piece.done, piece.end - 1, self.etag)
        timeout = link_timeout(self.read_timeout)
        try:
            async with self.session.get(url, headers=headers, timeout=timeout) as resp:
                if resp.status in _SPENT_LINK:
                    raise NoRanges(
                        f"the link host answered {resp.status} to a second GET of one link: "
                        "its links serve one GET",
                        ranges_work=True,
                    )
                if resp.status in _DEAD_LINK:
                    await self._renew(url)
                    raise _AttemptFailed(f"the link host answered {resp.status}; a fresh link")
                if resp.status == 200:
                    self._refused(
                        "the link host answered a range with the whole object (200): it "
                        "ignores ranges, or the object changed"
                    )
                if resp.status != 206:
                    raise _AttemptFailed(f"the link host answered {resp.status}")
                match = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                if (
                    match is None
                    or int(match.group(1)) != piece.done
                    or int(match.group(2)) != piece.end - 1
                    or match.group(3) not in (str(self.total), "*")
                ):
                    self._refused(
                        f"206 with Content-Range {resp.headers.get('Content-Range')!r} for "
                        f"bytes {piece.done}-{piece.end - 1}"
                    )
                etag = resp.headers.get("ETag")
                if self.etag and etag and etag != self.etag:
                    raise NoRanges(f"the object changed (ETag {etag}, was {self.etag})")
                await self._body(piece, resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = _describe(exc, piece.done - piece.start, piece.end - piece.start)
            raise _AttemptFailed(_without_link_secret(text, url)) from exc

    def _refused(self, message: str) -> NoReturn:
        """A piece was not answered with its range: retried alone once, then no segments.

        One stray answer is a glitch of one request; a second, of any piece, says that this
        host (or this object, now) does not serve ranges, and retrying every piece
        ``max_attempts`` times would only delay the fall back to one stream.
        """
        self.refusals += 1
        if self.refusals > 1:
            raise NoRanges(message)
        raise _AttemptFailed(message)

    async def _renew(self, old: str) -> None:
        """A fresh link for every worker, asked for once however many saw the old one die."""
        if self.url != old:
            return
        if self._refreshing is not None:
            await self._refreshing.wait()
            return
        self._refreshing = anyio.Event()
        try:
            self.url = await self.fresh_url()
        finally:
            self._refreshing.set()
            self._refreshing = None

    async def _body(self, piece: _Piece, resp: aiohttp.ClientResponse) -> None:
        """Read ``piece`` from ``resp``, the answer to its range."""
        content = resp.content
        pace = _Pace(self.min_rate, self.read_timeout)
        batch: list[bytes] = []
        size = 0
        received = 0
        broken: BaseException | None = None
        try:
            while piece.done + size < piece.end:
                data = await content.readany()
                if not data:
                    break
                room = piece.end - piece.done - size
                if len(data) > room:
                    broken = _AttemptFailed(
                        f"the link host sent more than the {piece.end - piece.start} bytes "
                        "asked for"
                    )
                    break
                received += len(data)
                pace.check(received)
                batch.append(data)
                size += len(data)
                self.advance(len(data))
                if size >= SEG_BATCH:
                    await self._flush(piece, batch, size)
                    batch, size = [], 0
        except (aiohttp.ClientError, TimeoutError, _AttemptFailed) as exc:
            # What arrived of the range is kept (and was counted): the retry asks for the rest.
            broken = exc
        if batch:
            await self._flush(piece, batch, size)
        if broken is not None:
            raise broken
        if piece.done < piece.end:
            raise _AttemptFailed(
                f"the body ended after {piece.done - piece.start} of {piece.end - piece.start} "
                "bytes"
            )

    def ahead(self) -> list[Piece]:
        """Pieces written in full past the hashed frontier (called from the hash thread)."""
        frontier = self.reorder.frontier
        return sorted((p for p in list(self.written.values()) if p.start >= frontier), key=_start)

    def _write(self, batch: list[bytes], offset: int, crc: int) -> int:
        self.write_at(batch, offset)
        for chunk in batch:
            crc = zlib.crc32(chunk, crc)
        return crc

    async def _flush(self, piece: _Piece, batch: list[bytes], size: int) -> None:
        offset = piece.done
        keep = self.reorder.keep(offset, size)
        crc = await self.run(self._write, batch, offset, piece.crc)
        assert isinstance(crc, int)
        piece.crc = crc
        piece.done += size
        if piece.done == piece.end:
            self.written[piece.start] = Piece(piece.start, piece.end, piece.crc)
        self.reorder.add(offset, size, batch if keep else None)
