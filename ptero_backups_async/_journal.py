"""The resume journal beside a ``.part``: what a later run needs to keep its bytes.

``<final>.journal`` names the backup (UUID, announced checksum and size), the hash algorithm,
the link host's ETag, and a few checkpoints: a prefix length of the ``.part`` with the digest
of exactly those bytes. While a download runs it is rewritten in place every ``JOURNAL_BYTES``
hashed or ``JOURNAL_INTERVAL`` seconds, whichever comes first, and fsynced at most every
``JOURNAL_INTERVAL`` seconds; it is removed with the ``.part``. The newest checkpoint that was
fsynced is always kept among the few.

Segments write pieces ahead of the contiguous prefix; each one written in full is recorded
too, with the CRC-32 of its bytes, and a later run keeps those whose CRC still matches (the
whole-file checksum at the end vouches for every byte in any case).

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
from collections.abc import Sequence
from typing import Any

from attrs import frozen

__all__ = [
    "JOURNAL_BYTES",
    "JOURNAL_INTERVAL",
    "JOURNAL_SUFFIX",
    "Checkpoint",
    "Found",
    "Journal",
    "Piece",
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
#: Pieces ahead of the prefix recorded at most (the lowest first): 8 GiB of 8 MiB pieces.
MAX_PIECES = 1024
#: A journal is a few hundred bytes (or a few KiB with pieces); anything larger is not ours.
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


@frozen
class Piece:
    """Bytes ``[start, end)`` of the ``.part``, written ahead of the prefix; their CRC-32."""

    start: int
    end: int
    crc: int


@frozen
class Found:
    """What a journal of this backup says: the ETag, checkpoints and pieces, oldest first."""

    etag: str | None
    checkpoints: list[Checkpoint]
    pieces: list[Piece]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse(raw: bytes) -> tuple[ResumeKey, Found] | None:
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
    etag, points, pieces = doc.get("etag"), doc.get("checkpoints"), doc.get("pieces", [])
    if not (
        isinstance(backup, str)
        and isinstance(algorithm, str)
        and (checksum is None or isinstance(checksum, str))
        and (size is None or _is_int(size))
        and (etag is None or isinstance(etag, str))
        and isinstance(points, list)
        and isinstance(pieces, list)
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
    ahead = []
    for piece in pieces:
        if not (
            isinstance(piece, list)
            and len(piece) == 3
            and all(map(_is_int, piece))
            and 0 <= piece[0] < piece[1]
        ):
            return None
        ahead.append(Piece(*piece))
    return ResumeKey(backup, checksum, size, algorithm), Found(etag, checkpoints, ahead)


class Journal:
    """The journal of one final path."""

    def __init__(self, final: pathlib.Path, key: ResumeKey) -> None:
        self.path = final.with_name(final.name + JOURNAL_SUFFIX)
        self.key = key
        self.checkpoints: list[Checkpoint] = []
        self._durable: Checkpoint | None = None  # the newest that reached the disk
        self._fd: int | None = None

    def load(self) -> Found | None:
        """What a journal of this backup left, if there is one."""
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
        key, found = parsed
        if key != self.key:
            logger.info("%s: journal of another backup or version of it; ignored", self.path)
            return None
        size = self.key.size
        return Found(
            found.etag,
            sorted(
                (c for c in found.checkpoints if size is None or c.prefix <= size),
                key=lambda c: c.prefix,
            ),
            sorted(
                (p for p in found.pieces if size is not None and p.end <= size),
                key=lambda p: p.start,
            ),
        )

    def save(
        self,
        checkpoint: Checkpoint,
        etag: str | None,
        *,
        durable: bool = True,
        pieces: Sequence[Piece] = (),
    ) -> None:
        """Record ``checkpoint`` (and the ETag the bytes came with); ``durable``: fsync it.

        ``pieces``: ranges past the checkpoint that are written in full (by segments).
        """
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
            "pieces": [[p.start, p.end, p.crc] for p in pieces if p.start >= checkpoint.prefix][
                :MAX_PIECES
            ],
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
