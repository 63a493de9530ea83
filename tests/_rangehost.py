"""A link host of the tests' own that does ranges as S3 does, and can be told to misbehave.

``RangeHost`` serves one object at ``/object?token=…`` on loopback: ``Accept-Ranges``,
``ETag`` (strong, or weak with ``weak=True``), ``Range: bytes=a-b`` / ``bytes=a-`` answered
``206`` with ``Content-Range``, and ``If-Range`` compared strongly with the ETag (a stale or
weak one gets ``200`` and everything; ``if_range=False``: a host that ignores it). It can
pace its bodies (``rate`` bytes/s per response), refuse links (``dead``: 403, as an expired
presigned URL), answer particular requests badly (``fault``), and it counts the GETs that
are in flight at once (``peak``): a GET whose connection the client closed no longer counts.
FakePanel hands its links out through ``FakeBackup.link_factory = host.new_link``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

__all__ = ["Fault", "RangeHost", "Seen"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Seen:
    """One GET as the host saw it."""

    token: str
    range: str | None
    if_range: str | None
    start: float
    status: int = 0
    sent: int = 0

    @property
    def span(self) -> tuple[int, int | None] | None:
        """The range asked for: (first, last or None for an open end)."""
        if self.range is None:
            return None
        match = _RANGE.fullmatch(self.range)
        assert match is not None, self.range
        return int(match.group(1)), int(match.group(2)) if match.group(2) else None


@dataclass
class Fault:
    """How to answer one GET: a status instead of the body, or a body cut or run long."""

    status: int | None = None
    #: Send this many body bytes (after the headers of the full answer), then drop.
    drop_after: int | None = None
    #: A 206 with the right Content-Range, no Content-Length, and this many bytes too many:
    #: all but the range's last KiB, a pause, then that KiB and the excess in one write.
    overlong: int | None = None


class RangeHost:
    """One object behind tokened links; see the module docstring."""

    def __init__(
        self,
        body: bytes,
        *,
        ranges: bool = True,
        accept_ranges: bool = True,
        rate: float | None = None,
        chunk: int = 256 * 1024,
        weak: bool = False,
        if_range: bool = True,
    ) -> None:
        self.body = body
        self.etag = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
        if weak:  # as a CDN that may re-encode marks it
            self.etag = "W/" + self.etag
        self.ranges = ranges
        self.if_range = if_range
        self.accept_ranges = accept_ranges
        self.rate = rate
        self.chunk = chunk
        self.seen: list[Seen] = []
        self.dead: set[str] = set()
        self.tokens: list[str] = []
        self.fault: Callable[[Seen], Fault | None] | None = None
        self.peak = 0
        self._open: dict[int, web.Request] = {}
        self._runner: web.AppRunner | None = None
        self._base = ""

    @property
    def port(self) -> int:
        """The port the host listens on."""
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    @property
    def open_now(self) -> int:
        """GETs in flight whose connection is still open."""
        return sum(
            1
            for r in self._open.values()
            if r.transport is not None and not r.transport.is_closing()
        )

    def new_link(self) -> str:
        """A fresh link (what the panel hands out)."""
        token = secrets.token_hex(16)
        self.tokens.append(token)
        return f"{self._base}/object?token={token}"

    def replace(self, body: bytes) -> None:
        """Store a new version of the object: a new ETag, even for the same bytes."""
        self.body = body
        self.etag = f'"{secrets.token_hex(16)}"'

    @property
    def ranged(self) -> list[Seen]:
        """The GETs that asked for a range."""
        return [s for s in self.seen if s.range is not None]

    async def __aenter__(self) -> RangeHost:
        app = web.Application()
        app.router.add_get("/object", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _track(self, request: web.Request) -> None:
        # A GET counts while its connection is open: one the client closed is over, even if
        # its handler has not noticed yet.
        for key, other in list(self._open.items()):
            if other.transport is None or other.transport.is_closing():
                del self._open[key]
        self._open[id(request)] = request
        self.peak = max(self.peak, len(self._open))

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(
            token=request.query.get("token", ""),
            range=request.headers.get("Range"),
            if_range=request.headers.get("If-Range"),
            start=time.monotonic(),
        )
        self.seen.append(seen)
        self._track(request)
        try:
            return await self._answer(request, seen)
        finally:
            self._open.pop(id(request), None)

    async def _answer(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        if seen.token not in self.tokens or seen.token in self.dead:
            seen.status = 403
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")
        fault = self.fault(seen) if self.fault is not None else None
        if fault is not None and fault.status is not None:
            seen.status = fault.status
            return web.Response(status=fault.status, text="fault")
        body, total = self.body, len(self.body)
        first, last, status = 0, total - 1, 200
        headers = {"ETag": self.etag, "Content-Type": "application/x-gzip"}
        if self.accept_ranges:
            headers["Accept-Ranges"] = "bytes"
        span = seen.span
        # If-Range compares strongly: a weak validator never matches (RFC 9110, 13.1.5).
        fresh = (
            not self.if_range
            or seen.if_range is None
            or (seen.if_range == self.etag and not self.etag.startswith("W/"))
        )
        if span is not None and self.ranges and fresh:
            first, last = span[0], min(span[1] if span[1] is not None else total - 1, total - 1)
            if first > last:
                seen.status = 416
                return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{total}"
        data = memoryview(body)[first : last + 1]
        response = web.StreamResponse(status=status, headers=headers)
        tail = b""
        if fault is not None and fault.overlong is not None:
            tail = bytes(data[-1024:]) + bytes(fault.overlong)
            data = data[:-1024]
        else:
            response.content_length = len(data)
        limit = len(data)
        if fault is not None and fault.drop_after is not None:
            limit = min(limit, fault.drop_after)
        seen.status = status
        try:
            await response.prepare(request)
            began = time.monotonic()
            pos = 0
            while pos < limit:
                end = min(pos + self.chunk, limit)
                await response.write(data[pos:end])
                seen.sent = end
                pos = end
                if self.rate is not None:
                    ahead = began + pos / self.rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            if limit < len(data):
                await asyncio.sleep(0.05)  # the client reads what came before the drop
                assert request.transport is not None
                request.transport.close()
                return response
            if tail:
                await asyncio.sleep(0.05)  # the client has read the rest: the tail is one read
                await response.write(tail)
                seen.sent += len(tail)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away: it closed the answer after the part it wanted
        return response
