"""One GET of a signed link: what can go wrong with it, and how it is told.

Shared by the file downloader (one stream or ranged segments) and the verified stream.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp

from ._errors import bound_text
from ._sansio import parse_retry_after

__all__ = [
    "CONTENT_RANGE",
    "MAX_LINK_RETRY_AFTER",
    "_AttemptFailed",
    "_Pace",
    "_describe",
    "_retry_delay",
    "_visible",
    "_without_link_secret",
    "check_length",
    "check_resumed",
    "link_headers",
    "link_timeout",
    "refused",
]

#: The longest pause a link host's Retry-After can impose between attempts.
MAX_LINK_RETRY_AFTER = 30.0

CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_URL_QUERY = re.compile(r"(\w+://[^\s'\"?]*)\?[^\s'\"]*")


class _AttemptFailed(Exception):
    """One attempt went wrong in a way a fresh link may fix."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_delay(failures: int, retry_after: float | None) -> float:
    """A short pause before the next link: links are cheap, a struggling host is not."""
    if retry_after is not None:
        return min(retry_after, MAX_LINK_RETRY_AFTER)
    return min(0.2 * 2.0 ** (failures - 1), 5.0)


class _Pace:
    """``min_rate`` over windows of ``window`` seconds: a trickle fails the attempt."""

    def __init__(self, min_rate: float | None, window: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self.since = time.monotonic()
        self.at = 0

    def check(self, received: int) -> None:
        """Called as bytes arrive, with the count so far in this attempt."""
        if self.min_rate is None:
            return
        now = time.monotonic()
        elapsed = now - self.since
        if elapsed < self.window:
            return
        rate = (received - self.at) / elapsed
        if rate < self.min_rate:
            raise _AttemptFailed(
                f"the link host sent {received - self.at} bytes in {elapsed:.1f} s "
                f"({rate:.0f} B/s), below min_rate={self.min_rate:g} B/s"
            )
        self.since, self.at = now, received


def _visible(text: str, limit: int = 200) -> str:
    """Text from the link host, short and with control characters escaped (``\\x1b``)."""
    text = bound_text(text, limit)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _without_link_secret(text: str, url: str) -> str:
    """``text`` with the query (token, signature) of the link, or of any URL, cut to ``?…``.

    aiohttp names the URL in some errors; a link is a bearer credential until it expires.
    """
    _, _, query = url.partition("?")
    if query:
        text = text.replace(query, "…")
    return _URL_QUERY.sub(r"\1?…", text)


def _describe(exc: BaseException, received: int, total: int | None) -> str:
    where = f"after {received}{f' of {total}' if total else ''} bytes"
    if isinstance(exc, asyncio.TimeoutError):
        return f"the link host stalled {where} (no data within read_timeout)"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the connection broke {where} ({exc})"
    return f"{type(exc).__name__} {where}: {exc}"


def link_headers(
    first: int | None = None, last: int | None = None, etag: str | None = None
) -> dict[str, str]:
    """Headers of one GET of a link: the raw bytes, from ``first`` (to ``last``) if given.

    A weak ETag never goes out as ``If-Range`` (RFC 9110 13.1.5): a host compares it strongly
    and would always answer 200. The ETag of the answer is compared instead (``check_resumed``).
    """
    headers = {"Accept-Encoding": "identity"}
    if first is not None:
        headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        if etag and not etag.startswith("W/"):
            headers["If-Range"] = etag
    return headers


def link_timeout(read_timeout: float) -> aiohttp.ClientTimeout:
    """No bound on a whole body; ``read_timeout`` to connect and between reads."""
    return aiohttp.ClientTimeout(total=None, sock_connect=read_timeout, sock_read=read_timeout)


def check_length(announced: int | None, expected: int | None) -> None:
    """The link host's Content-Length must be what the panel announced."""
    if announced is not None and expected is not None and announced != expected:
        raise _AttemptFailed(f"the link host announced {announced} bytes, the panel {expected}")


def check_resumed(
    resp: aiohttp.ClientResponse, offset: int, total: int | None, etag: str | None
) -> None:
    """A 206 to ``Range: bytes=<offset>-`` must hold exactly the bytes asked for, of the object
    the earlier bytes came from; raises ``_AttemptFailed`` otherwise."""
    match = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
    start = int(match.group(1)) if match else -1
    size = match.group(3) if match else None
    if start != offset or (total and size not in (str(total), "*")):
        raise _AttemptFailed(
            f"206 with Content-Range {resp.headers.get('Content-Range')!r} "
            f"for a request from byte {offset}"
        )
    answered = resp.headers.get("ETag")
    if etag and answered and answered != etag:
        # If-Range should have prevented this: the bytes may be of another object.
        raise _AttemptFailed(f"the object changed (ETag {answered}, was {etag})")


def refused(resp: aiohttp.ClientResponse) -> _AttemptFailed:
    """An answer that carries no body to keep, with the host's ``Retry-After``."""
    return _AttemptFailed(
        f"the link host answered {resp.status} {_visible(resp.reason or '')}".strip(),
        parse_retry_after(resp.headers.get("Retry-After")),
    )
