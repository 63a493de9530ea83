"""The command line against a hostile panel: unusable ids in listings, and text made to attack
the terminal (escape sequences, bidirectional overrides, rich markup) in names, checksums and
error messages. Everything runs against FakePanel on loopback, in-process via ``main(argv)``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ptero_backups_async._cli._tables import (
    BACKUP_FIELDS,
    OUTCOME_FIELDS,
    SERVER_FIELDS,
    SYNC_FIELDS,
)
from ptero_backups_async._cli._text import visible
from ptero_backups_async.testing import DownloadFault, FakePanel

from .conftest import cli

pytestmark = pytest.mark.anyio

NOW = datetime.now(timezone.utc).replace(microsecond=0)

#: A path out of the mirror, an OSC window title (with BEL) and a screen clear.
BAD_UUID = "../../etc/x\x1b]0;pwned\x07"
#: OSC title, clear screen, rich markup and an emoji code, a right-to-left override,
#: a C1 CSI (0x9b), DEL and a zero-width space.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J[bold red]x[/]:warning:\u202eevil\x9b31m\x7f\u200bend"
#: How the command line must show it: every control as an escape, the markup literally.
HOSTILE_SHOWN = (
    "\\x1b]0;pwned\\x07\\x1b[2J[bold red]x[/]:warning:\\u202eevil\\x9b31m\\x7f\\u200bend"
)
#: What rich itself writes on a terminal (colours, the live display's cursor moves).
RICH_OWN = re.compile(r"\x1b\[[0-9;]*m|\x1b\[\?25[lh]|\x1b\[[0-9]*[ABCDGK]|\r")
UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
#: The header lines of the piped tables.
HEADERS = {
    "\t".join(fields) for fields in (BACKUP_FIELDS, OUTCOME_FIELDS, SERVER_FIELDS, SYNC_FIELDS)
}


@pytest.fixture(params=["piped", "terminal"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Output to a pipe, or to a "terminal" (rich forced to colours and live displays)."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "terminal":
        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.setenv("TERM", "xterm-256color")
        monkeypatch.setenv("COLUMNS", "250")  # no wrapping inside a name
    return str(request.param)


def raw_controls(text: str) -> list[str]:
    """Control, format and separator characters in ``text`` that rich did not write itself.

    Tabs are allowed only as the field separators of piped tables: every line of a TSV block
    has as many as its header (a tab from the panel would add one).
    """
    stripped = RICH_OWN.sub("", text)
    for block in tsv_blocks(stripped):
        assert len({line.count("\t") for line in block}) == 1, block
    return [c for c in stripped if c not in "\n\t" and unicodedata.category(c) in UNSAFE]


def tsv_blocks(text: str) -> list[list[str]]:
    """The tables of piped output: from a header line, the lines holding tabs that follow."""
    blocks: list[list[str]] = []
    for line in text.split("\n"):
        if line in HEADERS:
            blocks.append([line])
        elif "\t" in line:
            assert blocks, f"a line with a tab outside a table: {line!r}"
            blocks[-1].append(line)
    return blocks


def shown(text: str) -> str:
    """``text`` without rich's own sequences: what a terminal displays."""
    return RICH_OWN.sub("", text)


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------- unusable ids


