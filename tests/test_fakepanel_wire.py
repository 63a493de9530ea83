"""FakePanel's own answers, in each dialect, through the strict converter and the fixtures.

`test_converter.py` holds the converter to the recorded panel JSON; this holds FakePanel to the
same standard, so that the fake cannot drift from what real panels (and the reference page)
send without a test failing: unknown keys are forbidden, the keys of each object are those of
the recorded fixtures of its dialect, and every value has a JSON type the fixtures show for
that key.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import cattrs
import pytest

from ptero_backups_async import (
    APIStatusError,
    AuthenticationError,
    BackupLockedError,
    BackupState,
    Checksum,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    TooManyBackupsError,
    UnprocessableEntityError,
)
from ptero_backups_async._converter import WireConverter
from ptero_backups_async._sansio import parse_error
from ptero_backups_async.testing import FakePanel

pytestmark = pytest.mark.anyio

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
strict = WireConverter(strict=True)

DIALECTS = ["pterodactyl", "pelican", "reference"]
#: The recorded backup objects of each dialect (lists, single backups, a creation).
BACKUP_FIXTURES = {
    "pterodactyl": ["pterodactyl_backup_list.json", "pterodactyl_backup_creating.json"],
    "pelican": ["pelican_backup_list.json"],
    "reference": [
        "reference_backup_list.json",
        "reference_backup.json",
        "reference_backup_created.json",
    ],
}
LIST_FIXTURES = {
    "pterodactyl": "pterodactyl_backup_list.json",
    "pelican": "pelican_backup_list.json",
    "reference": "reference_backup_list.json",
}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def recorded_backups(dialect: str) -> list[dict[str, Any]]:
    """The attributes of every recorded backup of a dialect."""
    found: list[dict[str, Any]] = []
    for name in BACKUP_FIXTURES[dialect]:
        data = load(name)
        items = data["data"] if data.get("object") == "list" else [data]
        found.extend(item["attributes"] for item in items)
    return found


def types_by_key(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            seen.setdefault(key, set()).add(json_type(value))
    return seen


def assert_like_recorded(
    sent: dict[str, Any], recorded: list[dict[str, Any]], *, exact_keys: bool, what: str
) -> None:
    """`sent` has the recorded keys (all of them, or a subset) with recorded JSON types."""
    types = types_by_key(recorded)
    if exact_keys:
        for obj in recorded:
            assert set(sent) == set(obj), f"{what}: keys differ from a recorded object"
    else:
        extra = set(sent) - set(types)
        assert not extra, f"{what}: keys no recorded object has: {sorted(extra)}"
    for key, value in sent.items():
        assert json_type(value) in types[key], (
            f"{what}: {key} is {json_type(value)}, recorded as {sorted(types[key])}"
        )


@attrs.define
class _ErrorMeta:
    source_field: str
    rule: str


@attrs.define
class _ErrorEntry:
    code: str
    status: str
    detail: str
    meta: _ErrorMeta | None = None


@attrs.define
class _ErrorBody:
    errors: list[_ErrorEntry]


def structure_error(data: Any) -> _ErrorBody:
    """An error body through the strict converter's cattrs (unknown keys forbidden)."""
    try:
        body: _ErrorBody = strict.cattrs.structure(data, _ErrorBody)
    except cattrs.BaseValidationError as exc:
        raise AssertionError("; ".join(cattrs.transform_error(exc, path="$"))) from exc
    return body


@pytest.mark.parametrize("name", ["error_locked.json", "error_validation.json"])
def test_the_error_shape_fits_the_recorded_errors(name: str) -> None:
    body = structure_error(load(name))
    assert body.errors
    with pytest.raises(AssertionError, match="surprise"):
        structure_error({"errors": [{**load(name)["errors"][0], "surprise": 1}]})


