"""Integrity under hostile conditions: one download per final path, a size ceiling, a minimum
rate, and a destination rule for paths ending in a separator.

The hostile link hosts are small aiohttp servers on loopback; FakePanel hands out their URLs
through ``FakeBackup.link_factory``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from aiohttp import web

from ptero_backups_async import DestinationExistsError, DownloadError, PteroClient
from ptero_backups_async.testing import DownloadFault, FakePanel

from .conftest import register_key

pytestmark = pytest.mark.anyio

CONTENT = os.urandom(3 * 1024 * 1024 + 777)
SMALL = os.urandom(16 * 1024)


def leftovers(directory: pathlib.Path) -> list[str]:
    """Files a download must never leave behind."""
    return sorted(
        p.name for p in directory.rglob("*") if p.name.endswith((".part", ".lock", ".tmp"))
    )


async def wait_for(predicate: Callable[[], object], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - the file system has no event to wait on
            await anyio.sleep(0.01)


# ------------------------------------------------------------------ a hostile link host


class HostileLinks:
    """A link host that misbehaves on purpose, counting what it sent."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.sent: list[int] = []  # bytes of body sent, per request
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> HostileLinks:
        app = web.Application()
        app.router.add_get("/endless", self.endless)
        app.router.add_get("/trickle", self.trickle)
        app.router.add_get("/fast", self.fast)
        app.router.add_get("/wrong", self.wrong)
        app.router.add_get("/loop", self.loop)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """The right bytes, then more, forever, with no Content-Length."""
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        index = len(self.sent)
        self.sent.append(0)
        block = self.content + os.urandom(64 * 1024)
        try:
            with anyio.fail_after(30):  # bounded even if a client never hangs up
                while True:
                    await resp.write(block)
                    self.sent[index] += len(block)
                    block = os.urandom(64 * 1024)
        except (ConnectionError, OSError):
            pass  # the client hung up: the point of the test
        return resp

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        """The right bytes, one every 20 ms: never silent long enough for a read timeout."""
        resp = web.StreamResponse()
        resp.content_length = len(self.content)
        await resp.prepare(request)
        index = len(self.sent)
        self.sent.append(0)
        try:
            for i in range(len(self.content)):
                await resp.write(self.content[i : i + 1])
                self.sent[index] += 1
                await anyio.sleep(0.02)
        except (ConnectionError, OSError):
            pass
        return resp

    async def wrong(self, request: web.Request) -> web.StreamResponse:
        """Other bytes of the right length, slowly (half, a pause, the rest)."""
        other = bytes(b ^ 0xFF for b in self.content[:16]) + self.content[16:]
        resp = web.StreamResponse()
        resp.content_length = len(other)
        await resp.prepare(request)
        half = len(other) // 2
        await resp.write(other[:half])
        await anyio.sleep(1.0)
        await resp.write(other[half:])
        self.sent.append(len(other))
        return resp

    async def loop(self, request: web.Request) -> web.StreamResponse:
        """A redirect to itself, token and all: aiohttp names the URL when it gives up."""
        raise web.HTTPFound(f"/loop?{request.query_string}")

    async def fast(self, request: web.Request) -> web.StreamResponse:
        self.sent.append(len(self.content))
        return web.Response(body=self.content)


@pytest.fixture
async def fake() -> AsyncIterator[FakePanel]:
    async with FakePanel(storage="s3") as panel:
        register_key(panel.api_key)
        yield panel


@pytest.fixture
async def client(fake: FakePanel) -> AsyncIterator[PteroClient]:
    async with PteroClient(fake.url, fake.api_key) as c:
        yield c


# ------------------------------------------------------------------ one download per path


@pytest.mark.parametrize("overwrite", [False, True])
async def test_two_downloads_to_one_path_in_one_process_never_interleave(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path, overwrite: bool
) -> None:
    server = fake.add_server()
    backup = fake.add_backup(server, content=CONTENT)
    fake.script_download(backup, DownloadFault.stall(1024 * 1024, 1.0))
    b = client.backups(server.identifier)
    target = tmp_path / "mirror.tar.gz"
    results: dict[str, Any] = {}

    async def fetch(key: str) -> None:
        results[key] = await b.download(backup.uuid, target, overwrite=overwrite)

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch, "first")
        await wait_for(lambda: (tmp_path / "mirror.tar.gz.part").exists())
        await anyio.sleep(0.3)  # the first is mid-body, stalled
        tg.start_soon(fetch, "second")

    assert target.read_bytes() == CONTENT
    assert not results["first"].skipped
    assert results["second"].skipped
    assert results["second"].verified
    assert len(fake.link_requests()) == 1, "the second download must not fetch at all"
    assert leftovers(tmp_path) == []


