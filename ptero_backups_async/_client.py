"""``PteroClient``: the entry point."""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

import aiohttp
import anyio

from ._backups import BackupsResource, backup_uuid
from ._converter import WireConverter
from ._download import DEFAULT_MIN_RATE, ProgressCallback
from ._errors import DownloadError, InvalidArgumentError, PteroError, ResponseValidationError
from ._models import Backup, DownloadOutcome, Page, RateLimit, Server
from ._pagination import MAX_PER_PAGE, check_page, clamp_per_page, iterate_pages
from ._retry import RetryPolicy
from ._sansio import check_api_key, is_loopback_host, normalize_panel_url
from ._transport import SSLOption, Transport

__all__ = ["PteroClient"]

#: aiohttp's read buffer for link bodies: big, so each read hands over more bytes.
LINK_READ_BUFFER = 1024 * 1024

PathLike = str | os.PathLike[str]

logger = logging.getLogger("ptero_backups_async")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{name} must be a number, not {value!r}")
    if not (value >= 0 if allow_zero else value > 0) or value != value:
        raise InvalidArgumentError(f"{name} must be {'≥ 0' if allow_zero else '> 0'}: {value!r}")
    return value


class PteroClient:
    """An asyncio client for the backup endpoints of a Pterodactyl or Pelican panel.

    Use it as ``async with PteroClient(url, key) as client:``, or call ``aclose()``. A
    ``session`` passed in is used as is and never closed by the client.
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
    ) -> None:
        self.panel_url = normalize_panel_url(panel_url)
        api_key = check_api_key(api_key)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be an integer ≥ 0: {max_retries!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise InvalidArgumentError(f"max_concurrency must be an integer: {max_concurrency!r}")
        if max_concurrency < 1:
            raise InvalidArgumentError(f"max_concurrency must be ≥ 1: {max_concurrency!r}")
        policy = RetryPolicy(
            max_retries=max_retries,
            max_retry_after=_positive("max_retry_after", max_retry_after, allow_zero=True),
        )
        self._transport = Transport(
            self.panel_url,
            api_key,
            session=session,
            timeout=_positive("timeout", timeout),
            policy=policy,
            max_concurrency=max_concurrency,
            ssl=ssl,
        )
        self._converter = WireConverter()
        self._links: aiohttp.ClientSession | None = None
        if self.panel_url.startswith("http://") and not is_loopback_host(self.panel_url):
            logger.warning(
                "panel URL %s is plain http: the API key crosses the network unencrypted",
                self.panel_url,
            )

    def __repr__(self) -> str:
        return f"PteroClient(panel_url={self.panel_url!r}, api_key={self._transport.masked_key!r})"

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
        try:
            await self._transport.aclose()
        finally:
            if links is not None:
                await links.close()

    def _link_session(self) -> aiohttp.ClientSession:
        """The session for signed links: never the panel's, so no panel header or cookie."""
        if self._transport.closed:
            raise PteroError("this client is closed")
        if self._links is None:
            self._links = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._transport.ssl),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                read_bufsize=LINK_READ_BUFFER,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._links

    @property
    def rate_limit(self) -> RateLimit | None:
        """The panel's rate limit as of the last answer, or None before any."""
        return self._transport.rate_limit

    def backups(self, server: str) -> BackupsResource:
        """The backups of one server (its 8-character short id or its UUID)."""
        return BackupsResource(self, server)

    async def servers_page(self, page: int = 1, per_page: int = MAX_PER_PAGE) -> Page[Server]:
        """One page of the servers this key can see."""
        params = {"page": check_page(page), "per_page": clamp_per_page(per_page)}
        response = await self._transport.request("GET", "", params=params)
        what = f"{response.method} {response.url}"
        try:
            return self._converter.server_page(self._converter.decode(response.body, what), what)
        except ResponseValidationError as exc:
            raise self._transport.scrub(exc) from exc.__cause__

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
    ) -> list[DownloadOutcome]:
        """Download many backups into ``dest_dir/<uuid>.tar.gz``, ``concurrency`` at a time.

        A target may carry its own destination as a third item, read as ``download`` reads
        ``dest`` (a directory, or a path ending in a separator, receives ``<uuid>.tar.gz``), so
        that one call with one concurrency limit can fill several folders. Two targets with one
        final path never interleave: the second finds the first's verified file.
        Each link is resolved only when its download starts. One failure never cancels the
        others: every target gets a ``DownloadOutcome``, in the order of ``targets``.
        Cancelling the call cancels every download (and leaves no ``.part`` behind).
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be an integer ≥ 1: {concurrency!r}")
        directory = pathlib.Path(os.fspath(dest_dir))
        plan = [self._plan_target(target, directory) for target in targets]
        try:
            await anyio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
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
