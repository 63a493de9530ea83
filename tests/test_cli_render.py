"""How the command line fits a terminal and a pipe, what its help says, and its exit codes.

Terminal rendering is driven through the real CLI (``main(argv)`` in a worker thread, against a
FakePanel) with ``TTY_COMPATIBLE=1`` (rich then treats stdout as a terminal) and ``COLUMNS``
set to the width; piped output is what ``main`` writes to a captured (non-terminal) stdout.
The exit-code tests run every path the README's table names.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import anyio
import pytest
from rich.cells import cell_len
from rich.text import Text

from ptero_backups_async import Server
from ptero_backups_async._cli import main
from ptero_backups_async._cli._app import COMMANDS
from ptero_backups_async._cli._layout import Col, Drop, FitTable, Shorten, cut
from ptero_backups_async._cli._tables import (
    BACKUP_FIELDS,
    OUTCOME_FIELDS,
    SERVER_FIELDS,
    SYNC_FIELDS,
    servers_table,
)
from ptero_backups_async._cli._text import visible
from ptero_backups_async.testing import FakePanel
from ptero_backups_async.testing._models import FakeBackup, FakeServer

from .conftest import cli

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parents[1]
NOW = datetime.now(timezone.utc).replace(microsecond=0)
WIDTHS = [80, 100, 120]
State = Literal["creating", "completed", "failed"]
SYNC_COUNTS = ["files", "downloaded", "skipped", "failed"]

#: Escape sequences rich writes itself (styles, the live display's cursor moves).
RICH_OWN = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: The box-drawing block: borders of rich's tables.
BOX = re.compile(r"[\u2500-\u257f]")
#: A name made to attack the terminal (escapes, markup, a bidi override) and long.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J[bold red]x[/]:warning:\u202eevil\x9b31m\x7f\u200bend "
LONG_HOSTILE = ("nightly " + HOSTILE * 10)[:200]


# ---------------------------------------------------------------------- helpers


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``terminal(width)``: stdout and stderr count as terminals of that width."""
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)

    def set_width(width: int) -> None:
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("COLUMNS", str(width))

    return set_width


def screen(text: str) -> list[str]:
    """What a terminal shows, line by line (rich's own sequences removed)."""
    return re.split(r"[\r\n]", RICH_OWN.sub("", text))


def assert_fits(text: str, width: int) -> list[str]:
    lines = screen(text)
    wide = [line for line in lines if cell_len(line) > width]
    assert not wide, f"{len(wide)} lines wider than {width}: {wide[:3]}"
    return lines


def table_rows(lines: list[str], header: str) -> tuple[list[str], list[str]]:
    """(the header's column names, the lines after it up to a blank line)."""
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [header])
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line)
    return lines[start].split(), rows


def row_of(rows: list[str], uuid: str) -> str:
    (row,) = [row for row in rows if row.startswith(uuid[:8])]
    return row


def add_listing(panel: FakePanel, server: FakeServer) -> list[FakeBackup]:
    """Backups of every kind: failed and locked ones with 200-character hostile names, one
    still being created, one whose checksum the SDK cannot parse, a wide-character name."""
    made: list[tuple[str, State, bool, str | None]] = [
        ("weekly", "completed", False, None),
        (LONG_HOSTILE, "failed", False, None),
        (LONG_HOSTILE, "completed", True, None),
        ("日本語のバックアップ🌍" * 8, "completed", False, None),
        ("odd checksum", "completed", False, "md5:nope"),
        ("in progress", "creating", False, None),
    ]
    backups = []
    for age, (name, state, locked, checksum) in enumerate(reversed(made), start=1):
        created_at = NOW - timedelta(days=age)
        if checksum is None:  # the fake's own, right checksum
            backup = panel.add_backup(
                server, name=name, state=state, locked=locked, created_at=created_at
            )
        else:
            backup = panel.add_backup(
                server,
                name=name,
                state=state,
                locked=locked,
                created_at=created_at,
                checksum=checksum,
            )
        backups.append(backup)
    return backups


