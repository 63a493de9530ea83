"""The one seam to the network for panel API calls: session, auth, timeouts, retries, pacing."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import anyio
import attrs
from attrs import frozen
from multidict import CIMultiDict

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    PteroError,
    RateLimitError,
    ResponseValidationError,
)
from ._models import RateLimit
from ._retry import Failure, RetryPolicy
from ._sansio import (
    api_headers,
    bound_text,
    join_url,
    mask_key,
    parse_error,
    parse_rate_limit,
    redact,
    redact_json,
)

__all__ = ["MAX_BODY", "Response", "Transport", "map_client_error"]

logger = logging.getLogger("ptero_backups_async")

#: The panel's answers are small JSON documents; anything this big is not the API.
MAX_BODY = 16 * 1024 * 1024

SSLOption = ssl_module.SSLContext | bool
E = TypeVar("E", bound=PteroError)

# aiohttp and timeout exceptions → the SDK's, and whether the panel may have seen the request.
# Order matters: the first matching row wins.
_EXCEPTION_MAP: tuple[tuple[type[BaseException], type[APIConnectionError], Failure | None], ...] = (
    (aiohttp.ClientSSLError, APIConnectionError, None),  # a bad certificate stays bad
    (aiohttp.ConnectionTimeoutError, APITimeoutError, Failure.NOT_SENT),
    (aiohttp.ClientConnectorError, APIConnectionError, Failure.NOT_SENT),
    (aiohttp.InvalidURL, APIConnectionError, None),
    (aiohttp.ServerTimeoutError, APITimeoutError, Failure.TIMEOUT),
    (asyncio.TimeoutError, APITimeoutError, Failure.TIMEOUT),
    (aiohttp.ClientError, APIConnectionError, Failure.CONNECTION),
)


def map_client_error(exc: BaseException, what: str) -> tuple[APIConnectionError, Failure | None]:
    """The SDK error for an aiohttp or timeout exception, and how it failed (for retries)."""
    for exc_type, error_type, failure in _EXCEPTION_MAP:
        if isinstance(exc, exc_type):
            reason = str(exc) or type(exc).__name__
            if error_type is APITimeoutError:
                reason = f"no answer in time ({type(exc).__name__})"
            return error_type(f"{what}: {reason}"), failure
    raise TypeError(f"not a client error: {exc!r}")  # pragma: no cover - programming error


@frozen
class Response:
    """A panel answer with a 2xx status."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    method: str
    url: str


