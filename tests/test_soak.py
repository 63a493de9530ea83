"""Download soak: hundreds of downloads through random link-host faults, both storage modes.

Rounds alternate Wings-style links (single use, no Range) and S3-style links (Range). In each
round a fresh FakePanel holds a few dozen backups, about half of them with a random fault
script (drops, corrupted bytes, stalls past ``read_timeout``, 5xx/429, expired links); some
are doomed on purpose (every attempt fails, or two corruptions). Half the round goes through
``download_many``, the other half through concurrent single ``download`` calls.

Checked: every download that can succeed does, byte-exact and verified; every failure is a
``DownloadError`` of the predicted class; no ``.part`` is left; no request to a link host
carries the API key; and after the clients are closed the process's open file descriptors
and TCP connections are back to their starting count and its RSS has not grown beyond a
small bound.

Size: ``PTERO_SOAK_DOWNLOADS`` (default 720, about a minute on 2 cores);
``PTERO_SOAK_SEED`` repeats a run. Figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import random
import resource
import shutil
import time
from typing import Any

import anyio
import pytest

from ptero_backups_async import ChecksumMismatchError, DownloadError, PteroClient
from ptero_backups_async.testing import DownloadFault, FakeBackup, FakePanel

from .conftest import register_key
from .faults._tools import established_connections, open_fds, rss_kib, settle

pytestmark = [pytest.mark.anyio, pytest.mark.soak, pytest.mark.slow]

DOWNLOADS = int(os.environ.get("PTERO_SOAK_DOWNLOADS", "720"))
SEED = int(os.environ.get("PTERO_SOAK_SEED", random.SystemRandom().randrange(2**32)))
PER_ROUND = 40
READ_TIMEOUT = 0.25
MAX_ATTEMPTS = 5
#: RSS may grow this much between the end of the first round and the end of the soak.
RSS_BOUND_KIB = 64 * 1024


def fault_script(rng: random.Random, size: int) -> tuple[list[DownloadFault], str]:
    """A random script and its predicted outcome: "ok", "download_error" or "mismatch"."""
    roll = rng.random()
    if roll < 0.04:
        codes = [rng.choice([500, 502, 503, 504]) for _ in range(MAX_ATTEMPTS)]
        return [DownloadFault.status(code) for code in codes], "download_error"
    if roll < 0.07:
        offsets = rng.randrange(size), rng.randrange(size)
        return [DownloadFault.corrupt(offset) for offset in offsets], "mismatch"
    if roll < 0.50:
        return [], "ok"
    faults: list[DownloadFault] = []
    corrupted = False
    # At most MAX_ATTEMPTS - 1 faults and one corruption: the download must succeed.
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        kind = rng.choice(["drop", "drop", "corrupt", "stall", "status", "status", "expired"])
        if kind == "corrupt" and corrupted:
            kind = "drop"
        if kind == "drop":
            faults.append(DownloadFault.drop_after(rng.randrange(size)))
        elif kind == "corrupt":
            corrupted = True
            faults.append(DownloadFault.corrupt(rng.randrange(size)))
        elif kind == "stall":
            faults.append(DownloadFault.stall(rng.randrange(size), 1.0))
        elif kind == "status":
            code = rng.choice([500, 502, 503, 504, 429])
            faults.append(DownloadFault.status(code, retry_after=0.1 if code == 429 else None))
        else:
            faults.append(DownloadFault.expired())
    return faults, "ok"


class Figures:
    def __init__(self) -> None:
        self.downloads = 0
        self.succeeded = 0
        self.failed: collections.Counter[str] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.link_requests = 0
        self.bytes = 0
        self.corrupt_files = 0
        self.by_storage: collections.Counter[str] = collections.Counter()
        self.by_path: collections.Counter[str] = collections.Counter()


async def soak_round(
    rng: random.Random,
    storage: str,
    count: int,
    blobs: list[bytes],
    digests: dict[int, str],
    dest: pathlib.Path,
    figures: Figures,
) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        key = register_key(panel.api_key)
        servers = [panel.add_server(name=f"s{i}", backup_limit=1000) for i in range(4)]
        plan: list[tuple[str, FakeBackup, str, bytes]] = []
        for i in range(count):
            content = rng.choice(blobs)
            server = servers[i % len(servers)]
            backup = panel.add_backup(server, content=content, name=f"soak {i}")
            script, expected = fault_script(rng, len(content))
            panel.script_download(backup, *script)
            plan.append((server.identifier, backup, expected, content))
        outcomes: dict[str, Any] = {}

        async with PteroClient(panel.url, panel.api_key) as client:
            half = count // 2

            async def many() -> None:
                targets = [(sid, b.uuid) for sid, b, _, _ in plan[:half]]
                done = await client.download_many(
                    targets,
                    dest,
                    concurrency=6,
                    read_timeout=READ_TIMEOUT,
                    max_attempts=MAX_ATTEMPTS,
                )
                for outcome in done:
                    outcomes[outcome.backup_uuid] = outcome.result or outcome.error
                figures.by_path["download_many"] += len(targets)

            limiter = anyio.CapacityLimiter(4)

            async def single(sid: str, backup: FakeBackup) -> None:
                async with limiter:
                    try:
                        outcomes[backup.uuid] = await client.backups(sid).download(
                            backup.uuid,
                            dest,
                            read_timeout=READ_TIMEOUT,
                            max_attempts=MAX_ATTEMPTS,
                        )
                    except Exception as exc:  # checked below: must be a DownloadError
                        outcomes[backup.uuid] = exc
                figures.by_path["download"] += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(many)
                for sid, backup, _, _ in plan[half:]:
                    tg.start_soon(single, sid, backup)

        for _, backup, expected, content in plan:
            outcome = outcomes[backup.uuid]
            final = dest / f"{backup.uuid}.tar.gz"
            label = f"backup {backup.uuid} ({storage}, seed {SEED})"
            if expected == "ok":
                assert not isinstance(outcome, BaseException), f"{label}: {outcome!r}"
                assert outcome.verified, label
                assert outcome.bytes == len(content), label
                assert outcome.checksum.hexdigest == digests[id(content)], label
                assert final.read_bytes() == content, f"{label}: the file differs"
                figures.succeeded += 1
                figures.bytes += outcome.bytes
            else:
                assert isinstance(outcome, DownloadError), f"{label}: {outcome!r}"
                if expected == "mismatch":
                    assert isinstance(outcome, ChecksumMismatchError), f"{label}: {outcome!r}"
                else:
                    assert not isinstance(outcome, ChecksumMismatchError), label
                    assert outcome.attempts == MAX_ATTEMPTS, label
                assert not final.exists(), f"{label}: a failed download left a file"
                figures.failed[type(outcome).__name__] += 1
        # Whatever is in the directory is a complete, verified archive, and nothing else.
        present = sorted(dest.iterdir())
        assert not [p for p in present if p.name.endswith(".part")], ".part files left behind"
        by_name = {f"{b.uuid}.tar.gz": content for _, b, _, content in plan}
        for path in present:
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            if digest != hashlib.sha1(by_name[path.name]).hexdigest():
                figures.corrupt_files += 1
        assert figures.corrupt_files == 0

        links = panel.link_requests()
        for request in links:
            assert "authorization" not in request.headers
            assert "cookie" not in request.headers
            assert key not in json.dumps(request.headers)
            assert key not in request.path
            assert key not in json.dumps(request.query)
        figures.link_requests += len(links)
        figures.faults.update(r.fault for r in links if r.fault)
        figures.downloads += count
        figures.by_storage[storage] += count
    for path in dest.iterdir():
        path.unlink()


async def test_download_soak(tmp_path: pathlib.Path) -> None:
    rng = random.Random(SEED)
    print(f"\nsoak: {DOWNLOADS} downloads, seed {SEED} (PTERO_SOAK_SEED={SEED} repeats it)")
    blobs = [os.urandom(rng.randrange(16 * 1024, 1536 * 1024)) for _ in range(12)]
    digests = {id(b): hashlib.sha1(b).hexdigest() for b in blobs}
    dest = tmp_path / "soak"
    dest.mkdir()
    figures = Figures()
    fds_before = open_fds()
    conns_before = established_connections()
    rss_start = rss_kib()
    started = time.monotonic()

    rounds = max(1, -(-DOWNLOADS // PER_ROUND))
    rss_after_first = rss_start
    for index in range(rounds):
        count = min(PER_ROUND, DOWNLOADS - figures.downloads)
        storage = ("wings", "s3")[index % 2]
        await soak_round(rng, storage, count, blobs, digests, dest, figures)
        if index == 0:
            rss_after_first = rss_kib()
    duration = time.monotonic() - started

    assert await settle(lambda: established_connections() <= conns_before, within=5)
    assert await settle(lambda: open_fds() <= fds_before, within=5)
    fds_after = open_fds()
    conns_after = established_connections()
    rss_end = rss_kib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    shutil.rmtree(dest)

    report = {
        "downloads": figures.downloads,
        "by_storage": dict(figures.by_storage),
        "by_path": dict(figures.by_path),
        "succeeded": figures.succeeded,
        "failed_as_predicted": dict(figures.failed),
        "link_requests": figures.link_requests,
        "faults_injected": sum(figures.faults.values()),
        "faults_by_kind": dict(figures.faults),
        "bytes_verified": figures.bytes,
        "corrupt_files": figures.corrupt_files,
        "fds_before_after": [fds_before, fds_after],
        "connections_before_after": [conns_before, conns_after],
        "rss_kib_start_first_round_end": [rss_start, rss_after_first, rss_end],
        "ru_maxrss_kib": peak,
        "duration_s": round(duration, 1),
        "seed": SEED,
    }
    print("soak figures:", json.dumps(report, indent=1))
    assert figures.downloads == DOWNLOADS
    assert figures.succeeded + sum(figures.failed.values()) == DOWNLOADS
    assert figures.corrupt_files == 0
    assert sum(figures.faults.values()) > 0
    assert fds_after <= fds_before
    assert conns_after <= conns_before
    assert rss_end - rss_after_first < RSS_BOUND_KIB, report
