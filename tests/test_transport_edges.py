"""Edges of the transport (every panel API call) that the mutation run showed no test was
watching.

All against real loopback sockets: FakePanel with scripted API faults, or a port nobody
listens on. Retries are left to the client's own sleep, so each test keeps its delays short.
"""

from __future__ import annotations

import contextlib
import pathlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping

import aiohttp
import anyio
import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDict

from ptero_backups_async import (
    AiohttpTransport,
    APIConnectionError,
    APITimeoutError,
    PteroClient,
    PteroError,
    RateLimitError,
    RawResponse,
    ResponseValidationError,
    Transport,
)
from ptero_backups_async.testing import FakePanel

from .conftest import register_key
from .faults._tools import TlsRelay, serve

#: A backup listing as a real panel sends it.
LISTING = (pathlib.Path(__file__).parent / "fixtures" / "pterodactyl_backup_list.json").read_bytes()
KEY = "ptlc_" + "k" * 43

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ what a failure says


async def test_a_refused_connection_says_what_aiohttp_said_and_is_no_timeout() -> None:
    port = closed_port()
    async with PteroClient(f"http://127.0.0.1:{port}", KEY, max_retries=0) as c:
        with anyio.fail_after(5), pytest.raises(APIConnectionError) as info:
            await c.backups("d3aac109").list_page()
    error = info.value
    assert not isinstance(error, APITimeoutError)
    assert error.__cause__ is not None
    assert str(error.__cause__) in str(error)
    assert "no answer in time" not in str(error)


async def test_a_stall_is_a_timeout_that_names_the_kind_of_timeout(panel: FakePanel) -> None:
    server = panel.add_server()
    panel.inject(method="GET", path="/backups$", kind="stall", delay=2.0)
    async with PteroClient(panel.url, panel.api_key, timeout=0.2, max_retries=0) as client:
        with anyio.fail_after(5), pytest.raises(APITimeoutError) as info:
            await client.backups(server.identifier).list_page()
        # The fault was for one request: the next one is answered.
        assert (await client.backups(server.identifier).list_page()).items == ()
    cause = info.value.__cause__
    assert cause is not None
    assert f"no answer in time ({type(cause).__name__})" in str(info.value)
    assert f"GET {panel.url}/api/client/servers/{server.identifier}/backups" in str(info.value)


# ------------------------------------------------------------------ a transport of one's own


