"""Walking a paginated list to its end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ._errors import InvalidArgumentError
from ._models import Page

__all__ = ["MAX_PER_PAGE", "check_page", "clamp_per_page", "iterate_pages"]

T = TypeVar("T")

#: The panels cap ``per_page`` at 50.
MAX_PER_PAGE = 50


def check_page(page: int) -> int:
    """``page`` if it is a positive integer (pages are 1-based)."""
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidArgumentError(f"page must be a positive integer, not {page!r}")
    return page


def clamp_per_page(per_page: int) -> int:
    """``per_page`` within what the panels accept (1…50)."""
    if isinstance(per_page, bool) or not isinstance(per_page, int) or per_page < 1:
        raise InvalidArgumentError(f"per_page must be a positive integer, not {per_page!r}")
    return min(per_page, MAX_PER_PAGE)


async def iterate_pages(
    fetch: Callable[[int], Awaitable[Page[T]]], key: Callable[[T], str]
) -> AsyncIterator[T]:
    """Every item of every page, each once, fetching the next page only when needed.

    The panels do not guarantee an order; an item created between two requests can push
    another onto the next page, so items already seen are skipped.
    """
    seen: set[str] = set()
    page = 1
    while True:
        current = await fetch(page)
        for item in current.items:
            if key(item) not in seen:
                seen.add(key(item))
                yield item
        if not current.items or page >= current.total_pages:
            return
        page += 1
