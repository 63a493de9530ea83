"""FakePanel: a loopback HTTP server that speaks the panel's backup API as docs/wire.md describes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import secrets
import socket
import struct
import time
import uuid as uuid_mod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

import attrs
from aiohttp import web

from ._models import (
    UNSET,
    BackupState,
    Dialect,
    DownloadFault,
    FakeBackup,
    FakeServer,
    Fault,
    FaultKind,
    RecordedRequest,
    Storage,
    Unset,
)
from ._wire import (
    ApiError,
    Rule,
    html_page,
    http_date,
    iso,
    json_bytes,
    make_archive,
    parse_range,
    redirect_page,
    s3_error,
    standard_code,
    standard_detail,
    to_bool,
    validate,
)

__all__ = ["FakePanel"]

_CHUNK = 256 * 1024
_FOREVER = 3600.0
#: What an endless body sends after the file.
_ZEROS = bytes(64 * 1024)
#: The shortest pause of a trickled body: faster rates send several bytes per write.
_TRICKLE_TICK = 0.02

_DEFAULT_RATE_LIMITS: dict[str, int] = {"pterodactyl": 720, "pelican": 256, "reference": 720}

# The reference page names some errors differently from the real panels.
_REFERENCE_CODES = {
    "AuthenticationException": "InvalidCredentialsException",
    "AccessDeniedHttpException": "InsufficientPermissionsException",
    "BackupLockedException": "BackupIsLockedException",
    "ServerStateConflictException": "ConflictingServerStateException",
}

_INSTALLING = "This server has not yet completed its installation process, please try again later."
_STATE_MESSAGES = {
    "restoring_backup": "This server is currently restoring from a backup, please try again later.",
    "suspended": (
        "This server is currently suspended and the functionality requested is unavailable."
    ),
    "installing": _INSTALLING,
    "install_failed": _INSTALLING,
    "transferring": (
        "This server is currently being transferred to a new machine, please try again later."
    ),
}

_Handler = Callable[["_Ctx"], Awaitable[web.StreamResponse]]


@attrs.define
class _Ctx:
    request: web.Request
    body: bytes
    key: str
    params: dict[str, str]
    outcome: _Outcome
    server: FakeServer | None = None
    backup: FakeBackup | None = None

    @property
    def srv(self) -> FakeServer:
        assert self.server is not None
        return self.server

    @property
    def bkp(self) -> FakeBackup:
        assert self.backup is not None
        return self.backup


@attrs.define
class _Outcome:
    status: int = 0
    dropped: bool = False
    fault: str | None = None
    backup_uuid: str | None = None
    sent: int = 0


@attrs.define
class _Window:
    start: float
    count: int = 0


@attrs.define(eq=False)
class _Link:
    backup: FakeBackup
    expires: float
    used: bool = False


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _retry_after(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _response(
    status: int,
    body: bytes | None = None,
    *,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    hdrs = dict(headers or {})
    if content_type is not None and not any(k.lower() == "content-type" for k in hdrs):
        hdrs["Content-Type"] = content_type
    return web.Response(status=status, body=body, headers=hdrs)


def _throttle(times: list[float], spec: tuple[int, float], now: float, detail: str) -> None:
    """The panels' per-server throttles: ``limit`` actions per ``period``, else 429."""
    limit, period = spec
    times[:] = [t for t in times if now - t < period]
    if len(times) >= limit:
        retry = max(1, math.ceil(times[-limit] + period - now))
        raise ApiError(
            429, "TooManyRequestsHttpException", detail, headers={"Retry-After": str(retry)}
        )


