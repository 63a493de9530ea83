"""Filesystem work off the event loop, through one helper.

Metadata calls (stat, mkdir, replace, unlink, exists) go through ``aiofiles.os``. Compound
blocking work (hashing a file, the ``.part`` sink's writes, a lock try) runs on a worker
thread with ``run``. ``run_shielded`` is for cleanup that must finish even while the calling
task is being cancelled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import aiofiles.os
import anyio

__all__ = ["exists", "is_dir", "makedirs", "run", "run_shielded", "stat", "unlink"]

T = TypeVar("T")
PathLike = str | os.PathLike[str]


async def run(func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` on a worker thread."""
    return await anyio.to_thread.run_sync(func, *args)


async def run_shielded(func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` on a worker thread, finished even if the caller is being cancelled."""
    with anyio.CancelScope(shield=True):
        result = await anyio.to_thread.run_sync(func, *args)
    return result


async def stat(path: PathLike, *, follow_symlinks: bool = True) -> os.stat_result | None:
    """``os.stat`` of ``path``, or None when nothing is there."""
    try:
        return await aiofiles.os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        return None


async def exists(path: PathLike) -> bool:
    """Whether something (a dangling symlink included) is at ``path``."""
    return await stat(path, follow_symlinks=False) is not None


async def is_dir(path: PathLike) -> bool:
    """Whether ``path`` is a directory (following symlinks)."""
    return bool(await aiofiles.os.path.isdir(path))


async def makedirs(path: PathLike) -> None:
    """Create ``path`` and its parents; an existing directory is fine."""
    await aiofiles.os.makedirs(path, exist_ok=True)


async def unlink(path: PathLike) -> None:
    """Remove ``path``; nothing there is fine."""
    try:
        await aiofiles.os.unlink(path)
    except FileNotFoundError:
        pass
