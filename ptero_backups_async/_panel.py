"""The panel-call logic above the transport seam: one API call, from path to parsed answer.

Headers and URL join, the retry policy, ``Retry-After``, pacing and rate-limit tracking, the
concurrency limit, error mapping and key scrubbing all happen here, once, whatever
``Transport`` carries the bytes. Every error that leaves ``PanelAPI`` has had the key masked.
"""

from __future__ import annotations

import json as json_module
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anyio
import attrs
from attrs import frozen

from ._converter import WireConverter
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    PteroError,
    RateLimitError,
    ResponseValidationError,
)
from ._models import RateLimit
from ._retry import RetryPolicy
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
from ._transport import Transport, TransportError

__all__ = ["RATE_WINDOW", "PanelAPI", "Parse", "Response"]

logger = logging.getLogger("ptero_backups_async")

#: Seconds of the panels' rate-limit window: Laravel's throttle counts per minute.
RATE_WINDOW = 60.0
#: 429 codes of the panels' per-server throttles (creates, restores): not the API-wide limit.
LOCAL_429 = frozenset({"TooManyRequestsHttpException"})
#: When other clients share the rate limit: below this share of the window's requests left,
#: the rest is spread over the window,
SHARE_BELOW = 0.5
#: and this share is left unused, for requests already on their way (this client's and the
#: others'): at or below it, requests wait for the next window.
RESERVE = 0.1

T = TypeVar("T")
E = TypeVar("E", bound=PteroError)
#: Turns decoded JSON into a model; the second argument names the answer in errors.
Parse = Callable[[Any, str], T]


