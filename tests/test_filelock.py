"""``PathLock``: the per-path lock every download takes, on a real file system."""

from __future__ import annotations

import logging
import os
import pathlib
import stat

import anyio
import pytest

from ptero_backups_async._filelock import PathLock

pytestmark = pytest.mark.anyio

LOGGER = "ptero_backups_async"


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_the_lock_file_is_a_plain_0644_file_removed_on_release(
    tmp_path: pathlib.Path,
) -> None:
    lock = PathLock(tmp_path / "a.tar.gz")
    await lock.acquire()
    try:
        assert lock.held
        info = os.stat(lock.path, follow_symlinks=False)
        assert stat.S_ISREG(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o644 & ~umask()
    finally:
        await lock.release()
    assert not lock.held
    assert not lock.path.exists()


async def test_a_symlink_at_the_lock_path_is_replaced_by_a_lock_of_our_own(
    tmp_path: pathlib.Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not a lock")
    lock = PathLock(tmp_path / "a.tar.gz")
    lock.path.symlink_to(elsewhere)
    with anyio.fail_after(5):
        await lock.acquire()
    try:
        assert lock.held
        assert not lock.path.is_symlink()
        assert elsewhere.read_text() == "not a lock"
        other = PathLock(tmp_path / "a.tar.gz")
        with anyio.move_on_after(0.3) as scope:
            await other.acquire()
        assert scope.cancelled_caught, "a second lock was granted while the first is held"
        assert not other.held
    finally:
        await lock.release()


async def test_a_waiting_lock_says_so_once_and_says_when_it_is_through(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    first, second = PathLock(tmp_path / "a"), PathLock(tmp_path / "a")
    await first.acquire()
    assert not caplog.records, "an uncontended lock logs nothing"

    async def let_go() -> None:
        await anyio.sleep(0.4)
        await first.release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(let_go)
            await second.acquire()
    await second.release()
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'a'}: another download to this path is running; waiting",
        f"{tmp_path / 'a'}: the other download has finished",
    ]
