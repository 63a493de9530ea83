"""download() and download_many() against both storage modes, every scripted fault."""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import pathlib
import subprocess
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from ptero_backups_async import (
    BackupFailedError,
    BackupNotCompletedError,
    ChecksumMismatchError,
    DestinationExistsError,
    DownloadError,
    DownloadProgress,
    InvalidArgumentError,
    NotFoundError,
    PteroClient,
)
from ptero_backups_async.testing import DownloadFault, FakePanel

from .conftest import register_key

pytestmark = pytest.mark.anyio

STORAGES = ["wings", "s3"]
CONTENT = os.urandom(3 * 1024 * 1024 + 12345)


@pytest.fixture(params=STORAGES)
async def storage_panel(request: pytest.FixtureRequest) -> AsyncIterator[FakePanel]:
    async with FakePanel(storage=request.param) as panel:
        register_key(panel.api_key)
        yield panel


@pytest.fixture
async def sclient(storage_panel: FakePanel) -> AsyncIterator[PteroClient]:
    async with PteroClient(storage_panel.url, storage_panel.api_key) as client:
        yield client


def no_leftovers(directory: pathlib.Path) -> None:
    assert not list(directory.rglob("*.part")), "a .part file was left behind"


def assert_link_requests_clean(panel: FakePanel) -> None:
    for request in panel.link_requests():
        assert "authorization" not in request.headers
        assert "cookie" not in request.headers
        assert panel.api_key not in str(request.headers)
        assert "gzip" not in request.headers.get("accept-encoding", "identity")


async def test_download_into_a_directory(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT, name="../../evil name")
    seen: list[DownloadProgress] = []
    result = await sclient.backups(server.identifier).download(
        backup.uuid, tmp_path, progress=seen.append
    )
    assert result.path == tmp_path / f"{backup.uuid}.tar.gz"
    assert result.path.read_bytes() == CONTENT
    assert result.verified
    assert not result.skipped
    assert result.attempts == 1
    assert result.bytes == len(CONTENT)
    assert result.checksum.hexdigest == hashlib.sha1(CONTENT).hexdigest()
    assert seen[-1].bytes_done == seen[-1].bytes_total == len(CONTENT)
    done = [p.bytes_done for p in seen]
    assert done == sorted(done)
    assert_link_requests_clean(storage_panel)
    links = storage_panel.link_requests()
    assert len(links) == 1
    assert "range" not in links[0].headers
    no_leftovers(tmp_path)


async def test_download_to_a_file_path_creates_parents(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"abc" * 1000)
    target = tmp_path / "a" / "b" / "mine.tar.gz"
    result = await client.backups(server.identifier).download(backup.uuid, target)
    assert result.path == target
    assert target.read_bytes() == b"abc" * 1000