class Transport:
    """Owns the aiohttp session for API calls; every request to the panel goes through here."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None,
        timeout: float,
        policy: RetryPolicy,
        max_concurrency: int,
        ssl: SSLOption = True,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self.timeout = timeout
        self.policy = policy
        self.ssl = ssl
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._max_concurrency = max_concurrency
        self._sleep = sleep
        self._clock = clock
        self._not_before = 0.0
        self._window_start = 0.0
        #: Seconds of the panel's rate-limit window (Laravel's throttle counts per minute).
        self.rate_window = 60.0
        self.rate_limit: RateLimit | None = None

    @property
    def masked_key(self) -> str:
        """The API key as it may be shown: ``ptlc_…abcd``."""
        return mask_key(self._api_key)

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise PteroError("this client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_concurrency, ssl=self.ssl),
                # The panel's session cookie is of no use to an API key, and must not follow
                # requests elsewhere.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session if this transport created it; a caller's session stays open."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    def scrub(self, error: E) -> E:
        """``error`` with the API key masked wherever the panel's answer may have echoed it."""
        key = self._api_key
        error.message = redact(error.message, key)  # the setter bounds it and updates args
        if isinstance(error, APIStatusError):
            error.detail = error.detail and redact(error.detail, key)
            error.errors = tuple(
                attrs.evolve(
                    d,
                    code=d.code and redact(d.code, key),
                    detail=d.detail and redact(d.detail, key),
                    meta=redact_json(d.meta, key),
                )
                for d in error.errors
            )
            error.headers = {name: redact(value, key) for name, value in error.headers.items()}
        return error

    def url(self, path: str) -> str:
        """The absolute URL of a client API path, keeping the panel's path prefix."""
        return join_url(self.base_url, "/api/client" + path)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        has_body: bool = False,
    ) -> Response:
        """Send one API call, retrying as the policy allows; raise the SDK's errors."""
        url = self.url(path)
        shown = url if not params else f"{url}?{'&'.join(f'{k}={v}' for k, v in params.items())}"
        what = f"{method} {shown}"
        has_body = has_body or json is not None
        headers = api_headers(self._api_key, has_body=has_body)
        retries = 0
        while True:
            try:
                async with self._limiter:
                    # Paced inside the limiter, so that a request that queued for a slot while
                    # another one met a 429 waits out the same Retry-After.
                    await self._pace(what, method, shown)
                    started = self._clock()
                    status, resp_headers, body = await self._send(
                        method, url, params, headers, json if has_body else None
                    )
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error, failure = map_client_error(exc, what)
                if self.policy.should_retry(method, retries, failure=failure) and failure:
                    delay = self.policy.delay(retries)
                    logger.info(
                        "%s failed (%s); retry %d in %.2f s", what, error, retries + 1, delay
                    )
                    retries += 1
                    await self._sleep(delay)
                    continue
                raise error from exc
            elapsed = self._clock() - started
            logger.debug("%s -> %d in %.3f s", what, status, elapsed)
            self._track_rate_limit(resp_headers)
            if 200 <= status < 300:
                return Response(status, resp_headers, body, method, shown)
            if 300 <= status < 400:
                # Masked before it is cut to size, so that no cut can leave part of the key.
                location = bound_text(
                    redact(resp_headers.get("Location", "nowhere"), self._api_key), 500
                )
                raise self.scrub(
                    ResponseValidationError(
                        f"{what}: the panel answered {status}, a redirect to {location!r}, not its "
                        "API (a wrong panel URL or path prefix, or a proxy in the way?)"
                    )
                )
            status_error = self.scrub(
                parse_error(
                    status, resp_headers, body, method=method, url=shown, secret=self._api_key
                )
            )
            retry_after = getattr(status_error, "retry_after", None)
            if status == 429 and retry_after is not None:
                self._not_before = max(self._not_before, self._clock() + retry_after)
            if self._give_up(status_error, method, retries):
                raise status_error
            delay = self.policy.delay(retries, retry_after=retry_after)
            logger.info("%s answered %d; retry %d in %.2f s", what, status, retries + 1, delay)
            retries += 1
            await self._sleep(delay)

    def _give_up(self, error: APIStatusError, method: str, retries: int) -> bool:
        retry_after = getattr(error, "retry_after", None)
        if self.policy.retry_after_too_long(retry_after):
            return True
        return not self.policy.should_retry(method, retries, status=error.status)

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str],
        json: Any,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        session = self._get_session()
        async with session.request(
            method,
            url,
            params=params,
            json=json,
            headers=headers,
            allow_redirects=False,
            raise_for_status=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            ssl=self.ssl,
        ) as resp:
            length = resp.content_length
            if length is not None and length > MAX_BODY:
                raise ResponseValidationError(
                    f"{method} {url}: the panel announced a {length}-byte body; "
                    f"API answers are far smaller (limit {MAX_BODY})"
                )
            chunks = []
            size = 0
            async for chunk in resp.content.iter_chunked(65536):
                size += len(chunk)
                if size > MAX_BODY:
                    raise ResponseValidationError(
                        f"{method} {url}: the panel's answer is over {MAX_BODY} bytes; "
                        "that is not its API"
                    )
                chunks.append(chunk)
            return resp.status, CIMultiDict(resp.headers), b"".join(chunks)

    async def _pace(self, what: str, method: str, url: str) -> None:
        wait = self._not_before - self._clock()
        if self.policy.retry_after_too_long(wait):
            # The panel asked for a longer pause than the caller allows: fail now, as the
            # request that met the 429 did, instead of sleeping past max_retry_after.
            raise RateLimitError(
                f"{what}: not sent; the panel's rate limit asked for a pause {wait:.1f} s "
                f"longer, over max_retry_after={self.policy.max_retry_after:g} s",
                status=429,
                retry_after=wait,
                method=method,
                url=url,
            )
        if wait > 0:
            logger.debug("pacing: waiting %.2f s for the panel's rate limit", wait)
            await self._sleep(wait)

    def _track_rate_limit(self, headers: Mapping[str, str]) -> None:
        rate_limit = parse_rate_limit(headers)
        if rate_limit is None:
            return
        now = self._clock()
        previous, self.rate_limit = self.rate_limit, rate_limit
        if previous is None or rate_limit.remaining >= previous.remaining:
            # The first answer of a window (or a new window): the panel's count started about
            # now. Its throttle is a fixed window of a minute.
            self._window_start = now
        if rate_limit.remaining <= 0 < rate_limit.limit:
            # Out of requests: hold the next ones until the window turns over instead of
            # walking into a 429.
            if rate_limit.reset_at is not None:
                wait = rate_limit.reset_at.timestamp() - time.time()
            else:
                wait = self._window_start + self.rate_window - now
            wait = min(max(wait, self.rate_window / rate_limit.limit), self.policy.max_retry_after)
            self._not_before = max(self._not_before, now + wait)
