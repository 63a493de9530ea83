"""The link host: the second origin that serves backup files behind short-lived links.

Wings-style (`storage="wings"`): `/download/backup?token=…`, single use, no Range, errors as
Wings' JSON. S3-style (`storage="s3"`): presigned `/backups/<server>/<backup>.tar.gz?X-Amz-…`,
Range and If-Range against an ETag, errors as S3's XML. Each GET takes the next scripted
`DownloadFault` of its backup from the panel's state (drop, corrupt, stall, status, expired,
ignore_range, wrong_range, change_etag, gzip, short, endless, trickle).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import attrs
from aiohttp import web

from ._http import Outcome, ShutdownSignal, drop, response, serve_recorded
from ._models import DownloadFault, FakeBackup
from ._serialize import wings_error_body
from ._state import PanelState
from ._wire import http_date, parse_range, s3_error, standard_detail

__all__ = ["LinkHost"]

_CHUNK = 256 * 1024
#: What an endless body sends after the file.
_ZEROS = bytes(64 * 1024)
#: The shortest pause of a trickled body: faster rates send several bytes per write.
_TRICKLE_TICK = 0.02

_WINGS_GONE = "The requested resource does not exist on this instance."
_WINGS_FAULT = "An unexpected error was encountered while processing this request"


@attrs.define(eq=False)
class _Link:
    backup: FakeBackup
    expires: float
    used: bool = False


def _retry_after(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _wings_error(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return response(
        status,
        wings_error_body(message),
        content_type="application/json; charset=utf-8",
        headers=headers,
    )


def _s3_error(
    status: int,
    code: str,
    message: str,
    resource: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> web.Response:
    hdrs = {"x-amz-request-id": secrets.token_hex(8).upper(), **(headers or {})}
    hdrs.update(extra or {})
    body = s3_error(code, message, resource, hdrs["x-amz-request-id"])
    return response(status, body, content_type="application/xml", headers=hdrs)


def _stored(backup: FakeBackup) -> bytes | None:
    """The bytes a link serves now: None when there is no file (deleted or failed)."""
    data = backup.visible_content()
    if data is not None and backup.served_content is not None and backup.state == "completed":
        return backup.served_content
    return data


def _shift(span: tuple[int, int], shift: int, total: int) -> tuple[int, int]:
    """The inclusive range `span` moved by `shift` bytes, kept inside a file of `total` bytes."""
    first = min(max(span[0] + shift, 0), max(total - 1, 0))
    last = min(max(span[1] + shift, first), max(total - 1, 0))
    return first, last


def _if_range_matches(value: str, etag: str, last_modified: str) -> bool:
    """RFC 9110 §13.1.5: a strong ETag equal to the current one, or the exact Last-Modified."""
    value = value.strip()
    if value.startswith(("W/", '"')):
        return value == etag  # a weak validator never matches: strong comparison only
    return value == last_modified


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LinkHost:
    """A FakePanel's download-link host: `issue_link` hands out links, `handle` serves them."""

    def __init__(self, state: PanelState, shutdown: ShutdownSignal) -> None:
        self._state = state
        self._config = state.config
        self._shutdown = shutdown
        self._origin: str | None = None
        self._links: dict[str, _Link] = {}

    def bind(self, origin: str) -> None:
        """Serve at `origin` ("http://127.0.0.1:<port>"): the base of the links handed out."""
        self._origin = origin

    @property
    def _base(self) -> str:
        if self._origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._origin

    def issue_link(self, backup: FakeBackup) -> str:
        """A fresh download URL for `backup` (its `link_factory`'s, when it has one)."""
        if backup.link_factory is not None:
            return backup.link_factory()
        ttl = self._config.link_ttl
        expires = time.monotonic() + ttl
        if self._config.storage == "wings":
            token = secrets.token_urlsafe(48)
            self._links[token] = _Link(backup=backup, expires=expires)
            return f"{self._base}/download/backup?token={token}"
        signature = secrets.token_hex(32)
        self._links[signature] = _Link(backup=backup, expires=expires)
        now = datetime.now(timezone.utc)
        return (
            f"{self._base}/backups/{backup.server.uuid}/{backup.uuid}.tar.gz"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential=FAKEPANELACCESSKEY%2F{now:%Y%m%d}%2Fus-east-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date={now:%Y%m%dT%H%M%SZ}&X-Amz-Expires={max(1, math.ceil(ttl))}"
            f"&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}"
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler of the link host's origin: serve and log one request."""
        return await serve_recorded(
            self._state, request, "link", self._answer, shutdown=self._shutdown
        )

    async def _answer(
        self, request: web.Request, body: bytes, outcome: Outcome
    ) -> web.StreamResponse:
        if self._config.storage == "wings":
            return await self._serve_wings(request, outcome)
        return await self._serve_s3(request, outcome)

    def _take_fault(self, backup: FakeBackup, outcome: Outcome) -> DownloadFault | None:
        outcome.backup_uuid = backup.uuid
        fault = self._state.next_download_fault(backup)
        if fault is not None:
            outcome.fault = fault.kind
        return fault

    # Wings.

    async def _serve_wings(self, request: web.Request, outcome: Outcome) -> web.StreamResponse:
        if request.path != "/download/backup":
            return _wings_error(404, _WINGS_GONE)
        if request.method != "GET":
            return response(405, b"405 method not allowed", content_type="text/plain")
        link = self._links.get(request.query.get("token", ""))
        if link is None:
            return _wings_error(500, _WINGS_FAULT)
        backup = link.backup
        fault = self._take_fault(backup, outcome)
        if (fault is not None and fault.kind == "expired") or time.monotonic() > link.expires:
            link.used = True
            return _wings_error(500, _WINGS_FAULT)
        if link.used:
            return _wings_error(404, _WINGS_GONE)
        link.used = True
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _retry_after(fault.retry_after)
            return _wings_error(fault.code, standard_detail(fault.code), headers)
        data = _stored(backup)
        if data is None:
            return _wings_error(404, "The requested backup was not found on this server.")
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{backup.uuid}.tar.gz"',
        }
        # Wings ignores Range (200, the whole file); only a scripted wrong range answers 206.
        first, last, status = 0, len(data) - 1, 200
        range_header = request.headers.get("Range")
        if fault is not None and fault.kind == "wrong_range" and range_header is not None:
            parsed = parse_range(range_header, len(data))
            if isinstance(parsed, tuple):
                first, last = _shift(parsed, fault.offset, len(data))
                status = 206
                headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        view = memoryview(data)[first : last + 1]
        return await self._stream(request, status, headers, view, first, fault, outcome)

    # S3.

    async def _serve_s3(self, request: web.Request, outcome: Outcome) -> web.StreamResponse:
        path = request.path
        match = re.fullmatch(r"/backups/([^/]+)/([^/]+)\.tar\.gz", path)
        signature = request.query.get("X-Amz-Signature")
        link = self._links.get(signature) if signature else None
        if signature is None:
            return _s3_error(403, "AccessDenied", "Access Denied", path)
        if (
            link is None
            or match is None
            or match.group(1) != link.backup.server.uuid
            or match.group(2) != link.backup.uuid
            or request.method != "GET"
        ):
            # A presigned URL is signed for one method and path.
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                path,
            )
        backup = link.backup
        fault = self._take_fault(backup, outcome)
        if (fault is not None and fault.kind == "expired") or time.monotonic() > link.expires:
            return _s3_error(403, "AccessDenied", "Request has expired", path)
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _retry_after(fault.retry_after)
            code = {500: "InternalError", 503: "SlowDown"}.get(fault.code, "ServiceUnavailable")
            return _s3_error(fault.code, code, standard_detail(fault.code), path, headers)
        data = _stored(backup)
        if data is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.", path)
        total = len(data)
        digest = backup.hexdigest("md5") if data is backup.content else _md5(data)
        version = backup.object_version
        # A rewritten object gets a new ETag even with the same bytes (as a multipart upload's).
        etag = f'"{digest}-{version}"' if version else f'"{digest}"'
        modified = (backup.completed_at or backup.created_at) + timedelta(seconds=version)
        headers = {
            "Content-Type": "application/x-gzip",
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": http_date(modified),
        }
        first, last, status = 0, total - 1, 200
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if fault is not None and fault.kind == "ignore_range":
            del headers["Accept-Ranges"]
        elif range_header is not None and (
            if_range is None or _if_range_matches(if_range, etag, headers["Last-Modified"])
        ):
            parsed = parse_range(range_header, total)
            if parsed is False:
                return _s3_error(
                    416,
                    "InvalidRange",
                    "The requested range is not satisfiable",
                    path,
                    extra={"Content-Range": f"bytes */{total}"},
                )
            if isinstance(parsed, tuple):
                first, last = parsed
                if fault is not None and fault.kind == "wrong_range":
                    first, last = _shift(parsed, fault.offset, total)
                status = 206
                headers["Content-Range"] = f"bytes {first}-{last}/{total}"
        view = memoryview(data)[first : last + 1]
        return await self._stream(request, status, headers, view, first, fault, outcome)

    # The body, and the faults that shape it.

    async def _stream(
        self,
        request: web.Request,
        status: int,
        headers: dict[str, str],
        data: memoryview,
        start: int,
        fault: DownloadFault | None,
        outcome: Outcome,
    ) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        if kind == "gzip":
            # Metadata of the stored object: the bytes stay the .tar.gz as stored.
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(status=status, headers=headers)
        if kind not in ("short", "endless"):
            resp.content_length = len(data)
        try:
            await resp.prepare(request)
            outcome.status = status
            await self._write_body(request, resp, data, start, fault, outcome)
            if kind == "drop":
                assert fault is not None
                if fault.seconds > 0:
                    await self._shutdown.sleep(fault.seconds)
                drop(request, outcome, reset=False)
                return resp
            await resp.write_eof()
        except ConnectionError:
            outcome.dropped = True
        return resp

    async def _write_body(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        data: memoryview,
        start: int,
        fault: DownloadFault | None,
        outcome: Outcome,
    ) -> None:
        kind = fault.kind if fault is not None else None
        limit = len(data)
        stall_at: int | None = None
        flip: int | None = None
        if fault is not None:
            if kind in ("drop", "short"):
                limit = min(max(fault.after_bytes, 0), limit)
            elif kind == "stall":
                stall_at = max(fault.after_bytes, 0)
            elif kind == "corrupt":
                flip = fault.offset - start
            elif kind == "trickle":
                await self._trickle(request, resp, data, fault.rate, outcome)
                return
        seconds = fault.seconds if fault is not None else 0.0
        if stall_at == 0:
            stall_at = None
            await self._stall(request, seconds)
        pos = 0
        while pos < limit:
            end = min(pos + _CHUNK, limit)
            if stall_at is not None and pos < stall_at < end:
                end = stall_at
            chunk: memoryview | bytearray = data[pos:end]
            if flip is not None and pos <= flip < end:
                chunk = bytearray(chunk)
                chunk[flip - pos] ^= 0xFF
            await resp.write(chunk)
            outcome.sent += end - pos
            pos = end
            if stall_at is not None and pos >= stall_at:
                stall_at = None
                await self._stall(request, seconds)
        if kind == "endless":
            await self._endless(request, resp, outcome)

    async def _endless(
        self, request: web.Request, resp: web.StreamResponse, outcome: Outcome
    ) -> None:
        """Zeros until the client goes away; each write waits until the client has read."""
        while True:
            if self._shutdown.is_set:
                drop(request, outcome, reset=False)
                raise ConnectionResetError("FakePanel is closing")
            # write() waits for the client once the buffer is full; the pause lets other tasks
            # run when the client reads as fast as this writes.
            await resp.write(_ZEROS)
            outcome.sent += len(_ZEROS)
            await asyncio.sleep(0)

    async def _trickle(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        data: memoryview,
        rate: float,
        outcome: Outcome,
    ) -> None:
        """Byte i goes out i / rate seconds after the first; writes are batched per tick."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        sent, total = 0, len(data)
        while sent < total:
            due = min(total, max(sent + 1, int((loop.time() - began) * rate) + 1))
            await resp.write(data[sent:due])
            outcome.sent += due - sent
            sent = due
            if sent >= total:
                return
            wake = loop.time() + min(max(began + sent / rate - loop.time(), _TRICKLE_TICK), 1.0)
            # Short naps, so that a client that leaves between two bytes is noticed at once.
            while (left := wake - loop.time()) > 0:
                if await self._shutdown.sleep(min(left, _TRICKLE_TICK * 5)):
                    drop(request, outcome, reset=False)
                    raise ConnectionResetError("FakePanel is closing")
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("the client went away")

    async def _stall(self, request: web.Request, seconds: float) -> None:
        if await self._shutdown.sleep(seconds):
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("FakePanel is closing")
