"""The resume journal beside a ``.part``: what a later run needs to keep its bytes.

``<final>.journal`` names the backup (UUID, announced checksum and size), the hash algorithm,
the link host's ETag, and a few checkpoints: a prefix length of the ``.part`` with the digest
of exactly those bytes. While a download runs it is rewritten in place every ``JOURNAL_BYTES``
hashed or ``JOURNAL_INTERVAL`` seconds, whichever comes first, and fsynced at most every
``JOURNAL_INTERVAL`` seconds; it is removed with the ``.part``. The newest checkpoint that was
fsynced is always kept among the few.

The ``.part`` itself is not fsynced at each checkpoint (that would stall a fast download on
writeback): after ``kill -9`` or an OOM kill the page cache still holds every byte written,
and after a power loss the digests tell which prefix reached the disk. A later run re-hashes
the ``.part`` and keeps the longest prefix whose digest matches; a journal that cannot be
read, or that names another backup, size, checksum or algorithm, is ignored. The ETag goes
out as ``If-Range``, so a link host whose object changed sends the whole body instead.

Every function blocks: run it on a worker thread. The caller holds the final path's lock, so
a journal and its ``.part`` belong to one download at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
from typing import Any

from attrs import frozen

__all__ = [
    "JOURNAL_BYTES",
    "JOURNAL_INTERVAL",
    "JOURNAL_SUFFIX",
    "Checkpoint",
    "Journal",
    "ResumeKey",
]

logger = logging.getLogger("ptero_backups_async")

#: Added to the final path to name its journal.
JOURNAL_SUFFIX = ".journal"
#: Seconds between two checkpoints of a running download, and between two fsyncs.
JOURNAL_INTERVAL = 2.0
#: Bytes hashed between two checkpoints (a kill loses at most this much, and a few seconds).
JOURNAL_BYTES = 16 * 1024 * 1024
#: Checkpoints kept: after a power loss the newest ones may be ahead of what reached the disk.
KEEP = 8
#: A journal is a few hundred bytes; anything much larger is not one of ours.
MAX_JOURNAL = 64 * 1024
VERSION = 1


@frozen
class ResumeKey:
    """What a journal must name to be resumed: the backup as the panel announces it now."""

    backup: str
    checksum: str | None
    size: int | None
    algorithm: str


@frozen
class Checkpoint:
    """The first ``prefix`` bytes of the ``.part`` hash to ``digest``."""

    prefix: int
    digest: str


def _parse(raw: bytes) -> tuple[ResumeKey, str | None, list[Checkpoint]] | None:
    try:
        doc: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return None
    backup, checksum, size, algorithm = (
        doc.get("backup"),
        doc.get("checksum"),
        doc.get("size"),
        doc.get("algorithm"),
    )
    etag, points = doc.get("etag"), doc.get("checkpoints")
    if not (
        isinstance(backup, str)
        and isinstance(algorithm, str)
        and (checksum is None or isinstance(checksum, str))
        and (size is None or (isinstance(size, int) and not isinstance(size, bool)))
        and (etag is None or isinstance(etag, str))
        and isinstance(points, list)
    ):
        return None
    checkpoints = []
    for point in points:
        if not (
            isinstance(point, list)
            and len(point) == 2
            and isinstance(point[0], int)
            and not isinstance(point[0], bool)
            and point[0] > 0
            and isinstance(point[1], str)
        ):
            return None
        checkpoints.append(Checkpoint(point[0], point[1]))
    return ResumeKey(backup, checksum, size, algorithm), etag, checkpoints


class Journal:
    """The journal of one final path."""

    def __init__(self, final: pathlib.Path, key: ResumeKey) -> None:
        self.path = final.with_name(final.name + JOURNAL_SUFFIX)
        self.key = key
        self.checkpoints: list[Checkpoint] = []
        self._durable: Checkpoint | None = None  # the newest that reached the disk
        self._fd: int | None = None

    def load(self) -> tuple[str | None, list[Checkpoint]] | None:
        """The ETag and checkpoints (oldest first) of a journal for this backup, if any."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            raw = os.read(fd, MAX_JOURNAL + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        parsed = _parse(raw) if len(raw) <= MAX_JOURNAL else None
        if parsed is None:
            logger.info("%s: not a journal this version can read; ignored", self.path)
            return None
        key, etag, checkpoints = parsed
        if key != self.key:
            logger.info("%s: journal of another backup or version of it; ignored", self.path)
            return None
        if self.key.size is not None:
            checkpoints = [c for c in checkpoints if c.prefix <= self.key.size]
        return etag, sorted(checkpoints, key=lambda c: c.prefix)

    def save(self, checkpoint: Checkpoint, etag: str | None, *, durable: bool = True) -> None:
        """Record ``checkpoint`` (and the ETag the bytes came with); ``durable``: fsync it."""
        if self.checkpoints and checkpoint.prefix <= self.checkpoints[-1].prefix:
            self.checkpoints = [c for c in self.checkpoints if c.prefix < checkpoint.prefix]
        kept = [*self.checkpoints, checkpoint][-KEEP:]
        if self._durable is not None and self._durable not in kept:
            kept = [self._durable, *kept[1:]]  # after a power loss, it may be all that is left
        self.checkpoints = kept
        doc = {
            "version": VERSION,
            "backup": self.key.backup,
            "checksum": self.key.checksum,
            "size": self.key.size,
            "algorithm": self.key.algorithm,
            "etag": etag,
            "checkpoints": [[c.prefix, c.digest] for c in self.checkpoints],
        }
        raw = json.dumps(doc, separators=(",", ":")).encode()
        if self._fd is None:
            durable = True  # a new journal replaces whatever was there: it must reach the disk
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # never write through a symlink planted there
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            self._fd = os.open(self.path, flags, 0o644)
        # In place: a write torn by a crash leaves JSON that does not parse, or whose digests
        # do not match, and the next run ignores it.
        os.pwrite(self._fd, raw, 0)
        os.ftruncate(self._fd, len(raw))
        if durable:
            os.fdatasync(self._fd)
            self._durable = checkpoint

    def forget(self) -> None:
        """The checkpoints no longer describe the ``.part`` (it was truncated)."""
        self.checkpoints = []
        self._durable = None
        self.remove()

    def remove(self) -> None:
        """Close and delete the journal (nothing there is fine)."""
        try:
            if self._fd is not None:
                os.close(self._fd)
        finally:
            self._fd = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # a directory planted there: never ours, left alone
                logger.warning("%s cannot be removed: %s", self.path, exc)
