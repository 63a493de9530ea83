"""``PteroClient``: the entry point."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

import aiohttp
import anyio

from . import _fs
from ._backups import BackupsResource
from ._download import DEFAULT_MIN_RATE, ProgressCallback, Segments, check_segments
from ._errors import DownloadError, InvalidArgumentError, PteroError
from ._events import EventStream, NodeHub, Unavailable
from ._models import Backup, Page, RateLimit, Server
from ._outcome import DownloadOutcome
from ._pagination import MAX_PER_PAGE, check_page, clamp_per_page, iterate_pages
from ._panel import RATE_WINDOW, PanelAPI
from ._retry import RetryPolicy
from ._sansio import (
    backup_uuid,
    check_api_key,
    check_int,
    check_number,
    check_server_id,
    is_loopback_host,
    normalize_panel_url,
    origin_of,
)
from ._transport import AiohttpTransport, SSLOption, Transport

__all__ = ["PteroClient"]

#: aiohttp's read buffer for link bodies: big, so each read hands over more bytes.
LINK_READ_BUFFER = 1024 * 1024

PathLike = str | os.PathLike[str]

logger = logging.getLogger("ptero_backups_async")


class PteroClient:
    """An asyncio client for the backup endpoints of a Pterodactyl or Pelican panel.

    Use it as ``async with PteroClient(url, key) as client:``, or call ``aclose()``. Signed
    download links always go through a separate aiohttp session of the client's own, so the
    panel's headers and cookies never reach a link host. The key shows masked (``ptlc_…`` and
    its last 4 characters at most) in ``repr(client)``, log lines and error messages, never
    whole. A plain ``http://`` URL to another host than loopback is logged as a warning.

    Args:
        panel_url: The panel's URL (``"https://panel.example.com"``), with its path prefix if
            it has one.
        api_key: A client API key (``ptlc_…`` on Pterodactyl, ``pacc_…`` on Pelican).
        session: An aiohttp session of the caller's for API calls: used as is and never
            closed by the client. Not together with ``transport``.
        timeout: Seconds one attempt of an API call may take (connect and read). Downloads
            have their own ``read_timeout``.
        max_retries: Retries after the first attempt, for retryable failures.
        max_concurrency: API requests in flight at once.
        max_retry_after: The longest ``Retry-After`` the client waits out, in seconds; a
            longer one raises ``RateLimitError`` at once.
        ssl: Certificate verification: True, False, or an ``ssl.SSLContext`` (a private CA).
            It applies to download links and the node's websocket too.
        transport: Replaces the aiohttp transport of API calls with another ``Transport``
            (recording, replaying, a fake clock); the client closes it. Not together with
            ``session``.
        node_timeout: How long the node's websocket may take from the token request to
            ``auth success``, in seconds.
        rate_limit_window: The length in seconds of the panel's rate-limit window (a minute
            on Pterodactyl and Pelican): when ``X-RateLimit-Remaining`` falls below half of
            the limit, requests are spread over what is left of it, so that several clients
            of one user share the limit without a 429.

    Raises:
        InvalidArgumentError: A bad ``panel_url``, ``api_key`` (never echoed) or number, a
            ``transport`` that is not a ``Transport``, or a ``session`` and a ``transport``
            together.
    """

    def __init__(
        self,
        panel_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        max_concurrency: int = 16,
        max_retry_after: float = 60.0,
        ssl: SSLOption = True,
        transport: Transport | None = None,
        node_timeout: float = 15.0,
        rate_limit_window: float = RATE_WINDOW,
    ) -> None:
        self.panel_url = normalize_panel_url(panel_url)
        """The panel's base URL: no trailing slash, its path prefix kept."""
        api_key = check_api_key(api_key)
        check_int("max_retries", max_retries, minimum=0)
        check_int("max_concurrency", max_concurrency, minimum=1)
        policy = RetryPolicy(
            max_retries=max_retries,
            max_retry_after=check_number("max_retry_after", max_retry_after, allow_zero=True),
        )
        if transport is None:
            transport = AiohttpTransport(session=session, ssl=ssl, max_connections=max_concurrency)
        elif session is not None:
            raise InvalidArgumentError("pass a session or a transport, not both")
        elif not isinstance(transport, Transport):
            raise InvalidArgumentError(f"transport must be a Transport, not {transport!r}")
        self._ssl = ssl
        self._api = PanelAPI(
            self.panel_url,
            api_key,
            transport,
            timeout=check_number("timeout", timeout),
            policy=policy,
            max_concurrency=max_concurrency,
            rate_window=check_number("rate_limit_window", rate_limit_window),
        )
        self._links: aiohttp.ClientSession | None = None
        self._hubs: dict[str, NodeHub] = {}
        self._node_timeout = check_number("node_timeout", node_timeout)
        if self.panel_url.startswith("http://") and not is_loopback_host(self.panel_url):
            logger.warning(
                "panel URL %s is plain http: the API key crosses the network unencrypted",
                self.panel_url,
            )

    def __repr__(self) -> str:
        return f"PteroClient(panel_url={self.panel_url!r}, api_key={self._api.masked_key!r})"

    async def __aenter__(self) -> PteroClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections this client opened (a caller's session stays open)."""
        links, self._links = self._links, None
        hubs, self._hubs = list(self._hubs.values()), {}
        try:
            for hub in hubs:
                await hub.aclose()
            await self._api.aclose()
        finally:
            if links is not None:
                await links.close()

    def _link_session(self) -> aiohttp.ClientSession:
        """The session for signed links: never the panel's, so no panel header or cookie."""
        if self._api.closed:
            raise PteroError("this client is closed")
        if self._links is None:
            self._links = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                read_bufsize=LINK_READ_BUFFER,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._links

    @property
    def rate_limit(self) -> RateLimit | None:
        """The panel's rate limit as of the last answer, or None before any.

        From the ``X-RateLimit-*`` headers; when ``remaining`` runs low the client spaces out
        its next requests instead of walking into a 429.
        """
        return self._api.rate_limit

    def backups(self, server: str) -> BackupsResource:
        """The backups of one server (its 8-character short id or its UUID).

        Cheap: no request is made until a method of the resource is called.

        Args:
            server: The server's 8-character short id (``"d3aac109"``) or its UUID.

        Returns:
            The server's backups.

        Raises:
            InvalidArgumentError: ``server`` is neither a short id nor a UUID.
        """
        resource = BackupsResource(
            self._api, server, links=self._link_session, hub=lambda: self._hub(resource.server)
        )
        return resource

    def _hub(self, server: str) -> NodeHub:
        """The shared websocket of ``server`` (one per server per client)."""
        if self._api.closed:
            raise PteroError("this client is closed")
        hub = self._hubs.get(server)
        if hub is None:
            hub = self._hubs[server] = NodeHub(
                self._api,
                server,
                session=self._link_session,
                origin=origin_of(self.panel_url),
                connect_timeout=self._node_timeout,
            )
        return hub

    @contextlib.asynccontextmanager
    async def events(self, server: str) -> AsyncIterator[EventStream]:
        """The node's events for ``server``: ``async with client.events(s) as events:``.

        One websocket per server per client, shared with every ``wait()`` on that server;
        it opens with the first reader and closes when the last leaves. The body runs once
        the socket is up and authenticated (or after ``node_timeout``). Token, ``Origin``,
        ``auth``, re-auth before the token expires and reconnects are handled here. Each
        reader buffers up to ``MAX_QUEUE`` events; past that the oldest are dropped and
        counted in ``events.dropped``. Iteration raises ``EventsUnavailableError`` when the
        node's events cannot be had.

        Args:
            server: The server's 8-character short id or its UUID.

        Returns:
            An async context manager whose value is the ``EventStream``.

        Raises:
            InvalidArgumentError: ``server`` is neither a short id nor a UUID.
            PteroError: The client is closed.
        """
        hub = self._hub(check_server_id(server))
        sub = await hub.subscribe()
        try:
            # The body starts once the socket is up (or known not to come), so that what it
            # does next (a restore, a create) cannot happen before the node listens.
            with anyio.move_on_after(hub.connect_timeout):
                first = await sub.get()
                if isinstance(first, Unavailable):
                    sub.push(first)  # iteration raises it
            yield EventStream(sub)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.aclose()

    async def servers_page(self, page: int = 1, per_page: int = MAX_PER_PAGE) -> Page[Server]:
        """One page of the servers this key can see.

        Args:
            page: The page number, from 1.
            per_page: Servers per page; more than 50 (the panels' cap) is asked as 50.

        Returns:
            The page, with the panel's pagination figures.

        Raises:
            InvalidArgumentError: ``page`` or ``per_page`` is not a positive integer.
            APIStatusError: A refusal of the panel (401, 403, 429, 5xx…), after the retries
                that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        params = {"page": check_page(page), "per_page": clamp_per_page(per_page)}
        return await self._api.call("GET", "", self._api.converter.server_page, params=params)

    def servers(self) -> AsyncIterator[Server]:
        """Every server this key can see, fetched page by page as you iterate.

        Iteration ends at the first page that brings nothing new, whatever the panel says of
        its page count.

        Returns:
            An async iterator of the servers. The errors of ``servers_page()`` are raised
            from the iteration.
        """
        return iterate_pages(self.servers_page, lambda s: s.uuid, what="the servers")

    async def download_many(
        self,
        targets: Iterable[tuple[str, Backup | str] | tuple[str, Backup | str, PathLike]],
        dest_dir: str | os.PathLike[str],
        *,
        concurrency: int = 4,
        verify: bool = True,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
        min_rate: float | None = DEFAULT_MIN_RATE,
        segments: Segments = "auto",
    ) -> list[DownloadOutcome]:
        """Download many backups into ``dest_dir/<uuid>.tar.gz``, ``concurrency`` at a time.

        A target may carry its own destination as a third item, read as ``download`` reads
        ``dest`` (a directory, or a path ending in a separator, receives ``<uuid>.tar.gz``), so
        that one call with one concurrency limit can fill several folders. Two targets with one
        final path never interleave: the second finds the first's verified file.
        Each link is resolved only when its download starts. One failure never cancels the
        others: every target gets a ``DownloadOutcome``, in the order of ``targets``.
        Cancelling the call cancels every download (and leaves no ``.part`` behind).
        ``concurrency`` counts connections to link hosts: files and the extra ranged streams
        of ``segments`` share it, files first.

        Args:
            targets: ``(server, backup)`` pairs, or ``(server, backup, dest)`` triples; a
                backup is a ``Backup`` or its UUID.
            dest_dir: Where targets without their own destination go (created with its
                parents).
            concurrency: Connections to link hosts at once, ranged streams included.
            verify: Check each file against its backup's checksum.
            overwrite: Replace existing files that do not match.
            progress: Called from the event loop with a ``DownloadProgress`` for each file as
                bytes arrive.
            read_timeout: Seconds a link host may stay silent before an attempt counts as
                stalled; also the window ``min_rate`` is measured over.
            max_attempts: GETs of a fresh link per file, retries included.
            min_rate: Bytes per second an attempt must average over ``read_timeout``
                seconds; None turns the check off.
            segments: ``"auto"`` or the most ranged streams per file, 1 to 32.

        Returns:
            One ``DownloadOutcome`` per target, in the order of ``targets``: a result, or the
            error (a ``PteroError``) that stopped that download.

        Raises:
            InvalidArgumentError: A target that is not a pair or a triple, a bad server id or
                backup UUID, a bad ``concurrency`` or ``segments`` (before any download).
            DownloadError: ``dest_dir`` cannot be created.
        """
        check_int("concurrency", concurrency, minimum=1)
        check_segments(segments)
        directory = pathlib.Path(os.fspath(dest_dir))
        plan = [self._plan_target(target, directory) for target in targets]
        try:
            await _fs.makedirs(directory)
        except OSError as exc:
            raise DownloadError(f"cannot create {directory}: {exc}") from exc
        outcomes: list[DownloadOutcome | None] = [None] * len(plan)
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(
            resource: BackupsResource, uuid: str, backup: Backup | str, dest: PathLike
        ) -> DownloadOutcome:
            error: PteroError
            try:
                result = await resource.download(
                    backup,
                    dest,
                    verify=verify,
                    overwrite=overwrite,
                    progress=progress,
                    read_timeout=read_timeout,
                    max_attempts=max_attempts,
                    min_rate=min_rate,
                    segments=segments,
                    connections=limiter,
                )
            except PteroError as exc:
                error = exc
            except Exception as exc:  # a download must not take the others down
                error = DownloadError(f"download of backup {uuid} failed: {exc!r}")
                error.__cause__ = exc
            else:
                return DownloadOutcome(resource.server, uuid, result=result)
            return DownloadOutcome(resource.server, uuid, error=error)

        queue = iter(enumerate(plan))

        async def worker() -> None:
            # A worker keeps its connection token from one file to the next, so files go
            # before the extra streams of segments, which wait for a free token; it lets it go
            # when the list is done. Workers, not a task per file: memory stays flat however
            # many targets there are.
            async with limiter:
                for index, (resource, uuid, backup, dest) in queue:
                    outcomes[index] = await one(resource, uuid, backup, dest)

        async with anyio.create_task_group() as tg:
            for _ in range(min(concurrency, len(plan))):
                tg.start_soon(worker)
        return [outcome for outcome in outcomes if outcome is not None]

    @property
    def transport(self) -> Transport:
        """The transport of API calls: the one given to the constructor, or the aiohttp one."""
        return self._api.transport

    def _plan_target(
        self, target: object, directory: pathlib.Path
    ) -> tuple[BackupsResource, str, Backup | str, PathLike]:
        if not isinstance(target, tuple) or len(target) not in (2, 3):
            raise InvalidArgumentError(
                f"a download target is (server, backup) or (server, backup, dest), not {target!r}"
            )
        server, backup = target[0], target[1]
        uuid = backup_uuid(backup)
        dest = target[2] if len(target) == 3 else directory / f"{uuid}.tar.gz"
        return self.backups(server), uuid, backup, dest
