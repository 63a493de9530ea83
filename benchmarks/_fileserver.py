"""Fake panel + link host for the download benchmark: `python _fileserver.py CONFIG.json`.

Serves the two panel routes a download needs and the archives themselves (``FileResponse``,
which uses sendfile) on 127.0.0.1. CONFIG maps backup uuid → {server, path, bytes, sha1}.
Prints the port it bound on its first stdout line, then serves until SIGTERM/SIGINT.

``--link-base URL`` (e.g. ``http://127.0.0.1:8081``): the signed URLs point at
``URL/file/<name>`` on another link host (``bench_download.py --segmented`` runs nginx there)
instead of at this server's own ``/file/`` route.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import signal
import socket
from typing import Any

from aiohttp import web

Config = dict[str, dict[str, Any]]


def make_app(config: Config, link_base: str | None = None) -> web.Application:
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
        # By default "http://127.0.0.1:PORT", as the client addressed us.
        base = link_base or f"http://{request.host}"
        url = f"{base}/file/{pathlib.Path(entry['path']).name}"
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


async def serve(config: Config, link_base: str | None) -> None:
    runner = web.AppRunner(make_app(config, link_base), access_log=None, handle_signals=False)
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
    p = argparse.ArgumentParser(description="fake panel + link host for bench_download.py")
    p.add_argument("config", type=pathlib.Path, help="JSON: uuid -> {server, path, bytes, sha1}")
    p.add_argument("--link-base", help="signed URLs point at LINK_BASE/file/<name> (default: here)")
    args = p.parse_args()
    config: Config = json.loads(args.config.read_text())
    asyncio.run(serve(config, args.link_base.rstrip("/") if args.link_base else None))


if __name__ == "__main__":
    main()
