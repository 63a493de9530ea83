"""The argument parser: subcommands and their options (no ``rich`` needed here)."""

from __future__ import annotations

import argparse
import pathlib

from .._download import DEFAULT_MIN_RATE, MAX_SEGMENTS, Segments
from .._panel import RATE_WINDOW
from .._sansio import check_backup_uuid, check_server_id
from .._version import __version__
from ._shard import Shard, parse_shard

__all__ = ["build_parser"]

DESCRIPTION = (
    "Backups of Pterodactyl and Pelican servers: list, create, wait, download verified "
    "archives, mirror them with sync, prune, lock, delete and restore."
)
EPILOG = """\
configuration:
  --panel-url and --api-key, or PTERODACTYL_URL and PTERODACTYL_API_KEY (prefer the
  environment for the key: command lines are visible to other users)

output:
  on a terminal, tables fit its width (COLUMNS sets another); when stdout is not a
  terminal, tables are tab-separated with a header line, and the lines around them go
  to stderr; --json prints one JSON document instead

exit codes:
  0    ok
  1    the operation failed, partly failed or was declined at the prompt; an unusable
       entry of the panel's listing was reported and skipped
  2    usage or configuration error: nothing was sent to the panel
  130  interrupted (Ctrl-C)      143  terminated (SIGTERM)      129  hung up (SIGHUP)
       (downloads are cleaned up first)
  141  stdout was closed early (a reader such as head exited)

try it without a panel: ptero-backups demo
"""


class _HelpFormatter(argparse.HelpFormatter):
    """Every argument's help ends with its default, ``(default: 4)``, or ``(required)``.

    A help text that states its default itself is left as it is; so is one whose default is
    None (it must say what no value means: the parser's tests check that each one does).
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # Text laid out by hand (the epilog's table) is kept; a paragraph is wrapped.
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if {"--help", "--version"} & set(action.option_strings):
            return text
        if "(default" in text or "(required)" in text:
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0:  # a flag: store_true, store_false, count
            return f"{text} (default: off)"
        if action.default is None or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: {_shown(action.default)})"


def _shown(value: object) -> str:
    """A default as the help shows it: ``3600``, not ``3600.0`` (``%`` escaped for argparse)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).replace("%", "%%")


def _server_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "server", type=_server, metavar="SERVER", help="the server: its short id or its UUID"
    )


def _backup_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup", type=_backup, metavar="BACKUP", help="the backup's UUID")


def _yes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask for confirmation; without it the command asks on the terminal, and "
        "refuses with exit 2 when stdin is not a terminal (default: off)",
    )


