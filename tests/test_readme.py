"""Every Python block of README.md runs, as written, against FakePanel.

Each ```python block of README.md comes right after a `<!-- recipe: NAME -->` line, and each
NAME is claimed by exactly one test here (`@recipe("NAME")`): `test_every_python_block_is_run`
fails when a block has no marker, two blocks share a name, or a block is claimed by no test.

The blocks read the panel from PTERODACTYL_URL / PTERODACTYL_API_KEY and act on the server
d3aac109, so the tests only set the environment, a working directory in tmp_path and a
FakePanel server of that id. Programs (an `asyncio.run` entry) run as `python -W error
NAME.py` in a subprocess; modules that define a function, a class, a bot or an app are imported
(not as `__main__`) and used here on the test's loop: the FastAPI apps are served by uvicorn
on loopback and called over HTTP, the discord.py command is called with a stand-in context.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import socket
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

import aiohttp
import anyio
import pytest
import uvicorn

from ptero_backups_async import (
    AiohttpTransport,
    ChecksumMismatchError,
    PteroClient,
    PteroError,
)
from ptero_backups_async.testing import FakeBackup, FakePanel

from .conftest import register_key

pytestmark = pytest.mark.anyio

README = Path(__file__).resolve().parent.parent / "README.md"
SERVER = "d3aac109"  # the server the README's examples act on

_FENCE = re.compile(r"^ *(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"^<!-- recipe: (?P<name>[a-z0-9][a-z0-9-]*) -->$")


class Block(NamedTuple):
    """One Python block of a Markdown file: its marker's name (None if absent), line, code."""

    name: str | None
    line: int
    source: str


def python_blocks(markdown: str) -> list[Block]:
    """The fenced blocks whose info string starts with "py", with the marker line above each."""
    lines = markdown.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence = opening["fence"]
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if opening["info"].lower().startswith("py"):
            above = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            marker = _MARKER.match(above)
            indent = len(lines[i]) - len(lines[i].lstrip(" "))
            body = [line[indent:] for line in lines[i + 1 : end]]
            blocks.append(Block(marker and marker["name"], i + 1, "\n".join(body) + "\n"))
        i = end + 1
    return blocks


#: The recipe names that a test below runs.
CLAIMED: set[str] = set()

F = TypeVar("F", bound=Callable[..., Any])


def recipe(name: str) -> Callable[[F], F]:
    """Claim the README block marked `<!-- recipe: name -->` for the decorated test."""

    def claim(test: F) -> F:
        assert name not in CLAIMED, f"recipe {name!r} is claimed twice"
        CLAIMED.add(name)
        return test

    return claim


def source_of(name: str) -> str:
    """The code of the README block marked with `name` (the test fails if there is none)."""
    found = [b for b in python_blocks(README.read_text(encoding="utf-8")) if b.name == name]
    assert len(found) == 1, f"README.md has {len(found)} python blocks marked {name!r}"
    return found[0].source


def write_block(name: str, directory: Path) -> Path:
    """Save the block as `<directory>/src/<name>.py`, as a reader would save it."""
    path = directory / "src" / f"{name.replace('-', '_')}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source_of(name), encoding="utf-8")
    return path