async def test_existing_matching_file_is_skipped_without_a_link(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    backups = client.backups(server.identifier)
    await backups.download(backup.uuid, tmp_path)
    panel.clear_requests()
    again = await backups.download(backup.uuid, tmp_path)
    assert again.skipped
    assert again.verified
    assert again.attempts == 0
    assert not any(r.path.endswith("/download") for r in panel.api_requests())
    assert panel.link_requests() == []


async def test_existing_different_file_needs_overwrite(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    target = tmp_path / f"{backup.uuid}.tar.gz"
    target.write_bytes(b"something else")
    backups = client.backups(server.identifier)
    with pytest.raises(DestinationExistsError) as info:
        await backups.download(backup.uuid, tmp_path)
    assert isinstance(info.value, FileExistsError)
    assert target.read_bytes() == b"something else"
    result = await backups.download(backup.uuid, tmp_path, overwrite=True)
    assert result.path.read_bytes() == CONTENT


@pytest.mark.parametrize("state", ["creating", "failed"])
async def test_unfinished_backups_are_refused_before_any_link(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path, state: str
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, state=state)  # type: ignore[arg-type]
    panel.clear_requests()
    expected = BackupNotCompletedError if state == "creating" else BackupFailedError
    with pytest.raises(expected):
        await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert not any(r.path.endswith("/download") for r in panel.api_requests())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raw", ["sha1:nothex", None, "md4:abcd"])
async def test_unverifiable_checksum(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path, raw: str | None
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"data" * 10, checksum=raw)
    backups = client.backups(server.identifier)
    panel.clear_requests()
    with pytest.raises(DownloadError, match="verify=False") as info:
        await backups.download(backup.uuid, tmp_path)
    if raw:
        assert raw in str(info.value)
    assert not any(r.path.endswith("/download") for r in panel.api_requests())
    result = await backups.download(backup.uuid, tmp_path, verify=False)
    assert not result.verified
    assert result.path.read_bytes() == b"data" * 10


async def test_missing_backup_propagates_not_found(
    client: PteroClient, panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    with pytest.raises(NotFoundError):
        await client.backups(server.identifier).download(
            "00000000-0000-4000-8000-000000000000", tmp_path
        )


# ---- faults, both storage modes -------------------------------------------------------------


async def test_drop_mid_body_recovers_with_a_fresh_link(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.drop_after(1_000_000))
    seen: list[DownloadProgress] = []
    result = await sclient.backups(server.identifier).download(
        backup.uuid, tmp_path, progress=seen.append
    )
    assert result.path.read_bytes() == CONTENT
    assert result.attempts == 2
    links = storage_panel.link_requests()
    assert len(links) == 2
    assert links[0].query != links[1].query, "each attempt must use a fresh link"
    link_api_calls = [r for r in storage_panel.api_requests() if r.path.endswith("/download")]
    assert len(link_api_calls) == 2
    if storage_panel.storage == "s3":
        # S3 honours Range: the second attempt resumes where the first stopped.
        assert links[1].headers["range"].startswith("bytes=")
        assert int(links[1].headers["range"][6:-1]) >= 1
        assert links[1].status == 206
    else:
        # Wings ignores Range: never sent, restart from zero, progress goes back honestly.
        assert "range" not in links[1].headers
        done = [p.bytes_done for p in seen]
        assert any(later < earlier for earlier, later in itertools.pairwise(done))
    assert seen[-1].bytes_done == len(CONTENT)
    assert_link_requests_clean(storage_panel)
    no_leftovers(tmp_path)


async def test_corrupt_byte_is_retried_once_from_zero(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.corrupt(777))
    result = await sclient.backups(server.identifier).download(backup.uuid, tmp_path)
    assert result.path.read_bytes() == CONTENT
    assert result.attempts == 2
    assert "range" not in storage_panel.link_requests()[1].headers


async def test_corruption_twice_is_checksum_mismatch(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.corrupt(5), DownloadFault.corrupt(9))
    with pytest.raises(ChecksumMismatchError) as info:
        await sclient.backups(server.identifier).download(backup.uuid, tmp_path)
    assert info.value.expected.hexdigest == hashlib.sha1(CONTENT).hexdigest()
    assert info.value.actual != info.value.expected
    assert info.value.attempts == 2
    assert list(tmp_path.iterdir()) == []


async def test_stall_past_read_timeout_recovers(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.stall(500_000, 3.0))
    result = await sclient.backups(server.identifier).download(
        backup.uuid, tmp_path, read_timeout=0.3
    )
    assert result.path.read_bytes() == CONTENT
    assert result.attempts == 2


@pytest.mark.parametrize("code", [500, 502, 503, 404])
async def test_link_host_errors_recover(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path, code: int
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.status(code), DownloadFault.expired())
    result = await sclient.backups(server.identifier).download(backup.uuid, tmp_path)
    assert result.path.read_bytes() == CONTENT
    assert result.attempts == 3


async def test_reusing_a_wings_link_is_404(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    import aiohttp

    server = panel.add_server()
    backup = panel.add_backup(server, content=b"x" * 100)
    url = await client.backups(server.identifier).download_url(backup.uuid)
    async with aiohttp.ClientSession() as raw:
        async with raw.get(url) as first:
            assert first.status == 200
            await first.read()
        async with raw.get(url) as second:
            assert second.status == 404


async def test_every_attempt_failing_is_a_download_error_with_history(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(
        backup,
        DownloadFault.drop_after(100),
        DownloadFault.status(503),
        DownloadFault.expired(),
    )
    with pytest.raises(DownloadError) as info:
        await sclient.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=3)
    error = info.value
    assert error.attempts == 3
    assert len(error.history) == 3
    assert "503" in error.history[1]
    assert len(storage_panel.link_requests()) == 3
    assert list(tmp_path.iterdir()) == []


async def test_cancellation_removes_the_part_and_propagates(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.stall(1_500_000, 30))
    reached: list[int] = []

    def progress(p: DownloadProgress) -> None:
        reached.append(p.bytes_done)

    with anyio.move_on_after(1.0) as scope:
        await sclient.backups(server.identifier).download(
            backup.uuid, tmp_path, progress=progress, read_timeout=20
        )
    assert scope.cancelled_caught
    assert reached, "the download never started"
    assert list(tmp_path.iterdir()) == []


async def test_disk_error_is_download_error_with_cause(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    if os.geteuid() == 0:
        # root ignores permissions: use a path under a file instead of a read-only folder.
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "sub" / "x.tar.gz"
    else:  # pragma: no cover - CI runs as root
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        target = locked / "x.tar.gz"
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"abc")
    with pytest.raises(DownloadError) as info:
        await client.backups(server.identifier).download(backup.uuid, target)
    assert isinstance(info.value.__cause__, OSError)


async def test_download_many_isolates_failures_and_keeps_order(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    servers = [panel.add_server(name=f"s{i}") for i in range(3)]
    backups = [panel.add_backup(s, content=os.urandom(200_000 + i)) for i, s in enumerate(servers)]
    creating = panel.add_backup(servers[0], state="creating")
    panel.script_download(backups[1], *[DownloadFault.status(500)] * 5)
    targets = [(s.identifier, b.uuid) for s, b in zip(servers, backups, strict=True)]
    targets.insert(1, (servers[0].identifier, creating.uuid))
    seen: list[DownloadProgress] = []
    outcomes = await client.download_many(
        targets, tmp_path / "out", concurrency=2, progress=seen.append, max_attempts=2
    )
    assert [o.backup_uuid for o in outcomes] == [t[1] for t in targets]
    assert outcomes[0].result is not None
    assert isinstance(outcomes[1].error, BackupNotCompletedError)
    assert isinstance(outcomes[2].error, DownloadError)
    assert outcomes[3].result is not None
    assert outcomes[3].result.path.read_bytes() == backups[2].content
    assert {p.backup_uuid for p in seen} >= {backups[0].uuid, backups[2].uuid}
    no_leftovers(tmp_path)


async def test_download_many_cancellation_cancels_all(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    servers = [panel.add_server(name=f"s{i}") for i in range(3)]
    targets = []
    for s in servers:
        b = panel.add_backup(s, content=CONTENT)
        panel.script_download(b, DownloadFault.stall(100_000, 30))
        targets.append((s.identifier, b.uuid))
    with anyio.move_on_after(1.0) as scope:
        await client.download_many(targets, tmp_path, concurrency=3, read_timeout=20)
    assert scope.cancelled_caught
    assert not list(tmp_path.glob("*.tar.gz*"))


@pytest.fixture
def tiny_filesystem(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 1 MiB tmpfs, so that writes fail with ENOSPC (needs root to mount)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


async def test_disk_full_is_download_error_and_leaves_nothing(
    panel: FakePanel, client: PteroClient, tiny_filesystem: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    with pytest.raises(DownloadError) as info:
        await client.backups(server.identifier).download(backup.uuid, tiny_filesystem)
    cause = info.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.errno == errno.ENOSPC
    assert list(tiny_filesystem.iterdir()) == []


async def test_a_symlink_at_the_part_path_is_not_followed(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"archive" * 100)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / f"{backup.uuid}.tar.gz.part").symlink_to(victim)
    result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert result.path.read_bytes() == b"archive" * 100
    assert victim.read_text() == "precious"


async def test_callers_session_headers_and_cookies_never_reach_the_link_host(
    panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    import aiohttp
    import yarl

    server = panel.add_server()
    backup = panel.add_backup(server, content=b"z" * 5000)
    jar = aiohttp.CookieJar(unsafe=True)
    jar.update_cookies({"panel_session": "s3cr3t"}, yarl.URL(panel.link_url))
    async with aiohttp.ClientSession(
        cookie_jar=jar, headers={"X-Bot-Token": "bot-secret"}
    ) as session:
        async with PteroClient(panel.url, panel.api_key, session=session) as client:
            await client.backups(server.identifier).download(backup.uuid, tmp_path)
    (link,) = panel.link_requests()
    assert "cookie" not in link.headers
    assert "x-bot-token" not in link.headers
    assert "authorization" not in link.headers
    # The caller's session did carry them to the panel: the separation is what matters.
    assert any("x-bot-token" in r.headers for r in panel.api_requests())


async def test_progress_reaches_the_last_byte_before_a_stall(
    storage_panel: FakePanel, sclient: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = storage_panel.add_server()
    backup = storage_panel.add_backup(server, content=CONTENT)
    storage_panel.script_download(backup, DownloadFault.stall(500_000, 1.0))
    seen: list[DownloadProgress] = []
    await sclient.backups(server.identifier).download(
        backup.uuid, tmp_path, progress=seen.append, read_timeout=5
    )
    # A progress bar shows where the transfer stopped while it waits, not an older figure.
    assert 500_000 in [p.bytes_done for p in seen]
    assert seen[-1].bytes_done == len(CONTENT)
    assert len(seen) < 40, "progress is rate-limited"


async def test_download_many_with_a_destination_per_target(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    first, second = panel.add_server(name="a"), panel.add_server(name="b")
    one = panel.add_backup(first, content=b"1" * 1000)
    two = panel.add_backup(second, content=b"2" * 1000)
    outcomes = await client.download_many(
        [
            (first.identifier, one.uuid, tmp_path / "a" / "one.tar.gz"),
            (second.identifier, two.uuid),
        ],
        tmp_path / "rest",
    )
    assert [o.ok for o in outcomes] == [True, True]
    assert (tmp_path / "a" / "one.tar.gz").read_bytes() == b"1" * 1000
    assert (tmp_path / "rest" / f"{two.uuid}.tar.gz").read_bytes() == b"2" * 1000
    with pytest.raises(InvalidArgumentError):
        await client.download_many([(first.identifier,)], tmp_path)  # type: ignore[list-item]
