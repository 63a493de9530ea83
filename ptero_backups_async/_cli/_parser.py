"""The argument parser: subcommands and their options (no ``rich`` needed here)."""

from __future__ import annotations

import argparse
import pathlib

from .._download import DEFAULT_MIN_RATE, MAX_SEGMENTS, Segments
from .._sansio import check_backup_uuid, check_server_id
from .._version import __version__

__all__ = ["build_parser"]

DESCRIPTION = (
    "Backups of Pterodactyl and Pelican servers: list, create, wait, download verified "
    "archives, mirror them with sync, prune, lock, delete and restore."
)
EPILOG = (
    "Configure with --panel-url/--api-key or PTERODACTYL_URL/PTERODACTYL_API_KEY (prefer the "
    "environment for the key: command lines are visible to other users). Exit codes: 0 ok, "
    "1 the operation failed (or an entry of the panel's listing was unusable and skipped), "
    "2 usage or configuration error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM), "
    "129 hung up (SIGHUP); after a signal, downloads are cleaned up first. "
    "Try it without a panel: ptero-backups demo"
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


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the subcommand is not reset by the subcommand's parser.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--panel-url", metavar="URL", default=argparse.SUPPRESS, help="panel URL [PTERODACTYL_URL]"
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=argparse.SUPPRESS,
        help="client API key [PTERODACTYL_API_KEY]",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine output: one JSON document on stdout",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log the SDK's activity to stderr (-vv: debug)",
    )
    return common


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=_seconds, default=3600.0, metavar="S", help="give up after S seconds"
    )
    parser.add_argument(
        "--poll-interval",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="first pause between polls (it grows up to 30 s)",
    )
    parser.add_argument(
        "--via",
        choices=("auto", "events", "poll"),
        default="auto",
        help="how to learn of completion: the node's events where the key may use them, "
        "else polling (auto); events only; polling only (default auto)",
    )


def _download_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dest", type=_path, required=True, metavar="DIR", help="directory for the .tar.gz files"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="connections to link hosts at once, ranged streams included (default 4)",
    )
    parser.add_argument(
        "--segments",
        type=_segments,
        default="auto",
        metavar="N",
        help="ranged streams per file where the link host allows them: auto (8 for 64 MiB "
        "or more) or 1 to 32 (default auto)",
    )
    parser.add_argument(
        "--min-rate",
        type=_rate,
        default=DEFAULT_MIN_RATE,
        metavar="BYTES",
        help="give up an attempt that averages fewer bytes/s over 60 s and fetch a fresh link "
        f"(default {DEFAULT_MIN_RATE:g}; 0 turns the check off)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``ptero-backups`` parser; ``args.command`` names the subcommand."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="ptero-backups", description=DESCRIPTION, epilog=EPILOG, parents=[common]
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    command("servers", "list the servers the key can see")

    p = command("list", "list a server's backups")
    p.add_argument("server", type=_server, metavar="SERVER", help="short id or UUID")

    p = command("create", "start a backup")
    p.add_argument("server", type=_server, metavar="SERVER")
    p.add_argument("--name", help="backup name")
    p.add_argument(
        "--ignore",
        action="append",
        metavar="PATTERN",
        help="a path pattern to leave out (repeatable)",
    )
    p.add_argument("--lock", action="store_true", help="lock the backup against deletion")
    p.add_argument("--wait", action="store_true", help="wait until the backup completes")
    p.add_argument(
        "--rotate",
        action="store_true",
        help="at the backup limit, delete the oldest unlocked backup and retry",
    )
    _wait_options(p)

    p = command("wait", "wait until a backup completes")
    p.add_argument("server", type=_server, metavar="SERVER")
    p.add_argument("backup", type=_backup, metavar="BACKUP", help="backup UUID")
    _wait_options(p)

    p = command("download", "download backups as verified .tar.gz files")
    p.add_argument("server", type=_server, metavar="SERVER")
    p.add_argument("backups", type=_backup, nargs="*", metavar="BACKUP", help="backup UUIDs")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--latest", action="store_true", help="the newest completed backup")
    which.add_argument("--all", action="store_true", help="every completed backup")
    _download_options(p)
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing files that do not match"
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not check checksums (for backups without one)",
    )

    p = command("sync", "mirror every completed backup into DIR/<server>/<uuid>.tar.gz")
    p.add_argument("servers", type=_server, nargs="*", metavar="SERVER")
    p.add_argument("--all-servers", action="store_true", help="every server the key can see")
    _download_options(p)

    p = command("prune", "keep the N newest backups, delete older and failed ones")
    p.add_argument("server", type=_server, metavar="SERVER")
    p.add_argument(
        "--keep",
        type=_count,
        required=True,
        metavar="N",
        help="successful backups to keep (locked ones are never deleted)",
    )
    p.add_argument("--dry-run", action="store_true", help="only show what would be deleted")

    for name, help in (("lock", "lock a backup"), ("unlock", "unlock a backup")):
        p = command(name, help)
        p.add_argument("server", type=_server, metavar="SERVER")
        p.add_argument("backup", type=_backup, metavar="BACKUP")

    p = command("delete", "delete a backup (asks first)")
    p.add_argument("server", type=_server, metavar="SERVER")
    p.add_argument("backup", type=_backup, metavar="BACKUP")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = command("restore", "restore a server from a backup (asks first)")
    p.add_argument("server", type=_server, metavar="SERVER")
    p.add_argument("backup", type=_backup, metavar="BACKUP")
    p.add_argument(
        "--truncate",
        action="store_true",
        help="DELETE all of the server's files before restoring",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.add_argument("--wait", action="store_true", help="return once the restore finished")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=3600.0,
        metavar="S",
        help="with --wait: give up after S seconds",
    )

    p = command("events", "print the node's events for a server, one JSON object per line")
    p.add_argument("server", type=_server, metavar="SERVER")

    p = command("demo", "run the whole job against a built-in fake panel (no panel needed)")
    p.add_argument(
        "--dest", type=_path, metavar="DIR", help="keep the files here (default: a temp dir)"
    )
    p.add_argument(
        "--dialect",
        choices=("pterodactyl", "pelican"),
        default="pelican",
        help="which panel the fake one imitates",
    )
    return parser