def load(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import the block as a module (not as __main__: its entry point does not run)."""
    path = write_block(name, tmp_path)
    module_name = f"readme_{name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    return module


async def run_program(
    name: str, tmp_path: Path, env: dict[str, str] | None = None, *, expect: int = 0
) -> str:
    """Run the block as `python -W error <name>.py` with its cwd in tmp_path; its stdout."""
    path = write_block(name, tmp_path)
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-W", "error", str(path)],
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
            check=False,
        )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == expect, f"{name} exited with {done.returncode}:\n{stderr}"
    return str(done.stdout.decode())


def panel_env(panel: FakePanel) -> dict[str, str]:
    return {"PTERODACTYL_URL": panel.url, "PTERODACTYL_API_KEY": register_key(panel.api_key)}


@pytest.fixture
def configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[FakePanel], dict[str, str]]:
    """Point this process at a panel as a reader would: environment, cwd in tmp_path."""
    monkeypatch.chdir(tmp_path)

    def to(panel: FakePanel) -> dict[str, str]:
        env = panel_env(panel)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env

    return to


def sha1(data: bytes) -> str:
    return "sha1:" + hashlib.sha1(data).hexdigest()


def damaged(backup: FakeBackup) -> None:
    """Make the link host serve the backup with one byte changed (its checksum stays)."""
    body = bytearray(backup.content)
    body[len(body) // 2] ^= 0xFF
    backup.served_content = bytes(body)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port), lifespan included."""
    config = uvicorn.Config(app, lifespan="on", http="h11", ws="none", log_config=None)
    server = uvicorn.Server(config)
    stopped = anyio.Event()

    async def run(sock: socket.socket) -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    # Listening before uvicorn starts: requests wait in the backlog until the lifespan is up.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, sock)
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True  # uvicorn closes its connections, then the lifespan
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await stopped.wait()


# ------------------------------------------------------------------------- the harness


def test_every_python_block_is_run() -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no python block: the parser is broken"
    unmarked = [b.line for b in blocks if b.name is None]
    assert not unmarked, (
        f"README.md: the python blocks at lines {unmarked} have no `<!-- recipe: NAME -->` "
        "line right above them, so no test runs them"
    )
    names = [b.name for b in blocks if b.name is not None]
    assert len(names) == len(set(names)), f"README.md: recipe names used twice in {names}"
    assert set(names) <= CLAIMED, f"blocks no test runs: {sorted(set(names) - CLAIMED)}"
    assert CLAIMED <= set(names), f"tests of blocks README.md lost: {sorted(CLAIMED - set(names))}"


def test_the_parser_sees_every_kind_of_python_fence() -> None:
    markdown = (
        "<!-- recipe: one -->\n```python\nprint(1)\n```\n\n"
        "text\n\n```py\nprint(2)\n```\n"
        "- item\n\n  <!-- recipe: three -->\n  ~~~python title=x\n  if x:\n      y\n  ~~~\n"
        "```sh\nls\n```\n````python\n```\n````\n"
    )
    assert python_blocks(markdown) == [
        Block("one", 2, "print(1)\n"),
        Block(None, 8, "print(2)\n"),
        Block("three", 14, "if x:\n    y\n"),
        Block(None, 21, "```\n"),
    ]


# ------------------------------------------------------------------------- Ten lines


@recipe("ten-lines")
async def test_ten_lines_create_wait_and_download(tmp_path: Path) -> None:
    async with FakePanel(backup_duration=0.3) as panel:
        server = panel.add_server(identifier=SERVER)
        out = await run_program("ten-lines", tmp_path, panel_env(panel))
        [made] = server.backups
    # download() refuses a backup still being created: the file says wait() waited.
    assert (made.name, made.ignored_files, made.state) == ("nightly", ["*.log"], "completed")
    path = Path("backups") / f"{made.uuid}.tar.gz"
    assert (tmp_path / path).read_bytes() == made.content
    assert out.split() == [str(path), str(len(made.content)), sha1(made.content), "True"]


# ------------------------------------------------------------------------- The API


@recipe("api-tour")
async def test_the_api_tour_makes_every_call(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    configure: Callable[[FakePanel], object],
) -> None:
    async with FakePanel(dialect="pelican", backup_duration=0.2, restore_duration=0.2) as panel:
        configure(panel)
        server = panel.add_server(identifier=SERVER, name="survival")
        old = panel.add_backup(server, name="old")
        await load("api-tour", tmp_path, monkeypatch).tour()
        [made] = [b for b in server.all_backups if b is not old]
        lock_posts = [r for r in panel.api_requests() if r.path.endswith("/lock")]
        links = panel.link_requests()
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"{SERVER} survival", f"{old.uuid} old completed {len(old.content)}"]
    assert lines[2].startswith("RateLimit(limit=256, remaining=")
    assert len(lines) == 3
    # Created, waited for, downloaded (and found again by download_many), streamed, locked
    # and unlocked, renamed, restored, kept by prune, then deleted; the old one is untouched.
    assert (tmp_path / "dir" / f"{made.uuid}.tar.gz").read_bytes() == made.content
    assert [r.status for r in links] == [200, 200]
    assert [r.method for r in lock_posts] == ["POST", "POST"]
    assert (made.name, made.is_locked, made.deleted) == ("new name", False, True)
    assert server.restores == [(made.uuid, False)]
    assert not old.deleted


# ------------------------------------------------------------------------- Streaming a backup


