"""FakePanel's node websocket (docs/wire.md, "Events"), driven by a plain aiohttp client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from ptero_backups_async.testing import FakePanel, FakeServer, SocketFault

pytestmark = pytest.mark.anyio

#: Upper bound for any single frame the tests wait for.
WAIT = 3.0
#: How long "nothing arrives" is watched for.
QUIET = 0.3

WS = aiohttp.ClientWebSocketResponse[bool]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def headers(panel: FakePanel) -> dict[str, str]:
    return {"Authorization": f"Bearer {panel.api_key}", "Accept": "application/json"}


async def api(
    http: aiohttp.ClientSession, panel: FakePanel, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(
        method, f"{panel.url}/api/client{path}", headers=headers(panel), json=body
    ) as resp:
        raw = await resp.read()
        return resp.status, json.loads(raw) if raw else None


async def ws_token(
    http: aiohttp.ClientSession, panel: FakePanel, server: FakeServer
) -> tuple[str, str]:
    status, body = await api(http, panel, "GET", f"/servers/{server.identifier}/websocket")
    assert status == 200, body
    return body["data"]["token"], body["data"]["socket"]


def part(token: str, index: int) -> dict[str, Any]:
    raw = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return decoded


def origin(panel: FakePanel) -> str:
    parts = urlsplit(panel.url)
    return f"{parts.scheme}://{parts.netloc}"


async def connect(
    http: aiohttp.ClientSession, panel: FakePanel, socket: str, *, origin_header: str | None = ""
) -> WS:
    hdrs = {} if origin_header is None else {"Origin": origin_header or origin(panel)}
    return await http.ws_connect(socket, headers=hdrs)


async def frame(ws: WS, timeout: float = WAIT) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    assert msg.data.endswith("\n")  # Wings writes JSON with Go's encoder
    decoded: dict[str, Any] = json.loads(msg.data)
    return decoded


async def until(ws: WS, event: str, timeout: float = WAIT) -> tuple[dict[str, Any], list[str]]:
    """The first frame named `event`, and the names of the frames before it."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        got = await frame(ws, max(deadline - time.monotonic(), 0.01))
        if got["event"] == event:
            return got, seen
        seen.append(got["event"])


async def nothing(ws: WS, quiet: float = QUIET) -> None:
    """No frame at all for `quiet` seconds."""
    try:
        msg = await ws.receive(timeout=quiet)
    except asyncio.TimeoutError:
        return
    pytest.fail(f"unexpected frame {msg}")


async def authed(
    http: aiohttp.ClientSession, panel: FakePanel, server: FakeServer
) -> tuple[WS, str]:
    token, socket = await ws_token(http, panel, server)
    ws = await connect(http, panel, socket)
    await ws.send_json({"event": "auth", "args": [token]})
    assert await frame(ws) == {"event": "auth success"}
    assert await frame(ws) == {"event": "status", "args": [server.power_state]}
    return ws, token


# ----------------------------------------------------------------------------- the token


@pytest.mark.parametrize("dialect", ["pterodactyl", "pelican"])
async def test_token_route_hands_out_a_signed_token_and_the_socket(
    http: aiohttp.ClientSession, dialect: str
) -> None:
    async with FakePanel(dialect=dialect) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        before = time.time()
        token, socket = await ws_token(http, panel, server)
        assert (
            socket == f"ws://{panel.node_url.removeprefix('http://')}/api/servers/{server.uuid}/ws"
        )
        header, claims = part(token, 0), part(token, 1)
        assert header["alg"] == "HS256"
        assert {"iat", "nbf", "exp", "jti", "server_uuid", "user_uuid", "permissions"} <= set(
            claims
        )
        assert "unique_id" in claims
        assert claims["server_uuid"] == server.uuid
        assert claims["permissions"] == ["*"]
        assert all(isinstance(claims[k], int) for k in ("iat", "nbf", "exp"))
        assert claims["nbf"] <= claims["iat"] <= time.time()
        assert before + 600 <= claims["exp"] <= time.time() + 601
        assert ("scope" in claims) is (dialect == "pelican")
        if dialect == "pelican":
            assert claims["scope"] == "websocket"
        # Another token: another unique_id, the same user.
        again = part((await ws_token(http, panel, server))[0], 1)
        assert again["unique_id"] != claims["unique_id"]
        assert again["user_uuid"] == claims["user_uuid"]
        paths = [r.path for r in panel.api_requests()]
        assert paths.count(f"/api/client/servers/{server.identifier}/websocket") == 2