async def test_download_many_with_one_path_twice_fetches_once(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = fake.add_server()
    backup = fake.add_backup(server, content=CONTENT)
    fake.script_download(backup, DownloadFault.stall(1024 * 1024, 0.5))
    same = tmp_path / "same.tar.gz"
    outcomes = await client.download_many(
        [(server.identifier, backup.uuid, same), (server.identifier, backup.uuid, same)],
        tmp_path,
        concurrency=2,
    )
    assert all(o.result is not None for o in outcomes), outcomes
    assert sorted(o.result.skipped for o in outcomes if o.result) == [False, True]
    assert same.read_bytes() == CONTENT
    assert len(fake.link_requests()) == 1
    assert leftovers(tmp_path) == []


async def test_a_part_replaced_behind_the_lock_is_never_renamed(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = fake.add_server()
    backup = fake.add_backup(server, content=CONTENT)
    fake.script_download(backup, DownloadFault.stall(1024 * 1024, 1.0))
    part = tmp_path / f"{backup.uuid}.tar.gz.part"
    b = client.backups(server.identifier)
    outcome: list[BaseException] = []

    async def fetch() -> None:
        try:
            await b.download(backup.uuid, tmp_path)
        except DownloadError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch)
        await wait_for(part.exists)
        # A program that ignores the lock swaps in a file of its own, half the size.
        part.unlink()
        part.write_bytes(CONTENT[: len(CONTENT) // 2])

    assert outcome, "the download must fail rather than rename a file it did not write"
    assert "replaced or removed by another program" in str(outcome[0])
    assert not (tmp_path / f"{backup.uuid}.tar.gz").exists()
    # The other program's file is its own business: not deleted.
    assert part.read_bytes() == CONTENT[: len(CONTENT) // 2]


async def test_the_lock_is_released_on_failure_and_cancellation(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = fake.add_server()
    backup = fake.add_backup(server, content=CONTENT)
    b = client.backups(server.identifier)
    fake.script_download(backup, DownloadFault.status(500), DownloadFault.status(500))
    with pytest.raises(DownloadError):
        await b.download(backup.uuid, tmp_path, max_attempts=2)
    assert leftovers(tmp_path) == []

    fake.script_download(backup, DownloadFault.stall(1024 * 1024, 30))
    with anyio.move_on_after(0.5):
        await b.download(backup.uuid, tmp_path)
    assert leftovers(tmp_path) == []

    with anyio.fail_after(10):  # a later download is not held up by a stale lock
        result = await b.download(backup.uuid, tmp_path)
    assert result.path.read_bytes() == CONTENT


async def test_a_symlink_at_the_lock_path_is_not_followed(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = fake.add_server()
    backup = fake.add_backup(server, content=SMALL)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / f"{backup.uuid}.tar.gz.lock").symlink_to(victim)
    result = await client.backups(server.identifier).download(backup.uuid, dest)
    assert result.path.read_bytes() == SMALL
    assert victim.read_bytes() == b"keep me"
    assert leftovers(dest) == []


async def test_a_waiting_download_that_finds_another_file_does_not_replace_it(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # The first writes the file unverified (verify=False, other content); the second, which
    # waited, finds a file that does not match and refuses to clobber it.
    server = fake.add_server()
    backup = fake.add_backup(server, content=CONTENT)
    b = client.backups(server.identifier)
    target = tmp_path / "x.tar.gz"
    errors: list[BaseException] = []

    async def second() -> None:
        try:
            await b.download(backup.uuid, target)
        except DestinationExistsError as exc:
            errors.append(exc)

    async with HostileLinks(CONTENT) as host, anyio.create_task_group() as tg:
        backup.link_factory = lambda: f"{host.url}/wrong"
        tg.start_soon(lambda: b.download(backup.uuid, target, verify=False))
        await wait_for(lambda: (tmp_path / "x.tar.gz.part").exists())
        tg.start_soon(second)
    assert target.read_bytes()[16:] == CONTENT[16:]
    assert target.read_bytes() != CONTENT
    assert errors
    assert "does not match" in str(errors[0])
    assert len(host.sent) == 1


async def test_two_sync_processes_on_one_directory_agree_with_the_disk(
    fake: FakePanel, tmp_path: pathlib.Path
) -> None:
    servers = [fake.add_server(name=f"s{i}") for i in range(2)]
    backups = [
        fake.add_backup(s, content=os.urandom(2 * 1024 * 1024)) for s in servers for _ in "ab"
    ]
    for backup in backups:
        fake.script_download(backup, DownloadFault.stall(512 * 1024, 0.8))
    env = {**os.environ, "PTERODACTYL_URL": fake.url, "PTERODACTYL_API_KEY": fake.api_key}
    argv = [sys.executable, "-m", "ptero_backups_async", "sync", "--all-servers", "--json"]
    argv += ["--dest", str(tmp_path / "mirror")]
    processes = []
    try:
        for n in range(2):
            with open(tmp_path / f"out{n}", "wb") as out, open(tmp_path / f"err{n}", "wb") as err:
                processes.append(
                    await anyio.open_process(
                        argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
                    )
                )
            await wait_for(lambda: list((tmp_path / "mirror").rglob("*.part")), 20)
        with anyio.fail_after(60):
            codes = [await p.wait() for p in processes]
    finally:
        for p in processes:
            if p.returncode is None:
                p.kill()
            await p.aclose()
    errs = [(tmp_path / f"err{n}").read_text() for n in range(2)]
    assert codes == [0, 0], errs
    mirror = tmp_path / "mirror"
    assert leftovers(mirror) == []
    for server in servers:
        manifest = json.loads((mirror / server.identifier / "manifest.json").read_text())
        assert len(manifest["backups"]) == 2
        assert manifest["rejected"] == []
        for entry in manifest["backups"]:
            data = (mirror / server.identifier / f"{entry['uuid']}.tar.gz").read_bytes()
            assert entry["checksum"] == "sha1:" + hashlib.sha1(data).hexdigest()
            assert len(data) == entry["bytes"]
    # Each backup was fetched by one process; the other found it verified.
    for backup in backups:
        assert backup.download_attempts == 1, backup.uuid


# ------------------------------------------------------------------ the announced size is a ceiling


async def test_an_endless_body_is_cut_off_at_the_announced_size(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    async with HostileLinks(SMALL) as host:
        server = fake.add_server()
        backup = fake.add_backup(server, content=SMALL)
        backup.link_factory = lambda: f"{host.url}/endless"
        part = tmp_path / f"{backup.uuid}.tar.gz.part"
        largest = 0

        async def watch() -> None:
            nonlocal largest
            while True:
                try:
                    largest = max(largest, part.stat().st_size)
                except FileNotFoundError:
                    pass
                await anyio.sleep(0.001)

        errors: list[DownloadError] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                with anyio.fail_after(10):
                    await client.backups(server.identifier).download(
                        backup.uuid, tmp_path, max_attempts=2
                    )
            except DownloadError as exc:
                errors.append(exc)
            finally:
                tg.cancel_scope.cancel()
    assert errors, "an endless body must fail the download"
    assert "more than the 16384 bytes announced" in str(errors[0])
    assert errors[0].attempts == 2
    assert largest <= len(SMALL), f"the .part grew to {largest} bytes"
    assert leftovers(tmp_path) == []
    # The client hung up soon after the ceiling: at most a few socket buffers were in flight.
    assert all(sent < 16 * 1024 * 1024 for sent in host.sent), host.sent


# ------------------------------------------------------------------ a minimum rate


async def test_a_trickle_fails_the_attempt_and_a_fresh_link_finishes(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    async with HostileLinks(SMALL) as host:
        server = fake.add_server()
        backup = fake.add_backup(server, content=SMALL)
        links = iter([f"{host.url}/trickle", f"{host.url}/fast"])
        backup.link_factory = lambda: next(links)
        with anyio.fail_after(10):
            result = await client.backups(server.identifier).download(
                backup.uuid, tmp_path, read_timeout=0.5, min_rate=1000
            )
    assert result.path.read_bytes() == SMALL
    assert result.attempts == 2
    assert host.sent[0] < 100, "the trickle must be given up after about read_timeout"


async def test_a_trickle_below_min_rate_exhausts_the_attempts(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    async with HostileLinks(SMALL) as host:
        server = fake.add_server()
        backup = fake.add_backup(server, content=SMALL)
        backup.link_factory = lambda: f"{host.url}/trickle"
        with anyio.fail_after(10), pytest.raises(DownloadError) as caught:
            await client.backups(server.identifier).download(
                backup.uuid, tmp_path, read_timeout=0.4, min_rate=500, max_attempts=2
            )
    assert "below min_rate=500 B/s" in str(caught.value)
    assert len(caught.value.history) == 2
    assert leftovers(tmp_path) == []


async def test_min_rate_none_lets_a_slow_body_finish(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    async with HostileLinks(SMALL[:40]) as host:
        server = fake.add_server()
        backup = fake.add_backup(server, content=SMALL[:40])
        backup.link_factory = lambda: f"{host.url}/trickle"
        with anyio.fail_after(10):
            result = await client.backups(server.identifier).download(
                backup.uuid, tmp_path, read_timeout=0.3, min_rate=None
            )
    assert result.path.read_bytes() == SMALL[:40]
    assert result.attempts == 1


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "fast"])
async def test_min_rate_is_validated(client: PteroClient, bad: object) -> None:
    with pytest.raises(ValueError, match="min_rate"):
        await client.backups("d3aac109").download(
            "0e9d0c6e-4b50-4f64-9fc4-0d6c8d1b9e2a",
            "x",
            min_rate=bad,  # type: ignore[arg-type]
        )


# ------------------------------------------------------------------ destinations


async def test_a_destination_ending_in_a_separator_is_a_directory(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = fake.add_server()
    first = fake.add_backup(server, content=SMALL)
    second = fake.add_backup(server, content=CONTENT)
    b = client.backups(server.identifier)
    dest = f"{tmp_path / 'backups'}{os.sep}"
    one = await b.download(first.uuid, dest)
    two = await b.download(second.uuid, dest)
    assert one.path == tmp_path / "backups" / f"{first.uuid}.tar.gz"
    assert two.path == tmp_path / "backups" / f"{second.uuid}.tar.gz"
    assert one.path.read_bytes() == SMALL
    assert two.path.read_bytes() == CONTENT
    # Without the separator, a path that does not exist is the file itself.
    three = await b.download(first.uuid, str(tmp_path / "plain"))
    assert three.path == tmp_path / "plain"


async def test_download_many_reads_a_trailing_separator_the_same_way(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = fake.add_server()
    backups = [fake.add_backup(server, content=SMALL) for _ in range(2)]
    sub = f"{tmp_path / 'a' / 'b'}{os.sep}"
    outcomes = await client.download_many(
        [(server.identifier, backup.uuid, sub) for backup in backups], tmp_path
    )
    for backup, outcome in zip(backups, outcomes, strict=True):
        assert outcome.result is not None, outcome.error
        assert outcome.result.path == tmp_path / "a" / "b" / f"{backup.uuid}.tar.gz"


# ------------------------------------------------------------------ what errors may say


async def test_a_link_token_never_reaches_the_error_or_its_history(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    secret = "eyJhbGciOi.SECRET-TOKEN.sig"
    async with HostileLinks(SMALL) as host:
        server = fake.add_server()
        backup = fake.add_backup(server, content=SMALL)
        backup.link_factory = lambda: f"{host.url}/loop?token={secret}"
        with pytest.raises(DownloadError) as caught:
            await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=2)
    assert "TooManyRedirects" in str(caught.value)
    assert secret not in str(caught.value)
    assert not [entry for entry in caught.value.history if secret in entry]


async def test_control_characters_from_the_link_host_are_escaped(
    fake: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    # aiohttp's server refuses to send such a status line, so this host writes raw bytes.
    answer = b"HTTP/1.1 503 Busy \x1b[2J\x1b]0;pwned\x07 now\r\nContent-Length: 0\r\n\r\n"

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    raw = await asyncio.start_server(reply, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    try:
        server = fake.add_server()
        backup = fake.add_backup(server, content=SMALL)
        backup.link_factory = lambda: f"http://127.0.0.1:{port}/x"
        with pytest.raises(DownloadError) as caught:
            await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=1)
    finally:
        raw.close()
        await raw.wait_closed()
    text = str(caught.value)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert r"503 Busy \x1b[2J\x1b]0;pwned\x07 now" in text


def test_the_command_line_takes_min_rate() -> None:
    from ptero_backups_async._cli._parser import build_parser

    parser = build_parser()
    base = ["download", "d3aac109", "--all", "--dest", "out"]
    assert parser.parse_args(base).min_rate == 1024
    assert parser.parse_args([*base, "--min-rate", "5e4"]).min_rate == 50_000
    assert parser.parse_args([*base, "--min-rate", "0"]).min_rate is None
    sync = parser.parse_args(["sync", "--all-servers", "--dest", "d", "--min-rate", "10"])
    assert sync.min_rate == 10
    for bad in ("-1", "inf", "fast"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--min-rate", bad])


@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), "5", None, True])
async def test_read_timeout_is_validated_before_anything(client: PteroClient, bad: object) -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        await client.backups("d3aac109").download(
            "0e9d0c6e-4b50-4f64-9fc4-0d6c8d1b9e2a",
            "x",
            read_timeout=bad,  # type: ignore[arg-type]
        )
