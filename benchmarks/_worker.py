"""One timed download in a fresh process: `python _worker.py MODE ARGS...` (see `main`).

Prints one JSON line: the in-process download time, whether the bytes verified, ru_maxrss
right before and after the download (KiB), and event-loop lag samples' max and p99 (ms).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

LAG_TICK = 0.01


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def vmhwm_kib() -> int:
    """Peak RSS of this address space only (ru_maxrss starts at the parent's peak at exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


async def _watch_loop(samples: list[float]) -> None:
    """Sleep LAG_TICK over and over and record how late each wake-up came."""
    while True:
        start = time.perf_counter()
        await asyncio.sleep(LAG_TICK)
        samples.append(time.perf_counter() - start - LAG_TICK)


async def measure(download: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
    """Run ``download`` with a loop-lag watcher beside it; time it and its RSS growth."""
    samples: list[float] = []
    watcher = asyncio.create_task(_watch_loop(samples))
    await asyncio.sleep(0)  # let the watcher start its first tick
    rss_before, hwm_before = maxrss_kib(), vmhwm_kib()
    start = time.perf_counter()
    ok = await download()
    elapsed = time.perf_counter() - start
    rss_after, hwm_after = maxrss_kib(), vmhwm_kib()
    watcher.cancel()
    samples.sort()
    lag_ms = [s * 1000 for s in samples] or [0.0]
    return {
        "download_s": elapsed,
        "ok": ok,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "hwm_before_kib": hwm_before,
        "hwm_after_kib": hwm_after,
        "lag_max_ms": lag_ms[-1],
        "lag_p99_ms": lag_ms[min(len(lag_ms) - 1, int(len(lag_ms) * 0.99))],
        "lag_samples": len(samples),
    }


async def plain(url: str, out: str, sha1: str) -> dict[str, Any]:
    """The textbook aiohttp + aiofiles loop, 64 KiB chunks, hashing as it goes."""
    import aiofiles
    import aiohttp

    async def download() -> bool:
        h = hashlib.sha1()
        async with session.get(url) as r:
            r.raise_for_status()
            async with aiofiles.open(out, "wb") as f:
                async for chunk in r.content.iter_chunked(65536):
                    h.update(chunk)
                    await f.write(chunk)
        return h.hexdigest() == sha1

    async with aiohttp.ClientSession() as session:
        return await measure(download)


async def ours(
    panel: str, server: str, uuid: str, outdir: str, segments: str | None = None
) -> dict[str, Any]:
    """``client.backups(server).download(uuid, outdir)``, after one warm-up API call.

    ``segments`` ("auto" or a number) is passed on as ``download(segments=...)``; without it
    the SDK's default applies. The sample records ``result.segments`` (streams used),
    ``result.attempts`` and ``result.resumed_from`` (bytes kept from an interrupted run, for
    ``bench_download.py --crash``).
    """
    from ptero_backups_async import PteroClient

    kwargs: dict[str, Any] = {}
    if segments is not None:
        kwargs["segments"] = segments if segments == "auto" else int(segments)
    used: list[int | None] = []
    resumed: list[int | None] = []
    attempts: list[int | None] = []
    async with PteroClient(panel, "ptlc_benchmark") as client:
        backups = client.backups(server)
        await backups.get(uuid)  # warm-up: imports, converter, the panel connection

        async def download() -> bool:
            result = await backups.download(uuid, outdir, **kwargs)
            used.append(getattr(result, "segments", None))  # None: an SDK without segments
            resumed.append(getattr(result, "resumed_from", None))  # None: no resume
            attempts.append(result.attempts)
            return result.verified and not result.skipped

        sample = await measure(download)
    sample["segments"] = used[0] if used else None
    sample["resumed_from"] = resumed[0] if resumed else None
    sample["attempts"] = attempts[0] if attempts else None
    return sample


async def ours_many(panel: str, outdir: str, concurrency: int, pairs: list[str]) -> dict[str, Any]:
    """``client.download_many(pairs, outdir, concurrency=...)``; every outcome must verify."""
    from ptero_backups_async import PteroClient

    targets = [tuple(pair.split(":", 1)) for pair in pairs]
    async with PteroClient(panel, "ptlc_benchmark") as client:
        server, uuid = targets[0]
        await client.backups(server).get(uuid)

        async def download() -> bool:
            outcomes = await client.download_many(
                [(s, u) for s, u in targets], outdir, concurrency=concurrency
            )
            return len(outcomes) == len(targets) and all(
                o.result is not None and o.result.verified for o in outcomes
            )

        return await measure(download)


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "plain":
        url, out, sha1 = args
        result = asyncio.run(plain(url, out, sha1))
    elif mode == "ours":
        panel, server, uuid, outdir, *rest = args  # optional 5th: segments, "auto" or a number
        if len(rest) > 1:
            raise SystemExit(f"ours: unexpected arguments {rest[1:]}")
        result = asyncio.run(ours(panel, server, uuid, outdir, rest[0] if rest else None))
    elif mode == "ours-many":
        panel, outdir, concurrency, *pairs = args
        result = asyncio.run(ours_many(panel, outdir, int(concurrency), pairs))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
