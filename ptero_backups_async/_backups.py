"""``client.backups(server)``: every backup endpoint of one server."""

from __future__ import annotations

import builtins
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import aiohttp
import anyio

from ._download import DEFAULT_MIN_RATE, ProgressCallback, Segments, download_backup
from ._errors import (
    APIStatusError,
    BackupFailedError,
    ConflictError,
    EventsUnavailableError,
    InvalidArgumentError,
    NotFoundError,
    PteroError,
    TooManyBackupsError,
    UnsupportedOperationError,
    WaitTimeoutError,
)
from ._events import Connected, Item, NodeHub, Unavailable
from ._models import Backup, BackupCompleted, BackupState, DownloadResult, Page, RestoreCompleted
from ._pagination import MAX_PER_PAGE, check_page, clamp_per_page, iterate_pages
from ._panel import PanelAPI
from ._sansio import (
    backup_uuid,
    check_backup_uuid,
    check_int,
    check_name,
    check_number,
    check_server_id,
    encode_ignored,
)
from ._stream import BackupStream, open_stream

__all__ = ["BackupsResource"]

logger = logging.getLogger("ptero_backups_async")

_LOCK_TRIES = 3
#: While waiting on events, the panel is still asked this often, in case an event was lost.
SAFETY_POLL = 120.0
#: While a restore is awaited on events, the server's status is still polled this often.
RESTORE_POLL = 30.0
#: How long ``restore(wait=True)`` waits for the socket before it starts the restore anyway.
CONNECT_WAIT = 15.0
#: How long ``wait()`` waits for the socket before its first look at the backup.
FIRST_LOOK = 5.0

Via = Literal["auto", "events", "poll"]


class _Tracker:
    """A backup being awaited: one GET, and what it says."""

    def __init__(self, resource: BackupsResource, uuid: str) -> None:
        self.resource = resource
        self.uuid = uuid
        self.state = "unknown"

    async def look(self) -> Backup | None:
        """The backup if it completed; ``BackupFailedError`` if it failed; None otherwise."""
        try:
            backup = await self.resource.get(self.uuid)
        except ConflictError:
            return None  # the server is restoring: the backup is still there
        self.state = backup.state.value
        if backup.state is BackupState.COMPLETED:
            return backup
        if backup.state is BackupState.FAILED:
            raise BackupFailedError(
                f"backup {self.uuid} of server {self.resource.server} failed on the node",
                backup=backup,
            )
        return None