class SendOnly(Transport):
    """A user's transport that implements only ``send``: the clock and sleep are the seam's."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        timeout: float,  # noqa: ASYNC109 - the Transport signature
    ) -> RawResponse:
        async with self.session.request(
            method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()


async def test_a_transport_with_only_send_still_waits_between_retries(panel: FakePanel) -> None:
    server = panel.add_server()
    panel.add_backup(server)
    panel.inject(method="GET", path="/backups$", status=503)
    async with aiohttp.ClientSession() as session:
        client = PteroClient(panel.url, panel.api_key, transport=SendOnly(session))
        async with client:
            started = time.monotonic()
            with anyio.fail_after(5):
                page = await client.backups(server.identifier).list_page()
            elapsed = time.monotonic() - started
    assert len(page.items) == 1
    tries = [r for r in panel.api_requests() if r.path.endswith("/backups")]
    assert len(tries) == 2
    # The first backoff step is 0.5 s with equal jitter: at least half of it is waited.
    assert elapsed >= 0.25
    assert tries[1].time - tries[0].time >= 0.25


async def test_a_closed_client_refuses_calls_whatever_its_transport(panel: FakePanel) -> None:
    server = panel.add_server()
    async with aiohttp.ClientSession() as session:
        client = PteroClient(panel.url, panel.api_key, transport=SendOnly(session))
        await client.backups(server.identifier).list_page()
        await client.aclose()
        with pytest.raises(PteroError, match="closed"):
            await client.backups(server.identifier).list_page()
    assert len(panel.api_requests()) == 1


async def test_a_closed_aiohttp_transport_sends_nothing(panel: FakePanel) -> None:
    transport = AiohttpTransport()
    await transport.aclose()
    with pytest.raises(PteroError, match="closed"):
        await transport.send("GET", panel.url + "/api/client", {}, None, timeout=5)
    assert not panel.requests


# ------------------------------------------------------------------ rate-limit headers


class RateHeaders:
    """A panel stand-in on a fake clock: each listing gets the next scripted answer.

    An answer is ``(limit, remaining)`` for a 200 with those rate-limit headers, or
    ``(status, headers)`` for an error answer; ``sleep`` and ``clock`` are the transport's.
    """

    def __init__(self) -> None:
        self.answers: list[tuple[str, str] | tuple[int, dict[str, str]]] = []
        self.times: list[float] = []
        self.now = 1000.0
        self.sleeps: list[float] = []

    async def listing(self, request: web.Request) -> web.Response:
        self.times.append(self.now)
        answer = self.answers.pop(0)
        if isinstance(answer[0], int) and isinstance(answer[1], dict):
            body = b'{"errors":[{"code":"ThrottleRequestsException","status":"429",'
            body += b'"detail":"Too Many Attempts."}]}'
            return web.Response(
                status=answer[0], body=body, content_type="application/json", headers=answer[1]
            )
        limit, remaining = answer
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
        return web.Response(body=LISTING, content_type="application/json", headers=headers)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
async def rate_host() -> AsyncIterator[tuple[RateHeaders, str]]:
    host = RateHeaders()
    app = web.Application()
    app.router.add_get("/api/client/servers/{server}/backups", host.listing)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield host, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_an_exhausted_rate_limit_waits_for_the_rest_of_its_window_only(
    rate_host: tuple[RateHeaders, str],
) -> None:
    host, url = rate_host
    # Limit 3 a minute. 1000 s: 2 left. 1070 s: 2 left again, so a new window began then.
    # 1080 s: 1 left; 1090 s: none. The window that began at 1070 s ends at 1130 s.
    host.answers = [("3", "2"), ("3", "2"), ("3", "1"), ("3", "0"), ("3", "2")]
    transport = AiohttpTransport(sleep=host.sleep, clock=host.clock)
    async with PteroClient(url, KEY, transport=transport) as client:
        backups = client.backups("d3aac109")
        for now in (1000.0, 1070.0, 1080.0, 1090.0):
            host.now = now
            await backups.list_page()
        assert host.sleeps == []
        await backups.list_page()
    assert host.sleeps == [40.0]
    assert host.times[-1] == 1130.0


async def test_a_rate_limit_of_zero_is_not_divided_by(rate_host: tuple[RateHeaders, str]) -> None:
    host, url = rate_host
    host.answers = [("0", "0"), ("0", "0")]
    transport = AiohttpTransport(sleep=host.sleep, clock=host.clock)
    async with PteroClient(url, KEY, transport=transport) as client:
        for _ in range(2):
            page = await client.backups("d3aac109").list_page()
            assert page.items
        assert client.rate_limit is not None
        assert client.rate_limit.limit == 0
    assert host.sleeps == []


async def test_a_retry_after_over_the_cap_refuses_the_next_call_by_name(
    rate_host: tuple[RateHeaders, str],
) -> None:
    host, url = rate_host
    host.answers = [(429, {"Retry-After": "120"})]
    transport = AiohttpTransport(sleep=host.sleep, clock=host.clock)
    async with PteroClient(url, KEY, transport=transport, max_retry_after=60) as client:
        backups = client.backups("d3aac109")
        with pytest.raises(RateLimitError):
            await backups.list_page()
        with pytest.raises(RateLimitError) as info:
            await backups.list_page(page=2)
    # Refused before it was sent; the error still says which call, and why.
    assert len(host.times) == 1
    error = info.value
    assert (error.status, error.method, error.retry_after) == (429, "GET", 120.0)
    assert error.url is not None
    assert error.url.startswith(f"{url}/api/client/servers/d3aac109/backups?page=2")
    assert host.sleeps == []


async def test_a_short_retry_after_still_holds_the_next_call(
    rate_host: tuple[RateHeaders, str],
) -> None:
    host, url = rate_host
    host.answers = [(429, {"Retry-After": "0.5"}), ("60", "59")]
    transport = AiohttpTransport(sleep=host.sleep, clock=host.clock)
    async with PteroClient(url, KEY, transport=transport, max_retries=0) as client:
        backups = client.backups("d3aac109")
        with pytest.raises(RateLimitError):
            await backups.list_page()
        await backups.list_page()
    assert host.sleeps == [0.5]
    assert host.times == [1000.0, 1000.5]


# ------------------------------------------------------------------ what the session does


async def test_the_panels_session_cookie_is_never_sent_back(panel: FakePanel) -> None:
    # Cookies of an IP address are ignored by any jar; a host name is where one would stick.
    server = panel.add_server()
    port = panel.url.rsplit(":", 1)[1]
    async with PteroClient(f"http://localhost:{port}", panel.api_key) as client:
        for _ in range(3):
            await client.backups(server.identifier).list_page()
    requests = panel.api_requests()
    assert len(requests) == 3
    assert all("cookie" not in r.headers for r in requests)


async def test_ssl_applies_to_a_callers_session_too(panel: FakePanel) -> None:
    ca = trustme.CA()
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_side)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    server = panel.add_server()
    port = int(panel.url.rsplit(":", 1)[1])
    async with TlsRelay(port, server_side) as relay, aiohttp.ClientSession() as session:
        client = PteroClient(relay.url, panel.api_key, session=session, ssl=trusting)
        async with client:
            page = await client.backups(server.identifier).list_page()
        assert not session.closed
    assert page.items == ()
    assert relay.handshakes >= 1


async def test_an_announced_huge_body_is_refused_at_the_headers() -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 64 * 1024 * 1024
        await response.prepare(request)
        await response.write(b"[")
        with contextlib.suppress(ConnectionError, OSError):
            await anyio.sleep(0.5)  # nothing more for a while
        return response

    app = web.Application()
    app.router.add_get("/api/client/servers/{server}/backups", huge)
    async with serve(app) as url, PteroClient(url, KEY, max_retries=0) as client:
        with anyio.fail_after(0.4), pytest.raises(ResponseValidationError) as info:
            await client.backups("d3aac109").list_page()
    assert "announced a 67108864-byte body" in str(info.value)


async def test_a_300_answer_is_a_redirect_not_the_api(panel: FakePanel) -> None:
    server = panel.add_server()
    panel.inject(method="GET", path="/backups$", kind="redirect", status=300)
    async with PteroClient(panel.url, register_key(panel.api_key)) as client:
        with pytest.raises(ResponseValidationError, match="answered 300, a redirect to"):
            await client.backups(server.identifier).list_page()
