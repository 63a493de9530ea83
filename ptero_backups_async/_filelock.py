"""One download per final path, across tasks and processes: ``flock`` on ``<final>.lock``.

``flock`` locks belong to an open file description, so two ``os.open`` calls conflict even in
one process, and the kernel drops the lock when its holder dies (``kill -9`` included). The
holder removes the lock file when it is done, which leaves no litter but means a waiter can
win the lock on a file that is no longer at the path; it then sees a different inode at the
path (or none) and tries again.

Waiting polls with ``LOCK_NB`` on a worker thread, backing off up to half a second: a thread
blocked in ``flock`` could not be cancelled, and would take the lock for a caller that has
gone away.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pathlib

import anyio

from . import _fs

__all__ = ["LOCK_SUFFIX", "PathLock"]

logger = logging.getLogger("ptero_backups_async")

#: Added to the final path to name its lock file.
LOCK_SUFFIX = ".lock"
#: The first and the longest pause between two tries while another download holds the lock.
FIRST_POLL = 0.02
MAX_POLL = 0.5


class PathLock:
    """An exclusive lock on one path: ``await lock.acquire()``, then ``lock.release()``."""

    def __init__(self, target: pathlib.Path) -> None:
        self.target = target
        self.path = target.with_name(target.name + LOCK_SUFFIX)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    async def acquire(self) -> None:
        """Wait (cancellably, without blocking the loop) until this object holds the lock."""
        pause = FIRST_POLL
        waited = False
        while not await _fs.run(self._try):
            if not waited:
                logger.info("%s: another download to this path is running; waiting", self.target)
                waited = True
            await anyio.sleep(pause)
            pause = min(pause * 2, MAX_POLL)
        if waited:
            logger.info("%s: the other download has finished", self.target)

    def _try(self) -> bool:
        """One non-blocking try (blocking I/O: call it from a thread)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # A symlink planted at the lock path is removed, never followed.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            mine = os.fstat(fd)
            try:
                there = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                there = None
            if there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)  # the holder we waited for removed this file: start again
                return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    async def release(self) -> None:
        """Remove the lock file and let go; finishes even while the caller is cancelled."""
        if self._fd is not None:
            await _fs.run_shielded(self._release)

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Unlink while still holding: a waiter that then wins the lock on this inode sees
            # it is gone from the path and tries again on a new file.
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