def _server(value: str) -> str:
    try:
        return check_server_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _backup(value: str) -> str:
    try:
        return check_backup_uuid(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0: {value!r}")
    return number


def _positive_int(value: str) -> int:
    number = _count(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1: {value!r}")
    return number


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _segments(text: str) -> Segments:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_SEGMENTS:
        raise argparse.ArgumentTypeError(f"expected auto or 1 to {MAX_SEGMENTS}, not {text!r}")
    return value


def _rate(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of bytes per second: {value!r}") from None
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be ≥ 0: {value!r}")
    return number or None


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {value!r}")
    return number


def _path(value: str) -> pathlib.Path:
    if not value or "\x00" in value:
        raise argparse.ArgumentTypeError(f"not a path: {value!r}")
    return pathlib.Path(value).expanduser()


def _common() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(connection, output): options of every command; ``demo`` takes only the output ones."""
    # SUPPRESS: an option given before the subcommand is not reset by the subcommand's parser.
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("panel connection")
    group.add_argument(
        "--panel-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the panel's URL, such as https://panel.example.com (default: $PTERODACTYL_URL)",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=argparse.SUPPRESS,
        help="a client API key, ptlc_… (default: $PTERODACTYL_API_KEY, the better place for "
        "it: command lines are visible to other users)",
    )
    group.add_argument(
        "--rate-limit-window",
        type=_seconds,
        metavar="S",
        default=argparse.SUPPRESS,
        help=f"seconds of the panel's rate-limit window (default: {RATE_WINDOW:g}, as the "
        "panels count per minute)",
    )
    output = argparse.ArgumentParser(add_help=False)
    group = output.add_argument_group("output")
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine output: one JSON document on stdout instead of tables and text "
        "(default: off)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log the SDK's activity to stderr; -vv: debug too (default: off)",
    )
    return connection, output


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=3600.0,
        metavar="S",
        help="give up waiting after S seconds",
    )
    parser.add_argument(
        "--poll-interval",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="when polling, the first pause between polls in seconds, growing up to 30",
    )
    parser.add_argument(
        "--via",
        choices=("auto", "events", "poll"),
        default="auto",
        help="how to learn of completion: auto: the node's events where the key may use "
        "them, else polling; events: events only; poll: polling only",
    )


def _download_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dest",
        type=_path,
        required=True,
        metavar="DIR",
        help="directory for the .tar.gz files, created if missing",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="connections to link hosts at once, ranged streams included",
    )
    parser.add_argument(
        "--segments",
        type=_segments,
        default="auto",
        metavar="N",
        help="ranged streams per file where the link host allows them: auto (8 for 64 MiB "
        f"or more) or 1 to {MAX_SEGMENTS}",
    )
    parser.add_argument(
        "--min-rate",
        type=_rate,
        default=DEFAULT_MIN_RATE,
        metavar="BYTES",
        help="give up an attempt that averages fewer bytes/s over 60 s and fetch a fresh link; "
        f"0 turns the check off (default: {DEFAULT_MIN_RATE:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``ptero-backups`` parser; ``args.command`` names the subcommand."""
    connection, output = _common()
    parser = argparse.ArgumentParser(
        prog="ptero-backups",
        description=DESCRIPTION,
        epilog=EPILOG,
        parents=[connection, output],
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, help: str, parents: tuple[argparse.ArgumentParser, ...] = (connection, output)
    ) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            parents=list(parents),
            formatter_class=_HelpFormatter,
        )

    command("servers", "list the servers the key can see")

    p = command("list", "list a server's backups")
    _server_arg(p)

    p = command("create", "start a backup")
    _server_arg(p)
    p.add_argument("--name", help="the backup's name (default: the panel names it)")
    p.add_argument(
        "--ignore",
        action="append",
        metavar="PATTERN",
        help="a path pattern to leave out of the backup; repeat it for more (default: none)",
    )
    p.add_argument("--lock", action="store_true", help="lock the backup against deletion")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait until the backup completes; --timeout, --poll-interval and --via apply",
    )
    p.add_argument(
        "--rotate",
        action="store_true",
        help="at the backup limit, delete the oldest unlocked backup and retry",
    )
    _wait_options(p)

    p = command("wait", "wait until a backup completes")
    _server_arg(p)
    _backup_arg(p)
    _wait_options(p)

    p = command("download", "download backups as verified .tar.gz files")
    _server_arg(p)
    p.add_argument(
        "backups",
        type=_backup,
        nargs="*",
        metavar="BACKUP",
        help="UUIDs of the backups to download (default: none: name them, or pass --latest "
        "or --all)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--latest", action="store_true", help="the newest completed backup")
    which.add_argument("--all", action="store_true", help="every completed backup")
    _download_options(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing file that does not match the backup (default: off: such a "
        "file fails its download)",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not check checksums, for backups without a usable one (default: off: every "
        "file is verified)",
    )

    p = command("sync", "mirror every completed backup into DIR/<server>/<uuid>.tar.gz")
    p.add_argument(
        "servers",
        type=_server,
        nargs="*",
        metavar="SERVER",
        help="servers to mirror, by short id or UUID (default: none: name them, or pass "
        "--all-servers)",
    )
    p.add_argument("--all-servers", action="store_true", help="every server the key can see")
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="sync only shard K (0 to N-1) of N: a stable share of the servers by UUID, so "
        "that N machines split the fleet without overlap (default: every server)",
    )
    _download_options(p)

    p = command("prune", "keep the N newest backups, delete older and failed ones")
    _server_arg(p)
    p.add_argument(
        "--keep",
        type=_count,
        required=True,
        metavar="N",
        help="successful backups to keep, newest first; locked ones are never deleted and "
        "do not count",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="only show what would be deleted, delete nothing"
    )

    for name, help in (("lock", "lock a backup"), ("unlock", "unlock a backup")):
        p = command(name, help)
        _server_arg(p)
        _backup_arg(p)

    p = command("delete", "delete a backup (asks first)")
    _server_arg(p)
    _backup_arg(p)
    _yes_option(p)

    p = command("restore", "restore a server from a backup (asks first)")
    _server_arg(p)
    _backup_arg(p)
    p.add_argument(
        "--truncate",
        action="store_true",
        help="DELETE all of the server's files before restoring (default: off: files from "
        "the backup overwrite those of the same name, nothing else is deleted)",
    )
    _yes_option(p)
    p.add_argument(
        "--wait",
        action="store_true",
        help="return once the restore finished (default: off: return once it started)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=3600.0,
        metavar="S",
        help="with --wait: give up waiting after S seconds",
    )

    p = command("events", "print the node's events for a server, one JSON object per line")
    _server_arg(p)

    p = command(
        "demo",
        "run the whole job against a built-in fake panel on loopback (no panel needed)",
        parents=(output,),
    )
    p.add_argument(
        "--dest",
        type=_path,
        metavar="DIR",
        help="keep the files in DIR (default: a temporary directory, removed at the end)",
    )
    p.add_argument(
        "--dialect",
        choices=("pterodactyl", "pelican"),
        default="pelican",
        help="which panel the fake one imitates",
    )
    return parser