async def test_sync_skips_a_backup_with_an_unusable_uuid_and_syncs_the_rest(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    good = env.add_backup(server, name="good", created_at=NOW - timedelta(hours=2))
    env.add_backup(server, uuid=BAD_UUID, name="evil", created_at=NOW - timedelta(hours=1))
    dest = tmp_path / "mirror"

    assert await cli("sync", server.identifier, "--dest", str(dest)) == 1
    captured = capsys.readouterr()
    assert raw_controls(captured.out + captured.err) == []
    lines = [line for line in captured.err.splitlines() if "skipped backup" in line]
    assert len(lines) == 1
    assert server.identifier in lines[0]
    assert visible(BAD_UUID) in lines[0]  # the id, its controls made visible
    assert "invalid backup UUID" in lines[0]
    assert "1 rejected" in captured.err  # the summary: stdout is a pipe, it holds the table
    # The good backup is there; nothing was written outside the mirror.
    assert files_under(tmp_path) == {
        f"mirror/{server.identifier}/{good.uuid}.tar.gz",
        f"mirror/{server.identifier}/manifest.json",
    }
    assert (dest / server.identifier / f"{good.uuid}.tar.gz").read_bytes() == good.content
    manifest = json.loads((dest / server.identifier / "manifest.json").read_text())
    assert [m["uuid"] for m in manifest["backups"]] == [good.uuid]
    assert set(manifest["backups"][0]) == {"uuid", "name", "bytes", "checksum", "created_at"}
    assert manifest["rejected"] == [{"uuid": BAD_UUID, "reason": "invalid backup UUID"}]

    # --json reports it too, with the exact id; the good file is now skipped as verified.
    assert await cli("sync", server.identifier, "--dest", str(dest), "--json") == 1
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out
    doc = json.loads(captured.out)
    assert (doc["downloaded"], doc["skipped"], doc["failed"]) == (0, 1, 0)
    assert doc["rejected"] == [
        {"server": server.identifier, "uuid": BAD_UUID, "reason": "invalid backup UUID"}
    ]
    assert visible(BAD_UUID) in captured.err


async def test_sync_all_servers_skips_a_server_with_an_unusable_id(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = env.add_server(identifier="../../x\x1b[2J", name="evil")
    env.add_backup(evil)
    server = env.add_server(name="fine")
    good = env.add_backup(server)
    dest = tmp_path / "mirror"

    assert await cli("sync", "--all-servers", "--dest", str(dest), "--json") == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["rejected"] == [
        {"server": evil.identifier, "uuid": None, "reason": "invalid server id"}
    ]
    assert doc["downloaded"] == 1
    assert files_under(tmp_path) == {
        f"mirror/{server.identifier}/{good.uuid}.tar.gz",
        f"mirror/{server.identifier}/manifest.json",
    }
    assert "skipped server '../../x\\x1b[2J'" in captured.err
    assert raw_controls(captured.err) == []


async def test_download_all_and_latest_skip_an_unusable_uuid(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    old = env.add_backup(server, name="old", created_at=NOW - timedelta(hours=3))
    new = env.add_backup(server, name="new", created_at=NOW - timedelta(hours=2))
    env.add_backup(server, uuid=BAD_UUID, name="newest", created_at=NOW - timedelta(hours=1))

    # --latest: the newest entry is unusable; it is reported, the newest usable one fetched.
    code = await cli("download", server.identifier, "--latest", "--dest", str(tmp_path / "l"))
    assert code == 1
    captured = capsys.readouterr()
    assert files_under(tmp_path / "l") == {f"{new.uuid}.tar.gz"}
    assert visible(BAD_UUID) in captured.err
    assert raw_controls(captured.out + captured.err) == []

    dest = tmp_path / "a"
    code = await cli("download", server.identifier, "--all", "--dest", str(dest), "--json")
    assert code == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert (doc["downloaded"], doc["failed"]) == (2, 0)
    assert doc["rejected"] == [
        {"server": server.identifier, "uuid": BAD_UUID, "reason": "invalid backup UUID"}
    ]
    assert files_under(tmp_path / "a") == {f"{old.uuid}.tar.gz", f"{new.uuid}.tar.gz"}
    assert "\x1b" not in captured.out

    # Named backups do not look at the rest of the listing: nothing to report.
    dest = tmp_path / "n"
    assert await cli("download", server.identifier, old.uuid, "--dest", str(dest)) == 0
    assert "skipped backup" not in capsys.readouterr().err


async def test_list_shows_an_unusable_uuid_without_failing(
    env: FakePanel, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    good = env.add_backup(server)
    env.add_backup(server, uuid=BAD_UUID)
    assert await cli("list", server.identifier) == 0
    out = capsys.readouterr().out
    assert good.uuid in out
    assert visible(BAD_UUID) in out
    assert raw_controls(out) == []


# ---------------------------------------------------------------------- terminal escapes


async def test_list_shows_hostile_names_and_checksums_escaped_and_literally(
    env: FakePanel, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server(name=HOSTILE)
    env.add_backup(server, name=HOSTILE, checksum="sha1:[red]x\x1b[2J")
    assert await cli("list", server.identifier) == 0
    assert await cli("servers") == 0
    captured = capsys.readouterr()
    assert raw_controls(captured.out + captured.err) == [], mode
    out = shown(captured.out)
    assert HOSTILE_SHOWN in out  # the backup's name and then the server's
    assert out.count(HOSTILE_SHOWN) == 2
    assert "sha1:[red]x\\x1b[2J" in out  # markup in a checksum is not read either
    if mode == "terminal":
        assert "\x1b[" in captured.out  # the colours are really on


async def test_json_output_is_exact_and_holds_no_raw_controls(
    env: FakePanel, capsys: pytest.CaptureFixture[str]
) -> None:
    # Also a lone surrogate (legal in JSON text, unencodable in UTF-8) and a tag character.
    name = HOSTILE + "\ud800\U000e0041\u2028"
    server = env.add_server()
    env.add_backup(server, name=name)
    assert await cli("list", server.identifier, "--json") == 0
    captured = capsys.readouterr()
    assert raw_controls(captured.out) == []
    assert json.loads(captured.out)[0]["name"] == name
    assert await cli("list", server.identifier) == 0  # the table copes with it too
    assert raw_controls(capsys.readouterr().out) == []


async def test_panel_error_text_is_escaped(
    env: FakePanel, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env.inject(
        kind="json",
        status=404,
        path="/backups",
        json_body={
            "errors": [{"code": "NotFoundHttpException", "status": "404", "detail": HOSTILE}]
        },
    )
    server = env.add_server()
    assert await cli("-vv", "list", server.identifier) == 1
    captured = capsys.readouterr()
    assert raw_controls(captured.out + captured.err) == []
    assert "[bold red]x[/]" in shown(captured.err)


async def test_sync_progress_labels_and_failures_are_escaped(
    env: FakePanel, mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    shown_slowly = env.add_backup(server, name=HOSTILE, content=b"x" * 300_000)
    # A pause in the middle of the download: the live display draws the label meanwhile.
    env.script_download(shown_slowly, DownloadFault.stall(100_000, 0.5))
    env.add_backup(server, name=HOSTILE, checksum="sha1:\x1b[2J[red]nope")  # unverifiable
    assert await cli("sync", server.identifier, "--dest", str(tmp_path)) == 1
    captured = capsys.readouterr()
    assert raw_controls(captured.out + captured.err) == []
    err = shown(captured.err)
    assert "sha1:\\x1b[2J[red]nope" in err  # the failure line, escaped
    if mode == "terminal":
        assert "pwned" in err  # the progress bar's label was drawn, escaped


async def test_manifest_with_an_unencodable_name_is_written(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    backup = env.add_backup(server, name="half \ud800 a pair")
    assert await cli("sync", server.identifier, "--dest", str(tmp_path)) == 0
    manifest: Any = json.loads((tmp_path / server.identifier / "manifest.json").read_text())
    assert manifest["backups"][0]["name"] == backup.name


def test_visible_escapes_controls_and_keeps_text() -> None:
    assert visible("plain ascii") == "plain ascii"
    assert visible("Überwelt 🌍 日本語\u00a0x") == "Überwelt 🌍 日本語\u00a0x"
    assert visible("\x1b]0;t\x07") == "\\x1b]0;t\\x07"
    assert visible("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert visible("\x7f\x85\x9b") == "\\x7f\\x85\\x9b"
    assert visible("\u202e\u2066\ufeff\u2028") == "\\u202e\\u2066\\ufeff\\u2028"
    assert visible("\ud800\U000e0041") == "\\ud800\\U000e0041"
    assert visible(visible(HOSTILE)) == visible(HOSTILE) == HOSTILE_SHOWN
