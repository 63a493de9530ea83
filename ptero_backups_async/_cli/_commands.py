"""The subcommands: arguments → SDK calls → rendering. Each returns the exit code."""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Sequence

from .._backups import BackupsResource, Via
from .._models import Backup, BackupState
from .._outcome import DownloadOutcome
from .._sansio import check_server_id
from ._context import EXIT_FAILED, EXIT_OK, Context, Failed, UsageError
from ._describe import describe_backup, error_brief, rejected_line
from ._documents import (
    backup_json,
    downloads_json,
    emit_json,
    event_json,
    print_json_line,
    server_json,
    sync_json,
)
from ._progress import TransferProgress, spinner
from ._prompt import confirm, require_terminal
from ._report import Rejected
from ._sync import sync_servers, transfer, usable_backups
from ._tables import (
    backups_table,
    outcomes_table,
    servers_table,
    show,
    sync_summary,
    sync_table,
)
from ._text import quoted, safe_markup
from ._units import human_duration, human_rate, human_size

__all__ = [
    "cmd_create",
    "cmd_delete",
    "cmd_download",
    "cmd_events",
    "cmd_list",
    "cmd_lock",
    "cmd_prune",
    "cmd_restore",
    "cmd_servers",
    "cmd_sync",
    "cmd_unlock",
    "cmd_wait",
    "restore_warning",
    "wait_visibly",
]


async def wait_visibly(
    ctx: Context,
    resource: BackupsResource,
    backup: Backup | str,
    *,
    timeout: float,
    poll_interval: float = 2.0,
    via: Via = "auto",
) -> Backup:
    """``wait()`` for a backup with a spinner on stderr (a plain line off a terminal)."""
    name = backup.name if isinstance(backup, Backup) else backup
    text = f"waiting for backup {quoted(name)} of server {resource.server} to complete"
    started = time.monotonic()
    if ctx.json:
        return await resource.wait(backup, timeout=timeout, poll_interval=poll_interval, via=via)
    if not ctx.err.is_terminal:
        ctx.err.print(safe_markup(text) + " …")
    with spinner(ctx.err, text):
        done = await resource.wait(backup, timeout=timeout, poll_interval=poll_interval, via=via)
    ctx.err.print(
        f"[green]✓[/] backup {safe_markup(quoted(done.name))} completed after "
        f"{human_duration(time.monotonic() - started)} ({human_size(done.bytes)})"
    )
    return done


def _show_backup(ctx: Context, backup: Backup, title: str) -> None:
    if ctx.json:
        emit_json(backup_json(backup))
    else:
        show(ctx.out, backups_table([backup], title=title), notes=ctx.err)


async def cmd_servers(ctx: Context, args: argparse.Namespace) -> int:
    """``servers``: the servers the key can see."""
    async with ctx.client() as client:
        servers = [s async for s in client.servers()]
    if ctx.json:
        emit_json([server_json(s) for s in servers])
    elif servers:
        show(ctx.out, servers_table(servers), notes=ctx.err)
    else:
        ctx.note("this key sees no servers")
    return EXIT_OK


async def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    """``list SERVER``: the server's backups."""
    async with ctx.client() as client:
        backups = [b async for b in client.backups(args.server).list()]
    if ctx.json:
        emit_json([backup_json(b) for b in backups])
    elif backups:
        show(ctx.out, backups_table(backups, title=f"Backups of {args.server}"), notes=ctx.err)
    else:
        ctx.note(f"server {args.server} has no backups")
    return EXIT_OK


async def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    """``create SERVER``: start a backup, optionally waiting for it."""
    async with ctx.client() as client:
        resource = client.backups(args.server)
        backup = await resource.create(
            name=args.name, ignored=args.ignore or None, is_locked=args.lock, rotate=args.rotate
        )
        ctx.note(f"started backup {safe_markup(quoted(backup.name))} ({safe_markup(backup.uuid)})")
        if args.wait:
            backup = await wait_visibly(
                ctx,
                resource,
                backup,
                timeout=args.timeout,
                poll_interval=args.poll_interval,
                via=args.via,
            )
    _show_backup(ctx, backup, "Backup")
    return EXIT_OK


async def cmd_wait(ctx: Context, args: argparse.Namespace) -> int:
    """``wait SERVER BACKUP``: until the backup completes."""
    async with ctx.client() as client:
        resource = client.backups(args.server)
        backup = await wait_visibly(
            ctx,
            resource,
            args.backup,
            timeout=args.timeout,
            poll_interval=args.poll_interval,
            via=args.via,
        )
    _show_backup(ctx, backup, "Backup")
    return EXIT_OK