def tsv(out: str, fields: tuple[str, ...]) -> list[list[str]]:
    """Piped output parsed as TSV: the header must be ``fields``; every row as many fields."""
    assert not BOX.search(out), "box-drawing characters in piped output"
    header, *rows = (line.split("\t") for line in out.splitlines())
    assert header == list(fields)
    assert all(len(row) == len(fields) for row in rows), rows
    return rows


# ---------------------------------------------------------------------- the layout itself


def test_layout_applies_the_steps_in_their_order() -> None:
    table = FitTable(
        columns=[Col("id", "id"), Col("name", "name", flex=6), Col("a", "a"), Col("b", "b")],
        steps=[Drop("b"), Shorten("id"), Drop("a")],
        fields=("id", "name", "a", "b"),
    )
    table.add_row(
        {"id": "0123456789", "name": "a long name", "a": "aaaa", "b": "bbbb"},
        ("0123456789", "a long name", "aaaa", "bbbb"),
        short={"id": "0123"},
    )
    # The name shrinks to its 6 cells first; then b goes, the id gets short, a goes.
    expected = {
        40: (["id", "name", "a", "b"], set(), "0123456789  a long name  aaaa  bbbb"),
        30: (["id", "name", "a", "b"], set(), "0123456789  a lon…  aaaa  bbbb"),
        29: (["id", "name", "a"], set(), "0123456789  a long name  aaaa"),
        23: (["id", "name", "a"], {"id"}, "0123  a long name  aaaa"),
        17: (["id", "name"], {"id"}, "0123  a long name"),
        11: (["id", "name"], {"id"}, "0123  a lo…"),  # past the last step: cut the widest
    }
    for width, (keys, shortened, row) in expected.items():
        shown, _, short = table.layout(width)
        assert [c.key for c in shown] == keys, width
        assert short == shortened, width
        lines = table.lines(width)
        assert lines[1].plain == row, width
        assert all(line.cell_len <= width for line in lines)
    assert table.tsv() == "id\tname\ta\tb\n0123456789\ta long name\taaaa\tbbbb\n"


def test_cut_keeps_cell_widths_and_the_end_of_paths() -> None:
    assert cut(Text("abcdef"), 4).plain == "abc…"
    assert cut(Text("/srv/mirror/d3aac109"), 10, at_start=True).plain == "…/d3aac109"
    wide = cut(Text("日本語日本語"), 7)
    assert wide.cell_len <= 7
    assert wide.plain.endswith("…")
    assert cut(Text("日本語日本語"), 7, at_start=True).cell_len <= 7


@pytest.mark.parametrize("width", [10, 20, 33, 47, 60, 75, 80, 99, 100, 120, 200])
def test_no_line_is_wider_than_the_terminal_at_any_width(width: int) -> None:
    server = Server(
        identifier="d3aac109",
        uuid="d3aac109-1111-2222-3333-444455556666",
        name="日本語" * 30,
        status="restoring_backup",
    )
    for line in servers_table([server] * 3).lines(width):
        assert line.cell_len <= width


# ---------------------------------------------------------------------- terminal widths


@pytest.mark.parametrize("width", WIDTHS)
async def test_list_fits_and_keeps_id_state_and_lock(
    env: FakePanel,
    terminal: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
    width: int,
) -> None:
    server = env.add_server()
    backups = add_listing(env, server)
    terminal(width)
    assert await cli("list", server.identifier) == 0
    lines = assert_fits(capsys.readouterr().out, width)
    assert lines[0] == f"Backups of {server.identifier}"
    header, rows = table_rows(lines, "uuid")
    # The documented order: checksum shortened, dropped; age; size; uuid shortened.
    assert (
        header
        == {
            80: ["uuid", "name", "state", "locked"],
            100: ["uuid", "name", "state", "size", "locked", "age"],
            120: ["uuid", "name", "state", "size", "locked", "age", "checksum"],
        }[width]
    )
    assert len(rows) == len(backups)
    for backup in backups:
        row = row_of(rows, backup.uuid)
        assert row.startswith(backup.uuid)  # whole at 80 columns and more
        assert f" {backup.state} " in f"{row} "
        assert ("locked" in row.split()) == backup.is_locked
    failed = row_of(rows, backups[-2].uuid)  # the failed one, with its 200-character name
    assert "failed" in failed
    assert "nightly \\x1b]0;pwned" in failed  # sanitized, then cut
    assert "…" in failed
    if width == 120:
        assert "sha1:" in "".join(rows)
        assert all("md5:nope" in row or "sha1:" not in row or "…" in row for row in rows)


