"""Smoke tests of ptero_backups_async.testing.FakePanel, with a raw aiohttp client."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ptero_backups_async.testing import DownloadFault, FakePanel

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def hdrs(
    panel: FakePanel, key: str | None = None, accept: str = "application/json"
) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or panel.api_key}", "Accept": accept}


async def call(
    http: aiohttp.ClientSession,
    panel: FakePanel,
    method: str,
    path: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(
        method,
        f"{panel.url}/api/client{path}",
        json=json,
        headers=headers if headers is not None else hdrs(panel),
        params=params,
        allow_redirects=False,
    ) as resp:
        raw = await resp.read()
        body: Any = None
        if raw and "json" in resp.headers.get("Content-Type", ""):
            body = await resp.json()
        elif raw:
            body = raw
        return resp.status, body, resp


async def test_auth(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        srv = panel.add_server()
        assert panel.api_key.startswith("ptlc_")
        assert len(panel.api_key) == 48
        path = f"/servers/{srv.identifier}/backups"
        status, body, _ = await call(http, panel, "GET", path, headers=hdrs(panel, "ptlc_bad"))
        assert status == 401
        assert body["errors"][0]["code"] == "AuthenticationException"
        assert body["errors"][0]["status"] == "401"
        status, body, resp = await call(
            http, panel, "GET", path, headers=hdrs(panel, "ptlc_bad", accept="text/html")
        )
        assert status == 302
        assert resp.headers["Location"].endswith("/auth/login")
        status, body, _ = await call(
            http, panel, "GET", path, headers={"Accept": "application/json"}
        )
        assert status == 401
        status, body, _ = await call(http, panel, "GET", path, headers=hdrs(panel, "ptla_x"))
        assert status == 403
        assert body["errors"][0]["code"] == "AccessDeniedHttpException"
        status, body, resp = await call(http, panel, "GET", path)
        assert status == 200
        assert resp.headers["X-RateLimit-Limit"] == "720"
        assert "pterodactyl_session=" in resp.headers["Set-Cookie"]
        # by uuid as well; a server of another key is 404
        assert (await call(http, panel, "GET", f"/servers/{srv.uuid}/backups"))[0] == 200
        other = panel.add_server(owner_key="ptlc_other")
        assert (await call(http, panel, "GET", f"/servers/{other.identifier}/backups"))[0] == 404
        status, body, _ = await call(http, panel, "GET", "")
        assert [s["attributes"]["uuid"] for s in body["data"]] == [srv.uuid]
    async with FakePanel(dialect="reference") as ref:
        ref.add_server()
        status, body, _ = await call(http, ref, "GET", "", headers=hdrs(ref, "ptlc_bad"))
        assert body["errors"][0]["code"] == "InvalidCredentialsException"
    async with FakePanel(dialect="pelican") as pel:
        assert pel.api_key.startswith("pacc_")
        status, body, _ = await call(http, pel, "GET", "", headers=hdrs(pel, "ptlc_bad", "*/*"))
        assert status == 302


async def test_listing_pages_and_prefix(http: aiohttp.ClientSession) -> None:
    async with FakePanel(path_prefix="/panel") as panel:
        assert panel.url.endswith("/panel")
        srv = panel.add_server()
        backups = [panel.add_backup(srv, content=b"x" * 10, name=f"b{i}") for i in range(120)]
        panel.add_backup(srv, state="failed")
        panel.add_backup(srv, state="creating")
        seen: list[str] = []
        counts = []
        for page in (1, 2, 3):
            status, body, _ = await call(
                http,
                panel,
                "GET",
                f"/servers/{srv.identifier}/backups",
                params={"page": str(page), "per_page": "50"},
            )
            assert status == 200
            counts.append(len(body["data"]))
            seen += [b["attributes"]["uuid"] for b in body["data"]]
            assert body["meta"]["backup_count"] == 121
            pag = body["meta"]["pagination"]
            assert pag["total"] == 122
            assert pag["total_pages"] == 3
            assert pag["per_page"] == 50
        assert counts == [50, 50, 22]
        assert seen[:120] == [b.uuid for b in backups]
        assert "next" not in pag["links"]
        assert "previous" in pag["links"]
        status, body, _ = await call(
            http, panel, "GET", f"/servers/{srv.identifier}/backups", params={"per_page": "100"}
        )
        assert body["meta"]["pagination"]["per_page"] == 50
        assert len(body["data"]) == 50
        assert body["meta"]["pagination"]["links"]["next"].startswith(panel.url)
        status, body, _ = await call(
            http, panel, "GET", f"/servers/{srv.identifier}/backups", params={"page": "9"}
        )
        assert body["data"] == []
        status, body, _ = await call(http, panel, "GET", f"/servers/{srv.identifier}/backups")
        assert len(body["data"]) == 20
        attrs = body["data"][0]["attributes"]
        assert attrs["checksum"] == "sha1:" + hashlib.sha1(b"x" * 10).hexdigest()
        assert attrs["bytes"] == 10
        assert attrs["created_at"].endswith("+00:00")
        assert "is_scheduled" not in attrs
        # the prefix is required
        async with http.get(
            panel.url.removesuffix("/panel") + "/api/client", headers=hdrs(panel)
        ) as resp:
            assert resp.status == 404
        assert all(r.path.startswith("/panel/") for r in panel.api_requests()[:3])


async def test_reference_listing_format(http: aiohttp.ClientSession) -> None:
    async with FakePanel(dialect="reference") as panel:
        srv = panel.add_server()
        panel.add_backup(srv, content=b"abc")
        panel.add_backup(srv, state="creating")
        panel.add_backup(srv, state="failed")
        _, body, _ = await call(http, panel, "GET", f"/servers/{srv.identifier}/backups")
        assert "backup_count" not in body["meta"]
        done, creating, failed = (b["attributes"] for b in body["data"])
        assert done["sha256_hash"] == hashlib.sha256(b"abc").hexdigest()
        assert "checksum" not in done
        assert creating["is_successful"] is None
        assert creating["sha256_hash"] is None
        assert failed["is_successful"] is False
        assert failed["completed_at"] is None


async def test_create_throttle_limit_and_completion(http: aiohttp.ClientSession) -> None:
    async with FakePanel(backup_duration=0.2) as panel:
        srv = panel.add_server(backup_limit=3)
        path = f"/servers/{srv.identifier}/backups"
        status, body, _ = await call(
            http, panel, "POST", path, json={"ignored": "*.log\ncache/*", "is_locked": 1}
        )
        assert status == 200
        attrs = body["attributes"]
        assert attrs["name"].startswith("Backup at ")
        assert attrs["completed_at"] is None
        assert attrs["is_successful"] is False
        assert attrs["checksum"] is None
        assert attrs["bytes"] == 0
        assert attrs["ignored_files"] == ["*.log", "cache/*"]
        assert attrs["is_locked"] is True
        uuid = attrs["uuid"]
        await asyncio.sleep(0.25)
        _, body, _ = await call(http, panel, "GET", f"{path}/{uuid}")
        content = panel.backup(uuid).content
        assert body["attributes"]["checksum"] == "sha1:" + hashlib.sha1(content).hexdigest()
        assert body["attributes"]["is_successful"] is True
        assert (await call(http, panel, "POST", path, json={"name": "two"}))[0] == 200
        status, body, resp = await call(http, panel, "POST", path, json={})
        assert status == 429
        assert body["errors"][0]["code"] == "TooManyRequestsHttpException"
        assert 590 <= int(resp.headers["Retry-After"]) <= 600
        status, body, _ = await call(http, panel, "POST", path, json={"ignored": ["a"]})
        assert status == 422
        assert body["errors"][0]["meta"] == {"source_field": "ignored", "rule": "string"}
    async with FakePanel(create_throttle=None) as panel:
        srv = panel.add_server(backup_limit=1)
        panel.fail_next_backup(srv)
        path = f"/servers/{srv.identifier}/backups"
        _, body, _ = await call(http, panel, "POST", path, json={})
        assert panel.backup(body["attributes"]["uuid"]).state == "failed"
        assert (await call(http, panel, "POST", path, json={}))[0] == 200
        status, body, _ = await call(http, panel, "POST", path, json={})
        assert status == 400
        assert body["errors"][0]["code"] == "TooManyBackupsException"


async def test_lock_toggle_both_dialects(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        srv = panel.add_server()
        b = panel.add_backup(srv)
        path = f"/servers/{srv.identifier}/backups/{b.uuid}/lock"
        status, body, _ = await call(http, panel, "POST", path)
        assert status == 200
        assert body["attributes"]["is_locked"] is True
        status, body, _ = await call(http, panel, "POST", path)
        assert body["attributes"]["is_locked"] is False
        assert (await call(http, panel, "GET", path))[0] == 405
    async with FakePanel(dialect="reference") as panel:
        srv = panel.add_server()
        b = panel.add_backup(srv)
        status, body, _ = await call(
            http, panel, "POST", f"/servers/{srv.identifier}/backups/{b.uuid}/lock"
        )
        assert status == 204
        assert body is None
        assert b.is_locked


async def test_restore(http: aiohttp.ClientSession) -> None:
    async with FakePanel(restore_duration=0.3) as panel:
        srv = panel.add_server()
        b = panel.add_backup(srv)
        path = f"/servers/{srv.identifier}/backups/{b.uuid}/restore"
        status, body, _ = await call(http, panel, "POST", path, json={})
        assert status == 422
        assert body["errors"][0]["meta"] == {"source_field": "truncate", "rule": "required"}
        status, body, _ = await call(http, panel, "POST", path, json={"truncate": "yes"})
        assert body["errors"][0]["meta"]["rule"] == "boolean"
        status, _, _ = await call(http, panel, "POST", path, json={"truncate": False})
        assert status == 204
        assert srv.restores == [(b.uuid, False)]
        assert srv.status == "restoring_backup"
        for method, p in [
            ("GET", f"/servers/{srv.identifier}/backups"),
            ("GET", f"/servers/{srv.identifier}/backups/{b.uuid}"),
            ("POST", f"/servers/{srv.identifier}/backups"),
        ]:
            status, body, _ = await call(http, panel, method, p, json={})
            assert status == 409
            assert body["errors"][0]["code"] == "ServerStateConflictException"
        _, body, _ = await call(http, panel, "GET", "")
        assert body["data"][0]["attributes"]["status"] == "restoring_backup"
        await asyncio.sleep(0.35)
        assert (await call(http, panel, "GET", f"/servers/{srv.identifier}/backups"))[0] == 200
        creating = panel.add_backup(srv, state="creating")
        status, body, _ = await call(
            http,
            panel,
            "POST",
            f"/servers/{srv.identifier}/backups/{creating.uuid}/restore",
            json={"truncate": True},
        )
        assert status == 400
        assert body["errors"][0]["code"] == "BadRequestHttpException"
    async with FakePanel(dialect="reference", restore_duration=0) as panel:
        srv = panel.add_server()
        b = panel.add_backup(srv)
        path = f"/servers/{srv.identifier}/backups/{b.uuid}/restore"
        assert (await call(http, panel, "POST", path))[0] == 202
        assert srv.restores == [(b.uuid, True)]
    async with FakePanel(dialect="pelican", restore_duration=0) as panel:
        srv = panel.add_server()
        b = panel.add_backup(srv)
        path = f"/servers/{srv.identifier}/backups/{b.uuid}/restore"
        for _ in range(3):
            assert (await call(http, panel, "POST", path, json={"truncate": 0}))[0] == 204
        status, _, resp = await call(http, panel, "POST", path, json={"truncate": 0})
        assert status == 429
        assert int(resp.headers["Retry-After"]) > 0


async def test_delete_and_rename(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        srv = panel.add_server()
        locked = panel.add_backup(srv, locked=True)
        plain = panel.add_backup(srv)
        base = f"/servers/{srv.identifier}/backups"
        status, body, _ = await call(http, panel, "DELETE", f"{base}/{locked.uuid}")
        assert status == 400
        assert body["errors"][0]["code"] == "BackupLockedException"
        assert (await call(http, panel, "DELETE", f"{base}/{plain.uuid}"))[0] == 204
        assert (await call(http, panel, "GET", f"{base}/{plain.uuid}"))[0] == 404
        assert plain.deleted
        assert srv.backups == [locked]
        status, body, _ = await call(
            http, panel, "PUT", f"{base}/{locked.uuid}/rename", json={"name": "x"}
        )
        assert status == 404
        assert body["errors"][0]["code"] == "NotFoundHttpException"
    async with FakePanel(dialect="pelican") as panel:
        srv = panel.add_server()
        b = panel.add_backup(srv)
        status, body, _ = await call(
            http,
            panel,
            "PUT",
            f"/servers/{srv.identifier}/backups/{b.uuid}/rename",
            json={"name": "renamed"},
        )
        assert status == 200
        assert body["attributes"]["name"] == "renamed"
        assert body["attributes"]["is_scheduled"] is False
    async with FakePanel(dialect="reference") as panel:
        srv = panel.add_server()
        b = panel.add_backup(srv, locked=True)
        c = panel.add_backup(srv, state="creating")
        base = f"/servers/{srv.identifier}/backups"
        _, body, _ = await call(http, panel, "DELETE", f"{base}/{b.uuid}")
        assert body["errors"][0]["code"] == "BackupIsLockedException"
        assert (await call(http, panel, "DELETE", f"{base}/{c.uuid}"))[0] == 409
        status, body, _ = await call(http, panel, "GET", f"{base}/{c.uuid}/download")
        assert status == 400
        assert body["errors"][0]["code"] == "BackupNotCompletedException"


async def link(http: aiohttp.ClientSession, panel: FakePanel, backup_uuid: str) -> str:
    srv = panel.backup(backup_uuid).server
    _, body, _ = await call(
        http, panel, "GET", f"/servers/{srv.identifier}/backups/{backup_uuid}/download"
    )
    assert body["object"] == "signed_url"
    url: str = body["attributes"]["url"]
    return url


async def test_wings_links(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        srv = panel.add_server()
        content = bytes(range(256)) * 4000
        b = panel.add_backup(srv, content=content)
        url = await link(http, panel, b.uuid)
        assert url.startswith(panel.link_url + "/download/backup?token=")
        async with http.get(url, headers={"Range": "bytes=10-"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(content))
            assert resp.headers["Content-Type"] == "application/octet-stream"
            assert resp.headers["Content-Disposition"] == f'attachment; filename="{b.uuid}.tar.gz"'
            assert "Content-Encoding" not in resp.headers
            assert await resp.read() == content
        async with http.get(url) as resp:
            assert resp.status == 404
        async with http.head(await link(http, panel, b.uuid)) as resp:
            assert resp.status == 405
        recs = panel.link_requests()
        assert [r.status for r in recs] == [200, 404, 405]
        assert recs[0].backup_uuid == b.uuid
        assert recs[0].headers["range"] == "bytes=10-"
        assert all("authorization" not in r.headers and "cookie" not in r.headers for r in recs)
        assert b.download_attempts == 2
        assert b.links_issued == 2
    async with FakePanel(link_ttl=0.05) as panel:
        b = panel.add_backup(panel.add_server())
        url = await link(http, panel, b.uuid)
        await asyncio.sleep(0.1)
        async with http.get(url) as resp:
            assert resp.status == 500


async def test_s3_links(http: aiohttp.ClientSession) -> None:
    async with FakePanel(storage="s3") as panel:
        srv = panel.add_server()
        content = b"0123456789" * 1000
        b = panel.add_backup(srv, content=content)
        url = await link(http, panel, b.uuid)
        assert url.startswith(f"{panel.link_url}/backups/{srv.uuid}/{b.uuid}.tar.gz?X-Amz-")
        async with http.get(url, headers={"Range": "bytes=100-"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 100-{len(content) - 1}/{len(content)}"
            assert resp.headers["Content-Length"] == str(len(content) - 100)
            assert resp.headers["ETag"]
            assert await resp.read() == content[100:]
        async with http.get(url, headers={"Range": "bytes=5-9"}) as resp:
            assert resp.status == 206
            assert await resp.read() == b"56789"
        async with http.get(url, headers={"Range": f"bytes={len(content)}-"}) as resp:
            assert resp.status == 416
        async with http.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == content
        async with http.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")) as resp:
            assert resp.status == 403
    async with FakePanel(storage="s3", link_ttl=0.05) as panel:
        b = panel.add_backup(panel.add_server())
        url = await link(http, panel, b.uuid)
        await asyncio.sleep(0.1)
        async with http.get(url) as resp:
            assert resp.status == 403
            assert b"<Code>AccessDenied</Code>" in await resp.read()


@pytest.mark.parametrize("storage", ["wings", "s3"])
async def test_download_faults(http: aiohttp.ClientSession, storage: str) -> None:
    async with FakePanel(storage=storage) as panel:  # type: ignore[arg-type]
        content = bytes(range(256)) * 8192  # 2 MiB
        b = panel.add_backup(panel.add_server(), content=content)
        panel.script_download(
            b,
            DownloadFault.drop_after(300_000),
            DownloadFault.corrupt(1_000_000),
            DownloadFault.stall(1000, 0.3),
            DownloadFault.status(503, retry_after=2),
            DownloadFault.expired(),
            None,
        )
        async with http.get(await link(http, panel, b.uuid)) as resp:
            assert resp.headers["Content-Length"] == str(len(content))
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()

        async with http.get(await link(http, panel, b.uuid)) as resp:
            got = await resp.read()
        assert len(got) == len(content)
        assert got != content
        assert [i for i in range(len(got)) if got[i] != content[i]] == [1_000_000]

        start = time.monotonic()
        async with http.get(await link(http, panel, b.uuid)) as resp:
            assert await resp.read() == content
        assert time.monotonic() - start >= 0.3

        async with http.get(await link(http, panel, b.uuid)) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "2"

        async with http.get(await link(http, panel, b.uuid)) as resp:
            assert resp.status == (500 if storage == "wings" else 403)

        start = time.monotonic()
        async with http.get(await link(http, panel, b.uuid)) as resp:
            assert await resp.read() == content
        assert time.monotonic() - start < 1.0
        assert [r.fault for r in panel.link_requests()] == [
            "drop",
            "corrupt",
            "stall",
            "status",
            "expired",
            None,
        ]
        assert b.download_attempts == 6


async def test_stall_does_not_block_close(http: aiohttp.ClientSession) -> None:
    panel = FakePanel()
    await panel.start()
    b = panel.add_backup(panel.add_server(), content=b"z" * 100_000)
    panel.script_download(b, DownloadFault.stall(10, 30.0))
    url = await link(http, panel, b.uuid)

    async def fetch() -> None:
        async with http.get(url) as resp:
            await resp.read()

    task = asyncio.ensure_future(fetch())
    await asyncio.sleep(0.1)
    start = time.monotonic()
    await panel.aclose()
    assert time.monotonic() - start < 1.5
    with pytest.raises(aiohttp.ClientError):
        await task


async def test_inject(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        srv = panel.add_server()
        path = f"/servers/{srv.identifier}/backups"
        fault = panel.inject(path=r"/backups$", status=502, times=2)
        for _ in range(2):
            status, body, _ = await call(http, panel, "GET", path)
            assert status == 502
            assert body["errors"][0]["code"] == "DaemonConnectionException"
        assert fault.remaining == 0
        assert fault.used == 2
        assert (await call(http, panel, "GET", path))[0] == 200

        panel.inject(method="GET", kind="html", status=503)
        status, body, resp = await call(http, panel, "GET", path)
        assert status == 503
        assert resp.headers["Content-Type"].startswith("text/html")

        # aiohttp itself retries an idempotent request once after a reset: reset twice
        panel.inject(kind="reset", times=2)
        with pytest.raises(aiohttp.ClientConnectionError):
            await call(http, panel, "GET", path)
        assert [(r.status, r.fault) for r in panel.api_requests()[-2:]] == [
            (0, "inject:reset"),
            (0, "inject:reset"),
        ]
        panel.inject(kind="reset", method="POST")
        with pytest.raises(aiohttp.ClientConnectionError):
            await call(http, panel, "POST", path, json={})

        panel.inject(kind="json", status=200, json_body={"nope": True})
        assert (await call(http, panel, "GET", path))[1] == {"nope": True}
        panel.inject(kind="empty", status=200)
        assert (await call(http, panel, "GET", path))[1] is None
        panel.inject(kind="redirect")
        status, _, resp = await call(http, panel, "GET", path)
        assert status == 302
        assert resp.headers["Location"].endswith("/auth/login")
        panel.inject(kind="stall", delay=0.2)
        start = time.monotonic()
        assert (await call(http, panel, "GET", path))[0] == 200
        assert time.monotonic() - start >= 0.2
        # injected faults bypass auth
        panel.inject(status=500, body="oops")
        status, body, _ = await call(http, panel, "GET", path, headers={})
        assert status == 500
        assert body == b"oops"


async def test_rate_limit(http: aiohttp.ClientSession) -> None:
    async with FakePanel(rate_limit=3, rate_limit_period=0.5) as panel:
        srv = panel.add_server()
        path = f"/servers/{srv.identifier}/backups"
        remaining = []
        for _ in range(3):
            status, _, resp = await call(http, panel, "GET", path)
            assert status == 200
            assert resp.headers["X-RateLimit-Limit"] == "3"
            remaining.append(resp.headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        status, body, resp = await call(http, panel, "GET", path)
        assert status == 429
        assert body["errors"][0]["code"] == "ThrottleRequestsException"
        assert resp.headers["Retry-After"] == "1"
        assert int(resp.headers["X-RateLimit-Reset"]) >= int(time.time())
        await asyncio.sleep(0.5)
        assert (await call(http, panel, "GET", path))[0] == 200