class BackupsResource:
    """The backups of one server: ``client.backups("d3aac109")``.

    Made by ``PteroClient.backups()``, cheaply: it holds no connection of its own. Built from
    what it uses, given once: the panel's API (``request``, ``decode``, ``call``), the session
    for signed links, which only downloads touch, and the server's shared websocket, which
    ``wait()`` and ``restore(wait=True)`` listen to. Every method that takes
    ``backup_or_uuid`` accepts a ``Backup`` or its UUID string.

    Args:
        api: The client's panel API.
        server: The server's 8-character short id or UUID (kept as ``server``).
        links: Returns the session for signed download links.
        hub: Returns the server's shared websocket.

    Raises:
        InvalidArgumentError: ``server`` is neither a short id nor a UUID.
    """

    def __init__(
        self,
        api: PanelAPI,
        server: str,
        *,
        links: Callable[[], aiohttp.ClientSession],
        hub: Callable[[], NodeHub],
    ) -> None:
        self._api = api
        self._links = links
        self._hub = hub
        self.server = check_server_id(server)
        """The server's short id or UUID, as given."""

    def __repr__(self) -> str:
        return f"<BackupsResource server={self.server!r}>"

    def _path(self, *parts: str) -> str:
        return "/".join((f"/servers/{self.server}/backups", *parts)).rstrip("/")

    async def _call_without_answer(self, method: str, path: str, **kwargs: Any) -> None:
        # The panels answer 204 (or the reference page's 202) with no body. A body that is
        # not a backup means something else answered: a login page, a proxy.
        response = await self._api.request(method, path, **kwargs)
        if response.body.strip():
            self._api.decode(response, self._api.converter.backup)

    async def list_page(self, page: int = 1, per_page: int = MAX_PER_PAGE) -> Page[Backup]:
        """One page of this server's backups (``per_page`` is clamped to 50).

        Args:
            page: The page number, from 1.
            per_page: Backups per page; more than 50 (the panels' cap) is asked as 50.

        Returns:
            The page, with the panel's pagination figures.

        Raises:
            InvalidArgumentError: ``page`` or ``per_page`` is not a positive integer.
            NotFoundError: No such server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        params = {"page": check_page(page), "per_page": clamp_per_page(per_page)}
        return await self._api.call(
            "GET", self._path(), self._api.converter.backup_page, params=params
        )

    def list(self, *, per_page: int = MAX_PER_PAGE) -> AsyncIterator[Backup]:
        """Every backup of the server, fetched page by page as you iterate.

        Iteration ends at the first page that brings nothing new, whatever the panel says of
        its page count. The panel's order is kept (oldest first in practice): sort where
        order matters.

        Args:
            per_page: Backups per request; more than 50 (the panels' cap) is asked as 50.

        Returns:
            An async iterator of the backups. The errors of ``list_page()`` are raised from
            the iteration.

        Raises:
            InvalidArgumentError: ``per_page`` is not a positive integer.
        """
        per_page = clamp_per_page(per_page)
        return iterate_pages(
            lambda page: self.list_page(page, per_page),
            lambda b: b.uuid,
            what=f"the backups of server {self.server}",
        )

    async def get(self, backup_or_uuid: Backup | str) -> Backup:
        """The backup as the panel sees it now.

        Args:
            backup_or_uuid: The backup, or its UUID.

        Returns:
            The backup's current record.

        Raises:
            InvalidArgumentError: ``backup_or_uuid`` is not a backup UUID (before any request).
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        path = self._path(backup_uuid(backup_or_uuid))
        return await self._api.call("GET", path, self._api.converter.backup)

    async def create(
        self,
        name: str | None = None,
        ignored: Sequence[str] | str | None = None,
        is_locked: bool = False,
        *,
        rotate: bool = False,
    ) -> Backup:
        """Start a backup; returns it while it is still being created (see ``wait``).

        The request is never sent twice, so a backup is never created twice: it is retried
        only on 429 and when the connection was refused before anything was sent.

        Args:
            name: The backup's name (at most 255 characters; Pterodactyl takes 191); None
                lets the panel name it.
            ignored: Paths to leave out: a list of patterns, or one ``"\\n"``-separated
                string.
            is_locked: Create it locked against deletion (the panel ignores it when the key
                lacks ``backup.delete``).
            rotate: When the server is at its backup limit, delete the oldest unlocked
                successful backup and try once more (the panel never rotates through the
                API).

        Returns:
            The new backup, still being created.

        Raises:
            InvalidArgumentError: A bad ``name``, ``ignored`` pattern or ``is_locked``
                (before any request).
            TooManyBackupsError: The server is at its backup limit (or backups are off), and
                ``rotate`` is False or nothing can be rotated.
            RateLimitError: The server's creation throttle (2 backups per 10 minutes on real
                panels) asked for a wait longer than ``max_retry_after``, or outlasted the
                retries.
            ConflictError: The server is restoring, installing, suspended or transferring.
            NotFoundError: No such server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = check_name(name)
        patterns = encode_ignored(ignored)
        if patterns:
            body["ignored"] = patterns
        if not isinstance(is_locked, bool):
            raise InvalidArgumentError(f"is_locked must be a bool, not {is_locked!r}")
        if is_locked:
            body["is_locked"] = True
        parse = self._api.converter.backup
        try:
            return await self._api.call("POST", self._path(), parse, json=body, has_body=True)
        except TooManyBackupsError:
            if not rotate:
                raise
            oldest = await self._oldest_rotatable()
            if oldest is None:
                raise
            logger.info("server %s at its backup limit: deleting %s", self.server, oldest.uuid)
            await self.delete(oldest.uuid)
            return await self._api.call("POST", self._path(), parse, json=body, has_body=True)

    async def _usable(self) -> builtins.list[Backup]:
        """Every listed backup whose UUID the SDK can act on; the others are logged."""
        usable = []
        async for backup in self.list():
            try:
                check_backup_uuid(backup.uuid)
            except InvalidArgumentError as exc:
                logger.warning("server %s: listing holds an unusable entry: %s", self.server, exc)
                continue
            usable.append(backup)
        return usable

    async def _oldest_rotatable(self) -> Backup | None:
        candidates = [
            b for b in await self._usable() if b.state is BackupState.COMPLETED and not b.is_locked
        ]
        return min(candidates, key=lambda b: b.created_at, default=None)

    async def prune(self, keep: int, *, dry_run: bool = False) -> builtins.list[Backup]:
        """Retention: keep the ``keep`` newest unlocked successful backups, delete the rest.

        Locked backups are never touched (and do not count towards ``keep``); failed ones are
        deleted; ones still being created are left alone; an entry whose UUID is not a UUID is
        logged and left alone. A backup that is already gone when its turn comes counts as
        deleted.

        Args:
            keep: How many of the newest unlocked successful backups to keep (0: none).
            dry_run: Only say what would be deleted; delete nothing.

        Returns:
            What was deleted (or, with ``dry_run=True``, what would be), oldest first.

        Raises:
            InvalidArgumentError: ``keep`` is not an integer ≥ 0.
            BackupLockedError: A backup was locked between the listing and its deletion.
            NotFoundError: No such server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        check_int("keep", keep, minimum=0)
        backups = await self._usable()
        successful = sorted(
            (b for b in backups if b.state is BackupState.COMPLETED and not b.is_locked),
            key=lambda b: b.created_at,
            reverse=True,
        )
        failed = [b for b in backups if b.state is BackupState.FAILED and not b.is_locked]
        doomed = sorted(successful[keep:] + failed, key=lambda b: b.created_at)
        if not dry_run:
            for backup in doomed:
                try:
                    await self.delete(backup.uuid)
                except NotFoundError:
                    pass  # already gone: the goal is reached
        return doomed

    async def wait(
        self,
        backup_or_uuid: Backup | str,
        timeout: float = 3600.0,  # noqa: ASYNC109 - part of the public contract
        poll_interval: float = 2.0,
        *,
        via: Via = "auto",
    ) -> Backup:
        """Wait until the backup completes and return it; ``BackupFailedError`` if it failed.

        ``via="auto"`` listens to the node's websocket: it subscribes first, then looks the
        backup up once (it may have finished already), then waits for ``backup completed``
        and returns the panel's record; after a reconnect it looks again, and a slow safety
        poll (every ``SAFETY_POLL`` seconds) covers a lost event. Where events cannot be had
        (no ``websocket.connect``, a token without ``backup.read``, a refused upgrade, a
        socket that keeps failing) it polls instead, saying so at INFO. ``via="events"``
        raises ``EventsUnavailableError`` there; ``via="poll"`` only polls: every
        ``poll_interval``, backing off gently to 30 s. Polls keep going through 409 (a
        restore in progress).

        Args:
            backup_or_uuid: The backup, or its UUID.
            timeout: Seconds to wait in all.
            poll_interval: Seconds between polls at first, when polling.
            via: ``"auto"`` (events where the key may use them, else polling), ``"events"``
                (events only) or ``"poll"`` (polling only).

        Returns:
            The completed backup, as the panel reports it.

        Raises:
            InvalidArgumentError: A bad ``backup_or_uuid``, ``timeout``, ``poll_interval`` or
                ``via`` (before any request).
            BackupFailedError: The backup failed on the node.
            WaitTimeoutError: The backup did not finish within ``timeout`` seconds (also a
                ``TimeoutError``).
            EventsUnavailableError: With ``via="events"``, the node's events cannot be had.
            NotFoundError: The backup does not exist, or disappeared while awaited.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        uuid = backup_uuid(backup_or_uuid).lower()
        if via not in ("auto", "events", "poll"):
            raise InvalidArgumentError(f"via must be 'auto', 'events' or 'poll', not {via!r}")
        timeout = check_number("timeout", timeout)
        poll_interval = check_number("poll_interval", poll_interval)
        deadline = time.monotonic() + timeout
        tracker = _Tracker(self, uuid)
        if via != "poll":
            with anyio.move_on_after(max(deadline - time.monotonic(), 0)):
                found = await self._wait_on_events(tracker, deadline, events_only=via == "events")
                if found is not None:
                    return found
        with anyio.move_on_after(max(deadline - time.monotonic(), 0)):
            return await self._poll(tracker, poll_interval)
        raise WaitTimeoutError(
            f"backup {uuid} of server {self.server} did not finish within {timeout:g} s "
            f"(last state: {tracker.state})"
        )

    async def _wait_on_events(
        self, tracker: _Tracker, deadline: float, *, events_only: bool
    ) -> Backup | None:
        """The backup once the node says it finished; None to fall back to polling."""
        sub = await self._hub().subscribe(
            lambda e: isinstance(e, BackupCompleted) and e.backup_uuid == tracker.uuid,
            needs_backups=True,
        )
        try:
            # The first look waits for the socket (so that nothing can finish unseen between
            # the look and the subscription), but not for long: a node that never answers
            # must not hide a backup that is already complete.
            with anyio.move_on_after(min(FIRST_LOOK, self._hub().connect_timeout)):
                item: Item | None = await sub.get()
                if isinstance(item, Unavailable):
                    if events_only:
                        raise EventsUnavailableError(f"server {self.server}: {item.reason}")
                    logger.info(
                        "backup %s: polling instead of node events: %s", tracker.uuid, item.reason
                    )
                    return None
            found = await tracker.look()
            if found is not None:
                return found
            while True:
                remaining = deadline - time.monotonic()
                with anyio.move_on_after(min(SAFETY_POLL, max(remaining, 0))) as quiet:
                    item = await sub.get()
                if quiet.cancelled_caught:
                    if remaining <= SAFETY_POLL:
                        return None  # the deadline; the caller raises
                    logger.debug("backup %s: safety poll", tracker.uuid)
                elif isinstance(item, Unavailable):
                    if events_only:
                        raise EventsUnavailableError(f"server {self.server}: {item.reason}")
                    logger.info(
                        "backup %s: polling instead of node events: %s", tracker.uuid, item.reason
                    )
                    return None
                # Connected (first time: the backup may have finished before the socket was
                # up; again: one may have finished in the gap), a completion, a safety poll.
                found = await tracker.look()
                if found is not None:
                    return found
        finally:
            with anyio.CancelScope(shield=True):
                await sub.aclose()

    async def _poll(self, tracker: _Tracker, poll_interval: float) -> Backup:
        interval = poll_interval
        while True:
            found = await tracker.look()
            if found is not None:
                return found
            await anyio.sleep(interval)
            interval = min(max(poll_interval, 30.0), interval * 1.5)

    async def download_url(self, backup_or_uuid: Backup | str) -> str:
        """A signed link to the archive: short-lived and, on Wings, single-use.

        ``download()`` and ``stream()`` ask for a fresh link per attempt themselves; this is
        for handing the link on. The panel hands out links for unfinished backups too.

        Args:
            backup_or_uuid: The backup, or its UUID.

        Returns:
            The link's URL (Wings: 15 minutes, one GET, no ``Range``; S3: 5 minutes,
            ``Range``).

        Raises:
            InvalidArgumentError: ``backup_or_uuid`` is not a backup UUID (before any request).
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        path = self._path(backup_uuid(backup_or_uuid), "download")
        return await self._api.call("GET", path, self._api.converter.signed_url)

    async def download(
        self,
        backup_or_uuid: Backup | str,
        dest: str | os.PathLike[str],
        *,
        verify: bool = True,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
        min_rate: float | None = DEFAULT_MIN_RATE,
        segments: Segments = "auto",
        connections: anyio.CapacityLimiter | None = None,
    ) -> DownloadResult:
        """Download the archive to ``dest``, verified.

        ``dest`` is an existing directory or a path ending in a separator (``"out/"``, created)
        → ``<dest>/<uuid>.tar.gz``; anything else is the file path itself.

        Streams into ``<final>.part`` while hashing with the algorithm the backup announces,
        fsyncs and renames atomically: nothing ever sits at the final path unless it verified.
        Two downloads to one final path (in one process or in several) never interleave: the
        second waits for the first, then finds the verified file (``skipped=True``).
        Dropped connections, stalls longer than ``read_timeout``, bodies slower than
        ``min_rate`` bytes/s over ``read_timeout`` seconds (``None`` disables the check),
        bodies longer than the backup's size and dead links are retried with a fresh link
        (resuming with ``Range`` where the link host supports it), up to ``max_attempts``
        GETs in all. An existing file that already matches is not fetched again
        (``skipped=True``); one that does not raises ``DestinationExistsError`` unless
        ``overwrite=True``.

        ``segments``: where the link host honours ranges (S3 links do; Wings links do not), the
        rest of a large archive is fetched as several ranged GETs at once — ``"auto"``: 8
        streams for a rest of 64 MiB or more, one below; an integer: at most that many (1: one
        stream). Pieces are written in place and hashed in order as they arrive; a failed
        piece is retried alone, from where it broke, up to ``max_attempts`` times, with a fresh
        link when the old one was refused. ``connections`` is a budget shared with other
        downloads (``download_many`` passes its own): every stream past the first takes one of
        its tokens, and waits for it.

        A run that is killed (``kill -9``, a reboot) leaves ``<final>.part`` and
        ``<final>.journal``; the next download to the same path re-hashes what the journal
        vouches for and resumes with ``Range`` (``resumed_from`` in the result).

        Args:
            backup_or_uuid: The backup, or its UUID.
            dest: An existing directory, or a path ending in a separator (created with its
                parents), which receives ``<uuid>.tar.gz``; anything else is the file path.
            verify: Check the bytes against the backup's checksum; False downloads a backup
                without a usable checksum, unchecked (``verified`` is then False).
            overwrite: Replace an existing file at the destination that does not match.
            progress: Called from the event loop with a ``DownloadProgress`` as bytes arrive.
            read_timeout: Seconds the link host may stay silent before the attempt counts as
                stalled; also the window ``min_rate`` is measured over.
            max_attempts: GETs of a fresh link in all, retries included.
            min_rate: Bytes per second an attempt must average over ``read_timeout``
                seconds; None turns the check off.
            segments: ``"auto"`` or the most ranged streams at once, 1 to 32.
            connections: A connection budget shared with other downloads, or None.

        Returns:
            Where the file is, what it hashes to, and how it was fetched.

        Raises:
            InvalidArgumentError: A bad ``backup_or_uuid``, ``dest``, ``segments``,
                ``read_timeout``, ``max_attempts`` or ``min_rate`` (before any request).
            BackupNotCompletedError: The backup is still being created.
            BackupFailedError: The backup failed and has no archive.
            DestinationExistsError: Another file is at the destination (also a
                ``FileExistsError``) and ``overwrite`` is False.
            ChecksumMismatchError: The bytes did not match the checksum, twice.
            DownloadError: The backup has no checksum to verify (with ``verify=True``), the
                destination cannot be written, or every attempt failed; ``history`` says
                what happened on each.
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        return await download_backup(
            self,
            self._links,
            backup_or_uuid,
            dest,
            verify=verify,
            overwrite=overwrite,
            progress=progress,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
            min_rate=min_rate,
            segments=segments,
            connections=connections,
        )

    def stream(
        self,
        backup_or_uuid: Backup | str,
        *,
        verify: bool = True,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
        min_rate: float | None = DEFAULT_MIN_RATE,
    ) -> AbstractAsyncContextManager[BackupStream]:
        """The archive's bytes as they arrive, checked on the way: ``async with`` it.

        ``body.size`` and ``body.checksum`` are what the panel announced; ``async for chunk in
        body`` yields the bytes. Their length and hash are checked as they pass, and the last
        chunk is held back until both match: a short body, a longer one or a checksum mismatch
        raises ``DownloadError`` (``ChecksumMismatchError``) from the iterator *before* it ends,
        so a response that proxies the bytes is aborted rather than completed with wrong ones.
        A fresh link is fetched transparently while nothing has been yielded; after that, the
        stream resumes with ``Range`` where the link host honours it, and otherwise reads the
        archive again from the start, hashing and skipping what was already yielded.

        Args:
            backup_or_uuid: The backup, or its UUID.
            verify: Check the hash as the bytes pass; False still checks the length.
            read_timeout: Seconds the link host may stay silent before the attempt counts as
                stalled; also the window ``min_rate`` is measured over. Time spent by the
                consumer on a chunk does not count.
            max_attempts: GETs of a fresh link in all, retries included.
            min_rate: Bytes per second an attempt must average over ``read_timeout``
                seconds; None turns the check off.

        Returns:
            An async context manager: entering it looks the backup up and yields a
            ``BackupStream``; leaving it closes the connection. The stream's own errors are
            raised from its iteration (see ``BackupStream``).

        Raises:
            InvalidArgumentError: A bad ``backup_or_uuid``, ``read_timeout``,
                ``max_attempts`` or ``min_rate``, on entering.
            BackupNotCompletedError: On entering: the backup is still being created.
            BackupFailedError: On entering: the backup failed and has no archive.
            DownloadError: On entering: the backup has no checksum to verify (with
                ``verify=True``).
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        return open_stream(
            self,
            self._links,
            backup_or_uuid,
            verify=verify,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
            min_rate=min_rate,
        )

    async def delete(self, backup_or_uuid: Backup | str) -> None:
        """Delete the backup for good (``BackupLockedError`` if it is locked).

        Args:
            backup_or_uuid: The backup, or its UUID.

        Raises:
            InvalidArgumentError: ``backup_or_uuid`` is not a backup UUID (before any request).
            BackupLockedError: The backup is locked (``unlock()`` it first).
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        await self._call_without_answer("DELETE", self._path(backup_uuid(backup_or_uuid)))

    async def restore(
        self,
        backup_or_uuid: Backup | str,
        truncate: bool = False,
        *,
        wait: bool = False,
        timeout: float = 3600.0,  # noqa: ASYNC109 - part of the public contract
    ) -> None:
        """Restore the server from the backup; ``truncate=True`` deletes its files first.

        ``wait=True`` returns once the restore finished: on the node's ``backup restore
        completed``, or when the server's ``status`` leaves ``restoring_backup`` (polled every
        few seconds when events cannot be had, as on Pelican, which closes sockets while it
        restores, and slowly otherwise). The websocket token is fetched before the restore
        starts, since the panel refuses it (409) during one.

        Args:
            backup_or_uuid: The backup, or its UUID.
            truncate: Delete all of the server's files before restoring; False (the panels'
                own default) writes the backup's files over the current ones and deletes
                nothing. Always sent explicitly.
            wait: Return only once the restore finished.
            timeout: With ``wait=True``, seconds to wait in all.

        Raises:
            InvalidArgumentError: A bad ``backup_or_uuid``, ``truncate``, ``wait`` or
                ``timeout`` (before any request).
            WaitTimeoutError: With ``wait=True``, the restore did not finish within
                ``timeout`` seconds.
            BadRequestError: The panel refused the restore (a backup still being created).
            ConflictError: The server is busy (another restore, an install, a transfer).
            RateLimitError: The server's restore throttle (3 per 15 minutes on Pelican and
                Pterodactyl 1.12) asked for a wait longer than ``max_retry_after``, or
                outlasted the retries.
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        if not isinstance(truncate, bool):
            raise InvalidArgumentError(f"truncate must be a bool, not {truncate!r}")
        if not isinstance(wait, bool):
            raise InvalidArgumentError(f"wait must be a bool, not {wait!r}")
        uuid = backup_uuid(backup_or_uuid)
        timeout = check_number("timeout", timeout)
        if not wait:
            await self._post_restore(uuid, truncate)
            return
        deadline = time.monotonic() + timeout
        sub = await self._hub().subscribe(lambda e: isinstance(e, RestoreCompleted))
        try:
            events = True
            with anyio.move_on_after(CONNECT_WAIT):
                first = await sub.get()  # the token is fetched and the socket up, or not
                events = not isinstance(first, Unavailable)
            await self._post_restore(uuid, truncate)
            interval = RESTORE_POLL if events else 2.0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeoutError(
                        f"the restore of server {self.server} from backup {uuid} did not "
                        f"finish within {timeout:g} s"
                    )
                with anyio.move_on_after(min(interval, remaining)):
                    item = await sub.get()
                    if isinstance(item, RestoreCompleted):
                        return
                    if isinstance(item, Unavailable):
                        logger.info(
                            "restore of %s: polling the server: %s", self.server, item.reason
                        )
                        interval = 2.0
                    if not isinstance(item, Connected) or not item.reconnect:
                        continue
                    # Reconnected: the restore may have ended in the gap; look now.
                if not await self._restoring():
                    return
                if not events or interval < RESTORE_POLL:
                    interval = min(interval * 1.5, 30.0)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.aclose()

    async def _post_restore(self, uuid: str, truncate: bool) -> None:
        # The real panels require truncate (422 without it); the reference page defaults it to
        # true, which would delete files the caller did not ask to delete. Always send it.
        await self._call_without_answer(
            "POST", self._path(uuid, "restore"), json={"truncate": truncate}
        )

    async def _restoring(self) -> bool:
        """Whether the panel still shows the server restoring a backup."""
        server = await self._api.call("GET", f"/servers/{self.server}", self._api.converter.server)
        return server.status == "restoring_backup"

    async def toggle_lock(self, backup_or_uuid: Backup | str) -> Backup:
        """Flip the lock and return the backup (real panels answer it; others are asked).

        Args:
            backup_or_uuid: The backup, or its UUID.

        Returns:
            The backup with its new lock state.

        Raises:
            InvalidArgumentError: ``backup_or_uuid`` is not a backup UUID (before any request).
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        uuid = backup_uuid(backup_or_uuid)
        response = await self._api.request("POST", self._path(uuid, "lock"), has_body=False)
        if response.status == 204 or not response.body.strip():
            return await self.get(uuid)
        return self._api.decode(response, self._api.converter.backup)

    async def _set_lock(self, backup_or_uuid: Backup | str, locked: bool) -> Backup:
        uuid = backup_uuid(backup_or_uuid)
        # The panel only toggles: read first, and check the answer in case someone else
        # toggled at the same moment.
        backup = await self.get(uuid)
        for _ in range(_LOCK_TRIES):
            if backup.is_locked == locked:
                return backup
            backup = await self.toggle_lock(uuid)
        if backup.is_locked == locked:
            return backup
        raise PteroError(
            f"backup {uuid} kept changing lock state; it is now "
            f"{'locked' if backup.is_locked else 'unlocked'}"
        )

    async def lock(self, backup_or_uuid: Backup | str) -> Backup:
        """Make sure the backup is locked (idempotent).

        The panel only toggles: the backup is read first, and toggled only if needed.

        Args:
            backup_or_uuid: The backup, or its UUID.

        Returns:
            The backup, locked.

        Raises:
            InvalidArgumentError: ``backup_or_uuid`` is not a backup UUID (before any request).
            PteroError: The lock kept changing under it (someone else toggling it too).
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        return await self._set_lock(backup_or_uuid, True)

    async def unlock(self, backup_or_uuid: Backup | str) -> Backup:
        """Make sure the backup is unlocked (idempotent).

        The panel only toggles: the backup is read first, and toggled only if needed.

        Args:
            backup_or_uuid: The backup, or its UUID.

        Returns:
            The backup, unlocked.

        Raises:
            InvalidArgumentError: ``backup_or_uuid`` is not a backup UUID (before any request).
            PteroError: The lock kept changing under it (someone else toggling it too).
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        return await self._set_lock(backup_or_uuid, False)

    async def rename(self, backup_or_uuid: Backup | str, name: str) -> Backup:
        """Rename the backup (Pelican); ``UnsupportedOperationError`` on panels without it.

        Args:
            backup_or_uuid: The backup, or its UUID.
            name: The new name, at most 255 characters.

        Returns:
            The renamed backup.

        Raises:
            InvalidArgumentError: A bad ``backup_or_uuid`` or ``name`` (before any request).
            UnsupportedOperationError: The panel has no rename route (Pterodactyl).
            NotFoundError: No such backup on this server, or the key cannot see it.
            APIStatusError: Another refusal of the panel (401, 403, 409, 429, 5xx…), after the
                retries that apply.
            APIConnectionError: The panel could not be reached or did not answer in time
                (``APITimeoutError``).
            ResponseValidationError: The panel answered something that is not its API.
        """
        uuid = backup_uuid(backup_or_uuid)
        body = {"name": check_name(name)}
        try:
            return await self._api.call(
                "PUT", self._path(uuid, "rename"), self._api.converter.backup, json=body
            )
        except NotFoundError as exc:
            # Pterodactyl has no rename route and answers 404, as it does for a missing
            # backup: tell the two apart by looking the backup up.
            await self.get(uuid)
            raise UnsupportedOperationError(
                f"this panel cannot rename backups (PUT {exc.url} answered 404; "
                "only Pelican has the route)"
            ) from exc
        except APIStatusError as exc:
            if exc.status == 405:
                raise UnsupportedOperationError(
                    "this panel cannot rename backups (405 Method Not Allowed)"
                ) from exc
            raise