@pytest.mark.parametrize("width", [40, 60])
async def test_list_on_a_narrow_terminal_shortens_the_uuid_last(
    env: FakePanel,
    terminal: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
    width: int,
) -> None:
    server = env.add_server()
    backups = add_listing(env, server)
    terminal(width)
    assert await cli("list", server.identifier) == 0
    header, rows = table_rows(assert_fits(capsys.readouterr().out, width), "uuid")
    assert header == ["uuid", "name", "state", "locked"]
    for backup in backups:
        row = row_of(rows, backup.uuid)
        assert backup.uuid not in row  # the short form: its first 8 characters
        assert backup.state in row
        assert ("locked" in row.split()) == backup.is_locked


@pytest.mark.parametrize("width", [60, *WIDTHS])
async def test_servers_fit_and_drop_the_uuid_first(
    env: FakePanel,
    terminal: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
    width: int,
) -> None:
    servers = [env.add_server(name=LONG_HOSTILE), env.add_server(name="日本語" * 40)]
    terminal(width)
    assert await cli("servers") == 0
    header, rows = table_rows(assert_fits(capsys.readouterr().out, width), "identifier")
    if width < 80:
        assert header == ["identifier", "name", "status"]
    else:
        assert header == ["identifier", "uuid", "name", "status"]
    for server in servers:
        row = row_of(rows, server.identifier)
        assert row.rstrip().endswith("—")  # the status, never cut off
        assert "…" in row