def _download_targets(
    args: argparse.Namespace, backups: list[Backup]
) -> tuple[list[Backup | str], list[Rejected]]:
    """What to download, and the completed backups of the listing left out (unusable UUIDs).

    With --latest and --all the listing chooses: an entry the SDK would refuse is reported and
    left out (--latest takes the newest usable one), so one bad entry cannot sink the batch.
    """
    usable, rejected = usable_backups(
        args.server, (b for b in backups if b.state is BackupState.COMPLETED)
    )
    completed = sorted(usable, key=lambda b: b.created_at)
    if args.latest:
        if not completed:
            if rejected:
                return [], rejected
            raise Failed(f"server {args.server} has no completed backup")
        return [completed[-1]], rejected
    if args.all:
        return list(completed), rejected
    # Named UUIDs were checked by the parser; only they are looked at in the listing.
    known = {b.uuid: b for b in usable}
    # An unknown UUID goes to the SDK as is: its error lands in that row of the results.
    return [known.get(uuid, uuid) for uuid in dict.fromkeys(args.backups)], []


def _report_downloads(
    ctx: Context,
    outcomes: list[DownloadOutcome],
    dest: pathlib.Path,
    seconds: float,
    rejected: list[Rejected],
) -> int:
    fetched = [o.result for o in outcomes if o.result is not None and not o.result.skipped]
    skipped = sum(1 for o in outcomes if o.result is not None and o.result.skipped)
    failed = [o for o in outcomes if o.result is None]
    size = sum(r.bytes for r in fetched)
    if ctx.json:
        emit_json(downloads_json(outcomes, dest, seconds, rejected))
    else:
        if outcomes:
            show(ctx.out, outcomes_table(outcomes, f"Downloads in {dest}", dest), notes=ctx.err)
        ctx.say(
            f"{len(fetched)} downloaded, {skipped} skipped, {len(failed)} failed"
            + (f", {len(rejected)} rejected" if rejected else "")
            + f" · {human_size(size)} in {human_duration(seconds)} ({human_rate(size, seconds)})"
        )
    _report_failures(ctx, failed, rejected)
    return EXIT_FAILED if failed or rejected else EXIT_OK


def _report_failures(
    ctx: Context, failed: list[DownloadOutcome], rejected: Sequence[Rejected] = ()
) -> None:
    """One short line per failed download or rejected entry on stderr (the table or JSON has
    the detail)."""
    for entry in rejected:
        ctx.err.print(f"error: {safe_markup(rejected_line(entry))}")
    for outcome in failed:
        assert outcome.error is not None
        brief = error_brief(outcome.error)
        if outcome.backup_uuid not in brief:  # most of the SDK's errors name the backup
            brief = f"backup {outcome.backup_uuid} of server {outcome.server}: {brief}"
        ctx.err.print(f"error: {safe_markup(brief)}")


async def cmd_download(ctx: Context, args: argparse.Namespace) -> int:
    """``download SERVER [BACKUP…|--latest|--all] --dest DIR``: verified archives."""
    if bool(args.backups) + args.latest + args.all != 1:
        raise UsageError("name the backups to download, or pass --latest or --all")
    dest: pathlib.Path = args.dest
    async with ctx.client() as client:
        backups = [b async for b in client.backups(args.server).list()]
        targets, rejected = _download_targets(args, backups)
        if not targets and not rejected:
            ctx.note(f"server {args.server} has no completed backups: nothing to download")
        started = time.monotonic()
        with TransferProgress(ctx.err, enabled=not ctx.json) as view:
            outcomes = await transfer(
                client,
                view,
                args.server,
                targets,
                dest,
                concurrency=args.concurrency,
                overwrite=args.overwrite,
                verify=args.verify,
                min_rate=args.min_rate,
                segments=args.segments,
            )
        seconds = time.monotonic() - started
    return _report_downloads(ctx, outcomes, dest, seconds, rejected)


async def cmd_sync(ctx: Context, args: argparse.Namespace) -> int:
    """``sync [SERVER…|--all-servers] --dest DIR``: mirror every completed backup."""
    if bool(args.servers) == args.all_servers:
        raise UsageError("name the servers to sync, or pass --all-servers")
    dest: pathlib.Path = args.dest
    async with ctx.client() as client:
        if args.all_servers:
            servers = [s.identifier async for s in client.servers()]
        else:
            # The mirror's directories are named by short id: a UUID's first 8 characters.
            servers = list(dict.fromkeys(check_server_id(s[:8]) for s in args.servers))
        with TransferProgress(ctx.err, enabled=not ctx.json) as view:
            report = await sync_servers(
                client,
                view,
                servers,
                dest,
                concurrency=args.concurrency,
                min_rate=args.min_rate,
                segments=args.segments,
                shard=args.shard,
            )
    if ctx.json:
        emit_json(sync_json(report))
    else:
        if report.servers:
            show(ctx.out, sync_table(report), notes=ctx.err)
        ctx.say(sync_summary(report))
    _report_failures(ctx, [o for o in report.outcomes if o.result is None], report.rejected)
    return EXIT_FAILED if report.failed or report.rejected else EXIT_OK


