"""Pacing after a 429: requests queued behind the concurrency limit wait too, and a pause
longer than ``max_retry_after`` fails later calls at once instead of stalling them."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from ptero_backups_async import PteroClient, RateLimitError
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
