"""Retries, ``Retry-After``, pacing, rate limits and the concurrency cap, through an injected
transport on a fake clock: exact times, no waiting, no private attributes."""

from __future__ import annotations

from datetime import datetime, timezone

import anyio
import pytest

from ptero_backups_async import (
    APIConnectionError,
    APITimeoutError,
    Failure,
    PteroClient,
    RateLimitError,
    ServerError,
    TransportError,
)

from ._transports import BACKUP_LIST, ScriptedTransport, Sent, ok, status

pytestmark = pytest.mark.anyio

URL = "https://panel.example.com"
KEY = "ptlc_" + "k" * 43
SERVER = "d3aac109"


def client_for(transport: ScriptedTransport, **options: object) -> PteroClient:
    return PteroClient(URL, KEY, transport=transport, **options)  # type: ignore[arg-type]


async def test_the_transport_sees_the_panels_headers_url_and_timeout() -> None:
    transport = ScriptedTransport()
    async with client_for(transport, timeout=7.5) as client:
        await client.backups(SERVER).list_page(page=2, per_page=10)
    (sent,) = transport.sent
    assert sent.method == "GET"
    assert sent.url == f"{URL}/api/client/servers/{SERVER}/backups?page=2&per_page=10"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Accept"] == "application/json"
    assert sent.timeout == 7.5
    assert sent.body is None
    assert transport.closed, "the client closes the transport it was given"


async def test_a_json_body_is_serialized_with_its_content_type() -> None:
    created = (
        b'{"object":"backup","attributes":{"uuid":"0e9d0c6e-4b50-4f64-9fc4-0d6c8d1b9e2a",'
        b'"name":"n","ignored_files":[],"checksum":null,"bytes":0,'
        b'"created_at":"2026-01-01T00:00:00+00:00","completed_at":null,'
        b'"is_successful":false,"is_locked":false}}'
    )
    transport = ScriptedTransport([ok(created)])
    async with client_for(transport) as client:
        await client.backups(SERVER).create(name="n")
    (sent,) = transport.sent
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body == b'{"name": "n"}'


async def test_429_waits_exactly_the_retry_after_then_succeeds() -> None:
    transport = ScriptedTransport([status(429, {"Retry-After": "7"}), ok()])
    async with client_for(transport) as client:
        page = await client.backups(SERVER).list_page()
    assert page.items
    first, second = transport.sent
    assert second.time - first.time == 7
    assert transport.sleeps == [7]


async def test_5xx_backs_off_exponentially_with_jitter_and_gives_up() -> None:
    transport = ScriptedTransport([status(503)] * 4)
    async with client_for(transport, max_retries=3) as client:
        with pytest.raises(ServerError):
            await client.backups(SERVER).list_page()
    assert len(transport.sent) == 4
    # Equal jitter on steps of 0.5, 1, 2: half the step at least, the whole step at most.
    for sleep, step in zip(transport.sleeps, (0.5, 1.0, 2.0), strict=True):
        assert step / 2 <= sleep <= step


async def test_a_retry_after_over_the_cap_raises_at_once_and_holds_later_calls() -> None:
    transport = ScriptedTransport([status(429, {"Retry-After": "600"})])
    async with client_for(transport, max_retry_after=60) as client:
        b = client.backups(SERVER)
        with pytest.raises(RateLimitError) as first:
            await b.list_page()
        assert first.value.retry_after == 600
        transport.now += 100
        with pytest.raises(RateLimitError) as later:
            await b.list_page()
        assert later.value.retry_after == 500
        assert "not sent" in str(later.value)
        transport.now += 450  # 50 s left: within the cap, so the next call waits it out
        await b.list_page()
    assert len(transport.sent) == 2
    assert transport.sleeps == [50]


async def test_post_is_retried_only_when_it_provably_was_not_sent() -> None:
    not_sent = TransportError("refused", failure=Failure.NOT_SENT)
    broken = TransportError("reset", failure=Failure.CONNECTION)
    transport = ScriptedTransport([not_sent, broken])
    async with client_for(transport) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.backups(SERVER).create(name="once")
    assert len(transport.sent) == 2, "refused: retried; reset after sending: not retried"
    assert "reset" in str(info.value)
    assert info.value.__cause__ is broken


