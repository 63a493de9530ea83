"""The API key stays secret; TLS is verified by default and a private CA can be trusted.

The key must never reach a link host, a log line (at DEBUG), ``repr(client)`` or the text of
an error, even when the panel echoes it back. TLS runs against a trustme CA.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import trustme

from ptero_backups_async import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    DownloadError,
    NotFoundError,
    PermissionDeniedError,
    PteroClient,
    ResponseValidationError,
    ServerError,
)
from ptero_backups_async._sansio import mask_key
from ptero_backups_async.testing import DownloadFault, FakePanel

from .conftest import register_key
from .faults._tools import LinkHost, TlsRelay, fast_retries, serve

pytestmark = pytest.mark.anyio

STORAGES = ["wings", "s3"]
LOGGER = "ptero_backups_async"


def texts_of(exc: BaseException) -> list[str]:
    """Every text an error shows: str and repr, of it and of its causes, and its details."""
    out: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out += [str(current), repr(current), *map(str, current.args)]
        if isinstance(current, APIStatusError):
            out += [str(current.detail), str(current.errors), current.url]
        if isinstance(current, DownloadError):
            out += list(current.history)
        current = current.__cause__ or current.__context__
    return out


def assert_no_key(key: str, texts: list[str]) -> None:
    leaks = [t for t in texts if key in t]
    assert not leaks, f"the whole key shows in {leaks[0][:300]!r}"


@pytest.fixture(params=STORAGES)
async def storage_panel(request: pytest.FixtureRequest) -> AsyncIterator[FakePanel]:
    async with FakePanel(storage=request.param) as panel:
        register_key(panel.api_key)
        yield panel


# ---------------------------------------------------------------------------- link hosts


def assert_link_requests_clean(panel: FakePanel) -> None:
    links = panel.link_requests()
    assert links, "no link request was made"
    for request in links:
        assert "authorization" not in request.headers
        assert "cookie" not in request.headers
        assert panel.api_key not in json.dumps(request.headers)
        assert panel.api_key not in request.path
        assert panel.api_key not in json.dumps(request.query)


async def test_the_key_never_reaches_a_link_host_across_retries(
    storage_panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backups = [storage_panel.add_backup(server, content=os.urandom(300_000)) for _ in range(3)]
    storage_panel.script_download(
        backups[0], DownloadFault.drop_after(100_000), DownloadFault.status(503)
    )
    storage_panel.script_download(backups[1], DownloadFault.corrupt(10), DownloadFault.expired())
    async with PteroClient(storage_panel.url, storage_panel.api_key) as client:
        await client.backups(server.identifier).download(backups[0].uuid, tmp_path)
        outcomes = await client.download_many(
            [(server.identifier, b.uuid) for b in backups[1:]], tmp_path
        )
    assert all(o.result is not None for o in outcomes)
    assert len(storage_panel.link_requests()) >= 6
    assert_link_requests_clean(storage_panel)
    # The panel did get the key: it is the separation that matters.
    assert all(
        r.headers.get("authorization") == f"Bearer {storage_panel.api_key}"
        for r in storage_panel.api_requests()
    )


async def test_a_link_pointing_back_at_the_panel_gets_no_key(
    panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    """A hostile panel hands out a "link" to its own API: the SDK still sends no key there."""
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"x" * 1000)
    backup.link_factory = lambda: f"{panel.url}/api/client/servers/{server.identifier}/backups"
    async with PteroClient(panel.url, panel.api_key) as client:
        with pytest.raises(DownloadError) as info:
            await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=2)
    assert_no_key(panel.api_key, texts_of(info.value))
    # The link attempts (and the login page they were redirected to) carry no key.
    link_like = [r for r in panel.api_requests() if "authorization" not in r.headers]
    assert len(link_like) >= 2
    assert all(panel.api_key not in json.dumps(r.headers) for r in link_like)
    assert all("json" not in r.headers.get("accept", "") for r in link_like)


# ---------------------------------------------------------------------------- logs and repr


async def test_debug_logs_never_contain_the_key(
    panel: FakePanel, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = panel.api_key
    server = panel.add_server()
    backup = panel.add_backup(server, content=os.urandom(200_000))
    echo = {"errors": [{"code": "HttpException", "status": "500", "detail": f"bad key {key}"}]}
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    transport, _ = fast_retries()
    async with PteroClient(
        panel.url, key, timeout=0.3, max_retries=5, transport=transport
    ) as client:
        backups = client.backups(server.identifier)
        panel.inject(method="GET", path="/backups$", status=503)
        panel.inject(method="GET", path="/backups$", status=429, headers={"Retry-After": "1"})
        panel.inject(method="GET", path="/backups$", kind="stall", delay=2)
        panel.inject(method="GET", path="/backups$", kind="json", status=500, json_body=echo)
        await backups.list_page()
        panel.inject(
            method="GET", path="/backups$", kind="json", status=500, json_body=echo, times=9
        )
        with pytest.raises(ServerError):
            await backups.list_page()
        panel.clear_faults()
        panel.script_download(backup, DownloadFault.drop_after(50_000), DownloadFault.status(500))
        await backups.download(backup.uuid, tmp_path)
        _ = [s async for s in client.servers()]
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert any("retry" in r.getMessage() for r in caplog.records)
    assert any("attempt" in r.getMessage() for r in caplog.records)
    formatter = logging.Formatter("%(message)s %(args)s")
    texts = [formatter.format(r) for r in caplog.records] + [caplog.text]
    assert_no_key(key, texts)


@pytest.mark.parametrize(
    "key",
    [
        "ptlc_" + "A1b2C3d4" * 5 + "wxyz",
        "pacc_" + "Zz9" * 14 + "q7r8",
        "plcn_0123456789abcdef0123",
        "nounderscorekey0123456789abcdef",
        "ptlc_short",
        "averyverylongprefix_" + "k" * 30,
    ],
)
def test_repr_and_str_show_the_key_masked(key: str) -> None:
    register_key(key)
    client = PteroClient("https://panel.example.com", key)
    shown = [repr(client), str(client), f"{client!r}", repr(client.backups("d3aac109"))]
    assert_no_key(key, shown)
    masked = mask_key(key)
    assert masked in repr(client)
    prefix, _, tail = masked.partition("…")
    assert len(tail) <= 4
    assert prefix in ("", key.partition("_")[0] + "_")
    # Nothing of the middle of the key shows.
    middle = key[len(prefix) : len(key) - 4]
    if len(middle) >= 8:
        assert middle not in repr(client)


# ---------------------------------------------------------------------------- error text


def _echo_json(status: int, code: str, key: str) -> dict[str, Any]:
    detail = f"The API key {key} is not valid here (Bearer {key})"
    error = {"code": code, "status": str(status), "detail": detail, "meta": {"key": key}}
    return {"errors": [error]}


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "AuthenticationException", AuthenticationError),
        (403, "AccessDeniedHttpException", PermissionDeniedError),
        (404, "NotFoundHttpException", NotFoundError),
        (500, "HttpException", ServerError),
    ],
)
@pytest.mark.parametrize("kind", ["json", "text", "html"])
async def test_errors_whose_body_echoes_the_key_show_it_masked(
    panel: FakePanel, status: int, code: str, cls: type[APIStatusError], kind: str
) -> None:
    key = panel.api_key
    server = panel.add_server()
    if kind == "json":
        panel.inject(
            path="/backups$", kind="json", status=status, json_body=_echo_json(status, code, key)
        )
    elif kind == "text":
        panel.inject(path="/backups$", kind="status", status=status, body=f"key={key}")
    else:
        page = f"<html><body><p>Denied for {key}</p></body></html>"
        panel.inject(path="/backups$", kind="html", status=status, body=page)
    async with PteroClient(panel.url, key, max_retries=0) as client:
        with pytest.raises(cls) as info:
            await client.backups(server.identifier).list_page()
    assert info.value.status == status
    assert_no_key(key, texts_of(info.value))
    if kind == "json":
        assert "…" in str(info.value), "the echoed key should show masked"


async def test_a_unicode_escaped_echo_of_the_key_is_masked_too(panel: FakePanel) -> None:
    r"""JSON may spell any character as \uXXXX (Laravel escapes "/" as "\/"): same text."""
    key = panel.api_key
    server = panel.add_server()
    escaped = "".join(f"\\u{ord(c):04x}" for c in key)
    body = '{"errors":[{"code":"NotFoundHttpException","status":"404","detail":"key %s"}]}'
    panel.inject(path="/backups$", kind="json", status=404, body=body % escaped)
    async with PteroClient(panel.url, key) as client:
        with pytest.raises(NotFoundError) as info:
            await client.backups(server.identifier).list_page()
    assert_no_key(key, texts_of(info.value))


ATTRS: dict[str, Any] = {
    "uuid": "6c1b3c3e-43b0-4a4b-9d9c-3c8d27f2a6d1",
    "name": "nightly",
    "ignored_files": [],
    "checksum": None,
    "bytes": 0,
    "created_at": "2024-01-01T00:00:00+00:00",
    "completed_at": None,
    "is_successful": False,
    "is_locked": False,
}


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "html", "status": 200, "body": "key={key} is wrong"},
        {"kind": "redirect", "status": 302, "headers": {"Location": "/auth/login?key={key}"}},
        {"kind": "json", "status": 200, "json_body": {"object": "{key}", "attributes": ATTRS}},
    ],
    ids=["html-200", "redirect", "json-object"],
)
async def test_response_validation_errors_never_quote_the_key(
    panel: FakePanel, fault: dict[str, Any]
) -> None:
    key = panel.api_key
    server = panel.add_server()
    backup = panel.add_backup(server)
    filled = json.loads(json.dumps(fault).replace("{key}", key))
    panel.inject(method="GET", path=r"/backups/[0-9a-f-]{36}$", **filled)
    async with PteroClient(panel.url, key) as client:
        with pytest.raises(ResponseValidationError) as info:
            await client.backups(server.identifier).get(backup.uuid)
    assert_no_key(key, texts_of(info.value))


async def test_download_errors_never_contain_the_key(
    panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    key = panel.api_key
    server = panel.add_server()
    failing = panel.add_backup(server, content=os.urandom(50_000))
    corrupt = panel.add_backup(server, content=os.urandom(50_000))
    panel.script_download(failing, *[DownloadFault.status(500)] * 3)
    panel.script_download(corrupt, DownloadFault.corrupt(5), DownloadFault.corrupt(5))
    async with PteroClient(panel.url, key) as client:
        outcomes = await client.download_many(
            [(server.identifier, failing.uuid), (server.identifier, corrupt.uuid)],
            tmp_path,
            max_attempts=3,
        )
        # The panel answers the link request with an error that echoes the key.
        panel.inject(
            path="/download$",
            kind="json",
            status=403,
            json_body=_echo_json(403, "AccessDeniedHttpException", key),
        )
        with pytest.raises(PermissionDeniedError) as info:
            await client.backups(server.identifier).download(failing.uuid, tmp_path)
    errors: list[BaseException] = [o.error for o in outcomes if o.error is not None]
    assert len(errors) == 2
    assert all(isinstance(e, DownloadError) for e in errors)
    for error in [*errors, info.value]:
        assert_no_key(key, texts_of(error))


# ---------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def trusting_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_panel(
    panel: FakePanel, server_context: ssl.SSLContext
) -> AsyncIterator[tuple[FakePanel, TlsRelay]]:
    port = int(panel.url.rsplit(":", 1)[1])
    async with TlsRelay(port, server_context) as relay:
        yield panel, relay


async def test_an_untrusted_certificate_is_refused_once_not_retried(
    tls_panel: tuple[FakePanel, TlsRelay],
) -> None:
    panel, relay = tls_panel
    server = panel.add_server()
    transport, sleep = fast_retries()
    async with PteroClient(relay.url, panel.api_key, max_retries=3, transport=transport) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.backups(server.identifier).list_page()
    error = info.value
    assert type(error) is APIConnectionError
    cause = error.__cause__
    assert isinstance(cause, aiohttp.ClientConnectorCertificateError)
    assert isinstance(cause.certificate_error, ssl.SSLCertVerificationError)
    assert "certificate" in str(error).lower()
    assert sleep.delays == []  # a bad certificate stays bad: no retry
    assert relay.connections == 1
    assert relay.handshakes == 0
    assert panel.requests == []


async def test_a_callers_session_can_trust_a_private_ca(
    tls_panel: tuple[FakePanel, TlsRelay], trusting_context: ssl.SSLContext
) -> None:
    panel, relay = tls_panel
    server = panel.add_server()
    panel.add_backup(server)
    connector = aiohttp.TCPConnector(ssl=trusting_context)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with PteroClient(relay.url, panel.api_key, session=session) as client:
            page = await client.backups(server.identifier).list_page()
        assert not session.closed
    assert len(page.items) == 1
    assert relay.handshakes >= 1


@pytest.fixture
def archive() -> bytes:
    return os.urandom(120_000)


@pytest.fixture
async def tls_link_host(
    archive: bytes, server_context: ssl.SSLContext
) -> AsyncIterator[tuple[str, LinkHost]]:
    host = LinkHost(archive)
    async with serve(host.app, ssl_context=server_context) as url:
        yield url + "/file", host


async def test_ssl_option_trusts_a_private_ca_for_api_and_links(
    tls_panel: tuple[FakePanel, TlsRelay],
    trusting_context: ssl.SSLContext,
    tls_link_host: tuple[str, LinkHost],
    archive: bytes,
    tmp_path: pathlib.Path,
) -> None:
    panel, relay = tls_panel
    link, host = tls_link_host
    server = panel.add_server()
    backup = panel.add_backup(server, content=archive)
    backup.link_factory = lambda: link
    async with PteroClient(relay.url, panel.api_key, ssl=trusting_context) as client:
        result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert result.verified
    assert result.path.read_bytes() == archive
    assert relay.handshakes >= 1
    assert len(host.seen_headers) == 1
    assert "authorization" not in host.seen_headers[0]


async def test_an_untrusted_link_host_fails_at_once(
    panel: FakePanel, tls_link_host: tuple[str, LinkHost], archive: bytes, tmp_path: pathlib.Path
) -> None:
    link, _ = tls_link_host
    server = panel.add_server()
    backup = panel.add_backup(server, content=archive)
    backup.link_factory = lambda: link
    async with PteroClient(panel.url, panel.api_key) as client:
        with pytest.raises(DownloadError) as info:
            await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=3)
    assert "certificate" in str(info.value).lower()
    assert not list(tmp_path.iterdir())
    assert backup.links_issued == 1, f"asked for {backup.links_issued} links for a bad certificate"


# ---------------------------------------------------------------------------- plain http


@pytest.fixture
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail on any attempt to open a connection while constructing clients."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("constructing a client must not touch the network")

    monkeypatch.setattr("socket.socket.connect", refuse)
    monkeypatch.setattr("socket.getaddrinfo", refuse)
    monkeypatch.setattr("socket.create_connection", refuse)


@pytest.mark.parametrize(
    ("url", "warns"),
    [
        ("http://10.0.0.1", True),
        ("http://10.0.0.1:8080/panel", True),
        ("http://192.168.1.20", True),
        ("http://[2001:db8::1]:8080", True),
        ("http://0.0.0.0", True),
        ("http://panel.example.com/api/client", True),
        ("http://localhost.example.com", True),
        ("http://127.0.0.1.nip.io", True),
        ("https://10.0.0.1", False),
        ("https://panel.example.com", False),
        ("http://127.0.0.1:8080", False),
        ("http://127.8.9.10", False),
        ("http://[::1]:8080", False),
        ("http://localhost", False),
        ("http://LOCALHOST:80", False),
        ("http://panel.localhost", False),
    ],
)
def test_plain_http_to_a_remote_panel_warns_without_any_traffic(
    url: str, warns: bool, caplog: pytest.LogCaptureFixture, no_io: None
) -> None:
    key = register_key("ptlc_" + "w" * 39 + "wxyz")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        client = PteroClient(url, key)
    warnings = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == (1 if warns else 0)
    assert_no_key(key, [r.getMessage() for r in caplog.records])
    assert client.rate_limit is None  # no_io: constructing it sent nothing
