"""Pacing after a 429: requests queued behind the concurrency limit wait too, and a pause
longer than ``max_retry_after`` fails later calls at once instead of stalling them."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from ptero_backups_async import InvalidArgumentError, PteroClient, RateLimitError
from ptero_backups_async.testing import FakePanel

pytestmark = pytest.mark.anyio


async def test_a_request_queued_behind_the_limit_waits_out_the_retry_after(
    panel: FakePanel,
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server)
    panel.inject(method="GET", path=r"/backups$", status=429, headers={"Retry-After": "1"})
    async with PteroClient(panel.url, panel.api_key, max_concurrency=1, max_retries=0) as client:
        b = client.backups(server.identifier)
        async with anyio.create_task_group() as tg:

            async def limited() -> None:
                with pytest.raises(RateLimitError):
                    await b.list_page()

            tg.start_soon(limited)
            # The first takes the only slot; the second queues for it.
            await anyio.lowlevel.checkpoint()
            await b.get(backup.uuid)
    first, second = panel.api_requests()
    assert first.status == 429
    assert second.path.endswith(backup.uuid)
    assert second.time - first.time >= 0.9


async def test_a_retry_after_over_the_cap_fails_later_calls_at_once(panel: FakePanel) -> None:
    server = panel.add_server()
    panel.inject(method="GET", path=r"/backups$", status=429, headers={"Retry-After": "30"})
    async with PteroClient(panel.url, panel.api_key, max_retry_after=1.0) as client:
        b = client.backups(server.identifier)
        with pytest.raises(RateLimitError) as first:
            await b.list_page()
        assert first.value.retry_after == 30
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(RateLimitError) as later:
            await b.list_page()
        assert time.monotonic() - started < 1.0
    assert later.value.retry_after is not None
    assert 25 < later.value.retry_after <= 30
    assert "not sent" in str(later.value)
    assert len(panel.api_requests()) == 1, "the later call must not reach the panel"


async def run_clients(panel: FakePanel, clients: int, calls: int) -> list[int]:
    """``clients`` clients of one user, each listing ``calls`` times, 8 at a time."""
    server = panel.add_server()
    window = panel.rate_limit_period

    async def one() -> None:
        async with PteroClient(
            panel.url, panel.api_key, max_concurrency=8, rate_limit_window=window
        ) as client:
            b = client.backups(server.identifier)
            async with anyio.create_task_group() as tg:
                for _ in range(calls):
                    tg.start_soon(b.list_page)

    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(one)
    return [r.status for r in panel.api_requests()]


async def test_clients_of_one_user_share_the_rate_limit_without_a_429() -> None:
    # Each client sees the panel's count fall faster than it sends, and spreads what is left.
    async with FakePanel(rate_limit=60, rate_limit_period=1.0) as panel:
        started = time.monotonic()
        statuses = await run_clients(panel, clients=3, calls=60)
        seconds = time.monotonic() - started
    assert statuses == [200] * 180
    assert seconds >= 2.0  # three windows' worth: the limit did bind


async def test_a_client_alone_uses_its_window_to_the_last_request() -> None:
    async with FakePanel(rate_limit=30, rate_limit_period=1.0) as panel:
        statuses = await run_clients(panel, clients=1, calls=30)
        requests = panel.api_requests()
    assert statuses == [200] * 30
    assert requests[-1].time - requests[0].time < 0.5, "nothing to share: no spreading"


def test_rate_limit_window_is_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="rate_limit_window"):
        PteroClient("https://panel.example.com", "ptlc_" + "a" * 43, rate_limit_window=0)


async def test_one_servers_create_throttle_does_not_hold_the_client(panel: FakePanel) -> None:
    # The panel's throttle of creates is per server (429 TooManyRequestsHttpException, 600 s):
    # a long-lived client (a bot, a web backend) must go on serving every other call.
    throttled, other = panel.add_server(), panel.add_server()
    async with PteroClient(panel.url, panel.api_key) as client:
        b = client.backups(throttled.identifier)
        await b.create()
        await b.create()
        with pytest.raises(RateLimitError) as info:
            await b.create()
        assert info.value.retry_after is not None
        assert info.value.retry_after > 500
        with anyio.fail_after(2):
            await client.backups(other.identifier).list_page()
            await b.list_page()
    assert [r.status for r in panel.api_requests()] == [200, 200, 429, 200, 200]
