"""Fake panel + link host for the download benchmark: `python _fileserver.py CONFIG.json`.

Serves the two panel routes a download needs and the archives themselves (``FileResponse``,
which uses sendfile) on 127.0.0.1. CONFIG maps backup uuid → {server, path, bytes, sha1}.
Prints the port it bound on its first stdout line, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import socket
import sys
from typing import Any

from aiohttp import web

Config = dict[str, dict[str, Any]]


def make_app(config: Config) -> web.Application:
    files = {
        pathlib.Path(entry["path"]).name: pathlib.Path(entry["path"]) for entry in config.values()
    }

    def lookup(request: web.Request) -> tuple[str, dict[str, Any]]:
        uuid = request.match_info["uuid"]
        entry = config.get(uuid)
        if entry is None or entry["server"] != request.match_info["server"]:
            raise web.HTTPNotFound()
        return uuid, entry

    async def backup(request: web.Request) -> web.Response:
        uuid, entry = lookup(request)
        return web.json_response(
            {
                "object": "backup",
                "attributes": {
                    "uuid": uuid,
                    "name": pathlib.Path(entry["path"]).name,
                    "ignored_files": [],
                    "checksum": f"sha1:{entry['sha1']}",
                    "bytes": entry["bytes"],
                    "created_at": "2024-01-01T00:00:00+00:00",
                    "completed_at": "2024-01-01T00:01:00+00:00",
                    "is_successful": True,
                    "is_locked": False,
                },
            }
        )

    async def download(request: web.Request) -> web.Response:
        _, entry = lookup(request)
        host = request.host  # "127.0.0.1:PORT", as the client addressed us
        url = f"http://{host}/file/{pathlib.Path(entry['path']).name}"
        return web.json_response({"object": "signed_url", "attributes": {"url": url}})

    async def file(request: web.Request) -> web.FileResponse:
        path = files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    base = "/api/client/servers/{server}/backups/{uuid}"
    app.router.add_get(base, backup)
    app.router.add_get(base + "/download", download)
    app.router.add_get("/file/{name}", file)
    return app


async def serve(config: Config) -> None:
    runner = web.AppRunner(make_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    config: Config = json.loads(pathlib.Path(sys.argv[1]).read_text())
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
