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
from ._panel import PanelAPI
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

    Use it as ``async with PteroClient(url, key) as client:``, or call ``aclose()``. A
    ``session`` passed in is used as is and never closed by the client. ``transport`` replaces
    the aiohttp transport of API calls with another ``Transport`` (recording, replaying, a fake
    clock); the client closes it. Signed download links always go through a separate aiohttp
    session of the client's own. ``node_timeout`` bounds how long the node's websocket may
    take from the token request to ``auth success``.
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
    ) -> None:
        self.panel_url = normalize_panel_url(panel_url)
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
        """The panel's rate limit as of the last answer, or None before any."""
        return self._api.rate_limit

    def backups(self, server: str) -> BackupsResource:
        """The backups of one server (its 8-character short id or its UUID)."""
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
        """One page of the servers this key can see."""
        params = {"page": check_page(page), "per_page": clamp_per_page(per_page)}
        return await self._api.call("GET", "", self._api.converter.server_page, params=params)

    def servers(self) -> AsyncIterator[Server]:
        """Every server this key can see, fetched page by page as you iterate."""
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
            index: int, resource: BackupsResource, uuid: str, backup: Backup | str, dest: PathLike
        ) -> None:
            error: PteroError
            async with limiter:
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
                    outcomes[index] = DownloadOutcome(resource.server, uuid, result=result)
                    return
            outcomes[index] = DownloadOutcome(resource.server, uuid, error=error)

        async with anyio.create_task_group() as tg:
            for index, (resource, uuid, backup, dest) in enumerate(plan):
                tg.start_soon(one, index, resource, uuid, backup, dest)
        return [outcome for outcome in outcomes if outcome is not None]

    @property
    def transport(self) -> Transport:
        """The transport of API calls."""
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
