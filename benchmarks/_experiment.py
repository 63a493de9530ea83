"""Copies of the SDK's download loop, one change each: `_experiment.py VARIANT N URL OUT SHA1...`.

Not in the main table: ``bench_download.py --experiments`` runs them beside ours, to show where
``_download.py`` spends its time. Each reads as the SDK does (a session with a 1 MiB read
buffer, ``readany()``, 4 MiB batches through a one-slot memory stream) and ends as it does
(fsync, rename, fsync of the directory), unless its name says otherwise. N is the concurrency
for several URL OUT SHA1 targets (as ``download_many``); "finish" sums each file's fsync + rename.

- ``sdk``: hash + ``writev`` of each batch in one worker thread (what ``_Sink.absorb`` does).
- ``split``: hashing and writing on two threads, so the two overlap instead of adding up.
- ``split-wb``: ``split`` + ``posix_fadvise(DONTNEED)`` on what was written every 32 MiB,
  which starts writeback early (and drops those pages from the cache).
- ``split-sfr``: ``split`` + ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` (via ctypes) every
  32 MiB: writeback starts early and the pages stay cached.
- ``sdk-nofsync``: ``sdk`` without the fsync: the part of the time that is the disk's.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import os
import sys
import time

import aiohttp
import anyio
import anyio.to_thread

BATCH = 4 * 1024 * 1024
READ_BUFFER = 1024 * 1024
WRITEBACK_EVERY = 32 * 1024 * 1024
VARIANTS = ("sdk", "split", "split-wb", "split-sfr", "sdk-nofsync")
SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def sync_file_range(fd: int, offset: int, nbytes: int) -> None:
    if _libc.sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "sync_file_range")


class Sink:
    def __init__(self, path: str, *, early_writeback: str) -> None:  # "", "fadvise", "sfr"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.digest = hashlib.sha1()
        self.size = 0
        self.flushed = 0
        self.early_writeback = early_writeback

    def hash(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.digest.update(chunk)

    def write(self, chunks: list[bytes]) -> None:
        total = sum(map(len, chunks))
        if os.writev(self.fd, chunks) != total:
            raise OSError("short write")
        self.size += total
        if self.early_writeback and self.size - self.flushed >= WRITEBACK_EVERY:
            if self.early_writeback == "sfr":
                sync_file_range(self.fd, self.flushed, self.size - self.flushed)
            else:
                os.posix_fadvise(
                    self.fd, self.flushed, self.size - self.flushed, os.POSIX_FADV_DONTNEED
                )
            self.flushed = self.size

    def absorb(self, chunks: list[bytes]) -> None:
        self.hash(chunks)
        self.write(chunks)

    def finish(self, path: str, *, fsync: bool) -> None:
        if fsync:
            os.fsync(self.fd)
        os.close(self.fd)
        os.replace(path, path.removesuffix(".part"))
        if fsync:  # the directory too, as the SDK does
            dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


async def stream(resp: aiohttp.ClientResponse, sink: Sink, split: bool) -> None:
    hash_send, hash_receive = anyio.create_memory_object_stream[list[bytes]](1)
    write_send, write_receive = anyio.create_memory_object_stream[list[bytes]](1)

    async def hasher() -> None:
        async with hash_receive:
            async for batch in hash_receive:
                await anyio.to_thread.run_sync(sink.hash, batch)

    async def writer() -> None:
        async with write_receive:
            async for batch in write_receive:
                await anyio.to_thread.run_sync(sink.write if split else sink.absorb, batch)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        if split:
            tg.start_soon(hasher)
        async with hash_send, write_send:
            batch: list[bytes] = []
            size = 0
            while data := await resp.content.readany():
                batch.append(data)
                size += len(data)
                if size >= BATCH:
                    if split:
                        await hash_send.send(batch)
                    await write_send.send(batch)
                    batch, size = [], 0
            if batch:
                if split:
                    await hash_send.send(batch)
                await write_send.send(batch)


async def download_one(
    session: aiohttp.ClientSession, variant: str, url: str, out: str, sha1: str
) -> tuple[float, bool]:
    """One file; returns (seconds from end of body to file in place, checksum matched)."""
    part = out + ".part"
    writeback = {"split-wb": "fadvise", "split-sfr": "sfr"}.get(variant, "")
    sink = await anyio.to_thread.run_sync(lambda: Sink(part, early_writeback=writeback))
    async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        resp.raise_for_status()
        await stream(resp, sink, split=variant.startswith("split"))
    streamed = time.perf_counter()
    ok = sink.digest.hexdigest() == sha1
    await anyio.to_thread.run_sync(lambda: sink.finish(part, fsync=not variant.endswith("nofsync")))
    return time.perf_counter() - streamed, ok


async def download(variant: str, targets: list[list[str]], concurrency: int) -> dict[str, object]:
    """Every (url, out, sha1) target, ``concurrency`` at a time, like ``download_many``."""
    results: list[tuple[float, bool]] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(url: str, out: str, sha1: str) -> None:
        async with limiter:
            results.append(await download_one(session, variant, url, out, sha1))

    async with aiohttp.ClientSession(auto_decompress=False, read_bufsize=READ_BUFFER) as session:
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for url, out, sha1 in targets:
                tg.start_soon(one, url, out, sha1)
        elapsed = time.perf_counter() - start
    return {
        "download_s": elapsed,
        "finish_s": sum(f for f, _ in results),
        "ok": all(ok for _, ok in results),
    }


def main() -> None:
    variant, concurrency, *rest = sys.argv[1:]
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; one of {VARIANTS}")
    targets = [rest[i : i + 3] for i in range(0, len(rest), 3)]
    if not targets or len(targets[-1]) != 3:
        raise SystemExit("targets come as URL OUT SHA1 triples")
    print(json.dumps(asyncio.run(download(variant, targets, int(concurrency)))), flush=True)


if __name__ == "__main__":
    main()