@recipe("stream")
async def test_relay_hands_on_verified_bytes_and_holds_back_the_end_of_bad_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = load("stream", tmp_path, monkeypatch).relay
    async with FakePanel() as panel:
        register_key(panel.api_key)
        server = panel.add_server(identifier=SERVER)
        good = panel.add_backup(server, content=os.urandom(300_000), name="good")
        bad = panel.add_backup(server, content=os.urandom(300_000), name="bad")
        damaged(bad)
        async with PteroClient(panel.url, panel.api_key) as client:
            sent: list[bytes] = []

            async def send(chunk: bytes) -> None:
                sent.append(chunk)

            await relay(client, good.uuid, send)
            assert b"".join(sent) == good.content
            sent.clear()
            with pytest.raises(ChecksumMismatchError):
                await relay(client, bad.uuid, send)
            # The last chunk is held back until the hash matched: it never went out.
            assert len(b"".join(sent)) < len(bad.content)
    assert capsys.readouterr().out.splitlines() == [
        f"300000 {sha1(good.content)} good",
        f"300000 {sha1(bad.content)} bad",
    ]


# ------------------------------------------------------------------------- FastAPI, streaming


@recipe("fastapi-stream")
async def test_fastapi_archive_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configure: Callable[[FakePanel], object]
) -> None:
    async with FakePanel() as panel:
        configure(panel)
        server = panel.add_server(identifier=SERVER)
        good = panel.add_backup(server, content=os.urandom(200_000))
        bad = panel.add_backup(server, content=os.urandom(200_000))
        damaged(bad)
        creating = panel.add_backup(server, state="creating")
        failed = panel.add_backup(server, state="failed")
        busy = panel.add_server()
        restoring = panel.add_backup(busy)
        panel.start_restore(busy)
        app = load("fastapi-stream", tmp_path, monkeypatch).app
        async with serve(app) as base, aiohttp.ClientSession() as http:

            async def get(server_id: str, backup_id: str) -> tuple[int, bytes, Any]:
                url = f"{base}/servers/{server_id}/backups/{backup_id}/archive"
                async with http.get(url) as resp:
                    return resp.status, await resp.read(), resp.headers

            panel.clear_requests()
            status, body, headers = await get(SERVER, good.uuid)
            assert (status, body) == (200, good.content)
            assert headers["Content-Length"] == "200000"
            assert headers["Content-Type"] == "application/gzip"
            assert f'filename="{good.uuid}.tar.gz"' in headers["Content-Disposition"]
            # One look at the backup, then only its link: no second GET of the backup.
            paths = [r.path for r in panel.api_requests()]
            one = f"/api/client/servers/{SERVER}/backups/{good.uuid}"
            assert paths == [one, f"{one}/download"]
            # Refusals are settled before the response starts, each with its own status.
            assert (await get("not-an-id", good.uuid))[0] == 422
            assert (await get(SERVER, "not-a-uuid"))[0] == 422
            assert (await get(SERVER, str(uuid.uuid4())))[0] == 404
            assert (await get("0000beef", good.uuid))[0] == 404
            assert (await get(SERVER, creating.uuid))[0] == 409
            assert (await get(SERVER, failed.uuid))[0] == 409
            assert (await get(busy.identifier, restoring.uuid))[0] == 409
            # Wrong bytes after the headers went out: the connection is cut short.
            async with http.get(f"{base}/servers/{SERVER}/backups/{bad.uuid}/archive") as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        client = app.state.ptero
    # The lifespan closed the app's client when uvicorn stopped.
    with pytest.raises(PteroError, match="closed"):
        await client.backups(SERVER).download(good.uuid, tmp_path / "late.tar.gz")


