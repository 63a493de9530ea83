"""Helpers of the reliability tests: resource counters, a recording sleep, fault proxies.

Everything here works on real loopback sockets and reads the process's state from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

import anyio
import anyio.lowlevel
from aiohttp import web

from ptero_backups_async import AiohttpTransport

__all__ = [
    "HttpFaultProxy",
    "LinkHost",
    "RecordingSleep",
    "TlsRelay",
    "established_connections",
    "fast_retries",
    "open_fds",
    "rss_kib",
    "serve",
    "settle",
]

_TCP_ESTABLISHED = "01"


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def established_connections(remote_ports: Collection[int] | None = None) -> int:
    """ESTABLISHED TCP sockets owned by this process (by inode), to ``remote_ports`` if given.

    /proc/self/net/tcp lists every socket of the network namespace; only those whose inode is
    behind one of this process's file descriptors count.
    """
    mine = _socket_inodes()
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:  # pragma: no cover - kernels without IPv6
            continue
        for line in lines:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state != _TCP_ESTABLISHED or inode not in mine:
                continue
            port = int(remote.rsplit(":", 1)[1], 16)
            if remote_ports is None or port in remote_ports:
                count += 1
    return count


def rss_kib() -> int:
    """The resident set size of this process now (VmRSS), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")  # pragma: no cover


async def settle(predicate: Callable[[], bool], within: float = 3.0) -> bool:
    """Poll ``predicate`` until it holds (sockets close a loop turn or two after ``close()``)."""
    deadline = time.monotonic() + within
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return predicate()
        await anyio.sleep(0.02)


class RecordingSleep:
    """The transport's injectable sleep: records each requested delay and yields instead.

    Backoff and ``Retry-After`` are then asserted on the recorded values instead of waited
    for, which keeps the fault matrix fast.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.hooks: list[Callable[[], Awaitable[None]]] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        while self.hooks:
            await self.hooks.pop(0)()
        await anyio.lowlevel.checkpoint()


def fast_retries() -> tuple[AiohttpTransport, RecordingSleep]:
    """An aiohttp transport whose retry/pacing sleep is a ``RecordingSleep``, and the sleep.

    Pass the transport as ``PteroClient(..., transport=...)``.
    """
    sleep = RecordingSleep()
    return AiohttpTransport(sleep=sleep), sleep


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Run an aiohttp app on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class LinkHost:
    """A stand-in node or bucket: serves one file at ``/file`` with the given headers."""

    def __init__(self, content: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.content = content
        self.headers = dict(headers or {})
        self.seen_headers: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_get("/file", self._file)

    async def _file(self, request: web.Request) -> web.Response:
        self.seen_headers.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(
            body=self.content,
            headers={"Content-Type": "application/octet-stream", **self.headers},
        )


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashing proxy or node would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_message(
    reader: asyncio.StreamReader, *, response: bool, method: str = "GET"
) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message (head, body) framed by Content-Length (all FakePanel sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        raise NotImplementedError("chunked messages are not used by FakePanel")
    if response:
        status = int(lines[0].split()[1])
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length = 0
    body = await reader.readexactly(length) if length else b""
    return head, body


class HttpFaultProxy:
    """An HTTP/1.1 proxy in front of a FakePanel that can break exchanges the panel completed.

    - ``cut(method, path)``: forward the matching request, let the panel answer it in full,
      then pass on only part of the answer (half the body, or half the head when there is
      no body) and reset the connection: "reset mid-response", after the panel acted.
    - ``refuse()``: until ``open()`` is awaited the port is bound but not listening, so
      connecting is refused: "connection refused" with a port that comes back.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rules: list[list[Any]] = []  # [method, compiled path, times left]
        self.cuts = 0
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, listening: bool = True) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self._server = await asyncio.start_server(self._handle, sock=sock, start_serving=False)
        if listening:
            await self.open()

    async def open(self) -> None:
        """Start accepting connections (the refused port comes up)."""
        assert self._server is not None
        await self._server.start_serving()

    def cut(self, method: str, path: str, times: int = 1) -> None:
        self.rules.append([method.upper(), re.compile(path), times])

    def _take_rule(self, method: str, path: str) -> bool:
        for rule in self.rules:
            if rule[2] > 0 and rule[0] == method and rule[1].search(path):
                rule[2] -= 1
                return True
        return False

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()
            self._server = None
        elif self._sock is not None:  # pragma: no cover - never started
            self._sock.close()

    async def __aenter__(self) -> HttpFaultProxy:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        up_reader: asyncio.StreamReader | None = None
        up_writer: asyncio.StreamWriter | None = None
        try:
            while True:
                try:
                    head, body = await _read_message(reader, response=False)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, target = head.split(b" ", 2)[:2]
                path = target.decode("latin-1").split("?", 1)[0]
                if up_writer is None:
                    up_reader, up_writer = await asyncio.open_connection(
                        "127.0.0.1", self.upstream_port
                    )
                assert up_reader is not None
                up_writer.write(head + body)
                await up_writer.drain()
                try:
                    r_head, r_body = await _read_message(
                        up_reader, response=True, method=method.decode()
                    )
                except (asyncio.IncompleteReadError, ConnectionError):
                    _abort(writer)
                    return
                if self._take_rule(method.decode(), path):
                    self.cuts += 1
                    partial = (
                        r_head + r_body[: len(r_body) // 2]
                        if r_body
                        else r_head[: len(r_head) // 2]
                    )
                    writer.write(partial)
                    await writer.drain()
                    await asyncio.sleep(0.02)  # let the client read what arrived
                    _abort(writer)
                    return
                writer.write(r_head + r_body)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._tasks.discard(task)
            if up_writer is not None:
                up_writer.close()
            if not writer.transport.is_closing():
                writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        dst.close()


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    """Pipe a connection to 127.0.0.1:port both ways until either side closes."""
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        writer.transport.abort()
        return
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


class TlsRelay:
    """A TLS front for a plain loopback server; counts TCP connections and TLS handshakes.

    Two layers: a plain TCP listener (the address clients use) counts connections and passes
    the bytes to an asyncio TLS server, whose callback runs only after a handshake succeeded.
    """

    def __init__(self, upstream_port: int, context: ssl.SSLContext) -> None:
        self.upstream_port = upstream_port
        self.context = context
        self.connections = 0
        self.handshakes = 0
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self._servers[-1].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TlsRelay:
        tls = await asyncio.start_server(self._tls, "127.0.0.1", 0, ssl=self.context)
        self._servers.append(tls)
        self._tls_port = int(tls.sockets[0].getsockname()[1])
        self._servers.append(await asyncio.start_server(self._plain, "127.0.0.1", 0))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._servers:
            await server.wait_closed()

    async def _tracked(self, coro: Awaitable[None]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await coro
        finally:
            self._tasks.discard(task)

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self._tracked(_splice(reader, writer, self._tls_port))

    async def _tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        await self._tracked(_splice(reader, writer, self.upstream_port))
