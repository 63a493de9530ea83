"""Hostile input: refused with a clear error before any request is sent or any file touched.

Server ids, backup UUIDs, names, ``ignored`` patterns and destinations that try path
traversal, NUL bytes, huge lengths or odd Unicode; and panels or link hosts that suggest
where a file should go (they never decide it).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest

from ptero_backups_async import (
    Backup,
    DownloadError,
    InvalidArgumentError,
    PteroClient,
    PteroError,
    ResponseValidationError,
)
from ptero_backups_async.testing import FakePanel, FakeServer

from .conftest import register_key
from .faults._tools import LinkHost, serve

pytestmark = pytest.mark.anyio

GOOD_UUID = "6c1b3c3e-43b0-4a4b-9d9c-3c8d27f2a6d1"

ODD_IDS: list[Any] = [
    "",
    "../x",
    "../../../../etc/passwd",
    "d3aac109/../../api",
    "d3aac109/",
    "/d3aac109",
    "d3aac109?x=1",
    "d3aac109#x",
    "d3aac109%2F..",
    "d3aac10\x00",
    "d3aac109\x00",
    "d3aac109\n",
    " d3aac109",
    "d3aac109 ",
    "\u202ed3aac109",  # right-to-left override
    "d3aac\u200b109",  # zero-width space
    "d3aac109\ufeff",  # byte-order mark
    "\uff44\uff13\uff41\uff41\uff43\uff11\uff10\uff19",  # full-width letters and digits
    "d3aac1\uff10\uff19",  # full-width digits only
    "d3aac1\u0669\u0660",  # Arabic-Indic digits
    "\ud800" * 8,  # lone surrogates
    "d" * 100_000,
    GOOD_UUID + "/download",
    GOOD_UUID[:-1] + "\u0661",
    None,
    12345678,
    b"d3aac109",
    ["d3aac109"],
]

ODD_UUIDS: list[Any] = [
    *ODD_IDS,
    "d3aac109",  # a short id is not a backup UUID
    GOOD_UUID.replace("-", ""),
    "{" + GOOD_UUID + "}",
    "urn:uuid:" + GOOD_UUID,
    GOOD_UUID + "\n",
    GOOD_UUID.replace("6", "\uff16"),
    "../" + GOOD_UUID[3:],
]

ODD_NAMES: list[Any] = [
    "nightly\x00",
    "night\nly",
    "night\rly",
    "\x1b[31mred",
    "evil\u202egpj.exe",
    "zero\u200bwidth",
    "bom\ufeff",
    "surrogate\ud800",
    "\udfff",
    "x" * 256,
    "x" * 100_000,
    42,
    b"nightly",
]

ODD_IGNORED: list[Any] = [
    ["*.log", "bad\x00pattern"],
    ["ok", "two\nlines"],
    ["ok", "cr\rhere"],
    "fine\nnul\x00here",
    ["\u202eevil"],
    ["zero\u200bwidth"],
    ["\ud800"],
    ["ok", 5],
    ["ok", None],
    [b"bytes"],
    b"*.log\nworld",
]


def assert_refused(exc: BaseException) -> None:
    assert isinstance(exc, ValueError)
    assert isinstance(exc, PteroError)
    assert isinstance(exc, InvalidArgumentError)
    assert str(exc)
    assert len(str(exc)) < 1000, "the message must stay readable, even for huge input"


@pytest.fixture
async def env(panel: FakePanel, client: PteroClient) -> AsyncIterator[tuple[FakePanel, Any, Any]]:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"archive" * 1000)
    panel.clear_requests()
    yield panel, server, backup
    assert panel.requests == [], "a request was sent for hostile input"


@pytest.mark.parametrize("bad", ODD_IDS, ids=range(len(ODD_IDS)))
async def test_hostile_server_ids(
    env: tuple[FakePanel, Any, Any], client: PteroClient, bad: Any, tmp_path: pathlib.Path
) -> None:
    _, _, backup = env
    with pytest.raises(InvalidArgumentError) as info:
        client.backups(bad)
    assert_refused(info.value)
    with pytest.raises(InvalidArgumentError):
        await client.download_many([(bad, backup.uuid)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _resource_calls(uuid: Any, dest: pathlib.Path) -> list[Callable[[Any], Awaitable[Any]]]:
    return [
        lambda r: r.get(uuid),
        lambda r: r.wait(uuid, timeout=1),
        lambda r: r.download_url(uuid),
        lambda r: r.download(uuid, dest),
        lambda r: r.delete(uuid),
        lambda r: r.restore(uuid),
        lambda r: r.toggle_lock(uuid),
        lambda r: r.lock(uuid),
        lambda r: r.unlock(uuid),
        lambda r: r.rename(uuid, "x"),
    ]


@pytest.mark.parametrize("bad", ODD_UUIDS, ids=range(len(ODD_UUIDS)))
async def test_hostile_backup_uuids(
    env: tuple[FakePanel, Any, Any], client: PteroClient, bad: Any, tmp_path: pathlib.Path
) -> None:
    _, server, _ = env
    resource = client.backups(server.identifier)
    for call in _resource_calls(bad, tmp_path):
        with pytest.raises(InvalidArgumentError) as info:
            await call(resource)
        assert_refused(info.value)
    with pytest.raises(InvalidArgumentError):
        await client.download_many([(server.identifier, bad)], tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_a_backup_object_carrying_a_hostile_uuid_is_refused(
    env: tuple[FakePanel, Any, Any], client: PteroClient, tmp_path: pathlib.Path
) -> None:
    """A Backup as a hostile panel could describe it: its uuid is never used unchecked."""
    _, server, backup = env
    real = await client.backups(server.identifier).get(backup.uuid)
    env[0].clear_requests()
    for bad in ("../../evil", "/etc/cron.d/x", GOOD_UUID + "/../../x", "\u202e" + GOOD_UUID):
        forged: Backup = attrs.evolve(real, uuid=bad)
        resource = client.backups(server.identifier)
        for call in _resource_calls(forged, tmp_path):
            with pytest.raises(InvalidArgumentError):
                await call(resource)
        with pytest.raises(InvalidArgumentError):
            await client.download_many([(server.identifier, forged)], tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ODD_NAMES, ids=range(len(ODD_NAMES)))
async def test_hostile_names(
    env: tuple[FakePanel, Any, Any], client: PteroClient, bad: Any
) -> None:
    _, server, backup = env
    resource = client.backups(server.identifier)
    with pytest.raises(InvalidArgumentError) as info:
        await resource.create(name=bad)
    assert_refused(info.value)
    with pytest.raises(InvalidArgumentError):
        await resource.rename(backup.uuid, bad)


@pytest.mark.parametrize("bad", ODD_IGNORED, ids=range(len(ODD_IGNORED)))
async def test_hostile_ignored_patterns(
    env: tuple[FakePanel, Any, Any], client: PteroClient, bad: Any
) -> None:
    _, server, _ = env
    with pytest.raises(InvalidArgumentError) as info:
        await client.backups(server.identifier).create(ignored=bad)
    assert_refused(info.value)


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"page": 0},
        {"page": -1},
        {"page": True},
        {"page": "1"},
        {"page": 1.5},
        {"per_page": 0},
        {"per_page": -50},
        {"per_page": False},
        {"per_page": "50"},
    ],
)
async def test_hostile_paging(
    env: tuple[FakePanel, Any, Any], client: PteroClient, kwargs: dict[str, Any]
) -> None:
    _, server, _ = env
    with pytest.raises(InvalidArgumentError) as info:
        await client.backups(server.identifier).list_page(**kwargs)
    assert_refused(info.value)


async def test_unusual_but_valid_names_are_sent_as_given(
    panel: FakePanel, client: PteroClient
) -> None:
    """Printable Unicode (full-width digits, RTL letters, emoji) is a name, not an attack."""
    server = panel.add_server(backup_limit=10)
    resource = client.backups(server.identifier)
    panel.create_throttle = None
    for name in ("夜間 \uff12\uff10\uff12\uff14", "نسخة احتياطية", "backup 🦖", "../../evil.sh"):
        created = await resource.create(name=name)
        assert created.name == name


@pytest.mark.parametrize(
    "key", ["ptlc_abc\r\nX-Evil: 1", "ptlc_abc\x00def", "ptlc_ключ", "ptlc_a b", "", "\t"]
)
def test_hostile_api_keys_are_refused_without_echo(key: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        PteroClient("https://panel.example.com", key)
    assert_refused(info.value)
    if len(key) > 4:
        assert key not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "ftp://panel.example.com",
        "https://user:pass@panel.example.com",
        "https://panel.example.com/?next=evil",
        "https://panel.example.com/#frag",
        "https://",
        "panel.example.com",
    ],
)
def test_hostile_panel_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        PteroClient(url, register_key("ptlc_" + "k" * 43))
    assert_refused(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://panel.example.com\r\nX-Evil: 1",
        "https://panel.exam\nple.com",
        "https://panel.example.com\x00.evil.example",
        "https://pan el.example.com",
        "https://\u202epanel.example.com",
        "https://panel.example.com:abc",
        "https://panel.example.com:99999",
    ],
    ids=["crlf", "lf-in-host", "nul", "space", "rtl-override", "port-abc", "port-99999"],
)
def test_panel_urls_with_control_characters_or_bad_ports_are_refused(url: str) -> None:
    """Constructing a client does no I/O: these are refused (or not) without traffic."""
    with pytest.raises(InvalidArgumentError) as info:
        PteroClient(url, register_key("ptlc_" + "k" * 43))
    assert_refused(info.value)


# ---------------------------------------------------------------------------- destinations


async def test_a_nul_byte_in_dest_is_refused_before_any_request(
    env: tuple[FakePanel, Any, Any], client: PteroClient, tmp_path: pathlib.Path
) -> None:
    _, server, backup = env
    for dest in (f"{tmp_path}/x\x00.tar.gz", "\x00", ""):
        with pytest.raises(InvalidArgumentError) as info:
            await client.backups(server.identifier).download(backup.uuid, dest)
        assert_refused(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "make_dest",
    [
        lambda tmp: str(tmp / ("x" * 5000)),
        lambda tmp: str(tmp / "a\ud800b.tar.gz"),
        lambda tmp: str(tmp / ("d" * 300) / "x.tar.gz"),
    ],
    ids=["name-too-long", "lone-surrogate", "dir-name-too-long"],
)
async def test_unusable_dest_paths_are_a_clear_error_before_any_request(
    panel: FakePanel,
    client: PteroClient,
    tmp_path: pathlib.Path,
    make_dest: Callable[[pathlib.Path], str],
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"archive" * 1000)
    panel.clear_requests()
    with pytest.raises(PteroError) as info:
        await client.backups(server.identifier).download(backup.uuid, make_dest(tmp_path))
    assert isinstance(info.value, (InvalidArgumentError, DownloadError))
    assert panel.requests == []
    assert list(tmp_path.iterdir()) == []


async def test_unusable_dest_dirs_in_download_many_are_download_errors(
    env: tuple[FakePanel, Any, Any], client: PteroClient, tmp_path: pathlib.Path
) -> None:
    _, server, backup = env
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DownloadError) as info:
        await client.download_many([(server.identifier, backup.uuid)], blocker / "sub")
    assert isinstance(info.value.__cause__, OSError)
    assert blocker.read_text() == "x"


async def test_a_symlink_at_the_destination_is_replaced_not_followed(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"archive" * 100)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    final = out / f"{backup.uuid}.tar.gz"
    final.symlink_to(victim)
    resource = client.backups(server.identifier)
    with pytest.raises(FileExistsError):
        await resource.download(backup.uuid, out)
    result = await resource.download(backup.uuid, out, overwrite=True)
    assert result.path == final
    assert not final.is_symlink()
    assert final.read_bytes() == b"archive" * 100
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------------------- where files go


def files_under(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture
async def hostile_link_host() -> AsyncIterator[tuple[str, LinkHost]]:
    content = os.urandom(64_000)
    headers = {
        "Content-Disposition": (
            "attachment; filename=\"../../evil.sh\"; filename*=UTF-8''..%2F..%2Fevil.sh"
        ),
        "Content-Type": "application/x-sh",
    }
    host = LinkHost(content, headers)
    async with serve(host.app) as url:
        yield url + "/file", host


async def test_content_disposition_and_backup_name_never_decide_the_file_name(
    panel: FakePanel,
    client: PteroClient,
    hostile_link_host: tuple[str, LinkHost],
    tmp_path: pathlib.Path,
) -> None:
    link, host = hostile_link_host
    server = panel.add_server()
    backup = panel.add_backup(server, content=host.content, name="../../evil.sh")
    backup.link_factory = lambda: link
    root = tmp_path / "root"
    dest = root / "a" / "b"
    dest.mkdir(parents=True)
    result = await client.backups(server.identifier).download(backup.uuid, dest)
    assert result.path == dest / f"{backup.uuid}.tar.gz"
    assert files_under(root) == [dest / f"{backup.uuid}.tar.gz"]
    assert result.path.read_bytes() == host.content
    assert not list(tmp_path.parent.glob("**/evil.sh"))
    assert len(host.seen_headers) == 1


async def test_download_many_names_files_by_uuid_only(
    panel: FakePanel,
    client: PteroClient,
    hostile_link_host: tuple[str, LinkHost],
    tmp_path: pathlib.Path,
) -> None:
    link, host = hostile_link_host
    servers: list[FakeServer] = [panel.add_server(name=f"s{i}") for i in range(2)]
    hostile = panel.add_backup(servers[0], content=host.content, name="../../../evil.sh")
    hostile.link_factory = lambda: link
    # FakePanel's own wings link: Content-Disposition names the uuid; the name suggests more.
    plain = panel.add_backup(servers[1], content=b"x" * 5000, name="/etc/cron.d/evil")
    outcomes = await client.download_many(
        [(servers[0].identifier, hostile.uuid), (servers[1].identifier, plain.uuid)], tmp_path
    )
    assert all(o.error is None for o in outcomes)
    assert files_under(tmp_path) == sorted(
        [tmp_path / f"{hostile.uuid}.tar.gz", tmp_path / f"{plain.uuid}.tar.gz"]
    )


async def test_a_panel_listing_a_hostile_uuid_gets_no_link_requested(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    real = panel.add_backup(server)
    listed = await client.backups(server.identifier).list_page()
    forged = attrs.evolve(listed.items[0], uuid=f"../../{real.uuid}")
    panel.clear_requests()
    with pytest.raises(InvalidArgumentError):
        await client.download_many([(server.identifier, forged)], tmp_path)
    assert panel.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "ftp://127.0.0.1/backup.tar.gz",
        "/download/backup?token=relative",
        "http:///no-host",
    ],
)
async def test_a_link_that_is_not_http_is_refused_and_nothing_is_written(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path, url: str
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"x" * 1000)
    backup.link_factory = lambda: url
    with pytest.raises(ResponseValidationError):
        await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert panel.link_requests() == []