# ------------------------------------------------------------------------- S3 copy


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, str]]]:
    """moto's S3 server with a bucket "my-backups"; a boto3 client and the environment."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="my-backups")
        yield s3, env
        # moto keeps objects and parts in temporary files until its backend is reset.
        reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=10) as answer:
            assert answer.status == 200
    finally:
        server.stop()


@recipe("s3-copy")
async def test_copy_to_s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3: tuple[Any, dict[str, str]]
) -> None:
    bucket, aws_env = s3
    async with FakePanel(backup_duration=0.2) as panel:
        server = panel.add_server(identifier=SERVER)
        # The program: a fresh backup, waited for, copied (one part).
        out = await run_program("s3-copy", tmp_path, {**aws_env, **panel_env(panel)})
        [made] = server.backups
        key = f"{SERVER}/{made.uuid}.tar.gz"
        assert out == f"s3://my-backups/{key}\n"
        assert bucket.get_object(Bucket="my-backups", Key=key)["Body"].read() == made.content
        # copy_to_s3 itself, in parts of 8 MiB; and a bad archive leaves the bucket as it was.
        copy_to_s3 = load("s3-copy", tmp_path, monkeypatch).copy_to_s3
        big = panel.add_backup(server, content=os.urandom(9 * 1024 * 1024))
        bad = panel.add_backup(server, content=os.urandom(9 * 1024 * 1024))
        damaged(bad)
        async with PteroClient(panel.url, panel.api_key) as client:
            await copy_to_s3(client, SERVER, big.uuid, "my-backups", "big.tar.gz")
            with pytest.raises(ChecksumMismatchError):
                await copy_to_s3(client, SERVER, bad.uuid, "my-backups", "bad.tar.gz")
    got = bucket.get_object(Bucket="my-backups", Key="big.tar.gz")
    assert got["Body"].read() == big.content
    assert got["ETag"].endswith('-2"')  # two parts
    listing = bucket.list_objects_v2(Bucket="my-backups")
    assert sorted(o["Key"] for o in listing["Contents"]) == ["big.tar.gz", key]
    assert not bucket.list_multipart_uploads(Bucket="my-backups").get("Uploads")


# ------------------------------------------------------------------------- Events


@recipe("events")
async def test_watch_prints_what_the_node_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    watch = load("events", tmp_path, monkeypatch).watch
    printed: list[str] = []

    async def until_printed(line: str) -> None:
        with anyio.fail_after(10):
            while line not in printed:
                printed.extend(capsys.readouterr().out.splitlines())
                await anyio.sleep(0.01)

    async with FakePanel() as panel:
        register_key(panel.api_key)
        server = panel.add_server(identifier=SERVER)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, panel.url, panel.api_key, SERVER)
            await until_printed("server is running")  # the node's first word after auth
            ready = panel.add_backup(server, state="creating")
            ready.complete()
            await until_printed(f"backup {ready.uuid} is ready ({len(ready.content)} bytes)")
            broken = panel.add_backup(server, state="creating")
            broken.fail()
            await until_printed(f"backup {broken.uuid} failed")
            panel.start_restore(server)
            panel.finish_restore(server)
            await until_printed("restore finished")
            server.power_state = "offline"
            await until_printed("server is offline")
            tg.cancel_scope.cancel()
    assert printed == [
        "server is running",
        f"backup {ready.uuid} is ready ({len(ready.content)} bytes)",
        f"backup {broken.uuid} failed",
        "restore finished",
        "server is offline",
    ]


# ------------------------------------------------------------------------- discord.py


class StandInMessage:
    """What `ctx.send` returns: records its edits."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log

    async def edit(self, *, content: str) -> None:
        self.log.append(("edit", content))


class StandInContext:
    """The part of `commands.Context` the command uses: `author` and `send`."""

    author = "alice"

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    async def send(self, content: str) -> StandInMessage:
        self.log.append(("send", content))
        return StandInMessage(self.log)


# discord.py imports the stdlib's audioop, deprecated on 3.11 and 3.12 (3.13: audioop-lts).
@pytest.mark.filterwarnings("ignore:'audioop' is deprecated:DeprecationWarning")
@recipe("discord-bot")
async def test_discord_backup_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configure: Callable[[FakePanel], object]
) -> None:
    async with FakePanel(backup_duration=0.5) as panel:
        configure(panel)
        server = panel.add_server(identifier=SERVER)
        module = load("discord-bot", tmp_path, monkeypatch)  # the bot is made, never started
        ctx = StandInContext()
        try:
            await module.backup.callback(ctx, SERVER)
        finally:
            await module.bot.close()  # closes the bot's PteroClient too
        [made] = server.backups
    # download() refuses a backup still being created: the file says the command waited.
    assert (made.name, made.state) == ("requested by alice", "completed")
    assert (tmp_path / "backups" / f"{made.uuid}.tar.gz").read_bytes() == made.content
    assert ctx.log[0] == ("send", "Creating a backup…")
    assert ("edit", "Downloading… 100%") in ctx.log
    summary = f"Saved {made.uuid}.tar.gz ({len(made.content)} bytes, {sha1(made.content)})"
    assert ctx.log[-1] == ("edit", summary)
    with pytest.raises(PteroError, match="closed"):
        await module.bot.ptero.backups(SERVER).download(made.uuid, tmp_path / "late.tar.gz")


# ------------------------------------------------------------------------- FastAPI, create


