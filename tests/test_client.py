"""The client and every backup endpoint, against FakePanel over real loopback sockets."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anyio
import pytest

from ptero_backups_async import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BackupFailedError,
    BackupLockedError,
    BackupState,
    Checksum,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PteroClient,
    PteroError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    TooManyBackupsError,
    UnsupportedOperationError,
    WaitTimeoutError,
)
from ptero_backups_async.testing import FakePanel

from .conftest import register_key
from .faults._tools import fast_retries

pytestmark = pytest.mark.anyio

DIALECTS = ["pterodactyl", "pelican", "reference"]


def backup_requests(panel: FakePanel, method: str = "GET") -> list[Any]:
    return [r for r in panel.api_requests() if r.method == method and "/backups" in r.path]


async def test_120_backups_list_as_120_distinct_items_in_pages_of_50(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server(backup_limit=200)
    made = {panel.add_backup(server, name=f"b{i}").uuid for i in range(120)}
    panel.clear_requests()
    listed = [b async for b in client.backups(server.identifier).list()]
    assert len(listed) == 120
    assert {b.uuid for b in listed} == made
    pages = backup_requests(panel)
    assert [r.query["page"] for r in pages] == ["1", "2", "3"]
    assert all(r.query["per_page"] == "50" for r in pages)
    page = await client.backups(server.uuid).list_page(page=3, per_page=500)
    assert (len(page.items), page.per_page, page.total, page.total_pages) == (20, 50, 120, 3)
    assert page.backup_count == 120


async def test_list_is_lazy(panel: FakePanel, client: PteroClient) -> None:
    server = panel.add_server(backup_limit=200)
    for i in range(60):
        panel.add_backup(server, name=f"b{i}")
    panel.clear_requests()
    async for _ in client.backups(server.identifier).list(per_page=10):
        break
    assert len(backup_requests(panel)) == 1


async def test_bad_key_is_authentication_error(panel: FakePanel) -> None:
    server = panel.add_server()
    wrong = register_key("ptlc_" + "x" * 39 + "9876")
    async with PteroClient(panel.url, wrong) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.backups(server.identifier).list_page()
    assert info.value.status == 401
    assert wrong not in str(info.value)
    assert wrong not in repr(client)
    assert "ptlc_…9876" in repr(client)


async def test_application_key_is_permission_denied(panel: FakePanel) -> None:
    server = panel.add_server()
    async with PteroClient(panel.url, register_key("ptla_" + "a" * 43)) as client:
        with pytest.raises(PermissionDeniedError):
            await client.backups(server.identifier).list_page()


async def test_unknown_server_is_not_found(client: PteroClient) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.backups("0badc0de").list_page()
    assert info.value.code == "NotFoundHttpException"


async def test_invalid_ids_never_reach_a_url(panel: FakePanel, client: PteroClient) -> None:
    server = panel.add_server()
    panel.clear_requests()
    for bad in ("../x", "d3aac109/../../api", "", "d3aac109?x=1"):
        with pytest.raises(InvalidArgumentError):
            client.backups(bad)
    resource = client.backups(server.identifier)
    for bad_uuid in ("../../servers", "x", server.uuid + "/download"):
        with pytest.raises(InvalidArgumentError) as info:
            await resource.get(bad_uuid)
        assert isinstance(info.value, ValueError)
    assert panel.requests == []


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_locked_successful_backup_delete_is_backup_locked_error(dialect: str) -> None:
    async with FakePanel(dialect=dialect) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        locked = panel.add_backup(server, locked=True)
        open_ = panel.add_backup(server)
        async with PteroClient(panel.url, register_key(panel.api_key)) as client:
            backups = client.backups(server.identifier)
            with pytest.raises(BackupLockedError):
                await backups.delete(locked.uuid)
            await backups.delete(open_.uuid)
            with pytest.raises(NotFoundError):
                await backups.get(open_.uuid)
            assert (await backups.get(locked.uuid)).is_locked


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_restore_always_sends_truncate(dialect: str) -> None:
    async with FakePanel(dialect=dialect, restore_duration=0.3) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        backup = panel.add_backup(server)
        key = register_key(panel.api_key)
        url = f"{panel.url}/api/client/servers/{server.identifier}/backups/{backup.uuid}/restore"
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        if dialect != "reference":
            # Without the SDK: the real panels require truncate.
            async with aiohttp.ClientSession() as raw, raw.post(url, headers=headers, json={}) as r:
                assert r.status == 422
        async with PteroClient(panel.url, key) as client:
            await client.backups(server.identifier).restore(backup.uuid)
            restores = [r for r in panel.api_requests() if r.path.endswith("/restore")]
            assert json.loads(restores[-1].body) == {"truncate": False}
            assert restores[-1].status in (202, 204)
            # While the restore runs every backup route answers 409.
            with pytest.raises(ConflictError):
                await client.backups(server.identifier).list_page()
            # wait() keeps polling through 409.
            done = await client.backups(server.identifier).wait(backup.uuid, poll_interval=0.05)
            assert done.uuid == backup.uuid


async def test_restore_truncate_true_is_sent(panel: FakePanel, client: PteroClient) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server)
    await client.backups(server.identifier).restore(backup.uuid, truncate=True)
    restores = [r for r in panel.api_requests() if r.path.endswith("/restore")]
    assert json.loads(restores[-1].body) == {"truncate": True}


async def test_two_503_then_success(panel: FakePanel) -> None:
    server = panel.add_server()
    panel.add_backup(server)
    panel.inject(method="GET", path="/backups$", status=503, times=2)
    panel.clear_requests()
    transport, sleep = fast_retries()  # backoff is recorded, not waited for
    async with PteroClient(panel.url, panel.api_key, transport=transport) as client:
        page = await client.backups(server.identifier).list_page()
    assert len(page.items) == 1
    assert len(backup_requests(panel)) == 3
    assert len(sleep.delays) == 2


async def test_persistent_503_gives_server_error_after_the_retry_budget(panel: FakePanel) -> None:
    server = panel.add_server()
    panel.inject(method="GET", path="/backups$", status=503, times=10)
    transport, _ = fast_retries()
    async with PteroClient(panel.url, panel.api_key, max_retries=2, transport=transport) as client:
        panel.clear_requests()
        with pytest.raises(ServerError) as info:
            await client.backups(server.identifier).list_page()
    assert info.value.status == 503
    assert len(backup_requests(panel)) == 3


async def test_post_is_not_retried_after_a_5xx(panel: FakePanel, client: PteroClient) -> None:
    server = panel.add_server()
    panel.inject(method="POST", path="/backups$", status=502, times=1)
    panel.clear_requests()
    with pytest.raises(ServerError):
        await client.backups(server.identifier).create(name="once")
    assert len(backup_requests(panel, "POST")) == 1


async def test_create_429_is_retried_but_a_long_retry_after_raises_at_once(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    backups = client.backups(server.identifier)
    panel.inject(method="POST", path="/backups$", status=429, headers={"Retry-After": "0"})
    first = await backups.create(name="a")
    assert first.state is BackupState.CREATING or first.state is BackupState.COMPLETED
    await backups.create(name="b")
    # The panel's creation throttle: 2 per 600 s, Retry-After far beyond the 60 s cap.
    with anyio.fail_after(10), pytest.raises(RateLimitError) as info:
        await backups.create(name="c")
    assert info.value.retry_after is not None
    assert info.value.retry_after > 60


async def test_backup_limit_is_too_many_backups(client: PteroClient, panel: FakePanel) -> None:
    server = panel.add_server(backup_limit=1)
    panel.add_backup(server)
    with pytest.raises(TooManyBackupsError):
        await client.backups(server.identifier).create()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_lock_twice_stays_locked_unlock_twice_stays_unlocked(dialect: str) -> None:
    async with FakePanel(dialect=dialect) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        backup = panel.add_backup(server)
        async with PteroClient(panel.url, register_key(panel.api_key)) as client:
            backups = client.backups(server.identifier)
            assert (await backups.lock(backup.uuid)).is_locked
            assert (await backups.lock(backup.uuid)).is_locked
            assert (await backups.get(backup.uuid)).is_locked
            assert not (await backups.unlock(backup.uuid)).is_locked
            assert not (await backups.unlock(backup.uuid)).is_locked
            assert not (await backups.get(backup.uuid)).is_locked
            toggled = await backups.toggle_lock(backup.uuid)
            assert toggled.is_locked


@pytest.mark.parametrize(
    ("dialect", "algorithm"),
    [("pterodactyl", "sha1"), ("pelican", "sha1"), ("reference", "sha256")],
)
async def test_checksum_algorithm_per_dialect(dialect: str, algorithm: str) -> None:
    import hashlib

    content = b"backup archive bytes" * 100
    async with FakePanel(dialect=dialect) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        made = panel.add_backup(server, content=content)
        async with PteroClient(panel.url, register_key(panel.api_key)) as client:
            backup = await client.backups(server.identifier).get(made.uuid)
    assert backup.checksum == Checksum(algorithm, hashlib.new(algorithm, content).hexdigest())
    assert backup.bytes == len(content)
    assert backup.state is BackupState.COMPLETED
    assert backup.is_scheduled is (False if dialect == "pelican" else None)


async def test_legacy_sha256_checksum_on_a_real_panel(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    made = panel.add_backup(server, checksum_algorithm="sha256")
    backup = await client.backups(server.identifier).get(made.uuid)
    assert backup.checksum is not None
    assert backup.checksum.algorithm == "sha256"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_create_then_wait(dialect: str) -> None:
    async with FakePanel(dialect=dialect, backup_duration=0.3) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        async with PteroClient(panel.url, register_key(panel.api_key)) as client:
            backups = client.backups(server.identifier)
            created = await backups.create(
                name="nightly", ignored=["*.log", "cache/*"], is_locked=True
            )
            assert created.state is BackupState.CREATING
            assert created.is_locked
            assert created.ignored_files == ("*.log", "cache/*")
            posted = backup_requests(panel, "POST")[-1]
            assert json.loads(posted.body) == {
                "name": "nightly",
                "ignored": "*.log\ncache/*",
                "is_locked": True,
            }
            done = await backups.wait(created, poll_interval=0.05)
            assert done.state is BackupState.COMPLETED
            assert done.checksum is not None
            assert done.completed_at is not None


async def test_wait_on_a_failing_backup(panel: FakePanel, client: PteroClient) -> None:
    server = panel.add_server(fail_backups=True)
    panel_backups = client.backups(server.identifier)
    created = await panel_backups.create()
    with pytest.raises(BackupFailedError) as info:
        await panel_backups.wait(created.uuid, poll_interval=0.05, timeout=10)
    assert info.value.backup is not None
    assert info.value.backup.state is BackupState.FAILED


async def test_wait_times_out() -> None:
    async with FakePanel(backup_duration=60) as panel:
        server = panel.add_server()
        async with PteroClient(panel.url, register_key(panel.api_key)) as client:
            created = await client.backups(server.identifier).create()
            with anyio.fail_after(10), pytest.raises(WaitTimeoutError) as info:
                await client.backups(server.identifier).wait(
                    created, timeout=0.3, poll_interval=0.05
                )
            assert isinstance(info.value, TimeoutError)


async def test_wait_raises_not_found_when_the_backup_disappears(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, state="creating")
    backups = client.backups(server.identifier)
    # Polling sees it at the next poll; on events (the node says nothing of a deletion) it is
    # the safety poll that sees it, minutes later.
    async with aiohttp_delete_later(client, server.identifier, backup.uuid):
        with pytest.raises(NotFoundError):
            await backups.wait(backup.uuid, poll_interval=0.05, timeout=10, via="poll")


class aiohttp_delete_later:
    """Deletes a backup shortly after entering (through the SDK)."""

    def __init__(self, client: PteroClient, server: str, uuid: str) -> None:
        self.client, self.server, self.uuid = client, server, uuid

    async def __aenter__(self) -> None:
        import anyio

        async def later() -> None:
            await anyio.sleep(0.15)
            await self.client.backups(self.server).delete(self.uuid)

        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(later)

    async def __aexit__(self, *exc: object) -> None:
        await self._tg.__aexit__(None, None, None)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_rename(dialect: str) -> None:
    async with FakePanel(dialect=dialect) as panel:  # type: ignore[arg-type]
        server = panel.add_server()
        backup = panel.add_backup(server, name="old")
        async with PteroClient(panel.url, register_key(panel.api_key)) as client:
            backups = client.backups(server.identifier)
            if dialect == "pelican":
                assert (await backups.rename(backup.uuid, "new")).name == "new"
            else:
                with pytest.raises(UnsupportedOperationError):
                    await backups.rename(backup.uuid, "new")
            missing = "00000000-0000-4000-8000-000000000000"
            with pytest.raises(NotFoundError):
                await backups.rename(missing, "new")


async def test_download_url(panel: FakePanel, client: PteroClient) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server)
    url = await client.backups(server.identifier).download_url(backup.uuid)
    assert url.startswith(panel.link_url)


async def test_servers_iterates_every_page(panel: FakePanel, client: PteroClient) -> None:
    made = {panel.add_server(name=f"s{i}").uuid for i in range(55)}
    servers = [s async for s in client.servers()]
    assert {s.uuid for s in servers} == made
    assert all(len(s.identifier) == 8 for s in servers)


async def test_path_prefix_is_kept() -> None:
    async with FakePanel(path_prefix="/panel") as panel:
        server = panel.add_server()
        panel.add_backup(server)
        assert panel.url.endswith("/panel")
        async with PteroClient(panel.url + "/", register_key(panel.api_key)) as client:
            page = await client.backups(server.identifier).list_page()
        assert len(page.items) == 1
        assert panel.api_requests()[-1].path.startswith("/panel/api/client/")


async def test_html_and_redirect_answers_are_response_validation_errors(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    backups = client.backups(server.identifier)
    panel.inject(method="GET", path="/backups$", kind="html", status=200)
    with pytest.raises(ResponseValidationError, match="not JSON"):
        await backups.list_page()
    panel.inject(method="GET", path="/backups$", kind="redirect", status=302)
    with pytest.raises(ResponseValidationError, match="redirect"):
        await backups.list_page()
    panel.inject(method="GET", path="/backups$", kind="empty", status=200)
    with pytest.raises(ResponseValidationError, match="empty"):
        await backups.list_page()
    panel.inject(method="GET", path="/backups$", kind="json", status=200, json_body={"data": 1})
    with pytest.raises(ResponseValidationError):
        await backups.list_page()


async def test_an_html_error_page_still_maps_by_status(
    panel: FakePanel, client: PteroClient
) -> None:
    server = panel.add_server()
    panel.inject(method="GET", path="/backups$", kind="html", status=404)
    with pytest.raises(NotFoundError, match="the panel sent"):
        await client.backups(server.identifier).list_page()


async def test_connection_refused_is_api_connection_error() -> None:
    async with FakePanel() as panel:
        url, key = panel.url, register_key(panel.api_key)
    async with PteroClient(url, key, max_retries=1) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.backups("d3aac109").list_page()
    assert not isinstance(info.value, APITimeoutError)
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


async def test_stall_is_api_timeout_error(panel: FakePanel) -> None:
    server = panel.add_server()
    panel.inject(method="GET", path="/backups$", kind="stall", delay=5, times=5)
    async with PteroClient(panel.url, panel.api_key, timeout=0.2, max_retries=1) as client:
        with anyio.fail_after(10), pytest.raises(APITimeoutError) as info:
            await client.backups(server.identifier).list_page()
    assert isinstance(info.value, TimeoutError)
    assert len(backup_requests(panel)) == 2


async def test_rate_limit_headers_are_tracked() -> None:
    # Pacing on them is timed on a fake clock in test_panel_logic.py.
    async with FakePanel(rate_limit=50, rate_limit_period=60.0) as panel:
        server = panel.add_server()
        async with PteroClient(panel.url, register_key(panel.api_key)) as client:
            assert client.rate_limit is None
            backups = client.backups(server.identifier)
            for _ in range(3):
                await backups.list_page()
            assert client.rate_limit is not None
            assert client.rate_limit.limit == 50
            assert client.rate_limit.remaining == 47


async def test_callers_session_is_used_and_left_open(panel: FakePanel) -> None:
    server = panel.add_server()
    async with aiohttp.ClientSession() as session:
        async with PteroClient(panel.url, panel.api_key, session=session) as client:
            await client.backups(server.identifier).list_page()
        assert not session.closed


async def test_closed_client_refuses_calls(panel: FakePanel) -> None:
    server = panel.add_server()
    client = PteroClient(panel.url, panel.api_key)
    await client.aclose()
    with pytest.raises(PteroError, match="closed"):
        await client.backups(server.identifier).list_page()


def test_constructor_validates() -> None:
    with pytest.raises(InvalidArgumentError):
        PteroClient("not a url", "ptlc_x")
    with pytest.raises(InvalidArgumentError):
        PteroClient("https://panel.example.com", "ptlc_bad key")
    with pytest.raises(InvalidArgumentError):
        PteroClient("https://panel.example.com", "ptlc_x", timeout=0)
    with pytest.raises(InvalidArgumentError):
        PteroClient("https://panel.example.com", "ptlc_x", max_concurrency=0)


def test_plain_http_to_a_remote_panel_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="ptero_backups_async"):
        PteroClient("http://panel.example.com", "ptlc_" + "k" * 43)
        PteroClient("http://127.0.0.1:8080", "ptlc_" + "k" * 43)
    warnings = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 1


async def test_prune_keeps_the_newest_successful_and_every_locked(
    panel: FakePanel, client: PteroClient
) -> None:
    from datetime import datetime, timedelta, timezone

    server = panel.add_server(backup_limit=20)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    made = [panel.add_backup(server, created_at=start + timedelta(days=i)) for i in range(5)]
    oldest_locked = panel.add_backup(server, locked=True, created_at=start - timedelta(days=9))
    failed = panel.add_backup(server, state="failed", created_at=start + timedelta(days=10))
    creating = panel.add_backup(server, state="creating", created_at=start + timedelta(days=11))
    backups = client.backups(server.identifier)
    panel.clear_requests()
    planned = await backups.prune(keep=2, dry_run=True)
    assert [b.uuid for b in planned] == [made[0].uuid, made[1].uuid, made[2].uuid, failed.uuid]
    assert not [r for r in panel.api_requests() if r.method == "DELETE"]
    deleted = await backups.prune(keep=2)
    assert [b.uuid for b in deleted] == [b.uuid for b in planned]
    left = {b.uuid async for b in backups.list()}
    assert left == {made[3].uuid, made[4].uuid, oldest_locked.uuid, creating.uuid}


async def test_create_with_rotate_deletes_the_oldest_unlocked_successful(
    panel: FakePanel, client: PteroClient
) -> None:
    from datetime import datetime, timedelta, timezone

    server = panel.add_server(backup_limit=3)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    locked = panel.add_backup(server, locked=True, created_at=start)
    oldest = panel.add_backup(server, created_at=start + timedelta(days=1))
    newer = panel.add_backup(server, created_at=start + timedelta(days=2))
    backups = client.backups(server.identifier)
    with pytest.raises(TooManyBackupsError):
        await backups.create(name="no room")
    created = await backups.create(name="rotated in", rotate=True)
    left = {b.uuid async for b in backups.list()}
    assert left == {locked.uuid, newer.uuid, created.uuid}
    assert oldest.uuid not in left


async def test_prune_and_rotate_leave_an_unusable_entry_alone(
    panel: FakePanel, client: PteroClient, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import datetime, timedelta, timezone

    server = panel.add_server(backup_limit=3)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # The panel lists an entry whose "UUID" no request could name; it is older than the rest.
    panel.add_backup(server, uuid="../../etc/x", created_at=start)
    made = [panel.add_backup(server, created_at=start + timedelta(days=i + 1)) for i in range(2)]
    backups = client.backups(server.identifier)
    deleted = await backups.prune(keep=1)
    assert [b.uuid for b in deleted] == [made[0].uuid]
    assert "unusable entry" in caplog.text
    panel.add_backup(server, created_at=start + timedelta(days=5))
    created = await backups.create(name="rotated in", rotate=True)
    left = {b.uuid async for b in backups.list()}
    assert made[1].uuid not in left
    assert {"../../etc/x", created.uuid} <= left
