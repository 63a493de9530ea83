"""Walking a paginated list to its end."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ._models import Page
from ._sansio import check_int

__all__ = ["MAX_PER_PAGE", "check_page", "clamp_per_page", "iterate_pages"]

logger = logging.getLogger("ptero_backups_async")

T = TypeVar("T")

#: The panels cap ``per_page`` at 50.
MAX_PER_PAGE = 50


def check_page(page: int) -> int:
    """``page`` if it is a positive integer (pages are 1-based)."""
    return check_int("page", page, minimum=1)


def clamp_per_page(per_page: int) -> int:
    """``per_page`` within what the panels accept (1…50)."""
    return min(check_int("per_page", per_page, minimum=1), MAX_PER_PAGE)


async def iterate_pages(
    fetch: Callable[[int], Awaitable[Page[T]]],
    key: Callable[[T], str],
    *,
    what: str = "a paginated listing",
) -> AsyncIterator[T]:
    """Every item of every page, each once, fetching the next page only when needed.

    The panels do not guarantee an order; an item created between two requests can push
    another onto the next page, so items already seen are skipped.

    The walk always ends, whatever the panel says: it stops at the first page that brings
    nothing new, and never asks for a page past the ``total_pages`` of the first page (a
    panel that raises ``total_pages`` later does not extend it). Stopping early for either
    reason logs a warning. ``what`` names the listing in that warning.
    """
    seen: set[str] = set()
    page = 1
    last_page: int | None = None  # the first page's total_pages: the walk's hard bound
    while True:
        current = await fetch(page)
        if last_page is None:
            last_page = current.total_pages
        new = 0
        for item in current.items:
            item_key = key(item)
            if item_key not in seen:
                seen.add(item_key)
                new += 1
                yield item
        if not current.items or page >= current.total_pages:
            return
        if not new:
            logger.warning(
                "page %d of %s repeated only items already seen; stopping "
                "(the panel reported total_pages=%d)",
                page,
                what,
                current.total_pages,
            )
            return
        if page >= last_page:
            logger.warning(
                "page %d of %s reported total_pages=%d, more than the %d of the first page; "
                "stopping there",
                page,
                what,
                current.total_pages,
                last_page,
            )
            return
        page += 1
