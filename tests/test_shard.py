"""``sync --shard K/N``: N processes split a fleet by server UUID, without a coordinator.

The fleet test runs four real ``ptero-backups`` processes against one FakePanel holding
2,000 servers x 3 backups, with a rate limit that binds, and checks that every backup is
fetched exactly once, that no request meets a 429, and that a shard's peak memory does not grow
with the number of backups it fetches.
"""

from __future__ import annotations

import collections
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from ptero_backups_async._cli._shard import MAX_SHARDS, Shard, parse_shard, shard_of
from ptero_backups_async.testing import FakePanel

from .conftest import cli

pytestmark = pytest.mark.anyio

SERVERS = 2000
BACKUPS_PER_SERVER = 3
SHARDS = 4

# ---------------------------------------------------------------------- the split itself


def test_the_split_is_pinned() -> None:
    # Mirrors live on the machines of their shard: a different hash in a later release would
    # move every server and fetch every backup again. These values must never change.
    assert [shard_of("d3aac109", n) for n in (1, 2, 3, 4, 10, 100)] == [0, 0, 2, 3, 3, 55]
    assert [shard_of("1a7ce997", n) for n in (1, 2, 3, 4, 10, 100)] == [0, 1, 1, 1, 1, 31]


def test_a_uuid_and_its_short_id_land_in_the_same_shard() -> None:
    full = "d3aac109-7f11-4c1e-9b2f-0a1b2c3d4e5f"
    for n in (2, 4, 7, 64):
        assert shard_of(full, n) == shard_of("d3aac109", n) == shard_of("D3AAC109", n)
    assert Shard(3, 4).owns(full)
    assert not Shard(0, 4).owns(full)


def test_shards_are_even_and_growing_moves_few_servers() -> None:
    rng = random.Random(7)
    ids = [uuid.UUID(int=rng.getrandbits(128)).hex[:8] for _ in range(20_000)]
    counts = collections.Counter(shard_of(i, 4) for i in ids)
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(4_500 < c < 5_500 for c in counts.values()), counts
    # From 4 to 5 machines, a server either stays or goes to the new shard: about a fifth move.
    moved = [i for i in ids if shard_of(i, 5) != shard_of(i, 4)]
    assert all(shard_of(i, 5) == 4 for i in moved)
    assert 0.17 < len(moved) / len(ids) < 0.23


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4/4", "K must be 0 to 3 for 4 shards, not 4"),
        ("0/0", "N must be 1 to 10000, not 0"),
        (f"0/{MAX_SHARDS + 1}", "N must be 1 to 10000, not 10001"),
        ("1-4", "expected K/N"),
        ("-1/4", "expected K/N"),
        ("a/b", "expected K/N"),
        ("", "expected K/N"),
    ],
)
def test_a_bad_shard_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard(text)


def test_a_shard_reads_back() -> None:
    assert parse_shard(" 2/8 ") == Shard(2, 8)
    assert str(Shard(2, 8)) == "2/8"
    with pytest.raises(ValueError, match="count must be ≥ 1, not 0"):
        shard_of("d3aac109", 0)


# ---------------------------------------------------------------------- the command