class Api:
    """A raw client of one FakePanel: bodies as sent, nothing interpreted."""

    def __init__(self, http: aiohttp.ClientSession, panel: FakePanel) -> None:
        self.http = http
        self.panel = panel

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        key: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {
            "Authorization": f"Bearer {key or self.panel.api_key}",
            "Accept": "application/json",
        }
        async with self.http.request(
            method,
            f"{self.panel.url}/api/client{path}",
            json=json_body,
            headers=headers,
            allow_redirects=False,
        ) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        got, _, body = await self(method, path, **kw)
        assert got == status, body[:300]
        return strict.decode(body, f"{method} {path}")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_backup_answers_decode_strictly_and_match_the_fixtures(
    http: aiohttp.ClientSession, dialect: str
) -> None:
    async with FakePanel(dialect=dialect, backup_duration=3600) as panel:  # type: ignore[arg-type]
        api = Api(http, panel)
        server = panel.add_server(backup_limit=20)
        done = panel.add_backup(
            server, content=b"a" * 1000, ignored_files=["*.log", "cache/*"], is_scheduled=True
        )
        panel.add_backup(server, content=b"b" * 10, checksum_algorithm="sha256", locked=True)
        panel.add_backup(server, state="failed")
        panel.add_backup(server, state="creating")
        base = f"/servers/{server.identifier}/backups"
        recorded = recorded_backups(dialect)

        def like_recorded(item: dict[str, Any], what: str) -> None:
            assert item["object"] == "backup"
            assert set(item) == {"object", "attributes"}
            assert_like_recorded(item["attributes"], recorded, exact_keys=True, what=what)

        # list
        listing = await api.ok("GET", base)
        page = strict.backup_page(listing)
        assert [b.state for b in page.items] == [
            BackupState.COMPLETED,
            BackupState.COMPLETED,
            BackupState.FAILED,
            BackupState.CREATING,
        ]
        recorded_list = load(LIST_FIXTURES[dialect])
        assert set(listing) == set(recorded_list)
        assert set(listing["meta"]) == set(recorded_list["meta"])
        assert set(listing["meta"]["pagination"]) == set(recorded_list["meta"]["pagination"])
        assert_like_recorded(
            listing["meta"]["pagination"],
            [recorded_list["meta"]["pagination"]],
            exact_keys=True,
            what="pagination",
        )
        for i, item in enumerate(listing["data"]):
            like_recorded(item, f"list item {i}")
        # a second page, so that the pagination links are there too
        second = await api.ok("GET", base + "?per_page=2&page=2")
        assert set(second["meta"]["pagination"]["links"]) <= {"previous", "next"}
        assert strict.backup_page(second).page == 2

        # get
        one = await api.ok("GET", f"{base}/{done.uuid}")
        backup = strict.backup(one)
        like_recorded(one, "get")
        assert backup.checksum is not None
        algorithm = "sha256" if dialect == "reference" else "sha1"
        assert backup.checksum == Checksum(algorithm, done.hexdigest(algorithm))
        assert backup.ignored_files == ("*.log", "cache/*")
        assert backup.is_scheduled is (True if dialect == "pelican" else None)

        # create (on another server: the reference page refuses one while another runs)
        created = await api.ok(
            "POST",
            f"/servers/{panel.add_server().identifier}/backups",
            json_body={"name": "made", "ignored": "a\nb", "is_locked": False},
        )
        made = strict.backup(created)
        like_recorded(created, "create")
        assert made.state is BackupState.CREATING
        assert made.ignored_files == ("a", "b")

        # lock
        if dialect == "reference":
            status, _, body = await api("POST", f"{base}/{done.uuid}/lock")
            assert (status, body) == (204, b"")
        else:
            locked = await api.ok("POST", f"{base}/{done.uuid}/lock")
            like_recorded(locked, "lock")
            assert strict.backup(locked).is_locked

        # rename (Pelican only)
        if dialect == "pelican":
            renamed = await api.ok("PUT", f"{base}/{done.uuid}/rename", json_body={"name": "new"})
            like_recorded(renamed, "rename")
            assert strict.backup(renamed).name == "new"

        # download link
        signed = await api.ok("GET", f"{base}/{done.uuid}/download")
        assert strict.signed_url(signed).startswith(panel.link_url)
        for name in ("pterodactyl_signed_url.json", "reference_signed_url.json"):
            assert set(signed) == set(load(name))
            assert set(signed["attributes"]) == set(load(name)["attributes"])


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_server_answers_decode_strictly_and_match_the_fixtures(
    http: aiohttp.ClientSession, dialect: str
) -> None:
    async with FakePanel(dialect=dialect) as panel:  # type: ignore[arg-type]
        api = Api(http, panel)
        idle = panel.add_server(name="idle")
        busy = panel.add_server(name="busy")
        panel.start_restore(busy)
        recorded = load("pterodactyl_server_list.json")
        recorded_servers = [item["attributes"] for item in recorded["data"]]

        listing = await api.ok("GET", "")
        page = strict.server_page(listing)
        assert [(s.identifier, s.status) for s in page.items] == [
            (idle.identifier, None),
            (busy.identifier, "restoring_backup"),
        ]
        assert set(listing) == set(recorded)
        assert set(listing["meta"]) == set(recorded["meta"])
        for item in listing["data"]:
            assert set(item) == {"object", "attributes"}
            # The fake leaves out what it does not model (limits, egg, relationships …) but
            # sends nothing a real panel does not, with the same types.
            assert_like_recorded(
                item["attributes"], recorded_servers, exact_keys=False, what="server"
            )

        one = await api.ok("GET", f"/servers/{idle.identifier}")
        assert one["object"] == "server"
        assert_like_recorded(one["attributes"], recorded_servers, exact_keys=False, what="server")


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_error_answers_decode_strictly(http: aiohttp.ClientSession, dialect: str) -> None:
    reference = dialect == "reference"
    async with FakePanel(
        dialect=dialect,  # type: ignore[arg-type]
        create_throttle=(1, 600.0),
    ) as panel:
        api = Api(http, panel)
        server = panel.add_server()
        full = panel.add_server(backup_limit=0)
        busy = panel.add_server()
        locked = panel.add_backup(server, locked=True)
        base = f"/servers/{server.identifier}/backups"
        missing = "00000000-0000-4000-8000-000000000000"

        cases: list[tuple[str, str, Any, str | None, type[APIStatusError], int]] = [
            ("GET", f"{base}/{missing}", None, None, NotFoundError, 404),
            ("DELETE", f"{base}/{locked.uuid}/download", None, None, APIStatusError, 405),
            ("GET", base, None, "ptlc_wrong", AuthenticationError, 401),
            ("GET", base, None, "ptla_application", PermissionDeniedError, 403),
            ("DELETE", f"{base}/{locked.uuid}", None, None, BackupLockedError, 400),
            ("POST", f"/servers/{full.identifier}/backups", {}, None, TooManyBackupsError, 400),
            ("POST", base, {"name": "x" * 300}, None, UnprocessableEntityError, 422),
            ("POST", base, {}, None, RateLimitError, 200),  # the one creation allowed
            ("POST", base, {}, None, RateLimitError, 429),  # the throttle
        ]
        if not reference:
            cases.append(
                ("POST", f"{base}/{locked.uuid}/restore", {}, None, UnprocessableEntityError, 422)
            )
        panel.start_restore(busy)
        cases.append(("GET", f"/servers/{busy.identifier}/backups", None, None, ConflictError, 409))

        for method, path, body, key, error_class, expected in cases:
            status, headers, raw = await api(method, path, json_body=body, key=key)
            assert status == expected, (method, path, raw[:200])
            if status < 300:
                continue
            what = f"{method} {path} → {status}"
            parsed = structure_error(strict.decode(raw, what))
            assert parsed.errors, what
            for entry in parsed.errors:
                assert entry.status == str(status), what
                assert (entry.meta is not None) == (status == 422), what
            error = parse_error(status, headers, raw, method=method, url=path)
            assert isinstance(error, error_class), (what, error)
            assert error.code == parsed.errors[0].code
            if status == 429:
                assert int(headers["Retry-After"]) > 0

        # The API-wide rate limit, last: it answers every later request with 429.
        panel.rate_limit = 1
        status, headers, raw = await api("GET", base)
        assert status == 429
        parsed = structure_error(strict.decode(raw, "rate limited"))
        assert parsed.errors[0].code == "ThrottleRequestsException"
        assert isinstance(parse_error(status, headers, raw), RateLimitError)
        assert headers["X-RateLimit-Remaining"] == "0"
