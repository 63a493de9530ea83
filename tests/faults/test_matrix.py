"""The fault matrix: every API operation by every fault the transport can meet.

Each cell runs one operation against a fresh FakePanel (behind a fault proxy where the fault
needs one) and asserts the outcome the contract promises: retried and succeeded, or one
specific SDK error class; and how many times the faulted request reached the panel, so that a
POST the panel may have executed is never sent twice. The transport's sleep is replaced by a
recorder (``fast_retries``): backoff and ``Retry-After`` are checked on the recorded delays
instead of being waited for. See docs/reliability.md for the table.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import web

from ptero_backups_async import (
    APIConnectionError,
    APITimeoutError,
    ConflictError,
    PermissionDeniedError,
    PteroClient,
    PteroError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
)
from ptero_backups_async._transport import MAX_BODY
from ptero_backups_async.testing import FakeBackup, FakePanel, FakeServer

from ..conftest import register_key
from ._tools import HttpFaultProxy, RecordingSleep, fast_retries

pytestmark = pytest.mark.anyio

MAX_RETRIES = 2
UUID_PATH = r"/backups/[0-9a-f-]{36}$"

# ---------------------------------------------------------------------------- operations


class Op(NamedTuple):
    """One API operation; ``method``/``path`` select the request the fault hits."""

    name: str
    method: str
    path: str
    run: Callable[[PteroClient, FakeServer, FakeBackup], Awaitable[Any]]
    post: bool = False  # the panel may act on it: never retried once sent
    dialect: str = "pterodactyl"
    locked: bool = False


async def _servers(client: PteroClient, server: FakeServer, backup: FakeBackup) -> Any:
    return [s async for s in client.servers()]


OPS = [
    Op("list_page", "GET", r"/backups$", lambda c, s, b: c.backups(s.identifier).list_page()),
    Op("get", "GET", UUID_PATH, lambda c, s, b: c.backups(s.identifier).get(b.uuid)),
    Op(
        "create",
        "POST",
        r"/backups$",
        lambda c, s, b: c.backups(s.identifier).create(name="matrix"),
        post=True,
    ),
    Op(
        "wait",
        "GET",
        UUID_PATH,
        lambda c, s, b: c.backups(s.identifier).wait(
            b.uuid, timeout=5, poll_interval=0.05, via="poll"
        ),
    ),
    Op(
        "download_url",
        "GET",
        r"/download$",
        lambda c, s, b: c.backups(s.identifier).download_url(b.uuid),
    ),
    Op("delete", "DELETE", UUID_PATH, lambda c, s, b: c.backups(s.identifier).delete(b.uuid)),
    Op(
        "restore",
        "POST",
        r"/restore$",
        lambda c, s, b: c.backups(s.identifier).restore(b.uuid),
        post=True,
    ),
    Op(
        "toggle_lock",
        "POST",
        r"/lock$",
        lambda c, s, b: c.backups(s.identifier).toggle_lock(b.uuid),
        post=True,
    ),
    Op("lock", "POST", r"/lock$", lambda c, s, b: c.backups(s.identifier).lock(b.uuid), post=True),
    Op(
        "unlock",
        "POST",
        r"/lock$",
        lambda c, s, b: c.backups(s.identifier).unlock(b.uuid),
        post=True,
        locked=True,
    ),
    Op(
        "rename",
        "PUT",
        r"/rename$",
        lambda c, s, b: c.backups(s.identifier).rename(b.uuid, "renamed"),
        dialect="pelican",
    ),
    Op("servers", "GET", r"^/api/client$", _servers),
]

# ---------------------------------------------------------------------------- faults


class Expect(NamedTuple):
    """``error`` None: the call succeeds. ``hits``: faulted requests the panel received."""

    error: type[PteroError] | None
    hits: int
    bug: str | None = None


BUG_DELETE_RETRY_404 = (
    "SDK bug: a DELETE whose 204 was lost after the panel executed it is sent again (aiohttp "
    "resends idempotent requests once) and the resend's 404 surfaces as NotFoundError, "
    "although the backup was deleted"
)


class Fault(NamedTuple):
    """How to apply a fault, and the outcome for reads/deletes and for POSTs."""

    name: str
    read: Expect
    post: Expect
    overrides: dict[str, Expect]
    inject: dict[str, Any] | None = None  # FakePanel.inject() arguments
    proxy: str | None = None  # "cut", "refused", "refused_then_up"


def _inject(**kwargs: Any) -> dict[str, Any]:
    return kwargs


RVE = ResponseValidationError
WRONG_SHAPE = {"object": "list", "data": {"uuid": 1}, "meta": []}

FAULTS = [
    Fault("refused_then_up", Expect(None, 1), Expect(None, 1), {}, proxy="refused_then_up"),
    Fault(
        "refused",
        Expect(APIConnectionError, 0),
        Expect(APIConnectionError, 0),
        {},
        proxy="refused",
    ),
    Fault(
        "reset_before_answer",
        Expect(None, 2),
        Expect(APIConnectionError, 1),
        {},
        inject=_inject(kind="reset"),
    ),
    Fault(
        "reset_mid_response",
        Expect(None, 2),
        Expect(APIConnectionError, 1),
        {"delete": Expect(None, 2, BUG_DELETE_RETRY_404)},
        proxy="cut",
    ),
    Fault(
        "stall_past_timeout",
        Expect(None, 2),
        Expect(APITimeoutError, 1),
        {},
        inject=_inject(kind="stall", delay=2.0),
    ),
    *(
        Fault(
            str(status), Expect(None, 2), Expect(ServerError, 1), {}, inject=_inject(status=status)
        )
        for status in (500, 502, 503, 504)
    ),
    Fault(
        "503_persistent",
        Expect(ServerError, 1 + MAX_RETRIES),
        Expect(ServerError, 1),
        {},
        inject=_inject(status=503, times=50),
    ),
    Fault(
        "429_retry_after",
        Expect(None, 2),
        Expect(None, 2),
        {},
        inject=_inject(status=429, headers={"Retry-After": "7"}),
    ),
    Fault("429_no_retry_after", Expect(None, 2), Expect(None, 2), {}, inject=_inject(status=429)),
    Fault(
        "429_retry_after_too_long",
        Expect(RateLimitError, 1),
        Expect(RateLimitError, 1),
        {},
        inject=_inject(status=429, headers={"Retry-After": "3600"}),
    ),
    Fault(
        "409",
        Expect(ConflictError, 1),
        Expect(ConflictError, 1),
        {"wait": Expect(None, 2)},  # wait() polls through a restore's 409
        inject=_inject(status=409),
    ),
    Fault(
        "html_200",
        Expect(RVE, 1),
        Expect(RVE, 1),
        {
            "delete": Expect(RVE, 1),
            "restore": Expect(RVE, 1),
        },
        inject=_inject(kind="html", status=200),
    ),
    Fault(
        "html_403",
        Expect(PermissionDeniedError, 1),
        Expect(PermissionDeniedError, 1),
        {},
        inject=_inject(kind="html", status=403),
    ),
    Fault(
        "html_502",
        Expect(None, 2),
        Expect(ServerError, 1),
        {},
        inject=_inject(kind="html", status=502),
    ),
    Fault(
        "redirect_to_login",
        Expect(RVE, 1),
        Expect(RVE, 1),
        {},
        inject=_inject(kind="redirect", status=302),
    ),
    Fault(
        "empty_200",
        Expect(RVE, 1),
        Expect(RVE, 1),
        {
            # No body is what these endpoints answer (204): the empty 200 is accepted, and
            # a lock answered with nothing is read back with a GET.
            "delete": Expect(None, 1),
            "restore": Expect(None, 1),
            "toggle_lock": Expect(None, 1),
            # The re-read shows the lock unchanged, so lock()/unlock() toggle once more.
            "lock": Expect(None, 2),
            "unlock": Expect(None, 2),
        },
        inject=_inject(kind="empty", status=200),
    ),
    Fault(
        "json_wrong_shape",
        Expect(RVE, 1),
        Expect(RVE, 1),
        {
            "delete": Expect(RVE, 1),
            "restore": Expect(RVE, 1),
        },
        inject=_inject(kind="json", status=200, json_body=WRONG_SHAPE),
    ),
    Fault(
        "huge_body",
        Expect(RVE, 1),
        Expect(RVE, 1),
        {},
        inject=_inject(kind="json", status=200, body=b" " * (MAX_BODY + 1)),
    ),
]


def expectation(op: Op, fault: Fault) -> Expect:
    if op.name in fault.overrides:
        return fault.overrides[op.name]
    return fault.post if op.post else fault.read


def cells() -> list[Any]:
    params = []
    for fault in FAULTS:
        for op in OPS:
            expect = expectation(op, fault)
            marks = (
                [pytest.mark.xfail(strict=True, reason=expect.bug)]
                if expect.bug is not None
                else []
            )
            params.append(
                pytest.param(op, fault, expect, id=f"{fault.name}-{op.name}", marks=marks)
            )
    return params


# ---------------------------------------------------------------------------- the cells


def faulted(panel: FakePanel, op: Op) -> list[Any]:
    return [r for r in panel.api_requests() if r.method == op.method and re.search(op.path, r.path)]


def assert_sdk_error(exc: BaseException) -> None:
    """Never a raw aiohttp, JSON or cattrs exception: an SDK class, the original as cause."""
    assert isinstance(exc, PteroError), f"raw {type(exc).__module__}.{type(exc).__name__}: {exc}"
    assert type(exc).__module__.startswith("ptero_backups_async"), type(exc)


async def run_cell(
    panel: FakePanel, op: Op, fault: Fault
) -> tuple[Any, BaseException | None, RecordingSleep, HttpFaultProxy | None]:
    server = panel.add_server()
    backup = panel.add_backup(server, locked=op.locked)
    proxy: HttpFaultProxy | None = None
    url = panel.url
    if fault.proxy is not None:
        port = int(panel.url.rsplit(":", 1)[1])
        proxy = HttpFaultProxy(port)
        await proxy.start(listening=fault.proxy == "cut")
        url = proxy.url
        if fault.proxy == "cut":
            proxy.cut(op.method, op.path)
    if fault.inject is not None:
        panel.inject(method=op.method, path=op.path, **fault.inject)
    result: Any = None
    error: BaseException | None = None
    try:
        transport, sleep = fast_retries()
        async with PteroClient(
            url, panel.api_key, timeout=0.3, max_retries=MAX_RETRIES, transport=transport
        ) as client:
            if proxy is not None and fault.proxy == "refused_then_up":
                sleep.hooks.append(proxy.open)
            try:
                result = await op.run(client, server, backup)
            except Exception as exc:
                error = exc
    finally:
        if proxy is not None:
            await proxy.aclose()
    return result, error, sleep, proxy


@pytest.mark.parametrize(("op", "fault", "expect"), cells())
async def test_cell(op: Op, fault: Fault, expect: Expect) -> None:
    async with FakePanel(dialect=op.dialect) as panel:  # type: ignore[arg-type]
        register_key(panel.api_key)
        _, error, sleep, proxy = await run_cell(panel, op, fault)
        requests = faulted(panel, op)
    if expect.error is None:
        assert error is None, f"expected success, got {type(error).__name__}: {error}"
    else:
        assert error is not None, f"expected {expect.error.__name__}, the call succeeded"
        assert_sdk_error(error)
        assert type(error) is expect.error, f"{type(error).__name__}: {error}"
    assert len(requests) == expect.hits, [(r.method, r.path, r.status) for r in requests]

    # What each fault adds to the picture.
    if fault.name == "refused":
        assert error is not None
        assert isinstance(error.__cause__, aiohttp.ClientConnectorError)
        # Nothing was sent: even POSTs are retried, within the budget.
        assert len(sleep.delays) == MAX_RETRIES
    elif fault.name == "refused_then_up":
        assert proxy is not None
        assert sleep.delays, "the refused attempt was not retried"
    elif fault.name == "reset_mid_response":
        assert proxy is not None
        assert proxy.cuts == 1
        if op.post:
            # The panel did act on it (200/204 was sent) and the SDK did not send it again.
            assert [r.status for r in requests] in ([200], [204])
    elif fault.name == "429_retry_after":
        assert sleep.delays[0] == 7.0, sleep.delays
    elif fault.name == "429_no_retry_after":
        assert 0.25 <= sleep.delays[0] <= 0.5, sleep.delays
    elif fault.name == "429_retry_after_too_long":
        assert isinstance(error, RateLimitError)
        assert error.retry_after == 3600
        assert sleep.delays == []
    if expect.error is not None and expect.hits == 1 and fault.name != "409":
        # Not retried: no backoff sleep was even started.
        assert [d for d in sleep.delays if d > 0] == []
    if isinstance(error, ResponseValidationError):
        assert str(error), "a ResponseValidationError must say what was wrong"
    if fault.name == "html_403":
        assert isinstance(error, PermissionDeniedError)
        assert error.status == 403
        assert "the panel sent" in str(error)


# ---------------------------------------------------------------------------- one-offs


@pytest.fixture
async def streaming_panel() -> AsyncIterator[str]:
    """A server that answers the backup list with an endless chunked body (no length)."""

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b" " * (1024 * 1024)
        try:
            for _ in range(MAX_BODY // len(chunk) + 8):
                await resp.write(chunk)
        except ConnectionError:
            pass
        return resp

    app = web.Application()
    app.router.add_get("/api/client/servers/{server}/backups", endless)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_huge_body_without_content_length_is_cut_at_the_cap(streaming_panel: str) -> None:
    key = register_key("ptlc_" + "h" * 43)
    async with PteroClient(streaming_panel, key, timeout=10) as client:
        with pytest.raises(ResponseValidationError, match="over") as info:
            await client.backups("d3aac109").list_page()
    assert_sdk_error(info.value)


@pytest.mark.parametrize("op", [o for o in OPS if o.post], ids=lambda o: o.name)
async def test_a_post_cut_after_the_panel_acted_happened_exactly_once(op: Op) -> None:
    """The panel executed the POST and its answer was lost: the effect is there, once."""
    async with FakePanel(dialect=op.dialect) as panel:  # type: ignore[arg-type]
        register_key(panel.api_key)
        cut = next(f for f in FAULTS if f.name == "reset_mid_response")
        _, error, _, _ = await run_cell(panel, op, cut)
        server = panel.servers[0]
        backup = server.all_backups[0]
        assert isinstance(error, APIConnectionError)
        if op.name == "create":
            assert len(server.all_backups) == 2
        elif op.name == "restore":
            assert len(server.restores) == 1
        else:
            assert backup.is_locked is not op.locked  # toggled once, not twice
