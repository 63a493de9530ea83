"""SIGTERM and SIGHUP stop the command line as cleanly as Ctrl-C: a real subprocess against a
FakePanel in the test's event loop, signalled while a download stalls (or while it prompts).

The key only ever reaches the subprocess, whose stderr is checked for it here; it is not
registered with the session's log guard, which watches this process's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from ptero_backups_async.testing import DownloadFault, FakePanel

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

STOPS = [
    pytest.param(signal.SIGTERM, 143, "terminated", id="SIGTERM"),
    pytest.param(getattr(signal, "SIGHUP", signal.SIGTERM), 129, "hung up", id="SIGHUP"),
]


def _files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


async def _signal_when(
    argv: list[str],
    panel: FakePanel,
    ready: Callable[[], bool],
    signum: signal.Signals,
    stderr_path: Path,
    *,
    stdin: int = subprocess.DEVNULL,
) -> int:
    """Run the CLI, send ``signum`` once ``ready()``, and return its exit code."""
    env = {**os.environ, "PTERODACTYL_URL": panel.url, "PTERODACTYL_API_KEY": panel.api_key}
    argv = [sys.executable, "-m", "ptero_backups_async", *argv]
    with open(stderr_path, "wb") as stderr:
        process = await anyio.open_process(
            argv, env=env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr
        )
    async with process:
        try:
            with anyio.fail_after(10):
                # Polling the file system: there is no event to wait for.
                while not ready():  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await anyio.sleep(0.2)  # the bytes before the stall arrive; the link host stalls
            process.send_signal(signum)
            with anyio.fail_after(5):
                return await process.wait()
        finally:
            if process.returncode is None:
                process.kill()


@pytest.mark.parametrize(("signum", "code", "message"), STOPS)
async def test_signal_during_download_cleans_up_and_exits_128_plus_n(
    tmp_path: Path, signum: signal.Signals, code: int, message: str
) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        backup = panel.add_backup(server, content=os.urandom(1_000_000))
        panel.script_download(backup, DownloadFault.stall(200_000, 30))
        dest = tmp_path / "out"
        dest.mkdir()
        got = await _signal_when(
            ["download", server.identifier, backup.uuid, "--dest", str(dest)],
            panel,
            lambda: bool(list(dest.glob("*.part")) and panel.link_requests()),
            signum,
            tmp_path / "stderr",
        )
    err = (tmp_path / "stderr").read_text()
    assert got == code, err
    assert list(dest.iterdir()) == []  # no .part, no final file
    assert message in err
    assert "Traceback" not in err
    assert panel.api_key not in err


@pytest.mark.parametrize(("signum", "code", "message"), STOPS)
async def test_signal_during_sync_cleans_up_every_part(
    tmp_path: Path, signum: signal.Signals, code: int, message: str
) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        for _ in range(3):
            backup = panel.add_backup(server, content=os.urandom(500_000))
            panel.script_download(backup, DownloadFault.stall(100_000, 30))
        dest = tmp_path / "mirror"
        got = await _signal_when(
            ["sync", server.identifier, "--dest", str(dest), "--concurrency", "3"],
            panel,
            lambda: len(list(dest.glob("*/*.part"))) == 3,
            signum,
            tmp_path / "stderr",
        )
    err = (tmp_path / "stderr").read_text()
    assert got == code, err
    assert _files(dest) == []  # no .part, no archive, no manifest
    assert message in err


async def test_sigterm_at_the_confirmation_prompt_exits_143_and_changes_nothing(
    tmp_path: Path,
) -> None:
    # A pseudo-terminal for stdin: the command asks, and blocks reading the answer.
    master, slave = os.openpty()
    try:
        async with FakePanel() as panel:
            server = panel.add_server()
            backup = panel.add_backup(server)
            stderr = tmp_path / "stderr"
            got = await _signal_when(
                ["delete", server.identifier, backup.uuid],
                panel,
                lambda: stderr.exists() and "[y/N]" in stderr.read_text(),
                signal.SIGTERM,
                stderr,
                stdin=slave,
            )
            deleted = backup.deleted
    finally:
        os.close(slave)
        os.close(master)
    err = stderr.read_text()
    assert got == 143, err
    assert not deleted
    assert "terminated" in err
    assert "Traceback" not in err