async def test_a_bad_shard_is_a_usage_error(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("sync", "--all-servers", "--shard", "4/4", "--dest", str(tmp_path))
    assert code == 2
    assert "K must be 0 to 3 for 4 shards, not 4" in capsys.readouterr().err
    assert env.api_requests() == []


async def test_named_servers_are_split_too(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = [env.add_server(name=f"s{i}") for i in range(12)]
    for server in servers:
        env.add_backup(server, content=os.urandom(2048))
    seen: list[str] = []
    for k in range(3):
        code = await cli(
            "sync",
            *(s.uuid for s in servers),  # full UUIDs: the split goes by their short ids
            "--shard",
            f"{k}/3",
            "--dest",
            str(tmp_path),
            "--json",
        )
        assert code == 0
        doc = json.loads(capsys.readouterr().out)
        mine = [entry["server"] for entry in doc["servers"]]
        assert doc["shard"] == {"index": k, "count": 3}
        assert doc["elsewhere"] == len(servers) - len(mine)
        assert all(shard_of(s, 3) == k for s in mine)
        seen += mine
    assert sorted(seen) == sorted(s.identifier for s in servers)


# ---------------------------------------------------------------------- the fleet

# Report the peak memory of the command itself. VmHWM, not getrusage(): after fork and exec, the
# kernel's ru_maxrss still counts the parent's pages at the fork.
RUN_AND_REPORT_RSS = (
    "import re, sys\n"
    "from ptero_backups_async._cli import main\n"
    "code = main(sys.argv[1:])\n"
    "with open('/proc/self/status') as status:\n"
    "    peak = re.search(r'VmHWM:\\s+(\\d+) kB', status.read())[1]\n"
    "print(f'peak_rss_kib={peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


async def run_shard(panel: FakePanel, dest: Path, shard: str) -> tuple[dict[str, Any], int]:
    """One ``ptero-backups sync --all-servers --shard`` process: its JSON and peak RSS (KiB)."""
    env = dict(os.environ, PTERODACTYL_URL=panel.url, PTERODACTYL_API_KEY=panel.api_key)
    result = await anyio.run_process(
        [
            *(sys.executable, "-c", RUN_AND_REPORT_RSS),
            *("--rate-limit-window", str(panel.rate_limit_period), "--json"),
            *("sync", "--all-servers", "--shard", shard, "--dest", str(dest)),
        ],
        env=env,
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err[-2000:]
    peak = [line for line in err.splitlines() if line.startswith("peak_rss_kib=")]
    return json.loads(result.stdout), int(peak[-1].split("=")[1])


@pytest.mark.slow
async def test_four_machines_fetch_every_backup_of_a_fleet_exactly_once(tmp_path: Path) -> None:
    # 450 API requests a second, for one user: the shards together would send more.
    async with FakePanel(rate_limit=450, rate_limit_period=1.0) as panel:
        servers = [panel.add_server(name=f"s{i}") for i in range(SERVERS)]
        backups = {
            panel.add_backup(server, content=os.urandom(1024), name=f"b{j}").uuid: server
            for server in servers
            for j in range(BACKUPS_PER_SERVER)
        }
        dest = tmp_path / "mirror"
        started = time.monotonic()
        docs: dict[int, tuple[dict[str, Any], int]] = {}
        async with anyio.create_task_group() as tg:

            async def shard(k: int) -> None:
                docs[k] = await run_shard(panel, dest, f"{k}/{SHARDS}")

            for k in range(SHARDS):
                tg.start_soon(shard, k)
        seconds = time.monotonic() - started
        api = panel.api_requests()
        links = panel.link_requests()

        # Every backup exactly once: one signed URL and one GET of it each.
        link_calls = collections.Counter(
            r.path.split("/")[-2] for r in api if r.path.endswith("/download")
        )
        assert set(link_calls) == set(backups)
        assert set(link_calls.values()) == {1}
        assert len(links) == len(backups)
        # No overlap, nothing missing, and each server's share as the hash says.
        fetched: dict[str, int] = {}
        for k, (doc, _) in docs.items():
            assert doc["failed"] == 0
            assert doc["rejected"] == []
            assert doc["elsewhere"] + len(doc["servers"]) == SERVERS
            for entry in doc["servers"]:
                assert shard_of(entry["server"], SHARDS) == k
                for file in entry["files"]:
                    assert file["uuid"] not in fetched
                    assert file["verified"]
                    fetched[file["uuid"]] = k
        assert set(fetched) == set(backups)
        assert len(list(dest.glob("*/*.tar.gz"))) == len(backups)
        assert len(list(dest.glob("*/manifest.json"))) == SERVERS
        # The rate limit was shared, not fought over: no request met a 429.
        statuses = collections.Counter(r.status for r in api)
        assert statuses[429] == 0, statuses
        assert len(api) / seconds <= panel.rate_limit * 1.05

        # Memory is flat: a shard fetching a tenth of the backups peaks as high.
        _, small_peak = await run_shard(panel, tmp_path / "small", f"0/{SHARDS * 10}")
    peaks = [peak for _, peak in docs.values()]
    # The figures of docs/reliability.md (shown with -s).
    print(
        f"{SHARDS} shards: {seconds:.1f} s, {len(api)} API requests, {statuses[429]} 429s, "
        f"servers per shard {[len(doc['servers']) for doc, _ in docs.values()]}, "
        f"peak RSS {[round(p / 1024, 1) for p in peaks]} MiB; "
        f"a tenth of the work: {small_peak / 1024:.1f} MiB"
    )
    assert max(peaks) - small_peak < 24 * 1024, (peaks, small_peak)


async def test_the_summary_names_the_shard(
    env: FakePanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = [env.add_server(name=f"s{i}") for i in range(8)]
    mine = [s for s in servers if shard_of(s.identifier, 2) == 1]
    code = await cli("sync", "--all-servers", "--shard", "1/2", "--dest", str(tmp_path))
    assert code == 0
    captured = capsys.readouterr()
    assert f"shard 1/2: {len(mine)} of 8 servers" in captured.out + captured.err
