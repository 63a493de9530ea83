"""The seam to the network for panel API calls: one abstract ``send``, and its aiohttp adapter.

Everything about the panel (headers, URL join, retries, ``Retry-After``, pacing, rate limits,
error mapping, key scrubbing) lives above this seam, in ``_panel``; a transport only moves one
request and its answer, and says how a failed attempt failed. Pass another implementation as
``PteroClient(..., transport=...)`` to record, replay or route requests, or to run retry and
pacing logic on a fake clock.
"""

from __future__ import annotations

import abc
import asyncio
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import anyio
from multidict import CIMultiDict

from ._errors import PteroError, ResponseValidationError
from ._retry import Failure

__all__ = [
    "MAX_BODY",
    "AiohttpTransport",
    "RawResponse",
    "SSLOption",
    "Transport",
    "TransportError",
]

#: The panel's answers are small JSON documents; anything this big is not the API.
MAX_BODY = 16 * 1024 * 1024

SSLOption = ssl_module.SSLContext | bool
RawResponse = tuple[int, Mapping[str, str], bytes]
"""What ``Transport.send`` returns: ``(status, headers, body)``.

The headers are looked up case-insensitively; the body is the whole answer, as bytes.
"""


class TransportError(PteroError):
    """An attempt that got no answer; ``failure`` says whether the panel may have seen it.

    Raised by a ``Transport`` and turned into ``APIConnectionError`` or ``APITimeoutError``
    above it: it never reaches a caller of the client.

    Args:
        message: What went wrong, without the API key.
        failure: ``Failure.NOT_SENT`` (the request never left: retried even for a POST),
            ``Failure.CONNECTION`` (broke once it may have been sent), ``Failure.TIMEOUT``,
            or None for a failure that a retry cannot fix (a bad certificate, an invalid
            URL).
        timeout: True when no answer came in time: the client raises ``APITimeoutError``
            rather than ``APIConnectionError``.
    """

    def __init__(self, message: str, *, failure: Failure | None, timeout: bool = False) -> None:
        super().__init__(message)
        self.failure = failure
        self.timeout = timeout


class Transport(abc.ABC):
    """Moves one API request and its answer; the clock and the sleep of retries live here too.

    ``send`` returns the answer whatever its status and raises ``TransportError`` when there is
    none. It may also raise a ``PteroError`` of its own (``ResponseValidationError`` for an
    answer too large to be the API). ``clock`` and ``sleep`` are what retries and pacing use:
    override both to run them on a fake clock.
    """

    @abc.abstractmethod
    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        timeout: float,  # noqa: ASYNC109 - seconds handed to the HTTP client, per request
    ) -> RawResponse:
        """Send one request and return ``(status, headers, body)``.

        Args:
            method: The HTTP method (``"GET"``, ``"POST"``, ``"PUT"``, ``"DELETE"``).
            url: The absolute URL, query string included.
            headers: The request's headers (the API key's ``Authorization`` among them).
            body: The JSON body, already encoded, or None.
            timeout: Seconds this one attempt may take, connect and read included.

        Returns:
            The answer, whatever its status; redirects are not followed.

        Raises:
            TransportError: No answer came (refused, reset, timed out, TLS failed).
            PteroError: Any other error of the transport's own, such as
                ``ResponseValidationError`` for an answer too large to be the API.
        """

    async def aclose(self) -> None:  # noqa: B027 - a transport may own nothing
        """Release what the transport owns; the client calls it once, from its ``aclose()``."""

    def clock(self) -> float:
        """Seconds on a monotonic clock: retries and pacing measure time with it.

        Returns:
            The clock's reading, in seconds (``time.monotonic()`` unless overridden).
        """
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait between retries and while pacing (``anyio.sleep`` unless overridden).

        Args:
            seconds: How long to wait.
        """
        await anyio.sleep(seconds)


# aiohttp and timeout exceptions → how the attempt failed, for retries. The first match wins.
_FAILURES: tuple[tuple[type[BaseException], Failure | None, bool], ...] = (
    (aiohttp.ClientSSLError, None, False),  # a bad certificate stays bad
    (aiohttp.ConnectionTimeoutError, Failure.NOT_SENT, True),
    (aiohttp.ClientConnectorError, Failure.NOT_SENT, False),
    (aiohttp.InvalidURL, None, False),
    (aiohttp.ServerTimeoutError, Failure.TIMEOUT, True),
    (asyncio.TimeoutError, Failure.TIMEOUT, True),
    (aiohttp.ClientError, Failure.CONNECTION, False),
)


def transport_error(exc: BaseException) -> TransportError:
    """The ``TransportError`` for an aiohttp or timeout exception."""
    for exc_type, failure, timeout in _FAILURES:
        if isinstance(exc, exc_type):
            if timeout:
                return TransportError(
                    f"no answer in time ({type(exc).__name__})", failure=failure, timeout=True
                )
            return TransportError(str(exc) or type(exc).__name__, failure=failure)
    raise TypeError(f"not a client error: {exc!r}")  # pragma: no cover - programming error


class AiohttpTransport(Transport):
    """The default transport: an aiohttp session, the caller's (never closed) or its own.

    Args:
        session: A session of the caller's, used as is and never closed; None: the transport
            makes its own on first use (no cookie jar) and closes it in ``aclose()``.
        ssl: Certificate verification: True (the default), False, or an ``ssl.SSLContext``
            (for a private CA).
        max_connections: The connection limit of the session it makes.
        sleep: The sleep of retries and pacing, instead of ``anyio.sleep`` (tests record the
            delays with it instead of waiting).
        clock: The clock of retries and pacing, instead of ``time.monotonic``.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        ssl: SSLOption = True,
        max_connections: int = 16,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._ssl = ssl
        self._max_connections = max_connections
        self._sleep = sleep
        self._clock = clock

    def clock(self) -> float:
        """The clock given to the constructor, or the monotonic clock.

        Returns:
            The clock's reading, in seconds.
        """
        return self._clock() if self._clock is not None else time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """The sleep given to the constructor, or ``anyio.sleep``.

        Args:
            seconds: How long to wait.
        """
        await (self._sleep or anyio.sleep)(seconds)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise PteroError("this client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
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

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        timeout: float,  # noqa: ASYNC109 - seconds handed to the HTTP client, per request
    ) -> RawResponse:
        """One request through the session; aiohttp's failures become ``TransportError``.

        Args:
            method: The HTTP method.
            url: The absolute URL, query string included.
            headers: The request's headers.
            body: The encoded body, or None.
            timeout: Seconds this one attempt may take, connect and read included.

        Returns:
            The answer, whatever its status; redirects are not followed.

        Raises:
            TransportError: No answer came; its ``failure`` says whether the panel may have
                seen the request.
            ResponseValidationError: The answer is over 16 MiB: not the panel's API.
            PteroError: The transport is closed.
        """
        session = self._get_session()
        try:
            return await self._send(session, method, url, headers, body, timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise transport_error(exc) from exc

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,  # noqa: ASYNC109 - seconds handed to aiohttp's ClientTimeout
    ) -> RawResponse:
        async with session.request(
            method,
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            raise_for_status=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
            ssl=self._ssl,
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