@recipe("fastapi-create")
async def test_fastapi_create_endpoint_maps_every_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configure: Callable[[FakePanel], object]
) -> None:
    async with FakePanel(backup_duration=60.0) as panel:
        configure(panel)
        server = panel.add_server(identifier=SERVER)
        full = panel.add_server(backup_limit=1)
        kept = panel.add_backup(full, locked=True)
        rotating = panel.add_server(backup_limit=1)
        oldest = panel.add_backup(rotating)
        busy = panel.add_server()
        panel.start_restore(busy)
        app = load("fastapi-create", tmp_path, monkeypatch).app
        async with serve(app) as base, aiohttp.ClientSession() as http:

            async def create(server_id: str) -> tuple[int, Any]:
                async with http.post(f"{base}/servers/{server_id}/backups") as resp:
                    return resp.status, await resp.json()

            status, body = await create(SERVER)
            assert status == 202
            assert body == {"uuid": server.backups[0].uuid, "state": "creating"}
            assert (await create(SERVER))[0] == 202
            status, body = await create("not-an-id")
            assert status == 422
            assert "invalid server id" in body["detail"]
            assert await create("0000beef") == (404, {"detail": "no such server"})
            status, body = await create(full.identifier)
            assert status == 409
            assert "nothing can be rotated" in body["detail"]
            assert (await create(rotating.identifier))[0] == 202
            assert await create(busy.identifier) == (
                409,
                {"detail": "the server is busy: try again later"},
            )
            # The panel's create throttle: 2 per server per 10 minutes.
            status, body = await create(SERVER)
            assert status == 429
            assert "try again later" in body["detail"]
    assert len(server.backups) == 2
    assert [b.uuid for b in full.backups] == [kept.uuid]
    assert oldest.deleted
    assert len(rotating.backups) == 1


# ------------------------------------------------------------------------- Bulk download


@recipe("bulk-download")
async def test_bulk_download_of_every_server(tmp_path: Path) -> None:
    async with FakePanel() as panel:
        one = panel.add_server(identifier=SERVER)
        two = panel.add_server()
        wanted = [panel.add_backup(one), panel.add_backup(one), panel.add_backup(two)]
        panel.add_backup(one, state="failed")
        panel.add_backup(two, state="creating")
        bad = panel.add_backup(two)
        damaged(bad)
        out = await run_program("bulk-download", tmp_path, panel_env(panel))
    # One line per completed backup (a DownloadError goes on with one indented line per attempt).
    lines = sorted(line for line in out.splitlines() if not line.startswith(" "))
    assert [line.split(" ", 1)[0] for line in lines] == sorted(b.uuid for b in [*wanted, bad])
    assert sorted(f"{b.uuid} ok" for b in wanted) == [line for line in lines if "ok" in line]
    [failure] = [line for line in lines if bad.uuid in line]
    assert failure.startswith(f"{bad.uuid} failed: backup {bad.uuid}")
    assert "attempt 2: checksum mismatch" in out
    mirror = tmp_path / "mirror"
    assert sorted(p.name for p in mirror.iterdir()) == sorted(f"{b.uuid}.tar.gz" for b in wanted)
    for backup in wanted:
        assert (mirror / f"{backup.uuid}.tar.gz").read_bytes() == backup.content


# ------------------------------------------------------------------------- Your own transport


@recipe("transport")
async def test_recording_transport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load("transport", tmp_path, monkeypatch)
    async with FakePanel() as panel:
        register_key(panel.api_key)
        server = panel.add_server(identifier=SERVER)
        made = panel.add_backup(server)
        panel.inject(kind="status", status=503, method="GET", path="/backups$")
        panel.inject(kind="stall", delay=2.0, method="GET", path="/backups$")
        # As the README says: PteroClient(url, key, transport=Recording(AiohttpTransport())).
        recording = module.Recording(module.AiohttpTransport())
        assert isinstance(recording.inner, AiohttpTransport)
        client = module.PteroClient(panel.url, panel.api_key, transport=recording, timeout=0.3)
        async with client:
            assert [b.uuid async for b in client.backups(SERVER).list()] == [made.uuid]
    url = f"{panel.url}/api/client/servers/{SERVER}/backups"
    # A 503, a request with no answer in time (-1), then the retry that worked.
    assert [(method, u.split("?")[0], status) for _, method, u, status in recording.log] == [
        ("GET", url, 503),
        ("GET", url, -1),
        ("GET", url, 200),
    ]


# ------------------------------------------------------------------------- FakePanel


@recipe("fakepanel")
async def test_the_fakepanel_example_breaks_the_first_get(tmp_path: Path) -> None:
    out = await run_program("fakepanel", tmp_path)
    first, *requests = out.splitlines()
    [file] = (tmp_path / "out").iterdir()
    assert first == f"{Path('out') / file.name} 2 True"
    assert file.stat().st_size == 64 * 1024
    link_gets = [line for line in requests if line.startswith("link GET")]
    assert len(link_gets) == 2
    assert link_gets[0].endswith(" drop")  # the scripted fault fired on the first GET
    assert link_gets[1].endswith(" None")