async def test_a_timeout_is_an_api_timeout_error_retried_for_reads() -> None:
    timeout = TransportError("no answer in time", failure=Failure.TIMEOUT, timeout=True)
    transport = ScriptedTransport([timeout, timeout, ok()])
    async with client_for(transport) as client:
        await client.backups(SERVER).list_page()
    assert len(transport.sent) == 3
    transport = ScriptedTransport([timeout] * 2)
    async with client_for(transport, max_retries=1) as client:
        with pytest.raises(APITimeoutError) as info:
            await client.backups(SERVER).list_page()
    assert isinstance(info.value, TimeoutError)


async def test_a_failure_no_retry_can_fix_is_raised_at_once() -> None:
    transport = ScriptedTransport([TransportError("bad certificate", failure=None)])
    async with client_for(transport) as client:
        with pytest.raises(APIConnectionError):
            await client.backups(SERVER).list_page()
    assert len(transport.sent) == 1


class MinuteWindowPanel:
    """A panel that allows ``limit`` requests per fixed minute and says so in its headers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.window = -1
        self.used = 0
        self.refused = 0

    def __call__(self, request: Sent) -> tuple[int, dict[str, str], bytes]:
        window = int(request.time // 60)
        if window != self.window:
            self.window, self.used = window, 0
        self.used += 1
        if self.used > self.limit:
            self.refused += 1
            return status(429, {"Retry-After": str(60 - request.time % 60)})
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit - self.used),
        }
        return ok(BACKUP_LIST, headers)


async def test_an_exhausted_rate_limit_is_paced_to_the_next_window_without_a_429() -> None:
    panel = MinuteWindowPanel(limit=5)
    transport = ScriptedTransport(handler=panel, now=600.0)  # at the start of a window
    async with client_for(transport) as client:
        b = client.backups(SERVER)
        for _ in range(12):
            await b.list_page()
        assert client.rate_limit is not None
        assert client.rate_limit.limit == 5
    assert panel.refused == 0
    times = [sent.time - 600.0 for sent in transport.sent]
    # Five in the first minute, five in the second, two in the third.
    assert [int(t // 60) for t in times] == [0] * 5 + [1] * 5 + [2] * 2


async def test_rate_limit_reset_header_sets_the_pause() -> None:
    reset = datetime.now(timezone.utc).timestamp() + 30
    headers = {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(reset)),
    }
    transport = ScriptedTransport([ok(BACKUP_LIST, headers), ok()])
    async with client_for(transport) as client:
        b = client.backups(SERVER)
        await b.list_page()
        await b.list_page()
    (pause,) = transport.sleeps
    assert 25 <= pause <= 31


async def test_a_429_holds_requests_queued_behind_the_concurrency_limit() -> None:
    transport = ScriptedTransport([status(429, {"Retry-After": "5"}), ok(), ok()])
    async with client_for(transport, max_concurrency=1, max_retries=0) as client:
        b = client.backups(SERVER)

        async def limited() -> None:
            with pytest.raises(RateLimitError):
                await b.list_page()

        async with anyio.create_task_group() as tg:
            tg.start_soon(limited)
            tg.start_soon(b.list_page)
    first, second = transport.sent
    assert second.time - first.time == 5


async def test_max_concurrency_caps_requests_in_flight() -> None:
    in_flight = 0
    most = 0

    async def slow(request: Sent) -> tuple[int, dict[str, str], bytes]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        in_flight -= 1
        return ok()

    transport = ScriptedTransport(handler=slow)
    async with client_for(transport, max_concurrency=2) as client:
        b = client.backups(SERVER)
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(b.list_page)
    assert len(transport.sent) == 6
    assert most == 2


async def test_a_transport_and_a_session_together_are_refused() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="not both"):
            PteroClient(URL, KEY, session=session, transport=ScriptedTransport())
    with pytest.raises(ValueError, match="Transport"):
        PteroClient(URL, KEY, transport=object())  # type: ignore[arg-type]