async def test_token_route_403_without_websocket_connect(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server(permissions=["backup.read", "backup.create"])
        status, body = await api(http, panel, "GET", f"/servers/{server.identifier}/websocket")
        assert status == 403
        assert body["errors"][0]["code"] == "AccessDeniedHttpException"
        assert body["errors"][0]["status"] == "403"
        server.permissions = ["websocket.connect"]
        token, _ = await ws_token(http, panel, server)
        assert part(token, 1)["permissions"] == ["websocket.connect"]


async def test_token_route_409_during_a_restore_except_for_admins(
    http: aiohttp.ClientSession,
) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        panel.start_restore(server)
        path = f"/servers/{server.identifier}/websocket"
        status, body = await api(http, panel, "GET", path)
        assert status == 409
        assert body["errors"][0]["code"] == "ServerStateConflictException"
        server.owner_is_admin = True
        token, _ = await ws_token(http, panel, server)
        assert part(token, 1)["permissions"][0] == "*"
        assert "admin.websocket.errors" in part(token, 1)["permissions"]
        panel.finish_restore(server)
        server.owner_is_admin = False
        assert (await api(http, panel, "GET", path))[0] == 200


async def test_reference_dialect_has_no_websocket_route(http: aiohttp.ClientSession) -> None:
    async with FakePanel(dialect="reference") as panel:
        server = panel.add_server()
        status, _ = await api(http, panel, "GET", f"/servers/{server.identifier}/websocket")
        assert status == 404


# ----------------------------------------------------------------------------- connecting


async def test_origin_must_be_the_panels_origin(http: aiohttp.ClientSession) -> None:
    async with FakePanel(path_prefix="/panel") as panel:
        server = panel.add_server()
        _, socket = await ws_token(http, panel, server)
        wrong = [None, panel.url, origin(panel) + "/", panel.node_url, "http://localhost:1"]
        for bad in wrong:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await connect(http, panel, socket, origin_header=bad)
            assert caught.value.status == 403, bad
        assert [c.status for c in panel.node_connections(server)] == [403] * len(wrong)
        assert [c.origin for c in panel.node_connections()] == [
            None if w is None else w for w in wrong
        ]
        ws = await connect(http, panel, socket)
        assert panel.node_connections()[-1].status == 101
        assert panel.node_connections()[-1].origin == origin(panel)
        await ws.close()


async def test_unknown_server_is_404(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(
                f"{panel.node_url}/api/servers/00000000-0000-4000-8000-000000000000/ws",
                headers={"Origin": origin(panel)},
            )
        assert caught.value.status == 404


async def test_auth_success_then_status(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        ws, _ = await authed(http, panel, server)
        record = panel.node_connections(server)[0]
        assert record.auth_count == 1
        assert record.received[0]["event"] == "auth"
        assert record.events_sent() == ["auth success", "status"]
        assert record.is_open
        server.power_state = "offline"
        assert await frame(ws) == {"event": "status", "args": ["offline"]}
        await ws.close()


async def test_nothing_but_jwt_errors_before_auth(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        token, socket = await ws_token(http, panel, server)
        ws = await connect(http, panel, socket)
        backup = panel.add_backup(server, state="creating")
        backup.complete()  # an event nobody authenticated may see
        await nothing(ws)
        await ws.send_json({"event": "send stats"})
        assert await frame(ws) == {"event": "jwt error", "args": ["jwt: no jwt present"]}
        await ws.send_str("not json at all")  # ignored, the socket stays
        await ws.send_json({"event": "auth", "args": ["not.a.jwt"]})
        assert (await frame(ws))["event"] == "jwt error"
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        await ws.send_json({"event": "auth", "args": [forged]})
        assert await frame(ws) == {"event": "jwt error", "args": ["jwt: HMAC verification failed"]}
        other = panel.add_server()
        other_token, _ = await ws_token(http, panel, other)
        await ws.send_json({"event": "auth", "args": [other_token]})
        assert await frame(ws) == {"event": "jwt error", "args": ["jwt: server uuid mismatch"]}
        assert panel.node_connections(server)[0].auth_count == 0
        await ws.close()


async def test_expired_token_is_refused_at_auth(http: aiohttp.ClientSession) -> None:
    async with FakePanel(ws_token_lifetime=0.0) as panel:
        server = panel.add_server()
        token, socket = await ws_token(http, panel, server)
        exp = part(token, 1)["exp"]
        await asyncio.sleep(max(exp - time.time(), 0) + 0.05)
        ws = await connect(http, panel, socket)
        await ws.send_json({"event": "auth", "args": [token]})
        assert await frame(ws) == {"event": "jwt error", "args": ["jwt: exp claim is invalid"]}
        await ws.close()


async def test_reauth_swaps_the_token_on_the_same_socket(http: aiohttp.ClientSession) -> None:
    async with FakePanel(ws_token_lifetime=0.5, ws_check_interval=60.0) as panel:
        server = panel.add_server()
        ws, first = await authed(http, panel, server)
        panel.ws_token_lifetime = 600.0
        second, _ = await ws_token(http, panel, server)
        assert part(second, 1)["exp"] > part(first, 1)["exp"]
        await ws.send_json({"event": "auth", "args": [second]})
        assert await frame(ws) == {"event": "auth success"}  # no second status
        # Past the first token's exp, events still flow: the socket holds the new token.
        await asyncio.sleep(max(part(first, 1)["exp"] - time.time(), 0) + 0.1)
        panel.finish_restore(server)  # not restoring: no event
        server.power_state = "stopping"
        assert await frame(ws) == {"event": "status", "args": ["stopping"]}
        assert panel.node_connections(server)[0].auth_count == 2
        await ws.close()


async def test_token_expiring_then_expired_then_jwt_errors(http: aiohttp.ClientSession) -> None:
    async with FakePanel(ws_token_lifetime=1.0, ws_check_interval=0.1) as panel:
        server = panel.add_server()
        ws, token = await authed(http, panel, server)
        exp = part(token, 1)["exp"]
        expiring, _ = await until(ws, "token expiring")
        assert expiring == {"event": "token expiring"}
        assert exp - time.time() <= 0.5 + 0.2  # min(60, lifetime / 2), one check late at most
        _, between = await until(ws, "token expired")
        assert set(between) <= {"token expiring"}
        assert time.time() >= exp - 0.01
        server.power_state = "offline"  # an event the expired token may not see
        _, between = await until(ws, "jwt error")
        assert set(between) <= {"token expired"}
        await ws.close()


# ----------------------------------------------------------------------------- events


async def test_backup_completed_after_create(http: aiohttp.ClientSession) -> None:
    async with FakePanel(backup_duration=0.3) as panel:
        server = panel.add_server()
        ws, _ = await authed(http, panel, server)
        status, created = await api(http, panel, "POST", f"/servers/{server.identifier}/backups")
        assert status == 200
        uuid = created["attributes"]["uuid"]
        assert created["attributes"]["completed_at"] is None
        event, _ = await until(ws, "backup completed")
        assert len(event["args"]) == 1
        assert isinstance(event["args"][0], str)  # an object payload is a JSON string
        payload = json.loads(event["args"][0])
        backup = panel.backup(uuid)
        digest = hashlib.sha1(backup.content).hexdigest()
        assert payload == {
            "uuid": uuid,
            "is_successful": True,
            "checksum": digest,
            "checksum_type": "sha1",
            "file_size": len(backup.content),
        }
        # The panel recorded the result before the node said so.
        status, got = await api(http, panel, "GET", f"/servers/{server.identifier}/backups/{uuid}")
        assert got["attributes"]["completed_at"] is not None
        assert got["attributes"]["is_successful"] is True
        assert got["attributes"]["checksum"] == f"sha1:{digest}"
        assert got["attributes"]["bytes"] == payload["file_size"]
        await ws.close()


async def test_failed_backup_payload(http: aiohttp.ClientSession) -> None:
    async with FakePanel(backup_duration=0.1) as panel:
        server = panel.add_server()
        ws, _ = await authed(http, panel, server)
        panel.fail_next_backup(server)
        _, created = await api(http, panel, "POST", f"/servers/{server.identifier}/backups")
        event, _ = await until(ws, "backup completed")
        assert json.loads(event["args"][0]) == {
            "uuid": created["attributes"]["uuid"],
            "is_successful": False,
            "checksum": "",
            "checksum_type": "sha1",
            "file_size": 0,
        }
        # A test finishing a backup by hand is reported the same way.
        by_hand = panel.add_backup(server, state="creating")
        by_hand.fail()
        event, _ = await until(ws, "backup completed")
        assert json.loads(event["args"][0])["uuid"] == by_hand.uuid
        by_hand.fail()  # already finished: no second event
        await nothing(ws)
        await ws.close()


async def test_no_backup_event_without_backup_read(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server(permissions=["websocket.connect"])
        ws, _ = await authed(http, panel, server)
        panel.add_backup(server, state="creating").complete()
        panel.start_restore(server)
        panel.finish_restore(server)  # goes to every socket: it marks the end of the test
        _, before = await until(ws, "backup restore completed")
        assert "backup completed" not in before
        await ws.close()


async def test_restore_completed(http: aiohttp.ClientSession) -> None:
    async with FakePanel(restore_duration=0.2) as panel:
        server = panel.add_server()
        backup = panel.add_backup(server)
        ws, _ = await authed(http, panel, server)
        path = f"/servers/{server.identifier}/backups/{backup.uuid}/restore"
        assert (await api(http, panel, "POST", path, {"truncate": False}))[0] == 204
        event, before = await until(ws, "backup restore completed")
        assert event == {"event": "backup restore completed", "args": [""]}
        assert "daemon message" in before
        _, view = await api(http, panel, "GET", f"/servers/{server.identifier}")
        assert view["attributes"]["status"] is None
        await ws.close()


# ----------------------------------------------------------------------------- Pelican rules


async def test_pelican_31st_socket_is_refused(http: aiohttp.ClientSession) -> None:
    async with FakePanel(dialect="pelican") as panel:
        server = panel.add_server()
        _, socket = await ws_token(http, panel, server)
        sockets = [await connect(http, panel, socket) for _ in range(30)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await connect(http, panel, socket)
        assert caught.value.status == 400
        await sockets.pop().close()
        for _ in range(100):  # the node notices the close
            if sum(c.is_open for c in panel.node_connections(server)) < 30:
                break
            await asyncio.sleep(0.01)
        sockets.append(await connect(http, panel, socket))
        for ws in sockets:
            await ws.close()


async def test_pelican_closes_4409_while_restoring(http: aiohttp.ClientSession) -> None:
    async with FakePanel(dialect="pelican") as panel:
        server = panel.add_server(owner_is_admin=True)
        panel.start_restore(server)
        _, socket = await ws_token(http, panel, server)  # an admin still gets a token
        ws = await connect(http, panel, socket)
        msg = await ws.receive(timeout=WAIT)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 4409
        assert panel.node_connections(server)[0].close_code == 4409
        await ws.close()


async def test_pelican_throttles_incoming_messages(http: aiohttp.ClientSession) -> None:
    async with FakePanel(dialect="pelican") as panel:
        server = panel.add_server()
        ws, token = await authed(http, panel, server)  # the first auth of a burst of 2
        await ws.send_json({"event": "auth", "args": [token]})
        assert await frame(ws) == {"event": "auth success"}
        await ws.send_json({"event": "auth", "args": [token]})
        assert await frame(ws) == {"event": "throttled", "args": ["auth"]}
        await ws.send_json({"event": "auth", "args": [token]})  # still throttled: said once
        for _ in range(4):
            await ws.send_json({"event": "send stats"})
        for _ in range(4):
            assert (await frame(ws))["event"] == "stats"
        await ws.send_json({"event": "send stats"})
        assert await frame(ws) == {"event": "throttled", "args": ["send stats"]}
        await nothing(ws)
        await ws.close()


async def test_pelican_closes_on_a_message_over_4096_bytes(http: aiohttp.ClientSession) -> None:
    async with FakePanel(dialect="pelican") as panel:
        server = panel.add_server()
        ws, _ = await authed(http, panel, server)
        await ws.send_str(json.dumps({"event": "send command", "args": ["x" * 4200]}))
        msg = await ws.receive(timeout=WAIT)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1009
        await ws.close()


# ----------------------------------------------------------------------------- faults


async def test_refuse_fault(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        panel.script_socket(server, SocketFault.refuse(503), None, SocketFault.refuse())
        _, socket = await ws_token(http, panel, server)
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await connect(http, panel, socket)
        assert caught.value.status == 503
        ws = await connect(http, panel, socket)
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await connect(http, panel, socket)
        assert caught.value.status == 403
        await ws.close()
        assert [c.fault for c in panel.node_connections(server)] == ["refuse", None, "refuse"]


async def test_drop_after_cuts_the_connection_without_a_close_frame(
    http: aiohttp.ClientSession,
) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        panel.script_socket(server, SocketFault.drop_after(0.1))
        ws, _ = await authed(http, panel, server)
        began = time.monotonic()
        msg = await ws.receive(timeout=WAIT)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert time.monotonic() - began < 2.0
        record = panel.node_connections(server)[0]
        for _ in range(100):
            if record.closed_at is not None:
                break
            await asyncio.sleep(0.01)
        assert record.close_code is None
        assert record.fault == "drop"


async def test_close_fault_closes_cleanly_with_its_code(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        panel.script_socket(server, SocketFault.close(4000, after=0.1))
        ws, _ = await authed(http, panel, server)
        msg = await ws.receive(timeout=WAIT)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 4000
        await ws.close()
        assert panel.node_connections(server)[0].close_code == 4000


async def test_silent_socket_never_answers(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        panel.script_socket(server, SocketFault.silent())
        token, socket = await ws_token(http, panel, server)
        ws = await connect(http, panel, socket)
        await ws.send_json({"event": "auth", "args": [token]})
        panel.add_backup(server, state="creating").complete()
        await nothing(ws)
        assert not ws.closed
        record = panel.node_connections(server)[0]
        assert record.received[0]["event"] == "auth"
        assert record.sent == []
        await panel.aclose()
        msg = await ws.receive(timeout=WAIT)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()


async def test_miss_events_swallows_completions(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        panel.script_socket(server, SocketFault.miss_events())
        missing, _ = await authed(http, panel, server)
        working, _ = await authed(http, panel, server)
        backup = panel.add_backup(server, state="creating")
        backup.complete()
        panel.start_restore(server)
        panel.finish_restore(server)
        await until(working, "backup completed")
        await until(working, "backup restore completed")
        server.power_state = "offline"  # other events still arrive
        _, before = await until(missing, "status")
        assert not set(before) & {"backup completed", "backup restore completed"}
        for ws in (missing, working):
            await ws.close()


async def test_send_node_frame_injects_raw_frames(http: aiohttp.ClientSession) -> None:
    async with FakePanel() as panel:
        server = panel.add_server()
        ws, _ = await authed(http, panel, server)
        _, socket = await ws_token(http, panel, server)
        unauthed = await connect(http, panel, socket)
        huge = json.dumps({"event": "console output", "args": ["x" * 100_000]})
        assert panel.send_node_frame(server, "not json") == 2
        panel.send_node_frame(server, b"\x00\xffbinary")
        panel.send_node_frame(server, '{"event": "surprise", "args": [1, {"a": 2}]}')
        panel.send_node_frame(server, huge)
        for client in (ws, unauthed):
            assert (await client.receive(timeout=WAIT)).data == "not json"
            msg = await client.receive(timeout=WAIT)
            assert msg.type is aiohttp.WSMsgType.BINARY
            assert msg.data == b"\x00\xffbinary"
            assert json.loads((await client.receive(timeout=WAIT)).data)["event"] == "surprise"
            assert (await client.receive(timeout=WAIT)).data == huge
        assert panel.node_connections(server)[0].events_sent()[-2:] == [
            "surprise",
            "console output",
        ]
        assert panel.send_node_frame(panel.add_server(), "nobody") == 0
        for client in (ws, unauthed):
            await client.close()


async def test_aclose_closes_open_sockets_promptly(http: aiohttp.ClientSession) -> None:
    panel = FakePanel()
    await panel.start()
    server = panel.add_server()
    ws, _ = await authed(http, panel, server)
    waiting = asyncio.ensure_future(ws.receive())
    await asyncio.sleep(0.05)
    began = time.monotonic()
    await panel.aclose()
    msg = await asyncio.wait_for(waiting, WAIT)
    assert time.monotonic() - began < 1.5
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1001
    await ws.close()
    record = panel.node_connections(server)[0]
    assert record.closed_at is not None
    assert record.close_code == 1001
    await panel.aclose()  # idempotent
