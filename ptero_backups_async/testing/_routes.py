"""The API routes: the panel's client API on aiohttp, built on the panel's state.

In order, for each request to the panel's origin: the path prefix, scripted faults
(`FakePanel.inject`), the login page, the API rate limit, routing (404/405), authentication,
the server and its state (409), the backup, then the route's handler. Errors are `ApiError`s,
rendered here as JSON (or HTML, or the login redirect, for a client that does not ask for JSON).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import attrs
from aiohttp import web

from ._http import Outcome, ShutdownSignal, drop, response, serve_recorded
from ._models import FakeBackup, FakeServer, Fault
from ._serialize import (
    backup_json,
    backup_page,
    errors_json,
    paginate,
    server_json,
    server_page,
    signed_url_json,
    status_error_json,
)
from ._state import Action, PanelState
from ._wire import ApiError, Rule, html_page, json_bytes, redirect_page, to_bool, validate

__all__ = ["ApiRoutes"]

_FOREVER = 3600.0

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

_LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Login</title></head><body>Login</body></html>"
_HTML = "text/html; charset=UTF-8"

_Route = Callable[["_Ctx"], Awaitable[web.StreamResponse]]


@attrs.define
class _Ctx:
    request: web.Request
    body: bytes
    key: str
    params: dict[str, str]
    outcome: Outcome
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


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _json(status: int, payload: Any) -> web.Response:
    return response(status, json_bytes(payload), content_type="application/json")


def _not_found(
    detail: str = "The requested resource could not be found on the server.",
) -> ApiError:
    return ApiError(404, "NotFoundHttpException", detail)


class ApiRoutes:
    """The client API of a FakePanel: `handle` answers every request to the panel's origin.

    Download links come from `issue_link` (the link host's) and websocket tokens from
    `issue_socket` (the node's: `(server, key) -> (token, socket URL)`), so this part needs
    neither. Without `issue_socket` there is no `/websocket` route.
    """

    def __init__(
        self,
        state: PanelState,
        shutdown: ShutdownSignal,
        issue_link: Callable[[FakeBackup], str],
        issue_socket: Callable[[FakeServer, str], tuple[str, str]] | None = None,
    ) -> None:
        self._state = state
        self._config = state.config
        self._shutdown = shutdown
        self._issue_link = issue_link
        self._issue_socket = issue_socket
        self._origin: str | None = None
        dialect = self._config.dialect
        self._cookie_name = "pelican_session" if dialect == "pelican" else "pterodactyl_session"
        self._cookie_value = secrets.token_urlsafe(40)
        self._routes = self._build_routes()

    def bind(self, origin: str) -> None:
        """Serve at `origin` ("http://127.0.0.1:<port>"): the base of redirects and page links."""
        self._origin = origin

    @property
    def _panel_url(self) -> str:
        if self._origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._origin + self._config.path_prefix

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler of the panel's origin: answer and log one request."""
        return await serve_recorded(self._state, request, "api", self._answer)

    async def _answer(
        self, request: web.Request, body: bytes, outcome: Outcome
    ) -> web.StreamResponse:
        path = request.path
        prefix = self._config.path_prefix
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return response(404, html_page(404), content_type=_HTML)
        rel = path[len(prefix) :] or "/"

        fault = self._state.take_fault(request.method, rel)
        if fault is not None:
            outcome.fault = f"inject:{fault.kind}"
            injected = await self._apply_fault(request, fault, outcome)
            if injected is not None:
                return injected

        accept_json = "json" in request.headers.get("Accept", "").lower()
        if rel.rstrip("/") in ("", "/auth/login") and request.method in ("GET", "HEAD"):
            if rel.rstrip("/") == "":
                return self._redirect_to_login()
            return self._with_cookie(response(200, _LOGIN_PAGE, content_type=_HTML))

        token = _bearer(request)
        limit_headers: dict[str, str] = {}
        try:
            if not rel.startswith("/api/"):
                raise _not_found(f"The route {rel.lstrip('/')} could not be found.")
            limit_headers = self._hit_rate_limit(token or f"ip:{request.remote}")
            resp = await self._route(request, rel, body, token, outcome)
        except ApiError as err:
            resp = self._render_error(err, accept_json)
        resp.headers.update(limit_headers)
        return self._with_cookie(resp)

    # Faults, limits and errors.

    async def _apply_fault(
        self, request: web.Request, fault: Fault, outcome: Outcome
    ) -> web.StreamResponse | None:
        if fault.kind == "stall":
            if await self._shutdown.sleep(fault.delay if fault.delay > 0 else _FOREVER):
                drop(request, outcome, reset=False)
                return web.Response()
            return None
        if fault.delay > 0 and await self._shutdown.sleep(fault.delay):
            drop(request, outcome, reset=False)
            return web.Response()
        if fault.kind == "reset":
            drop(request, outcome, reset=True)
            return web.Response()
        status = fault.status
        headers = dict(fault.headers)
        if fault.kind == "redirect":
            if not 300 <= status < 400:
                status = 302
            if not any(k.lower() == "location" for k in headers):
                headers["Location"] = self._panel_url + "/auth/login"
            location = next(v for k, v in headers.items() if k.lower() == "location")
            body = fault.body if fault.body is not None else redirect_page(location)
            return response(status, body, content_type=_HTML, headers=headers)
        if fault.kind == "html":
            body = fault.body if fault.body is not None else html_page(status)
            return response(status, body, content_type=_HTML, headers=headers)
        if fault.kind == "empty":
            return response(status, b"", headers=headers)
        if fault.kind == "json":
            body = fault.body if fault.body is not None else json_bytes(fault.json_body)
            return response(status, body, content_type="application/json", headers=headers)
        if fault.body is not None:
            return response(status, fault.body, content_type="text/plain", headers=headers)
        body = json_bytes(status_error_json(status, self._config.dialect))
        return response(status, body, content_type="application/json", headers=headers)

    def _hit_rate_limit(self, bucket: str) -> dict[str, str]:
        """Count one request; the rate-limit headers to send, or ApiError 429 over the limit."""
        hit = self._state.hit_rate_limit(bucket, time.monotonic())
        headers = {
            "X-RateLimit-Limit": str(hit.limit),
            "X-RateLimit-Remaining": str(hit.remaining),
        }
        if hit.retry_after is not None:
            headers["Retry-After"] = str(hit.retry_after)
            headers["X-RateLimit-Reset"] = str(int(time.time()) + hit.retry_after)
            raise ApiError(429, "ThrottleRequestsException", "Too Many Attempts.", headers=headers)
        return headers

    def _throttle(self, server: FakeServer, action: Action, now: float, detail: str) -> None:
        """The panels' per-server throttles: 429 with Retry-After when over."""
        wait = self._state.throttle_wait(server, action, now)
        if wait is not None:
            raise ApiError(
                429, "TooManyRequestsHttpException", detail, headers={"Retry-After": str(wait)}
            )

    def _with_cookie(self, resp: web.StreamResponse) -> web.StreamResponse:
        resp.headers["Set-Cookie"] = (
            f"{self._cookie_name}={self._cookie_value}; Path=/; Max-Age=7200; HttpOnly; "
            "SameSite=Lax"
        )
        return resp

    def _redirect_to_login(self) -> web.Response:
        location = self._panel_url + "/auth/login"
        return response(
            302, redirect_page(location), content_type=_HTML, headers={"Location": location}
        )

    def _render_error(self, err: ApiError, accept_json: bool) -> web.Response:
        if not accept_json:
            if err.status == 401:
                resp = self._redirect_to_login()
                resp.headers.update(err.headers)
                return resp
            return response(
                err.status,
                html_page(err.status, err.detail),
                content_type=_HTML,
                headers=err.headers,
            )
        return response(
            err.status,
            json_bytes(errors_json(err.errors, self._config.dialect)),
            content_type="application/json",
            headers=err.headers,
        )

    # Routing.

    def _build_routes(self) -> list[tuple[re.Pattern[str], bool, dict[str, _Route]]]:
        s = r"/servers/(?P<server>[^/]+)"
        b = s + r"/backups/(?P<backup>[^/]+)"
        routes: list[tuple[str, bool, dict[str, _Route]]] = [
            (r"", False, {"GET": self._servers_index}),
            (s, False, {"GET": self._server_view}),
            (s + "/backups", True, {"GET": self._backups_index, "POST": self._backups_store}),
            (b, True, {"GET": self._backup_view, "DELETE": self._backup_delete}),
            (b + "/download", True, {"GET": self._backup_download}),
            (b + "/lock", True, {"POST": self._backup_lock}),
            (b + "/restore", True, {"POST": self._backup_restore}),
        ]
        if self._config.dialect == "pelican":
            routes.append((b + "/rename", True, {"PUT": self._backup_rename}))
        if self._issue_socket is not None and self._config.dialect != "reference":
            # The reference page knows no websocket: a panel that follows it has no such route.
            routes.append((s + "/websocket", False, {"GET": self._websocket}))
        return [(re.compile(p), guarded, m) for p, guarded, m in routes]

    async def _route(
        self,
        request: web.Request,
        rel: str,
        body: bytes,
        token: str | None,
        outcome: Outcome,
    ) -> web.StreamResponse:
        base = "/api/client"
        if rel != base and not rel.startswith(base + "/"):
            raise _not_found(f"The route {rel.lstrip('/')} could not be found.")
        guarded, handler, params = self._match_route(request.method, rel)
        key = self._authenticate(token)
        ctx = _Ctx(request=request, body=body, key=key, params=params, outcome=outcome)
        if "server" in params:
            ctx.server = self._state.find_server(params["server"], key)
            if ctx.server is None:
                raise _not_found()
            if guarded:
                self._check_server_state(ctx.server)
        if "backup" in params:
            outcome.backup_uuid = params["backup"]
            ctx.backup = next((b for b in ctx.srv.backups if b.uuid == params["backup"]), None)
            if ctx.backup is None:
                raise _not_found()
        return await handler(ctx)

    def _match_route(self, method: str, rel: str) -> tuple[bool, _Route, dict[str, str]]:
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
        raise _not_found(f"The route {rel.lstrip('/')} could not be found.")

    def _authenticate(self, token: str | None) -> str:
        if token is None:
            raise ApiError(401, "AuthenticationException", "Unauthenticated.")
        if token.startswith(("ptla_", "papp_")):
            raise ApiError(403, "AccessDeniedHttpException", "This action is unauthorized.")
        if not self._state.knows_key(token):
            raise ApiError(401, "AuthenticationException", "Unauthenticated.")
        return token

    @staticmethod
    def _check_server_state(server: FakeServer) -> None:
        status = server.status
        if status is not None:
            detail = _STATE_MESSAGES.get(
                status, "This server is currently in an unsupported state, please try again later."
            )
            raise ApiError(409, "ServerStateConflictException", detail)

    @staticmethod
    def _input(ctx: _Ctx) -> dict[str, Any]:
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

    def _path_url(self, ctx: _Ctx) -> str:
        if self._origin is None:
            raise RuntimeError("FakePanel is not started")
        return self._origin + ctx.request.path

    # Route handlers.

    async def _servers_index(self, ctx: _Ctx) -> web.StreamResponse:
        query = ctx.request.query
        chunk, pagination = paginate(
            self._state.servers_of(ctx.key),
            page=query.get("page"),
            per_page=query.get("per_page"),
            default=50,
            maximum=100,
            path_url=self._path_url(ctx),
        )
        entries = [(s, self._state.internal_id(s)) for s in chunk]
        return _json(200, server_page(entries, pagination))

    async def _server_view(self, ctx: _Ctx) -> web.StreamResponse:
        return _json(200, server_json(ctx.srv, self._state.internal_id(ctx.srv)))

    async def _websocket(self, ctx: _Ctx) -> web.StreamResponse:
        server = ctx.srv
        # The panel lets root admins fetch a token whatever the server's state, unless it is
        # suspended; everyone else gets the 409 of every other server route.
        if not (server.owner_is_admin and server.status != "suspended"):
            self._check_server_state(server)
        if not server.owner_is_admin and not {"*", "websocket.connect"} & set(server.permissions):
            raise ApiError(
                403,
                "AccessDeniedHttpException",
                "You do not have permission to connect to this server's websocket.",
            )
        assert self._issue_socket is not None
        token, socket = self._issue_socket(server, ctx.key)
        return _json(200, {"data": {"token": token, "socket": socket}})

    async def _backups_index(self, ctx: _Ctx) -> web.StreamResponse:
        backups = ctx.srv.backups
        query = ctx.request.query
        chunk, pagination = paginate(
            backups,
            page=query.get("page"),
            per_page=query.get("per_page"),
            default=20,
            maximum=50,
            path_url=self._path_url(ctx),
        )
        count = sum(b.state != "failed" for b in backups)
        return _json(200, backup_page(chunk, pagination, self._config.dialect, count))

    async def _backups_store(self, ctx: _Ctx) -> web.StreamResponse:
        server = ctx.srv
        dialect = self._config.dialect
        data = self._input(ctx)
        validate(
            data,
            [
                Rule("name", kind="string", max_len=255 if dialect == "pelican" else 191),
                Rule("ignored", kind="string"),
                Rule("is_locked", kind="boolean"),
            ],
        )
        now = time.monotonic()
        throttle = self._config.create_throttle
        if throttle is not None:
            limit, period = throttle
            self._throttle(
                server,
                "create",
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
        if dialect == "reference" and any(b.state == "creating" for b in live):
            raise ApiError(
                409,
                "ConflictingServerStateException",
                "Cannot create backup while another backup is in progress.",
            )
        created_at = _utcnow()
        name = data.get("name") or f"Backup at {created_at:%Y-%m-%d %H:%M:%S}"
        ignored = data.get("ignored") or ""
        is_locked = data.get("is_locked")
        backup = self._state.create_backup(
            server,
            name=str(name),
            ignored_files=[p for p in str(ignored).split("\n") if p],
            is_locked=is_locked not in (None, "") and to_bool(is_locked),
            created_at=created_at,
            now=now,
        )
        ctx.outcome.backup_uuid = backup.uuid
        return _json(200, backup_json(backup, dialect, creating=True))

    async def _backup_view(self, ctx: _Ctx) -> web.StreamResponse:
        return _json(200, backup_json(ctx.bkp, self._config.dialect))

    async def _backup_download(self, ctx: _Ctx) -> web.StreamResponse:
        backup = ctx.bkp
        if self._config.dialect == "reference":
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
        return _json(200, signed_url_json(self._issue_link(backup)))

    async def _backup_lock(self, ctx: _Ctx) -> web.StreamResponse:
        backup = ctx.bkp
        backup.is_locked = not backup.is_locked
        if self._config.dialect == "reference":
            return web.Response(status=204)
        return _json(200, backup_json(backup, self._config.dialect))

    async def _backup_restore(self, ctx: _Ctx) -> web.StreamResponse:
        server, backup = ctx.srv, ctx.bkp
        data = self._input(ctx)
        reference = self._config.dialect == "reference"
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
        self._throttle(server, "restore", now, "Too many restore attempts, please try again later.")
        self._state.restore_backup(server, backup, truncate=truncate, now=now)
        return web.Response(status=202 if reference else 204)

    async def _backup_delete(self, ctx: _Ctx) -> web.StreamResponse:
        backup = ctx.bkp
        state = backup.state
        if self._config.dialect == "reference":
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
        return _json(200, backup_json(backup, self._config.dialect))
