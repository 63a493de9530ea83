"""Walking listings to their end: ``b.list()`` and ``client.servers()`` always stop.

A panel (or a proxy in front of one) that repeats a page, or reports a ``total_pages`` that
never ends or keeps growing, must not keep the SDK asking for pages: the walk stops at the
first page that brings nothing new and never goes past the first page's ``total_pages``.
Tested against small hostile panels on loopback that count the requests they receive.
"""

from __future__ import annotations

import contextlib
import logging
import uuid as uuid_mod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from ptero_backups_async import PteroClient
from ptero_backups_async.testing import FakePanel

from .conftest import register_key
from .faults._tools import serve

pytestmark = pytest.mark.anyio

SERVER = "d3aac109"
#: A runaway walk is cut off by the hostile panel after this many requests (a 404).
CAP = 200
PER_PAGE = 50

#: page number → (item ids on that page, total_pages reported on that page)
Script = Callable[[int], tuple[list[str], int]]


def ids(start: int, count: int) -> list[str]:
    return [str(uuid_mod.UUID(int=i + 1)) for i in range(start, start + count)]


def _backup(uuid: str) -> dict[str, Any]:
    return {
        "object": "backup",
        "attributes": {
            "uuid": uuid,
            "name": f"b-{uuid[-4:]}",
            "ignored_files": [],
            "checksum": "sha1:" + "0" * 40,
            "bytes": 10,
            "created_at": "2024-01-01T00:00:00+00:00",
            "completed_at": "2024-01-01T00:01:00+00:00",
            "is_successful": True,
            "is_locked": False,
        },
    }


def _server(uuid: str) -> dict[str, Any]:
    return {
        "object": "server",
        "attributes": {"identifier": uuid[:8], "uuid": uuid, "name": "s", "status": None},
    }


class ListingPanel:
    """Answers both listings from a script, and records the page numbers asked for."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.pages: list[int] = []
        self.app = web.Application()
        self.app.router.add_get("/api/client", self._servers)
        self.app.router.add_get("/api/client/servers/{server}/backups", self._backups)

    def _page(self, request: web.Request, render: Callable[[str], Any]) -> web.Response:
        page = int(request.query.get("page", "1"))
        self.pages.append(page)
        if len(self.pages) > CAP:
            return web.json_response(
                {"errors": [{"code": "NotFoundHttpException", "status": "404", "detail": "cap"}]},
                status=404,
            )
        items, total_pages = self.script(page)
        return web.json_response(
            {
                "object": "list",
                "data": [render(i) for i in items],
                "meta": {
                    "backup_count": len(items),
                    "pagination": {
                        "total": total_pages * PER_PAGE,
                        "count": len(items),
                        "per_page": PER_PAGE,
                        "current_page": page,
                        "total_pages": total_pages,
                        "links": {},
                    },
                },
            }
        )

    async def _backups(self, request: web.Request) -> web.Response:
        return self._page(request, _backup)

    async def _servers(self, request: web.Request) -> web.Response:
        return self._page(request, _server)


async def walk(url: str, listing: str) -> list[str]:
    async with PteroClient(url, register_key("ptlc_" + "k" * 40), max_retries=0) as client:
        if listing == "backups":
            return [b.uuid async for b in client.backups(SERVER).list()]
        return [s.uuid async for s in client.servers()]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ptero_backups_async" and r.levelno == logging.WARNING
    ]


StartPanel = Callable[[Script], Awaitable[tuple[str, ListingPanel]]]


@pytest.fixture
async def listing_panel() -> AsyncIterator[StartPanel]:
    """A factory: start a ListingPanel on loopback for a script → (base URL, panel)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(script: Script) -> tuple[str, ListingPanel]:
            panel = ListingPanel(script)
            return await stack.enter_async_context(serve(panel.app)), panel

        yield start


LISTINGS = ["backups", "servers"]