@frozen
class Response:
    """A panel answer with a 2xx status."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    method: str
    url: str


class PanelAPI:
    """The panel's client API as the resources see it: ``request`` and ``decode``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        transport: Transport,
        *,
        timeout: float,
        policy: RetryPolicy,
        max_concurrency: int,
        rate_window: float = RATE_WINDOW,
        converter: WireConverter | None = None,
    ) -> None:
        self.base_url = base_url
        self.transport = transport
        self.timeout = timeout
        self.policy = policy
        self.converter = converter or WireConverter()
        #: Seconds of the panel's rate-limit window.
        self.rate_window = rate_window
        self.rate_limit: RateLimit | None = None
        self._api_key = api_key
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._not_before = 0.0
        self._window_start = 0.0
        #: Seconds between request starts while the window's requests run low (0: no pacing).
        self._spacing = 0.0
        self._last_start = -math.inf
        #: Requests sent and answered, and answered as of the last rate-limit headers.
        self._sent = 0
        self._answered = 0
        self._answered_then = 0
        #: True once the panel's count showed requests of another client of the same user.
        self._shared = False
        self._closed = False

    @property
    def masked_key(self) -> str:
        """The API key as it may be shown: ``ptlc_…abcd``."""
        return mask_key(self._api_key)

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the transport."""
        self._closed = True
        await self.transport.aclose()

    def url(self, path: str) -> str:
        """The absolute URL of a client API path, keeping the panel's path prefix."""
        return join_url(self.base_url, "/api/client" + path)

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

    def decode(self, response: Response, parse: Parse[T]) -> T:
        """The answer's JSON turned into a model by ``parse`` (a ``converter`` method)."""
        what = f"{response.method} {response.url}"
        try:
            return parse(self.converter.decode(response.body, what), what)
        except PteroError as exc:
            raise self.scrub(exc) from exc.__cause__

    async def call(
        self,
        method: str,
        path: str,
        parse: Parse[T],
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        has_body: bool = False,
    ) -> T:
        """``request`` then ``decode``."""
        return self.decode(
            await self.request(method, path, params=params, json=json, has_body=has_body), parse
        )

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
        try:
            return await self._request(method, path, params, json, has_body)
        except PteroError as exc:
            raise self.scrub(exc) from exc.__cause__

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None,
        json: Any,
        has_body: bool,
    ) -> Response:
        if self._closed:
            raise PteroError("this client is closed")
        url = self.url(path)
        if params:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        what = f"{method} {url}"
        has_body = has_body or json is not None
        headers = api_headers(self._api_key, has_body=has_body)
        body = json_module.dumps(json).encode() if has_body and json is not None else None
        clock = self.transport.clock
        retries = 0
        while True:
            try:
                async with self._limiter:
                    # Paced inside the limiter, so that a request that queued for a slot while
                    # another one met a 429 waits out the same Retry-After.
                    await self._pace(what, method, url)
                    started = clock()
                    status, resp_headers, resp_body = await self.transport.send(
                        method, url, headers, body, timeout=self.timeout
                    )
            except TransportError as exc:
                error_type = APITimeoutError if exc.timeout else APIConnectionError
                error = error_type(f"{what}: {exc}")
                if exc.failure is not None and self.policy.should_retry(
                    method, retries, failure=exc.failure
                ):
                    delay = self.policy.delay(retries)
                    logger.info(
                        "%s failed (%s); retry %d in %.2f s", what, error, retries + 1, delay
                    )
                    retries += 1
                    await self.transport.sleep(delay)
                    continue
                raise error from (exc.__cause__ or exc)
            logger.debug("%s -> %d in %.3f s", what, status, clock() - started)
            self._track_rate_limit(resp_headers)
            if 200 <= status < 300:
                return Response(status, resp_headers, resp_body, method, url)
            if 300 <= status < 400:
                # Masked before it is cut to size, so that no cut can leave part of the key.
                location = bound_text(
                    redact(resp_headers.get("Location", "nowhere"), self._api_key), 500
                )
                raise ResponseValidationError(
                    f"{what}: the panel answered {status}, a redirect to {location!r}, not its "
                    "API (a wrong panel URL or path prefix, or a proxy in the way?)"
                )
            status_error = parse_error(
                status, resp_headers, resp_body, method=method, url=url, secret=self._api_key
            )
            retry_after = getattr(status_error, "retry_after", None)
            if status == 429 and retry_after is not None and status_error.code not in LOCAL_429:
                # The API-wide limit (or a 429 of unknown kind): every call waits it out. A
                # throttle of one server's creates or restores holds only this call.
                self._not_before = max(self._not_before, clock() + retry_after)
            if self._give_up(status_error, method, retries):
                raise status_error
            delay = self.policy.delay(retries, retry_after=retry_after)
            logger.info("%s answered %d; retry %d in %.2f s", what, status, retries + 1, delay)
            retries += 1
            await self.transport.sleep(delay)

    def _give_up(self, error: APIStatusError, method: str, retries: int) -> bool:
        retry_after = getattr(error, "retry_after", None)
        if self.policy.retry_after_too_long(retry_after):
            return True
        return not self.policy.should_retry(method, retries, status=error.status)

    async def _pace(self, what: str, method: str, url: str) -> None:
        clock = self.transport.clock
        wait = self._not_before - clock()
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
        slept_until = -math.inf
        while True:
            now = clock()
            start = max(self._not_before, self._last_start + self._spacing)
            # Again only if the time to go moved later while this one slept (a 429, another
            # request's turn): a transport's clock need not follow its sleep.
            if start <= now or start <= slept_until:
                break
            logger.debug("pacing: waiting %.2f s for the panel's rate limit", start - now)
            await self.transport.sleep(start - now)
            slept_until = start
        self._last_start = clock()
        self._sent += 1

    def _track_rate_limit(self, headers: Mapping[str, str]) -> None:
        self._answered += 1
        rate_limit = parse_rate_limit(headers)
        if rate_limit is None:
            return
        now = self.transport.clock()
        previous, self.rate_limit = self.rate_limit, rate_limit
        if previous is None or rate_limit.remaining >= previous.remaining:
            # The first answer of a window (or a new window): the panel's count started about
            # now, as far as this client knows. Its throttle is a fixed window of a minute.
            self._window_start = now
        elif previous.remaining - rate_limit.remaining > self._sent - self._answered_then:
            # The count fell by more than this client sent since the last answer (counting
            # what was then still on its way): another client of the same user is using it.
            self._shared = True
        self._answered_then = self._answered
        limit, remaining = rate_limit.limit, rate_limit.remaining
        if limit <= 0:
            self._spacing = 0.0
            return
        if rate_limit.reset_at is not None:
            left = rate_limit.reset_at.timestamp() - time.time()
        else:
            left = self._window_start + self.rate_window - now
        left = min(max(left, self.rate_window / limit), self.rate_window)
        # Alone, a client may use the window to its last request; shared, it leaves a reserve
        # for requests of the others that are already on their way.
        reserve = int(limit * RESERVE) if self._shared else 0
        if remaining <= reserve:
            # (Nearly) out of requests: hold the next ones until the window turns over instead
            # of walking into a 429. The reserve covers requests already on their way, this
            # client's and other clients'.
            self._spacing = 0.0
            self._not_before = max(self._not_before, now + min(left, self.policy.max_retry_after))
        elif self._shared and remaining < limit * SHARE_BELOW:
            # Running low: spread what is left over the rest of the window. The count is the
            # panel's, shared by every client of the same user, so clients that each do this
            # slow down together as it falls, without knowing of one another.
            # The last of them still lands inside it.
            spacing = left / (remaining - reserve + 1)
            self._spacing = min(spacing, self.policy.max_retry_after)
        else:
            self._spacing = 0.0