@pytest.mark.parametrize("width", WIDTHS)
async def test_download_results_fit(
    env: FakePanel,
    terminal: Callable[[int], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    width: int,
) -> None:
    server = env.add_server()
    good = [
        env.add_backup(server, name=LONG_HOSTILE, created_at=NOW - timedelta(hours=i))
        for i in (2, 3)
    ]
    bad = env.add_backup(server, checksum="md5:nope", created_at=NOW - timedelta(hours=1))
    terminal(width)
    code = await cli("download", server.identifier, "--all", "--dest", str(tmp_path))
    assert code == 1  # one of three failed
    captured = capsys.readouterr()
    lines = assert_fits(captured.out, width)
    # The progress bars fit too, and their label gives way before the ETA is cut off.
    bars = [line for line in assert_fits(captured.err, width) if " files " in line]
    assert bars
    assert all(re.search(r"(-:--:--|\d:\d\d:\d\d)\s*$", bar) for bar in bars), bars
    header, rows = table_rows(lines, "file")
    assert (
        header
        == {
            80: ["file", "size", "result"],
            100: ["file", "size", "checksum", "result"],
            120: ["file", "size", "checksum", "result"],
        }[width]
    )
    for backup in good:
        assert "verified" in row_of(rows, backup.uuid)
    assert "error:" in row_of(rows, bad.uuid)
    assert "2 downloaded, 0 skipped, 1 failed" in " ".join(lines)  # the summary, on stdout


@pytest.mark.parametrize("width", [60, *WIDTHS])
async def test_sync_table_fits(
    env: FakePanel,
    terminal: Callable[[int], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    width: int,
) -> None:
    server = env.add_server()
    env.add_backup(server)
    env.add_backup(server, checksum="md5:nope")
    dest = tmp_path / ("a-rather-long-directory-name-for-a-mirror" * 2)
    terminal(width)
    assert await cli("sync", server.identifier, "--dest", str(dest)) == 1
    captured = capsys.readouterr()
    lines = assert_fits(captured.out, width)
    assert_fits(captured.err, width)
    header, rows = table_rows(lines, "server")
    row = row_of(rows, server.identifier)
    assert rows[1].startswith("1 downloaded, 0 skipped")  # the summary, right after it
    if width < 80:
        assert header == ["server", *SYNC_COUNTS, "size"]
    else:
        assert header == ["server", "directory", *SYNC_COUNTS, "size"]
        directory = row.split()[1]
        assert directory.startswith("…")  # cut at its start: the server's end stays
        assert directory.endswith(f"/{server.identifier}")
    assert row.split()[0] == server.identifier
    assert row.split()[header.index("failed")] == "1"


@pytest.mark.parametrize("width", WIDTHS)
async def test_prune_dry_run_fits(
    env: FakePanel,
    terminal: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
    width: int,
) -> None:
    server = env.add_server()
    backups = add_listing(env, server)
    terminal(width)
    assert await cli("prune", server.identifier, "--keep", "0", "--dry-run") == 0
    lines = assert_fits(capsys.readouterr().out, width)
    assert lines[0].startswith("Would delete")
    _, rows = table_rows(lines, "uuid")
    doomed = [b for b in backups if not b.is_locked and b.state != "creating"]
    assert rows[-1] == "dry run: nothing was deleted"  # right after the table
    assert {row.split()[0] for row in rows[:-1]} == {b.uuid for b in doomed}


@pytest.mark.parametrize("width", WIDTHS)
async def test_demo_fits(
    terminal: Callable[[int], None], capsys: pytest.CaptureFixture[str], width: int
) -> None:
    terminal(width)
    assert await cli("demo") == 0
    captured = capsys.readouterr()
    lines = assert_fits(captured.out, width)
    assert_fits(captured.err, width)
    for header in ("identifier", "uuid", "file", "server"):
        assert any(line.split()[:1] == [header] for line in lines), header
    assert not any(BOX.search(line) for line in lines if not line.rstrip().endswith("─"))
    # The backup table's verified checksum and the download's result are there at 120.
    if width == 120:
        assert any("verified" in line for line in lines)


# ---------------------------------------------------------------------- piped


async def test_piped_list_is_stable_tsv_at_any_width(
    env: FakePanel, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server()
    backups = add_listing(env, server)
    outputs = []
    for width in ("40", "80", "300"):
        monkeypatch.setenv("COLUMNS", width)
        assert await cli("list", server.identifier) == 0
        captured = capsys.readouterr()
        assert captured.err == f"Backups of {server.identifier}\n"  # the title: not on stdout
        outputs.append(captured.out)
    assert outputs[0] == outputs[1] == outputs[2]
    rows = tsv(outputs[0], BACKUP_FIELDS)
    ordered = sorted(backups, key=lambda b: b.created_at)
    for row, backup in zip(rows, ordered, strict=True):
        assert row == [
            backup.uuid,
            visible(backup.name),  # whole and sanitized: never cut in a pipe
            backup.state,
            str(backup.size),
            "true" if backup.is_locked else "false",
            backup.created_at.isoformat(),
            str(backup.wire_checksum) if backup.wire_checksum else "-",
        ]


async def test_piped_tables_of_every_command(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server(name="a\tb\nc")  # a tab in panel text is not a field separator
    good = env.add_backup(server, name="x\ty", created_at=NOW - timedelta(hours=2))
    bad = env.add_backup(server, checksum="md5:nope", created_at=NOW - timedelta(hours=1))

    assert await cli("servers") == 0
    (row,) = tsv(capsys.readouterr().out, SERVER_FIELDS)
    assert row == [server.identifier, server.uuid, "a\\tb\\nc", "-"]

    assert await cli("download", server.identifier, "--all", "--dest", str(tmp_path / "d")) == 1
    captured = capsys.readouterr()
    rows = {row[0]: row for row in tsv(captured.out, OUTCOME_FIELDS)}
    assert rows[good.uuid][1:3] == ["verified", str(good.size)]
    assert rows[good.uuid][5] == str(tmp_path / "d" / f"{good.uuid}.tar.gz")
    assert rows[bad.uuid][1] == "failed"
    assert "md5:nope" in rows[bad.uuid][6]
    assert "1 downloaded, 0 skipped, 1 failed" in captured.err  # the summary, on stderr

    assert await cli("sync", server.identifier, "--dest", str(tmp_path / "m")) == 1
    (row,) = tsv(capsys.readouterr().out, SYNC_FIELDS)
    assert row[0] == server.identifier
    assert row[2:7] == ["1", "1", "0", "1", "0"]


async def test_piped_list_through_awk() -> None:
    # The key only reaches the subprocess: it is not registered with this process's log guard.
    async with FakePanel() as panel:
        server = panel.add_server()
        backups = add_listing(panel, server)
        environ = {**os.environ, "PTERODACTYL_URL": panel.url, "PTERODACTYL_API_KEY": panel.api_key}
        for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "COLUMNS"):
            environ.pop(name, None)
        command = (
            f"{sys.executable} -m ptero_backups_async list {server.identifier} "
            "| awk -F'\\t' 'NR > 1 && $3 == \"failed\" { print $1 }'"
        )
        with anyio.fail_after(20):
            done = await anyio.run_process(command, env=environ, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == [b.uuid for b in backups if b.state == "failed"]


# ---------------------------------------------------------------------- help


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def _argument_blocks(help_text: str) -> Iterator[tuple[str, str]]:
    """(head, help) for each argument a --help text lists: ``("--timeout S", "give up…")``.

    A head is a line indented by two spaces; deeper lines continue its help; anything else
    (the usage, a section's title, a blank line) ends it. The top level's epilog is not read.
    """
    current: list[str] | None = None
    for line in help_text.split("\nconfiguration:\n")[0].splitlines():
        head = re.match(r"^  (\S(?:.*?\S)?)(?: {2,}(\S.*))?$", line)
        if head:
            if current:
                yield current[0], current[1]
            current = [head[1], head[2] or ""]
        elif current and line.startswith("   ") and line.strip():
            current[1] += " " + line.strip()
        elif current:
            yield current[0], current[1]
            current = None
    if current:
        yield current[0], current[1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_argument_has_help_with_its_default(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = _help([command], capsys)
    blocks = dict(_argument_blocks(text))
    assert blocks, text
    for head, help_text in blocks.items():
        if head.startswith("-h, --help"):
            continue
        assert help_text.strip(), f"{command} {head}: no help"
        assert "(default" in help_text or "(required)" in help_text, f"{command} {head}"
    for positional in ("SERVER", "BACKUP"):
        if positional in text.split("positional arguments:")[0]:
            assert any(head.startswith(positional) for head in blocks), positional


def test_demo_offers_only_what_it_uses(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["demo"], capsys)
    for option in ("--panel-url", "--api-key", "--rate-limit-window"):
        assert option not in text
    for option in ("--dest", "--dialect", "--json", "--verbose"):
        assert option in text


def _synopsis() -> dict[str, str]:
    """The README's synopsis: command → its lines (the first line under the key "")."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Command line: `ptero-backups`", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 2)[1]
    found: dict[str, str] = {}
    key = ""
    for line in block.splitlines():
        if line.startswith("ptero-backups "):
            word = line.split()[1]
            key = word if word in COMMANDS else ""
            found[key] = found.get(key, "") + " " + line
        elif line.startswith(" "):
            found[key] += " " + line
    return found


def _options(head: str) -> list[str]:
    """The option strings of a help head: ``"-v, --verbose"`` → ``["-v", "--verbose"]``."""
    return [word.rstrip(",") for word in head.split() if word.startswith("-")]


def _mentions(line: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", line) is not None


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_readme_synopsis_lists_every_option(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    synopsis = _synopsis()
    assert set(synopsis) == {"", *COMMANDS}
    shared = [_options(head) for head in dict(_argument_blocks(_help([], capsys)))]
    shared = [options for options in shared if options and options[0] != "-h"]
    for options in shared:  # the first lines: every option of the top level
        assert any(_mentions(synopsis[""], o) for o in options), options
    line = synopsis[command]
    for head in dict(_argument_blocks(_help([command], capsys))):
        options = _options(head)
        if not options:  # a positional: SERVER, BACKUP
            assert _mentions(line, head.split()[0]), f"{command}: {head}"
        elif options[0] != "-h" and (command == "demo" or options not in shared):
            assert any(_mentions(line, o) for o in options), f"{command}: {head} not in README"


# ---------------------------------------------------------------------- exit codes


class _Terminal(io.StringIO):
    """A stdin that says it is a terminal, with the user's answer in it."""

    def isatty(self) -> bool:
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_exit_0_paths(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--help"]) == 0
    assert main(["list", "--help"]) == 0
    assert main(["--version"]) == 0
    assert await cli("servers") == 0  # none: a note, not an error
    server = env.add_server()
    assert await cli("list", server.identifier) == 0  # no backups
    assert await cli("download", server.identifier, "--all", "--dest", str(tmp_path)) == 0
    assert await cli("prune", server.identifier, "--keep", "1") == 0
    assert await cli("sync", "--all-servers", "--dest", str(tmp_path)) == 0
    capsys.readouterr()


USAGE_ERRORS = [
    pytest.param([], id="no command"),
    pytest.param(["frobnicate"], id="unknown command"),
    pytest.param(["list"], id="missing SERVER"),
    pytest.param(["list", "../etc"], id="invalid SERVER"),
    pytest.param(["wait", "d3aac109", "not-a-uuid"], id="invalid BACKUP"),
    pytest.param(["download", "d3aac109", "--all"], id="missing --dest"),
    pytest.param(["download", "d3aac109", "--dest", "x"], id="no BACKUP, --latest or --all"),
    pytest.param(
        ["download", "d3aac109", "00000000-0000-0000-0000-000000000000", "--latest", "--dest", "x"],
        id="BACKUP and --latest",
    ),
    pytest.param(
        ["download", "d3aac109", "--all", "--dest", "x", "--concurrency", "0"], id="--concurrency 0"
    ),
    pytest.param(["sync", "--dest", "x"], id="sync without servers"),
    pytest.param(
        ["sync", "d3aac109", "--all-servers", "--dest", "x"], id="servers and --all-servers"
    ),
    pytest.param(["sync", "--all-servers", "--dest", "x", "--shard", "4/4"], id="bad --shard"),
    pytest.param(["prune", "d3aac109"], id="missing --keep"),
    pytest.param(
        ["wait", "d3aac109", "00000000-0000-0000-0000-000000000000", "--timeout", "-1"],
        id="bad --timeout",
    ),
    pytest.param(["--panel-url", "ftp://panel", "servers"], id="malformed panel URL"),
    pytest.param(["--api-key", "has space", "servers"], id="unusable API key"),
    pytest.param(["demo", "--panel-url", "http://x"], id="demo --panel-url"),
    pytest.param(["--api-key", "ptlc_x", "demo"], id="demo after --api-key"),
    pytest.param(
        ["delete", "d3aac109", "00000000-0000-0000-0000-000000000000"],
        id="delete without --yes, no terminal",
    ),
    pytest.param(
        ["restore", "d3aac109", "00000000-0000-0000-0000-000000000000"],
        id="restore without --yes, no terminal",
    ),
    pytest.param(["create", "d3aac109", "--name", "n" * 300], id="name too long"),
]


@pytest.mark.parametrize("argv", USAGE_ERRORS)
async def test_exit_2_for_usage_and_configuration_errors_before_any_request(
    env: FakePanel, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    env.clear_requests()
    assert await cli(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert env.requests == []


async def test_exit_2_with_json_prints_the_error_document(
    env: FakePanel, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PTERODACTYL_URL")
    assert await cli("servers", "--json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["type"] == "UsageError"


async def test_exit_1_paths(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = env.add_server(backup_limit=1)
    creating = env.add_backup(server, state="creating", name="slow")
    # A wait that times out, and one for a backup that failed.
    assert (
        await cli(
            "wait",
            server.identifier,
            creating.uuid,
            "--timeout",
            "0.3",
            "--via",
            "poll",
            "--poll-interval",
            "0.1",
        )
        == 1
    )
    failed = env.add_backup(env.add_server(), state="failed")
    assert await cli("wait", failed.server.identifier, failed.uuid, "--via", "poll") == 1
    # The panel refuses: the backup limit, an unknown backup, a server the key cannot see.
    assert await cli("create", server.identifier) == 1
    assert await cli("lock", server.identifier, "00000000-0000-0000-0000-000000000000") == 1
    assert await cli("list", "0123abcd") == 1
    # download --latest with no completed backup; a named backup the panel does not have.
    assert await cli("download", server.identifier, "--latest", "--dest", str(tmp_path)) == 1
    assert (
        await cli(
            "download",
            server.identifier,
            "00000000-0000-0000-0000-000000000000",
            "--dest",
            str(tmp_path),
        )
        == 1
    )
    # A destination that is a file.
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    done = env.add_backup(failed.server)
    assert await cli("download", done.server.identifier, "--all", "--dest", str(blocker / "x")) == 1
    err = capsys.readouterr().err
    assert "no completed backup" in err
    assert "Traceback" not in err


async def test_exit_1_for_a_wrong_key_and_an_unreachable_panel(
    env: FakePanel, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PTERODACTYL_API_KEY", "ptlc_" + "x" * 43)
    assert await cli("servers") == 1
    monkeypatch.setenv("PTERODACTYL_URL", f"http://127.0.0.1:{_free_port()}")
    with anyio.fail_after(60):
        assert await cli("servers") == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 2


@pytest.mark.parametrize(
    ("answer", "code"),
    [("n\n", 1), ("\n", 1), ("", 1), ("yes\n", 0)],
    ids=["n", "empty", "EOF", "yes"],
)
async def test_the_confirmation_of_delete_and_restore(
    env: FakePanel,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    code: int,
) -> None:
    server = env.add_server()
    doomed, restored = env.add_backup(server), env.add_backup(server)
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    assert await cli("delete", server.identifier, doomed.uuid) == code
    assert doomed.deleted == (code == 0)
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    assert await cli("restore", server.identifier, restored.uuid) == code
    assert server.restores == ([] if code else [(restored.uuid, False)])
    err = capsys.readouterr().err
    assert "[y/N]" in err
    if code:
        assert "nothing was changed" in err


async def test_a_closed_pipe_stops_quietly_with_141(tmp_path: Path) -> None:
    async with FakePanel() as panel:
        server = panel.add_server(backup_limit=1000)
        for i in range(300):  # rows far beyond what a pipe holds (64 KiB)
            panel.add_backup(
                server, name=f"{i} " + "x" * 1000, created_at=NOW - timedelta(minutes=i)
            )
        environ = {**os.environ, "PTERODACTYL_URL": panel.url, "PTERODACTYL_API_KEY": panel.api_key}
        # head reads 10 bytes and exits; the shell reports the CLI's own exit status.
        script = (
            f"{sys.executable} -m ptero_backups_async list {server.identifier} "
            f"2>{tmp_path / 'stderr'} | head -c 10; exit ${{PIPESTATUS[0]}}"
        )
        with anyio.fail_after(30):
            done = await anyio.run_process(["bash", "-c", script], env=environ, check=False)
    assert done.stdout == b"uuid\tname\t"
    assert done.returncode == 141
    # The title (stdout is a pipe), and no error: no traceback, no "Exception ignored".
    assert (tmp_path / "stderr").read_text() == f"Backups of {server.identifier}\n"