async def cmd_prune(ctx: Context, args: argparse.Namespace) -> int:
    """``prune SERVER --keep N [--dry-run]``: retention."""
    async with ctx.client() as client:
        doomed = await client.backups(args.server).prune(keep=args.keep, dry_run=args.dry_run)
    if ctx.json:
        emit_json(
            {
                "server": args.server,
                "keep": args.keep,
                "dry_run": args.dry_run,
                "deleted": [backup_json(b) for b in doomed],
            }
        )
    elif not doomed:
        ctx.say(f"nothing to prune: server {args.server} keeps all its backups")
    else:
        verb = "Would delete" if args.dry_run else "Deleted"
        show(ctx.out, backups_table(doomed, title=f"{verb} {len(doomed)} backup(s)"), notes=ctx.err)
        if args.dry_run:
            ctx.say("dry run: nothing was deleted")
    return EXIT_OK


async def _set_lock(ctx: Context, args: argparse.Namespace, locked: bool) -> int:
    async with ctx.client() as client:
        resource = client.backups(args.server)
        backup = await (resource.lock if locked else resource.unlock)(args.backup)
    if ctx.json:
        emit_json(backup_json(backup))
    else:
        state = "locked" if backup.is_locked else "unlocked"
        ctx.out.print(f"backup {safe_markup(describe_backup(backup))} is {state}")
    return EXIT_OK


async def cmd_lock(ctx: Context, args: argparse.Namespace) -> int:
    """``lock SERVER BACKUP``."""
    return await _set_lock(ctx, args, True)


async def cmd_unlock(ctx: Context, args: argparse.Namespace) -> int:
    """``unlock SERVER BACKUP``."""
    return await _set_lock(ctx, args, False)


async def cmd_delete(ctx: Context, args: argparse.Namespace) -> int:
    """``delete SERVER BACKUP [--yes]``: asks first."""
    if not args.yes:
        require_terminal()  # refuse before any request when nobody can answer
    async with ctx.client() as client:
        resource = client.backups(args.server)
        if not args.yes:
            backup = await resource.get(args.backup)
            confirm(
                ctx.err,
                f"Delete backup {safe_markup(describe_backup(backup))} of server {args.server}? "
                "[bold]This cannot be undone.[/]",
            )
        await resource.delete(args.backup)
    if ctx.json:
        emit_json({"server": args.server, "deleted": args.backup})
    else:
        ctx.out.print(f"deleted backup {args.backup} of server {args.server}")
    return EXIT_OK


def restore_warning(truncate: bool) -> str:
    """What a restore does to the server's files, in plain words (rich markup)."""
    if truncate:
        return (
            "[bold red]--truncate: ALL of the server's current files are DELETED first[/], "
            "then the backup is unpacked. Anything not in the backup is lost."
        )
    return (
        "Files from the backup overwrite the server's files of the same name and missing "
        "ones are added; [bold]no file is deleted[/] (--truncate would delete all of the "
        "server's current files first)."
    )


async def cmd_restore(ctx: Context, args: argparse.Namespace) -> int:
    """``restore SERVER BACKUP [--truncate] [--yes]``: asks first."""
    if not args.yes:
        require_terminal()
    async with ctx.client() as client:
        resource = client.backups(args.server)
        if not args.yes:
            backup = await resource.get(args.backup)
            ctx.err.print(
                f"Restore server {args.server} from backup {safe_markup(describe_backup(backup))}."
            )
            ctx.err.print(restore_warning(args.truncate))
            confirm(ctx.err, "Restore now?")
        started = time.monotonic()
        if args.wait and not ctx.json:
            text = f"restoring server {args.server} from backup {args.backup}"
            if not ctx.err.is_terminal:
                ctx.err.print(safe_markup(text) + " …")
            with spinner(ctx.err, text):
                await resource.restore(
                    args.backup, truncate=args.truncate, wait=True, timeout=args.timeout
                )
        else:
            await resource.restore(
                args.backup, truncate=args.truncate, wait=args.wait, timeout=args.timeout
            )
    seconds = time.monotonic() - started
    if ctx.json:
        doc = {"server": args.server, "truncate": args.truncate}
        doc.update(
            {"restored": args.backup, "seconds": round(seconds, 3)}
            if args.wait
            else {"restoring": args.backup}
        )
        emit_json(doc)
    elif args.wait:
        ctx.out.print(
            f"restored server {args.server} from backup {args.backup}"
            + (" (files truncated first)" if args.truncate else "")
            + f" in {human_duration(seconds)}"
        )
    else:
        ctx.out.print(
            f"restore of server {args.server} from backup {args.backup} started"
            + (" (files truncated first)" if args.truncate else "")
            + "; the node restores in the background (--wait waits for it)"
        )
    return EXIT_OK


async def cmd_events(ctx: Context, args: argparse.Namespace) -> int:
    """``events SERVER``: one JSON object per event per line, until Ctrl-C."""
    async with ctx.client() as client, client.events(args.server) as events:
        ctx.note(f"listening to the node's events for server {args.server} (Ctrl-C stops)")
        async for event in events:
            print_json_line(event_json(event))
    return EXIT_OK
