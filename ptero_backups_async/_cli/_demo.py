"""``ptero-backups demo``: the whole job against a ``FakePanel`` on loopback, no panel needed."""

from __future__ import annotations

import argparse
import gzip
import io
import pathlib
import random
import shutil
import tarfile
import tempfile
import time
from datetime import datetime, timedelta, timezone

import anyio

from .._client import PteroClient
from .._sansio import mask_key
from ..testing import DownloadFault, FakePanel
from ._commands import wait_visibly
from ._console import heading
from ._context import EXIT_FAILED, EXIT_OK, Context
from ._documents import backup_json, emit_json, outcome_json, sync_json
from ._progress import TransferProgress
from ._sync import sync_servers, transfer
from ._tables import (
    backups_table,
    outcomes_table,
    servers_table,
    sync_summary,
    sync_table,
)
from ._tables import show as show_table
from ._text import quoted, safe_markup
from ._units import human_duration, human_rate, human_size

__all__ = ["cmd_demo", "demo_archive"]

MiB = 1024 * 1024
SERVERS = (("survival", 3), ("creative", 2), ("modded-skyblock", 3))
BACKUP_NAMES = ("weekly", "nightly", "before update")
BACKUP_DURATION = 1.5


def demo_archive(rng: random.Random, size: int) -> bytes:
    """A valid .tar.gz holding ``size`` random bytes (incompressible, so it stays that big)."""
    payload = rng.randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("world/region/r.0.0.mca")
        info.size = len(payload)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), compresslevel=1)


def _temp_dir() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(prefix="ptero-backups-demo-"))


def _remove_tree(path: pathlib.Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _files_under(dest: pathlib.Path) -> tuple[int, int]:
    files = [p for p in dest.rglob("*.tar.gz") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


async def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    """``demo``: create → wait → download verified → sync every server → summary."""
    keep = args.dest is not None
    dest = args.dest if keep else await anyio.to_thread.run_sync(_temp_dir)
    try:
        return await _demo(ctx, args.dialect, dest, keep)
    finally:
        if not keep:
            # Shielded: the directory goes during a cancellation (Ctrl-C, SIGTERM) too.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_remove_tree, dest)


async def _demo(ctx: Context, dialect: str, dest: pathlib.Path, keep: bool) -> int:
    started = time.monotonic()
    rng = random.Random()
    show = not ctx.json
    out = ctx.out
    async with FakePanel(dialect=dialect, backup_duration=BACKUP_DURATION) as panel:  # type: ignore[arg-type]
        now = datetime.now(timezone.utc)
        for index, (name, count) in enumerate(SERVERS):
            server = panel.add_server(name=name, backup_limit=10)
            for n in range(count):
                age = timedelta(days=count - n, hours=index * 3 + n)
                backup = panel.add_backup(
                    server,
                    content=demo_archive(rng, rng.randint(2, 6) * MiB),
                    name=BACKUP_NAMES[n % len(BACKUP_NAMES)],
                    created_at=now - age,
                )
                # Real links are not loopback-fast: pause each download once, so the bars
                # show; and break one connection, so the recovery shows too.
                pause = DownloadFault.stall(rng.randint(1, 2) * MiB, rng.uniform(0.3, 0.9))
                if index == 1 and n == 0:
                    panel.script_download(backup, DownloadFault.drop_after(MiB), pause)
                else:
                    panel.script_download(backup, pause)

        async with PteroClient(panel.url, panel.api_key) as client:
            servers = [s async for s in client.servers()]
            if show:
                heading(out, "1. A fake panel on loopback")
                out.print(
                    f"A FakePanel ({dialect} dialect) at {panel.url}, key {mask_key(panel.api_key)}"
                    " — no real panel is touched. Its link host drops one connection and "
                    "pauses now and then, as real ones do."
                )
                show_table(out, servers_table(servers))

            # 2. Create a backup and wait for it.
            first = servers[0].identifier
            resource = client.backups(first)
            if show:
                heading(out, f"2. Create a backup of {servers[0].name} ({first}) and wait")
            created = await resource.create(name="demo: pre-update")
            fake = panel.backup(created.uuid)
            fake.content = demo_archive(rng, 8 * MiB)  # bigger than the fake's default archive
            panel.script_download(fake, DownloadFault.stall(3 * MiB, 0.8))
            if show:
                out.print(f"started backup {safe_markup(quoted(created.name))} ({created.uuid})")
            done = await wait_visibly(ctx, resource, created, timeout=60, poll_interval=0.25)
            if show:
                show_table(out, backups_table([done]))

            # 3. Download it, verified.
            if show:
                heading(out, "3. Download it, verified against the panel's checksum")
            with TransferProgress(ctx.err, enabled=show) as view:
                single = await transfer(
                    client, view, first, [done], dest / first, concurrency=1, overwrite=False
                )
            if show:
                show_table(out, outcomes_table(single, base=dest))

            # 4. Mirror every server.
            if show:
                heading(out, f"4. Sync every server into {dest}")
            identifiers = [s.identifier for s in servers]
            with TransferProgress(ctx.err, enabled=show) as view:
                report = await sync_servers(client, view, identifiers, dest, concurrency=4)
            if show:
                show_table(out, sync_table(report))
                out.print(sync_summary(report))

            # 5. Again: everything is there and verified, nothing is fetched.
            if show:
                heading(out, "5. Sync again: only what is missing or damaged is fetched")
            links_before = len(panel.link_requests())
            with TransferProgress(ctx.err, enabled=show) as view:
                again = await sync_servers(client, view, identifiers, dest, concurrency=4)
            links = len(panel.link_requests()) - links_before
            if show:
                out.print(sync_summary(again) + f" · {links} download links requested")

    files, size = await anyio.to_thread.run_sync(_files_under, dest)
    recovered = [o for o in report.outcomes if o.result is not None and o.result.attempts > 1]
    failed = report.failed + again.failed + sum(1 for o in single if o.result is None)
    seconds = time.monotonic() - started
    if ctx.json:
        emit_json(
            {
                "dialect": dialect,
                "created": backup_json(done),
                "download": outcome_json(single[0]),
                "sync": sync_json(report),
                "second_sync": sync_json(again),
                "files": files,
                "bytes": size,
                "failed": failed,
                "dest": str(dest),
                "kept": keep,
                "seconds": round(seconds, 3),
            }
        )
    else:
        heading(out, "Summary")
        out.print(
            f"[bold]{files} verified files, {human_size(size)}[/] in "
            f"{safe_markup(dest)}/<server>/<uuid>.tar.gz, with a manifest.json per server."
        )
        out.print(
            f"Sync: {report.downloaded} downloaded at {human_rate(report.bytes, report.seconds)}"
            f", {report.skipped} skipped; {len(recovered)} recovered from a dropped connection; "
            f"the second sync fetched {again.downloaded}."
        )
        out.print(
            f"Whole demo: {human_duration(seconds)}. "
            + (
                f"The files stay in {safe_markup(dest)}."
                if keep
                else "The temporary directory is removed now (pass --dest DIR to keep the files)."
            )
        )
        out.print("Against your panel: export PTERODACTYL_URL=… PTERODACTYL_API_KEY=…, then")
        out.print("  ptero-backups servers · list SERVER · sync --all-servers --dest DIR")
    return EXIT_FAILED if failed else EXIT_OK
