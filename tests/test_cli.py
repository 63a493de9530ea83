"""The ``ptero-backups`` command line against FakePanel: in-process via ``main(argv)``.

``main`` runs its own event loop (``asyncio.run``), so each test calls it in a worker thread while
the test's loop serves the FakePanel. The Ctrl-C test runs the CLI as a real subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

import ptero_backups_async
from ptero_backups_async._cli import main
from ptero_backups_async._cli._units import human_age, human_size
from ptero_backups_async._segments import PIECE
from ptero_backups_async.testing import DownloadFault, FakePanel
from ptero_backups_async.testing._models import FakeBackup

from .conftest import cli, register_key

pytestmark = pytest.mark.anyio

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def output(capsys: pytest.CaptureFixture[str]) -> tuple[Any, str]:
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def downloads(panel: FakePanel) -> list[Any]:
    return [r for r in panel.api_requests() if r.path.endswith("/download")]


def add_backups(panel: FakePanel, server: Any, n: int, size: int = 50_000) -> list[FakeBackup]:
    return [
        panel.add_backup(
            server,
            content=os.urandom(size + i),
            name=f"b{i}",
            created_at=NOW - timedelta(hours=n - i),
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------------- list, config, errors


async def test_list_json_matches_the_panel(
    env: FakePanel, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server(name="survival")
    made = add_backups(env, server, 3)
    made.append(env.add_backup(server, name="locked", locked=True))
    made.append(env.add_backup(server, name="broken", state="failed"))
    assert await cli("list", server.identifier, "--json") == 0
    listed, err = output(capsys)
    assert err == ""
    assert [b["uuid"] for b in listed] == [b.uuid for b in made]
    for row, fake in zip(listed, made, strict=True):
        assert row["bytes"] == fake.size
        assert row["checksum"] == fake.wire_checksum
        assert row["is_locked"] == fake.is_locked
        assert row["state"] == fake.state
        assert datetime.fromisoformat(row["created_at"]) == fake.created_at
        completed = fake.completed_at
        assert row["completed_at"] == (completed.isoformat() if completed else None)
    assert listed[-1]["checksum"] is None  # a failed backup has none


async def test_list_piped_is_tab_separated(
    env: FakePanel, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    backup = env.add_backup(server, content=b"x" * 3 * 1024 * 1024, name="nightly", locked=True)
    assert await cli("list", server.identifier) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split("\t") == [
        "uuid",
        "name",
        "state",
        "bytes",
        "is_locked",
        "created_at",
        "checksum",
    ]
    assert row.split("\t") == [
        backup.uuid,
        "nightly",
        "completed",
        str(3 * 1024 * 1024),
        "true",
        backup.created_at.isoformat(),
        str(backup.wire_checksum),
    ]


@pytest.mark.parametrize("missing", ["PTERODACTYL_API_KEY", "PTERODACTYL_URL"])
async def test_missing_configuration_is_one_line_and_exit_2(
    env: FakePanel,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    missing: str,
) -> None:
    monkeypatch.delenv(missing)
    env.clear_requests()
    assert await cli("list", "d3aac109") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert missing in captured.err
    assert "Traceback" not in captured.err
    assert env.requests == []


async def test_usage_errors_exit_2(env: FakePanel, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("list", "not-a-server") == 2
    assert "invalid server id" in capsys.readouterr().err
    assert await cli("download", "d3aac109", "--dest", "x") == 2  # no backup, --latest, --all
    assert await cli("frobnicate") == 2
    assert env.requests == []


async def test_panel_error_is_exit_1_one_line_and_json_error_document(
    env: FakePanel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("list", "0123abcd", "--json") == 1
    doc, err = output(capsys)
    assert doc["error"]["type"] == "NotFoundError"
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")
    assert env.api_key not in err


async def test_without_rich_the_cli_says_to_install_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # import rich → ImportError
    assert main(["servers"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "ptero-backups-async[cli]" in err


async def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"ptero-backups {ptero_backups_async.__version__}\n"


async def test_servers_json(env: FakePanel, capsys: pytest.CaptureFixture[str]) -> None:
    made = [env.add_server(name=n) for n in ("a", "b")]
    assert await cli("--json", "servers") == 0  # --json before the subcommand works too
    doc, _ = output(capsys)
    assert [(s["identifier"], s["uuid"], s["name"]) for s in doc] == [
        (s.identifier, s.uuid, s.name) for s in made
    ]


# ---------------------------------------------------------------------- download and sync


async def test_download_latest_and_all_with_a_failure(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    old, new = add_backups(env, server, 2)
    bad = env.add_backup(
        server, name="bad", checksum="md5:nope", created_at=NOW - timedelta(days=9)
    )
    assert await cli("download", server.identifier, "--latest", "--dest", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "verified" in out
    assert (tmp_path / f"{new.uuid}.tar.gz").read_bytes() == new.content
    assert not (tmp_path / f"{old.uuid}.tar.gz").exists()

    code = await cli("download", server.identifier, "--all", "--dest", str(tmp_path), "--json")
    assert code == 1  # the backup with an unusable checksum fails; the others do not
    doc, err = output(capsys)
    by_uuid = {r["uuid"]: r for r in doc["results"]}
    assert by_uuid[new.uuid]["skipped"] is True
    assert by_uuid[old.uuid]["verified"] is True
    assert by_uuid[bad.uuid]["error"]["type"] == "DownloadError"
    assert (doc["downloaded"], doc["skipped"], doc["failed"]) == (1, 1, 1)
    assert "md5:nope" in err


async def test_download_segments_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakePanel(storage="s3") as panel:
        register_key(panel.api_key)
        server = panel.add_server()
        backup = panel.add_backup(server, content=os.urandom(3 * PIECE + 1))
        base = ("--panel-url", panel.url, "--api-key", panel.api_key)
        dest = str(tmp_path)
        assert (
            await cli(
                *base,
                "download",
                server.identifier,
                backup.uuid,
                "--dest",
                dest,
                "--segments",
                "3",
                "--json",
            )
            == 0
        )
        doc, _ = output(capsys)
        (entry,) = doc["results"]
        assert (entry["verified"], entry["segments"], entry["resumed_from"]) == (True, 3, 0)
        assert (tmp_path / f"{backup.uuid}.tar.gz").read_bytes() == backup.content
        for bad in ("0", "33", "many"):
            assert (
                await cli(
                    *base, "download", server.identifier, "--all", "--dest", dest, "--segments", bad
                )
                == 2
            )
            assert "--segments" in capsys.readouterr().err


async def test_sync_twice_downloads_nothing_the_second_time(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = env.add_server(name="one"), env.add_server(name="two")
    backups = {one.identifier: add_backups(env, one, 3), two.identifier: add_backups(env, two, 2)}
    env.add_backup(one, name="in progress", state="creating")
    env.add_backup(two, name="broken", state="failed")

    assert await cli("sync", "--all-servers", "--dest", str(tmp_path), "--json") == 0
    doc, _ = output(capsys)
    assert (doc["downloaded"], doc["skipped"], doc["failed"]) == (5, 0, 0)
    for ident, made in backups.items():
        for fake in made:
            assert (tmp_path / ident / f"{fake.uuid}.tar.gz").read_bytes() == fake.content
        manifest = json.loads((tmp_path / ident / "manifest.json").read_text())
        assert [(m["uuid"], m["bytes"], m["checksum"]) for m in manifest["backups"]] == [
            (b.uuid, b.size, b.wire_checksum) for b in made
        ]
        assert manifest["rejected"] == []
        assert list((tmp_path / ident).glob(".*")) == []  # no temporary leftovers

    env.clear_requests()
    assert await cli("sync", one.identifier, two.identifier, "--dest", str(tmp_path)) == 0
    assert downloads(env) == []
    assert env.link_requests() == []
    assert "0 downloaded, 5 skipped" in capsys.readouterr().err  # stdout holds the table


async def test_sync_fetches_a_damaged_file_again(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    made = add_backups(env, server, 3)
    assert await cli("sync", server.identifier, "--dest", str(tmp_path)) == 0
    victim = made[1]
    path = tmp_path / server.identifier / f"{victim.uuid}.tar.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()

    env.clear_requests()
    assert await cli("sync", server.identifier, "--dest", str(tmp_path), "--json") == 0
    doc, _ = output(capsys)
    assert (doc["downloaded"], doc["skipped"]) == (1, 2)
    fetched = downloads(env)
    assert len(fetched) == 1
    assert victim.uuid in fetched[0].path
    assert path.read_bytes() == victim.content


# ---------------------------------------------------------------------- prune, delete, restore


async def test_prune_dry_run_then_for_real(
    env: FakePanel, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server(backup_limit=20)
    good = add_backups(env, server, 5)
    locked = env.add_backup(
        server, name="keep me", locked=True, created_at=NOW - timedelta(days=30)
    )
    failed = env.add_backup(server, name="broken", state="failed", created_at=NOW)

    env.clear_requests()
    assert await cli("prune", server.identifier, "--keep", "2", "--dry-run", "--json") == 0
    doc, _ = output(capsys)
    doomed = {b.uuid for b in [*good[:3], failed]}
    assert {b["uuid"] for b in doc["deleted"]} == doomed
    assert [r for r in env.api_requests() if r.method == "DELETE"] == []
    assert len(server.backups) == 7

    assert await cli("prune", server.identifier, "--keep", "2") == 0
    captured = capsys.readouterr()
    assert "Deleted 4 backup" in captured.err  # the title; stdout holds the table
    assert len(captured.out.splitlines()) == 1 + 4
    assert {b.uuid for b in server.backups} == {good[3].uuid, good[4].uuid, locked.uuid}


async def test_delete_asks_and_refuses_without_an_answer(
    env: FakePanel, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    backup = env.add_backup(server)
    env.clear_requests()
    # Nobody to ask (stdin is not a terminal) and no --yes: a usage error, nothing sent.
    assert await cli("delete", server.identifier, backup.uuid) == 2
    err = capsys.readouterr().err
    assert "--yes" in err
    assert len(err.splitlines()) == 1
    assert not backup.deleted
    assert env.requests == []

    assert await cli("delete", server.identifier, backup.uuid, "--yes") == 0
    assert backup.deleted


async def test_restore_asks_and_sends_truncate_explicitly(
    env: FakePanel, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    backup = env.add_backup(server)
    assert await cli("restore", server.identifier, backup.uuid, "--truncate") == 2
    assert server.restores == []
    assert await cli("restore", server.identifier, backup.uuid, "--yes", "--truncate") == 0
    assert server.restores == [(backup.uuid, True)]


async def test_restore_prompt_explains_truncate() -> None:
    from ptero_backups_async._cli._commands import restore_warning

    assert "DELETED" in restore_warning(True)
    assert "no file is deleted" in restore_warning(False)


async def test_create_wait_lock_unlock(env: FakePanel, capsys: pytest.CaptureFixture[str]) -> None:
    env.backup_duration = 0.3
    server = env.add_server()
    code = await cli(
        "create",
        server.identifier,
        "--name",
        "n1",
        "--ignore",
        "*.log",
        "--lock",
        "--wait",
        "--poll-interval",
        "0.1",
        "--json",
    )
    assert code == 0
    doc, _ = output(capsys)
    assert (doc["name"], doc["state"], doc["is_locked"]) == ("n1", "completed", True)
    fake = env.backup(doc["uuid"])
    assert fake.ignored_files == ["*.log"]
    assert await cli("unlock", server.identifier, fake.uuid, "--json") == 0
    assert output(capsys)[0]["is_locked"] is False
    assert not fake.is_locked
    assert await cli("lock", server.identifier, fake.uuid) == 0
    assert fake.is_locked
    assert await cli("wait", server.identifier, fake.uuid, "--json") == 0


# ---------------------------------------------------------------------- demo and Ctrl-C


async def test_demo_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("demo", "--json", "--dest", str(tmp_path)) == 0
    doc, _ = output(capsys)
    assert doc["files"] >= 3
    assert doc["bytes"] > 3 * 1024 * 1024
    assert doc["failed"] == 0
    assert doc["second_sync"]["downloaded"] == 0
    assert len(list(tmp_path.glob("*/*.tar.gz"))) == doc["files"]
    assert len(list(tmp_path.glob("*/manifest.json"))) >= 3


async def test_ctrl_c_during_download_exits_130_and_leaves_no_part(tmp_path: Path) -> None:
    async with FakePanel() as panel:
        register_key(panel.api_key)
        server = panel.add_server()
        backup = panel.add_backup(server, content=os.urandom(1_000_000))
        panel.script_download(backup, DownloadFault.stall(200_000, 30))
        dest = tmp_path / "out"
        dest.mkdir()
        env = {**os.environ, "PTERODACTYL_URL": panel.url, "PTERODACTYL_API_KEY": panel.api_key}
        argv = [sys.executable, "-m", "ptero_backups_async", "download", server.identifier]
        argv += [backup.uuid, "--dest", str(dest)]
        with open(tmp_path / "stderr", "wb") as stderr:
            process = await anyio.open_process(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        async with process:
            try:
                with anyio.fail_after(10):
                    # Polling the file system: there is no event to wait for.
                    while not list(dest.glob("*.part")) or not panel.link_requests():  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                await anyio.sleep(0.2)  # let the 200 000 bytes arrive; the link host then stalls
                process.send_signal(signal.SIGINT)
                with anyio.fail_after(5):
                    code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
    err = (tmp_path / "stderr").read_text()
    assert code == 130, err
    assert list(dest.iterdir()) == []
    assert "interrupted" in err
    assert panel.api_key not in err


def test_human_units() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(int(1.5 * 1024**3)) == "1.5 GiB"
    assert human_age(NOW - timedelta(hours=3, minutes=5), NOW) == "3 h ago"
    assert human_age(NOW - timedelta(minutes=5), NOW) == "5 min ago"
    assert human_age(NOW - timedelta(days=2), NOW) == "2 d ago"


async def test_a_failed_download_is_named_once_on_stderr(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    corrupt = env.add_backup(server, content=os.urandom(4096))
    corrupt.served_content = os.urandom(4096)  # the link host serves other bytes
    # The SDK's own message names this one: "backup … of server … failed and has no archive".
    broken = env.add_backup(server, state="failed")
    code = await cli(
        "download", server.identifier, corrupt.uuid, broken.uuid, "--dest", str(tmp_path)
    )
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, errors
    for backup, reason in ((corrupt, "checksum"), (broken, "has no archive")):
        (line,) = [e for e in errors if backup.uuid in e]
        assert line.count(backup.uuid) == 1, line
        assert f"of server {server.identifier}" in line
        assert reason in line