@pytest.mark.parametrize("listing", LISTINGS)
async def test_the_same_page_forever_with_a_billion_pages_stops_after_a_handful_of_requests(
    listing_panel: StartPanel, caplog: pytest.LogCaptureFixture, listing: str
) -> None:
    first = ids(0, PER_PAGE)
    url, panel = await listing_panel(lambda page: (first, 10**9))
    got = await walk(url, listing)
    assert got == first
    assert panel.pages == [1, 2]
    [warning] = warnings_of(caplog)
    assert "page 2 of" in warning
    assert "repeated only items already seen" in warning
    assert "total_pages=1000000000" in warning


@pytest.mark.parametrize("listing", LISTINGS)
async def test_total_pages_growing_on_each_page_does_not_extend_the_walk(
    listing_panel: StartPanel, caplog: pytest.LogCaptureFixture, listing: str
) -> None:
    # Every page brings fresh items and reports more pages than the one before.
    url, panel = await listing_panel(lambda page: (ids((page - 1) * PER_PAGE, PER_PAGE), 2 + page))
    got = await walk(url, listing)
    assert got == ids(0, 3 * PER_PAGE)
    assert panel.pages == [1, 2, 3]  # the first page said 3: no page number past it
    [warning] = warnings_of(caplog)
    assert "page 3 of" in warning
    assert "total_pages=5" in warning
    assert "the 3 of the first page" in warning


@pytest.mark.parametrize("listing", LISTINGS)
async def test_a_billion_pages_of_fresh_items_are_followed_only_as_far_as_the_caller_reads(
    listing_panel: StartPanel, listing: str
) -> None:
    url, panel = await listing_panel(lambda page: (ids((page - 1) * PER_PAGE, PER_PAGE), 10**9))
    async with PteroClient(url, register_key("ptlc_" + "k" * 40), max_retries=0) as client:
        it = client.backups(SERVER).list() if listing == "backups" else client.servers()
        seen = 0
        async for _ in it:
            seen += 1
            if seen == 120:
                break
    assert panel.pages == [1, 2, 3]


@pytest.mark.parametrize("listing", LISTINGS)
async def test_a_page_overlapping_the_previous_one_still_counts_as_new(
    listing_panel: StartPanel, caplog: pytest.LogCaptureFixture, listing: str
) -> None:
    # Items created between two requests push older ones onto the next page: page 2 starts
    # with the last ten items of page 1. That is not a repeat; the walk goes on.
    pages = {1: ids(0, 50), 2: ids(40, 50), 3: ids(90, 20)}
    url, panel = await listing_panel(lambda page: (pages.get(page, []), 3))
    got = await walk(url, listing)
    assert got == ids(0, 110)
    assert panel.pages == [1, 2, 3]
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("listing", LISTINGS)
async def test_an_empty_page_before_the_announced_end_stops_the_walk(
    listing_panel: StartPanel, listing: str
) -> None:
    url, panel = await listing_panel(lambda page: (ids(0, 50) if page == 1 else [], 10**9))
    assert await walk(url, listing) == ids(0, 50)
    assert panel.pages == [1, 2]


async def test_a_normal_multi_page_listing_yields_everything(
    panel: FakePanel, client: PteroClient, caplog: pytest.LogCaptureFixture
) -> None:
    server = panel.add_server(backup_limit=200)
    made = [panel.add_backup(server, name=f"b{i}").uuid for i in range(120)]
    servers = [server.uuid] + [panel.add_server(name=f"s{i}").uuid for i in range(59)]
    panel.clear_requests()
    listed = [b.uuid async for b in client.backups(server.identifier).list()]
    assert sorted(listed) == sorted(made)
    seen = [s.uuid async for s in client.servers()]
    assert sorted(seen) == sorted(servers)
    asked = [(r.path, r.query.get("page")) for r in panel.api_requests()]
    backups_path = f"/api/client/servers/{server.identifier}/backups"
    assert asked == [
        (backups_path, "1"),
        (backups_path, "2"),
        (backups_path, "3"),
        ("/api/client", "1"),
        ("/api/client", "2"),
    ]
    assert warnings_of(caplog) == []