class FakePanel:
    """A fake Pterodactyl/Pelican panel plus download-link host, on loopback, for tests.

    Servers and backups are plain objects (`FakeServer`, `FakeBackup`) that tests may read and
    change at any time. The panel API lives at `url` (`{path_prefix}/api/client`); download
    links point at `link_url`, a second origin. Every request, on either host, is appended to
    `requests`.
    """

    def __init__(
        self,
        *,
        dialect: Dialect = "pterodactyl",
        storage: Storage = "wings",
        api_key: str | None = None,
        path_prefix: str = "",
        rate_limit: int | None = None,
        rate_limit_period: float = 60.0,
        create_throttle: tuple[int, float] | None = (2, 600.0),
        restore_throttle: tuple[int, float] | Unset | None = UNSET,
        backup_duration: float = 0.0,
        restore_duration: float = 0.5,
        link_ttl: float | None = None,
    ) -> None:
        if dialect not in ("pterodactyl", "pelican", "reference"):
            raise ValueError(f"unknown dialect {dialect!r}")
        if storage not in ("wings", "s3"):
            raise ValueError(f"unknown storage {storage!r}")
        self.dialect: Dialect = dialect
        self.storage: Storage = storage
        key_prefix = "pacc_" if dialect == "pelican" else "ptlc_"
        self.api_key: str = (
            api_key if api_key is not None else key_prefix + secrets.token_urlsafe(32)
        )
        prefix = path_prefix.strip().rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        self.path_prefix: str = prefix
        self.rate_limit: int = (
            rate_limit if rate_limit is not None else _DEFAULT_RATE_LIMITS[dialect]
        )
        self.rate_limit_period: float = rate_limit_period
        self.create_throttle: tuple[int, float] | None = create_throttle
        if isinstance(restore_throttle, Unset):
            restore_throttle = (3, 900.0) if dialect == "pelican" else None
        self.restore_throttle: tuple[int, float] | None = restore_throttle
        self.backup_duration: float = backup_duration
        self.restore_duration: float = restore_duration
        if link_ttl is None:
            link_ttl = 900.0 if storage == "wings" else 300.0
        self.link_ttl: float = link_ttl
        #: Every request received, API and link host, in arrival order.
        self.requests: list[RecordedRequest] = []

        self._servers: list[FakeServer] = []
        self._faults: list[Fault] = []
        self._scripts: dict[str, deque[DownloadFault | None]] = {}
        self._links: dict[str, _Link] = {}
        self._windows: dict[str, _Window] = {}
        self._runners: list[web.AppRunner] = []
        self._api_origin: str | None = None
        self._link_origin: str | None = None
        self._closing: asyncio.Event | None = None
        # Connections of link requests being answered: cut when the panel closes, so that a
        # body waiting for a client that stopped reading does not hold up the shutdown.
        self._link_transports: set[asyncio.BaseTransport] = set()
        self._cookie_name = "pelican_session" if dialect == "pelican" else "pterodactyl_session"
        self._cookie_value = secrets.token_urlsafe(40)
        self._routes = self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Panel base URL, path prefix included (what an SDK is given); valid after start()."""
        if self._api_origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._api_origin + self.path_prefix

    @property
    def link_url(self) -> str:
        """Base URL of the download-link host (a different origin); valid after start()."""
        if self._link_origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._link_origin

    async def start(self) -> None:
        """Bind the panel and the link host on 127.0.0.1, each on a free port."""
        if self._runners:
            raise RuntimeError("FakePanel is already started")
        self._closing = asyncio.Event()
        try:
            self._api_origin = await self._serve(self._api_entry)
            self._link_origin = await self._serve(self._link_entry)
        except BaseException:
            await self.aclose()
            raise

    async def _serve(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        """Stop both hosts; stalled responses are cut short. Idempotent."""
        if self._closing is not None:
            self._closing.set()
        for transport in list(self._link_transports):
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> FakePanel:
        """Start the panel."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the panel."""
        await self.aclose()

    # ------------------------------------------------------------------ state set-up

    def add_server(
        self,
        *,
        name: str = "server",
        backup_limit: int = 10,
        identifier: str | None = None,
        uuid: str | None = None,
        owner_key: str | None = None,
        fail_backups: bool = False,
    ) -> FakeServer:
        """Add a server; owner_key (default: the panel's key) is the only key that sees it."""
        if uuid is None:
            uuid = str(uuid_mod.uuid4())
            if identifier is not None:
                uuid = identifier + uuid[len(identifier) :]
        if identifier is None:
            identifier = uuid[:8]
        for other in self._servers:
            if identifier in (other.identifier, other.uuid) or uuid in (
                other.identifier,
                other.uuid,
            ):
                raise ValueError(f"a server with id {identifier!r} or uuid {uuid!r} exists")
        server = FakeServer(
            identifier=identifier,
            uuid=uuid,
            name=name,
            backup_limit=backup_limit,
            owner_key=owner_key,
            fail_backups=fail_backups,
        )
        self._servers.append(server)
        return server

    def add_backup(
        self,
        server: FakeServer | str,
        *,
        content: bytes | None = None,
        name: str = "backup",
        locked: bool = False,
        state: BackupState = "completed",
        checksum_algorithm: Literal["sha1", "sha256"] = "sha1",
        checksum: str | Unset | None = UNSET,
        created_at: datetime | None = None,
        uuid: str | None = None,
        ignored_files: list[str] | None = None,
        is_scheduled: bool = False,
    ) -> FakeBackup:
        """Add a backup (content default: a small deterministic .tar.gz seeded by the uuid)."""
        srv = self._resolve_server(server)
        if uuid is None:
            uuid = str(uuid_mod.uuid4())
        elif any(b.uuid == uuid for s in self._servers for b in s.all_backups):
            raise ValueError(f"a backup with uuid {uuid!r} exists")
        if created_at is None:
            created_at = _utcnow()
        elif created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=timezone.utc)
        backup = FakeBackup(
            uuid=uuid,
            name=name,
            content=make_archive(uuid) if content is None else bytes(content),
            server=srv,
            dialect=self.dialect,
            created_at=created_at.replace(microsecond=0),
            ignored_files=list(ignored_files or []),
            is_locked=locked,
            checksum_algorithm=checksum_algorithm,
            checksum_override=checksum,
            is_scheduled=is_scheduled,
        )
        if state == "creating":
            backup._begin(None, fails=False)
        elif state == "failed":
            backup._state = "failed"
            backup._completed_at = backup.created_at
        elif state == "completed":
            backup._completed_at = backup.created_at
        else:
            raise ValueError(f"unknown backup state {state!r}")
        srv._all_backups.append(backup)
        return backup

    def server(self, id_or_uuid: str) -> FakeServer:
        """The server with this short id or UUID (KeyError if none)."""
        for server in self._servers:
            if id_or_uuid in (server.identifier, server.uuid):
                return server
        raise KeyError(id_or_uuid)

    @property
    def servers(self) -> list[FakeServer]:
        """All servers, in the order they were added."""
        return list(self._servers)

    def backup(self, uuid: str) -> FakeBackup:
        """The backup with this UUID, deleted ones included (KeyError if none)."""
        for server in self._servers:
            for backup in server.all_backups:
                if backup.uuid == uuid:
                    return backup
        raise KeyError(uuid)

    def fail_next_backup(self, server: FakeServer | str, times: int = 1) -> None:
        """Make the next `times` backups created through the API end as failed."""
        self._resolve_server(server)._fail_next += times

    def start_restore(self, server: FakeServer | str, duration: float | None = None) -> None:
        """Put the server in "restoring_backup" for `duration` seconds (None: until finished)."""
        self._resolve_server(server).set_status("restoring_backup", duration)

    def finish_restore(self, server: FakeServer | str) -> None:
        """End a running restore now."""
        self._resolve_server(server).set_status(None)

    def _resolve_server(self, server: FakeServer | str) -> FakeServer:
        return server if isinstance(server, FakeServer) else self.server(server)

    def _resolve_backup(self, backup: FakeBackup | str) -> FakeBackup:
        return backup if isinstance(backup, FakeBackup) else self.backup(backup)

    # ------------------------------------------------------------------ faults and logs

    def inject(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int = 503,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        kind: FaultKind = "status",
        json_body: Any = None,
        delay: float = 0.0,
    ) -> Fault:
        """Script an API fault, applied before routing, auth and rate limits; first match wins.

        Kinds: "status" (a JSON error body; a given `body` goes out as text/plain), "json"
        (`json_body`, or a raw `body`, as application/json),
        "html", "empty", "redirect" (302 to /auth/login unless a 3xx `status`), "reset"
        (connection reset, no answer), "stall" (silence for `delay` seconds, default an hour,
        then normal handling). For the other kinds `delay` waits before answering. `path` is a
        regex searched in the request path without the prefix.
        """
        if kind not in ("status", "reset", "stall", "html", "redirect", "empty", "json"):
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(
            kind=kind,
            status=status,
            method=method,
            path=path,
            times=times,
            headers=dict(headers or {}),
            body=body.encode() if isinstance(body, str) else body,
            json_body=json_body,
            delay=delay,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every scripted API fault and download script."""
        self._faults.clear()
        self._scripts.clear()

    def script_download(self, backup: FakeBackup | str, *faults: DownloadFault | None) -> None:
        """Script the next GETs of this backup's links: the n-th gets faults[n] (None: normal).

        Replaces any earlier script for the backup; once it is used up, links behave normally.
        """
        self._scripts[self._resolve_backup(backup).uuid] = deque(faults)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        self.requests.clear()

    def api_requests(self) -> list[RecordedRequest]:
        """Recorded requests to the panel."""
        return [r for r in self.requests if r.host == "api"]

    def link_requests(self) -> list[RecordedRequest]:
        """Recorded requests to the link host."""
        return [r for r in self.requests if r.host == "link"]

    def _record(
        self, request: web.Request, body: bytes, host: Literal["api", "link"]
    ) -> RecordedRequest:
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lower = key.lower()
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=headers,
            body=body,
            host=host,
            status=0,
            backup_uuid=None,
            time=time.monotonic(),
        )
        self.requests.append(rec)
        return rec

    def _finish(self, rec: RecordedRequest, outcome: _Outcome) -> None:
        done = attrs.evolve(
            rec,
            status=0 if outcome.dropped and not outcome.status else outcome.status,
            backup_uuid=outcome.backup_uuid,
            fault=outcome.fault,
            bytes_sent=outcome.sent,
        )
        for i in range(len(self.requests) - 1, -1, -1):
            if self.requests[i] is rec:
                self.requests[i] = done
                return

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early when the panel closes; True if it is closing."""
        closing = self._closing
        if closing is None or closing.is_set():
            return True
        try:
            await asyncio.wait_for(closing.wait(), timeout=max(seconds, 0.0))
        except asyncio.TimeoutError:
            return False
        return True

    @staticmethod
    def _drop(request: web.Request, outcome: _Outcome, *, reset: bool) -> None:
        transport = request.transport
        outcome.dropped = True
        if transport is None:
            return
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()

    # ------------------------------------------------------------------ API host

    async def _api_entry(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = self._record(request, body, "api")
        outcome = _Outcome()
        try:
            resp = await self._api_handle(request, body, outcome)
            if not outcome.dropped:
                outcome.status = resp.status
            return resp
        finally:
            self._finish(rec, outcome)

    async def _api_handle(
        self, request: web.Request, body: bytes, outcome: _Outcome
    ) -> web.StreamResponse:
        path = request.path
        prefix = self.path_prefix
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return _response(404, html_page(404), content_type="text/html; charset=UTF-8")
        rel = path[len(prefix) :] or "/"

        fault = next((f for f in self._faults if f._matches(request.method, rel)), None)
        if fault is not None:
            fault.used += 1
            outcome.fault = f"inject:{fault.kind}"
            injected = await self._apply_fault(request, fault, outcome)
            if injected is not None:
                return injected

        accept_json = "json" in request.headers.get("Accept", "").lower()
        if rel.rstrip("/") in ("", "/auth/login") and request.method in ("GET", "HEAD"):
            if rel.rstrip("/") == "":
                return self._redirect_to_login()
            page = (
                b"<!DOCTYPE html><html><head><title>Login</title></head><body>Login</body></html>"
            )
            return self._with_cookie(_response(200, page, content_type="text/html; charset=UTF-8"))

        token = _bearer(request)
        limit_headers: dict[str, str] = {}
        try:
            if not rel.startswith("/api/"):
                raise self._not_found(f"The route {rel.lstrip('/')} could not be found.")
            limit_headers = self._hit_rate_limit(token or f"ip:{request.remote}")
            resp = await self._route(request, rel, body, token, outcome)
        except ApiError as err:
            resp = self._render_error(err, accept_json)
        resp.headers.update(limit_headers)
        return self._with_cookie(resp)

    async def _apply_fault(
        self, request: web.Request, fault: Fault, outcome: _Outcome
    ) -> web.StreamResponse | None:
        if fault.kind == "stall":
            if await self._sleep(fault.delay if fault.delay > 0 else _FOREVER):
                self._drop(request, outcome, reset=False)
                return web.Response()
            return None
        if fault.delay > 0 and await self._sleep(fault.delay):
            self._drop(request, outcome, reset=False)
            return web.Response()
        if fault.kind == "reset":
            self._drop(request, outcome, reset=True)
            return web.Response()
        status = fault.status
        headers = dict(fault.headers)
        if fault.kind == "redirect":
            if not 300 <= status < 400:
                status = 302
            if not any(k.lower() == "location" for k in headers):
                headers["Location"] = self.url + "/auth/login"
            location = next(v for k, v in headers.items() if k.lower() == "location")
            body = fault.body if fault.body is not None else redirect_page(location)
            return _response(status, body, content_type="text/html; charset=UTF-8", headers=headers)
        if fault.kind == "html":
            body = fault.body if fault.body is not None else html_page(status)
            return _response(status, body, content_type="text/html; charset=UTF-8", headers=headers)
        if fault.kind == "empty":
            return _response(status, b"", headers=headers)
        if fault.kind == "json":
            body = fault.body if fault.body is not None else json_bytes(fault.json_body)
            return _response(status, body, content_type="application/json", headers=headers)
        if fault.body is not None:
            return _response(status, fault.body, content_type="text/plain", headers=headers)
        code = self._code(standard_code(status))
        error = {"code": code, "status": str(status), "detail": standard_detail(status)}
        body = json_bytes({"errors": [error]})
        return _response(status, body, content_type="application/json", headers=headers)

    def _hit_rate_limit(self, bucket: str) -> dict[str, str]:
        """Count one request; the rate-limit headers to send, or ApiError 429 over the limit."""
        now = time.monotonic()
        window = self._windows.get(bucket)
        if window is None or now - window.start >= self.rate_limit_period:
            window = self._windows[bucket] = _Window(start=now)
        limit = self.rate_limit
        if window.count >= limit:
            retry = max(1, math.ceil(window.start + self.rate_limit_period - now))
            headers = {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": "0",
                "Retry-After": str(retry),
                "X-RateLimit-Reset": str(int(time.time()) + retry),
            }
            raise ApiError(429, "ThrottleRequestsException", "Too Many Attempts.", headers=headers)
        window.count += 1
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - window.count),
        }

    def _with_cookie(self, resp: web.StreamResponse) -> web.StreamResponse:
        resp.headers["Set-Cookie"] = (
            f"{self._cookie_name}={self._cookie_value}; Path=/; Max-Age=7200; HttpOnly; "
            "SameSite=Lax"
        )
        return resp

    def _redirect_to_login(self) -> web.Response:
        location = self.url + "/auth/login"
        return _response(
            302,
            redirect_page(location),
            content_type="text/html; charset=UTF-8",
            headers={"Location": location},
        )

    def _code(self, code: str) -> str:
        return _REFERENCE_CODES.get(code, code) if self.dialect == "reference" else code

    def _render_error(self, err: ApiError, accept_json: bool) -> web.Response:
        if not accept_json:
            if err.status == 401:
                resp = self._redirect_to_login()
                resp.headers.update(err.headers)
                return resp
            return _response(
                err.status,
                html_page(err.status, err.detail),
                content_type="text/html; charset=UTF-8",
                headers=err.headers,
            )
        errors = [{**e, "code": self._code(str(e["code"]))} for e in err.errors]
        return _response(
            err.status,
            json_bytes({"errors": errors}),
            content_type="application/json",
            headers=err.headers,
        )

    @staticmethod
    def _not_found(
        detail: str = "The requested resource could not be found on the server.",
    ) -> ApiError:
        return ApiError(404, "NotFoundHttpException", detail)

    # ------------------------------------------------------------------ routing

    def _build_routes(self) -> list[tuple[re.Pattern[str], bool, dict[str, _Handler]]]:
        s = r"/servers/(?P<server>[^/]+)"
        b = s + r"/backups/(?P<backup>[^/]+)"
        routes: list[tuple[str, bool, dict[str, _Handler]]] = [
            (r"", False, {"GET": self._servers_index}),
            (s, False, {"GET": self._server_view}),
            (s + "/backups", True, {"GET": self._backups_index, "POST": self._backups_store}),
            (b, True, {"GET": self._backup_view, "DELETE": self._backup_delete}),
            (b + "/download", True, {"GET": self._backup_download}),
            (b + "/lock", True, {"POST": self._backup_lock}),
            (b + "/restore", True, {"POST": self._backup_restore}),
        ]
        if self.dialect == "pelican":
            routes.append((b + "/rename", True, {"PUT": self._backup_rename}))
        return [(re.compile(p), guarded, m) for p, guarded, m in routes]

    async def _route(
        self,
        request: web.Request,
        rel: str,
        body: bytes,
        token: str | None,
        outcome: _Outcome,
    ) -> web.StreamResponse:
        base = "/api/client"
        if rel != base and not rel.startswith(base + "/"):
            raise self._not_found(f"The route {rel.lstrip('/')} could not be found.")
        guarded, handler, params = self._match_route(request.method, rel)
        key = self._authenticate(token)
        ctx = _Ctx(request=request, body=body, key=key, params=params, outcome=outcome)
        if "server" in params:
            ctx.server = self._find_server(params["server"], key)
            if guarded:
                self._check_server_state(ctx.server)
        if "backup" in params:
            outcome.backup_uuid = params["backup"]
            ctx.backup = self._find_backup(ctx.srv, params["backup"])
        return await handler(ctx)

    def _match_route(self, method: str, rel: str) -> tuple[bool, _Handler, dict[str, str]]:
        """(needs an idle server, handler, path params) for a path under /api/client."""
        sub = rel[len("/api/client") :].rstrip("/")
        lookup = "GET" if method == "HEAD" else method
        for pattern, guarded, methods in self._routes:
            match = pattern.fullmatch(sub)
            if match is None:
                continue
            handler = methods.get(lookup)
            if handler is None:
                allowed = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
                raise ApiError(
                    405,
                    "MethodNotAllowedHttpException",
                    f"The {method} method is not supported for route "
                    f"{rel.strip('/')}. Supported methods: {', '.join(allowed)}.",
                    headers={"Allow": ", ".join(allowed)},
                )
            return guarded, handler, match.groupdict()
        raise self._not_found(f"The route {rel.lstrip('/')} could not be found.")

    def _authenticate(self, token: str | None) -> str:
        if token is None:
            raise ApiError(401, "AuthenticationException", "Unauthenticated.")
        if token.startswith(("ptla_", "papp_")):
            raise ApiError(403, "AccessDeniedHttpException", "This action is unauthorized.")
        if token != self.api_key and not any(s.owner_key == token for s in self._servers):
            raise ApiError(401, "AuthenticationException", "Unauthenticated.")
        return token

    def _owner(self, server: FakeServer) -> str:
        return server.owner_key if server.owner_key is not None else self.api_key

    def _find_server(self, ident: str, key: str) -> FakeServer:
        for server in self._servers:
            if ident in (server.identifier, server.uuid) and self._owner(server) == key:
                return server
        raise self._not_found()

    def _find_backup(self, server: FakeServer, uuid: str) -> FakeBackup:
        for backup in server.backups:
            if backup.uuid == uuid:
                return backup
        raise self._not_found()

    def _check_server_state(self, server: FakeServer) -> None:
        status = server.status
        if status is not None:
            detail = _STATE_MESSAGES.get(
                status, "This server is currently in an unsupported state, please try again later."
            )
            raise ApiError(409, "ServerStateConflictException", detail)

    def _input(self, ctx: _Ctx) -> dict[str, Any]:
        """Request input as Laravel merges it: query string, then a JSON or form body."""
        data: dict[str, Any] = dict(ctx.request.query)
        if not ctx.body:
            return data
        content_type = ctx.request.content_type.lower()
        if "json" in content_type:
            try:
                parsed = json.loads(ctx.body)
            except ValueError:
                raise ApiError(
                    400,
                    "BadRequestHttpException",
                    "The JSON data passed in the request appears to be malformed: Syntax error",
                ) from None
            if isinstance(parsed, dict):
                data.update(parsed)
        elif content_type == "application/x-www-form-urlencoded":
            data.update(parse_qsl(ctx.body.decode("utf-8", "replace"), keep_blank_values=True))
        return data

    def _json(self, status: int, payload: Any) -> web.Response:
        return _response(status, json_bytes(payload), content_type="application/json")

    def _paginate(
        self, ctx: _Ctx, items: list[Any], default: int, maximum: int
    ) -> tuple[list[Any], dict[str, Any]]:
        query = ctx.request.query
        per_page = _int_or(query.get("per_page"), default)
        if per_page < 1:
            per_page = default
        per_page = min(per_page, maximum)
        page = max(_int_or(query.get("page"), 1), 1)
        total = len(items)
        total_pages = max(1, math.ceil(total / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        # Laravel builds these from the bare path plus `page` only: per_page is not kept.
        path_url = f"{self._api_origin}{ctx.request.path}"
        links: dict[str, str] = {}
        if page > 1:
            links["previous"] = f"{path_url}?page={page - 1}"
        if page < total_pages:
            links["next"] = f"{path_url}?page={page + 1}"
        pagination = {
            "total": total,
            "count": len(chunk),
            "per_page": per_page,
            "current_page": page,
            "total_pages": total_pages,
            "links": links,
        }
        return chunk, pagination

    # ------------------------------------------------------------------ serializers

    def _server_json(self, server: FakeServer) -> dict[str, Any]:
        status = server.status
        return {
            "object": "server",
            "attributes": {
                "server_owner": True,
                "identifier": server.identifier,
                "internal_id": self._servers.index(server) + 1,
                "uuid": server.uuid,
                "name": server.name,
                "node": "Node 1",
                "is_node_under_maintenance": False,
                "sftp_details": {"ip": "127.0.0.1", "port": 2022},
                "description": "",
                "feature_limits": {
                    "databases": 0,
                    "allocations": 1,
                    "backups": server.backup_limit,
                },
                "status": status,
                "is_suspended": status == "suspended",
                "is_installing": status in ("installing", "install_failed"),
                "is_transferring": status == "transferring",
            },
        }

    def _backup_json(self, backup: FakeBackup, *, creating: bool = False) -> dict[str, Any]:
        state: BackupState = "creating" if creating else backup.state
        completed_at = None if state == "creating" else backup.completed_at
        size = len(backup.content) if state == "completed" else 0
        attributes: dict[str, Any]
        if self.dialect == "reference":
            attributes = {
                "uuid": backup.uuid,
                "name": backup.name,
                "ignored_files": list(backup.ignored_files),
                "sha256_hash": backup._wire_checksum(state),
                "bytes": size,
                "created_at": iso(backup.created_at),
                "completed_at": iso(completed_at) if state == "completed" else None,
                "is_successful": None if state == "creating" else state == "completed",
                "is_locked": backup.is_locked,
            }
        else:
            attributes = {
                "uuid": backup.uuid,
                "is_successful": state == "completed",
                "is_locked": backup.is_locked,
                "name": backup.name,
                "ignored_files": list(backup.ignored_files),
                "checksum": backup._wire_checksum(state),
                "bytes": size,
                "created_at": iso(backup.created_at),
                "completed_at": iso(completed_at),
            }
            if self.dialect == "pelican":
                attributes["is_scheduled"] = backup.is_scheduled
        return {"object": "backup", "attributes": attributes}

    # ------------------------------------------------------------------ route handlers

    async def _servers_index(self, ctx: _Ctx) -> web.StreamResponse:
        mine = [s for s in self._servers if self._owner(s) == ctx.key]
        chunk, pagination = self._paginate(ctx, mine, 50, 100)
        return self._json(
            200,
            {
                "object": "list",
                "data": [self._server_json(s) for s in chunk],
                "meta": {"pagination": pagination},
            },
        )

    async def _server_view(self, ctx: _Ctx) -> web.StreamResponse:
        return self._json(200, self._server_json(ctx.srv))

    async def _backups_index(self, ctx: _Ctx) -> web.StreamResponse:
        backups = ctx.srv.backups
        chunk, pagination = self._paginate(ctx, backups, 20, 50)
        meta: dict[str, Any] = {"pagination": pagination}
        if self.dialect != "reference":
            meta = {"backup_count": sum(b.state != "failed" for b in backups), **meta}
        return self._json(
            200,
            {"object": "list", "data": [self._backup_json(b) for b in chunk], "meta": meta},
        )

    async def _backups_store(self, ctx: _Ctx) -> web.StreamResponse:
        server = ctx.srv
        data = self._input(ctx)
        validate(
            data,
            [
                Rule("name", kind="string", max_len=255 if self.dialect == "pelican" else 191),
                Rule("ignored", kind="string"),
                Rule("is_locked", kind="boolean"),
            ],
        )
        now = time.monotonic()
        if self.create_throttle is not None:
            limit, period = self.create_throttle
            _throttle(
                server._create_times,
                self.create_throttle,
                now,
                f"Only {limit} backups may be generated within a {period:g} second span of time.",
            )
        live = [b for b in server.backups if b.state != "failed"]
        if server.backup_limit <= 0 or len(live) >= server.backup_limit:
            raise ApiError(
                400,
                "TooManyBackupsException",
                "Cannot create a new backup, this server has reached its limit of "
                f"{max(server.backup_limit, 0)} backups.",
            )
        if self.dialect == "reference" and any(b.state == "creating" for b in live):
            raise ApiError(
                409,
                "ConflictingServerStateException",
                "Cannot create backup while another backup is in progress.",
            )
        created_at = _utcnow()
        name = data.get("name") or f"Backup at {created_at:%Y-%m-%d %H:%M:%S}"
        ignored = data.get("ignored") or ""
        is_locked = data.get("is_locked")
        fails = server.fail_backups or server._fail_next > 0
        if server._fail_next > 0:
            server._fail_next -= 1
        uuid = str(uuid_mod.uuid4())
        backup = FakeBackup(
            uuid=uuid,
            name=str(name),
            content=make_archive(uuid),
            server=server,
            dialect=self.dialect,
            created_at=created_at,
            ignored_files=[p for p in str(ignored).split("\n") if p],
            is_locked=is_locked not in (None, "") and to_bool(is_locked),
        )
        backup._begin(self.backup_duration, fails)
        server._all_backups.append(backup)
        server._create_times.append(now)
        ctx.outcome.backup_uuid = uuid
        return self._json(200, self._backup_json(backup, creating=True))

    async def _backup_view(self, ctx: _Ctx) -> web.StreamResponse:
        return self._json(200, self._backup_json(ctx.bkp))

    async def _backup_download(self, ctx: _Ctx) -> web.StreamResponse:
        backup = ctx.bkp
        if self.dialect == "reference":
            state = backup.state
            if state == "creating":
                raise ApiError(
                    400,
                    "BackupNotCompletedException",
                    "This backup has not completed yet and cannot be downloaded.",
                )
            if state == "failed":
                raise ApiError(
                    400, "BackupFailedException", "This backup failed and cannot be downloaded."
                )
        backup.links_issued += 1
        return self._json(
            200, {"object": "signed_url", "attributes": {"url": self._issue_link(backup)}}
        )

    async def _backup_lock(self, ctx: _Ctx) -> web.StreamResponse:
        backup = ctx.bkp
        backup.is_locked = not backup.is_locked
        if self.dialect == "reference":
            return web.Response(status=204)
        return self._json(200, self._backup_json(backup))

    async def _backup_restore(self, ctx: _Ctx) -> web.StreamResponse:
        server, backup = ctx.srv, ctx.bkp
        data = self._input(ctx)
        reference = self.dialect == "reference"
        validate(data, [Rule("truncate", required=not reference, kind="boolean")])
        raw = data.get("truncate")
        truncate = True if raw in (None, "") else to_bool(raw)
        state = backup.state
        if state != "completed":
            if reference and state == "creating":
                raise ApiError(
                    400,
                    "BackupNotCompletedException",
                    "This backup has not completed yet and cannot be restored.",
                )
            if reference:
                raise ApiError(
                    400, "BackupFailedException", "This backup failed and cannot be restored."
                )
            raise ApiError(
                400,
                "BadRequestHttpException",
                "This backup cannot be restored at this time: not completed or failed.",
            )
        now = time.monotonic()
        if self.restore_throttle is not None:
            _throttle(
                server._restore_times,
                self.restore_throttle,
                now,
                "Too many restore attempts, please try again later.",
            )
        server._restore_times.append(now)
        server.restores.append((backup.uuid, truncate))
        server.set_status("restoring_backup", self.restore_duration)
        return web.Response(status=202 if reference else 204)

    async def _backup_delete(self, ctx: _Ctx) -> web.StreamResponse:
        backup = ctx.bkp
        state = backup.state
        if self.dialect == "reference":
            if state == "creating":
                raise ApiError(
                    409,
                    "ConflictingServerStateException",
                    "Cannot delete backup while it is being created.",
                )
            if backup.is_locked:
                raise ApiError(
                    400, "BackupLockedException", "This backup is locked and cannot be deleted."
                )
        elif backup.is_locked and state == "completed":
            raise ApiError(
                400, "BackupLockedException", "Cannot delete a backup that is marked as locked."
            )
        backup.deleted = True
        return web.Response(status=204)

    async def _backup_rename(self, ctx: _Ctx) -> web.StreamResponse:
        backup = ctx.bkp
        data = self._input(ctx)
        validate(data, [Rule("name", required=True, kind="string", max_len=255)])
        backup.name = str(data["name"])
        return self._json(200, self._backup_json(backup))

    # ------------------------------------------------------------------ link host

    def _issue_link(self, backup: FakeBackup) -> str:
        if backup.link_factory is not None:
            return backup.link_factory()
        expires = time.monotonic() + self.link_ttl
        if self.storage == "wings":
            token = secrets.token_urlsafe(48)
            self._links[token] = _Link(backup=backup, expires=expires)
            return f"{self.link_url}/download/backup?token={token}"
        signature = secrets.token_hex(32)
        self._links[signature] = _Link(backup=backup, expires=expires)
        now = datetime.now(timezone.utc)
        return (
            f"{self.link_url}/backups/{backup.server.uuid}/{backup.uuid}.tar.gz"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential=FAKEPANELACCESSKEY%2F{now:%Y%m%d}%2Fus-east-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date={now:%Y%m%dT%H%M%SZ}&X-Amz-Expires={max(1, math.ceil(self.link_ttl))}"
            f"&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}"
        )

    def _next_download_fault(self, backup: FakeBackup) -> DownloadFault | None:
        backup.download_attempts += 1
        script = self._scripts.get(backup.uuid)
        fault = script.popleft() if script else None
        if fault is not None and fault.kind == "change_etag":
            backup.object_version += 1
            if fault.content is not None:
                backup.served_content = fault.content
        return fault

    async def _link_entry(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = self._record(request, body, "link")
        outcome = _Outcome()
        transport = request.transport
        if transport is not None:
            self._link_transports.add(transport)
        try:
            if self.storage == "wings":
                resp = await self._serve_wings(request, outcome)
            else:
                resp = await self._serve_s3(request, outcome)
            if not outcome.status and not outcome.dropped:
                outcome.status = resp.status
            return resp
        finally:
            if transport is not None:
                self._link_transports.discard(transport)
            self._finish(rec, outcome)

    @staticmethod
    def _wings_error(
        status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        payload = {"error": message, "request_id": str(uuid_mod.uuid4())}
        return _response(
            status,
            json.dumps(payload).encode(),
            content_type="application/json; charset=utf-8",
            headers=headers,
        )

    @staticmethod
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
        return _response(status, body, content_type="application/xml", headers=hdrs)

    async def _serve_wings(self, request: web.Request, outcome: _Outcome) -> web.StreamResponse:
        if request.path != "/download/backup":
            return self._wings_error(404, "The requested resource does not exist on this instance.")
        if request.method != "GET":
            return _response(405, b"405 method not allowed", content_type="text/plain")
        link = self._links.get(request.query.get("token", ""))
        if link is None:
            return self._wings_error(
                500, "An unexpected error was encountered while processing this request"
            )
        backup = link.backup
        outcome.backup_uuid = backup.uuid
        fault = self._next_download_fault(backup)
        if fault is not None:
            outcome.fault = fault.kind
        if (fault is not None and fault.kind == "expired") or time.monotonic() > link.expires:
            link.used = True
            return self._wings_error(
                500, "An unexpected error was encountered while processing this request"
            )
        if link.used:
            return self._wings_error(404, "The requested resource does not exist on this instance.")
        link.used = True
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _retry_after(fault.retry_after)
            return self._wings_error(fault.code, standard_detail(fault.code), headers)
        data = _stored(backup)
        if data is None:
            return self._wings_error(404, "The requested backup was not found on this server.")
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

    async def _serve_s3(self, request: web.Request, outcome: _Outcome) -> web.StreamResponse:
        path = request.path
        match = re.fullmatch(r"/backups/([^/]+)/([^/]+)\.tar\.gz", path)
        signature = request.query.get("X-Amz-Signature")
        link = self._links.get(signature) if signature else None
        if signature is None:
            return self._s3_error(403, "AccessDenied", "Access Denied", path)
        if (
            link is None
            or match is None
            or match.group(1) != link.backup.server.uuid
            or match.group(2) != link.backup.uuid
            or request.method != "GET"
        ):
            # A presigned URL is signed for one method and path.
            return self._s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                path,
            )
        backup = link.backup
        outcome.backup_uuid = backup.uuid
        fault = self._next_download_fault(backup)
        if fault is not None:
            outcome.fault = fault.kind
        if (fault is not None and fault.kind == "expired") or time.monotonic() > link.expires:
            return self._s3_error(403, "AccessDenied", "Request has expired", path)
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _retry_after(fault.retry_after)
            code = {500: "InternalError", 503: "SlowDown"}.get(fault.code, "ServiceUnavailable")
            return self._s3_error(fault.code, code, standard_detail(fault.code), path, headers)
        data = _stored(backup)
        if data is None:
            return self._s3_error(404, "NoSuchKey", "The specified key does not exist.", path)
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
                return self._s3_error(
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

    async def _stream(
        self,
        request: web.Request,
        status: int,
        headers: dict[str, str],
        data: memoryview,
        start: int,
        fault: DownloadFault | None,
        outcome: _Outcome,
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
                    await self._sleep(fault.seconds)
                self._drop(request, outcome, reset=False)
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
        outcome: _Outcome,
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
        self, request: web.Request, resp: web.StreamResponse, outcome: _Outcome
    ) -> None:
        """Zeros until the client goes away; each write waits until the client has read."""
        closing = self._closing
        while True:
            if closing is None or closing.is_set():
                self._drop(request, outcome, reset=False)
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
        outcome: _Outcome,
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
                if await self._sleep(min(left, _TRICKLE_TICK * 5)):
                    self._drop(request, outcome, reset=False)
                    raise ConnectionResetError("FakePanel is closing")
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("the client went away")

    async def _stall(self, request: web.Request, seconds: float) -> None:
        if await self._sleep(seconds):
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("FakePanel is closing")


def _stored(backup: FakeBackup) -> bytes | None:
    """The bytes a link serves now: None when there is no file (deleted or failed)."""
    data = backup._visible_content()
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
