"""Recorded panel JSON of every dialect, through the strict converter (drift fails here)."""

from __future__ import annotations

import json
import pathlib
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptero_backups_async import BackupState, Checksum, ResponseValidationError
from ptero_backups_async._converter import WireConverter

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
strict = WireConverter(strict=True)
lenient = WireConverter()


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_pterodactyl_list_parses_every_state() -> None:
    page = strict.backup_page(load("pterodactyl_backup_list.json"))
    done, legacy, failed, creating = page.items
    assert done.checksum == Checksum("sha1", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12")
    assert done.checksum_raw == "sha1:2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
    assert done.state is BackupState.COMPLETED
    assert done.ignored_files == ("*.log", "cache/*")
    assert done.created_at == datetime(2024, 5, 1, 3, 0, tzinfo=timezone.utc)
    assert legacy.checksum == Checksum(
        "sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert legacy.is_locked
    assert failed.state is BackupState.FAILED
    assert failed.is_successful is False
    # Real panels keep is_successful false while creating; completed_at tells.
    assert creating.state is BackupState.CREATING
    assert creating.is_successful is None
    assert creating.is_scheduled is None
    assert (page.backup_count, page.total, page.per_page, page.total_pages) == (3, 4, 20, 1)


def test_pelican_list_has_is_scheduled() -> None:
    page = strict.backup_page(load("pelican_backup_list.json"))
    assert [b.is_scheduled for b in page.items] == [True, False]
    assert page.items[1].state is BackupState.CREATING
    assert (page.page, page.per_page, page.total_pages, page.backup_count) == (2, 50, 2, 2)


def test_reference_list_reads_sha256_hash() -> None:
    page = strict.backup_page(load("reference_backup_list.json"))
    weekly, locked, failed = page.items
    assert weekly.checksum == Checksum(
        "sha256", "a1b2c3d4e5f6789012345678901234567890abcdef1234567890abcdef123456"
    )
    assert weekly.state is BackupState.COMPLETED
    # The page's second example is not hex: kept raw, not parsed.
    assert locked.checksum is None
    assert locked.checksum_raw is not None
    assert locked.checksum_raw.startswith("x9y8")
    # The page's failure has no completed_at but is_successful false.
    assert failed.state is BackupState.FAILED
    assert page.backup_count is None


@pytest.mark.parametrize(
    "name",
    ["reference_backup.json", "reference_backup_created.json", "pterodactyl_backup_creating.json"],
)
def test_single_backups(name: str) -> None:
    backup = strict.backup(load(name))
    assert backup.uuid


def test_reference_created_backup_is_creating() -> None:
    backup = strict.backup(load("reference_backup_created.json"))
    assert backup.state is BackupState.CREATING
    assert backup.is_locked


@pytest.mark.parametrize("name", ["reference_signed_url.json", "pterodactyl_signed_url.json"])
def test_signed_urls(name: str) -> None:
    assert strict.signed_url(load(name)).startswith("https://")


def test_server_list() -> None:
    page = strict.server_page(load("pterodactyl_server_list.json"))
    assert [(s.identifier, s.status) for s in page.items] == [
        ("d3aac109", None),
        ("1a2b3c4d", "restoring_backup"),
    ]


def test_strict_converter_rejects_drift_lenient_ignores_it() -> None:
    data = load("reference_backup.json")
    data["attributes"]["brand_new_field"] = 1
    with pytest.raises(ResponseValidationError, match="brand_new_field"):
        strict.backup(data)
    assert lenient.backup(data).uuid == data["attributes"]["uuid"]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda a: a.pop("uuid"), "uuid"),
        (lambda a: a.update(bytes="12"), "bytes"),
        (lambda a: a.update(bytes=True), "bytes"),
        (lambda a: a.update(is_locked="yes"), "is_locked"),
        (lambda a: a.update(created_at="yesterday"), "created_at"),
        (lambda a: a.update(ignored_files="*.log"), "ignored_files"),
        (lambda a: a.update(bytes=-1), "bytes"),
    ],
)
def test_missing_or_mistyped_field_is_named(mutate: Any, fragment: str) -> None:
    data = load("pterodactyl_backup_creating.json")
    mutate(data["attributes"])
    with pytest.raises(ResponseValidationError, match=fragment):
        lenient.backup(data, "GET /backups/x")


def test_wrong_object_kind() -> None:
    data = load("pterodactyl_signed_url.json")
    with pytest.raises(ResponseValidationError):
        lenient.backup(data)


@pytest.mark.parametrize(
    "body", [b"", b"   ", b"<!DOCTYPE html><html>login</html>", b"{not json", b"\xff\xfe"]
)
def test_decode_names_what_came(body: bytes) -> None:
    with pytest.raises(ResponseValidationError, match="GET x"):
        lenient.decode(body, "GET x")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
backup_keys = st.sampled_from(
    [
        "uuid",
        "name",
        "ignored_files",
        "checksum",
        "sha256_hash",
        "bytes",
        "created_at",
        "completed_at",
        "is_successful",
        "is_locked",
        "is_scheduled",
    ]
)


@st.composite
def mangled_backups(draw: st.DrawFn) -> Any:
    """A real backup with some fields removed or replaced by arbitrary JSON."""
    data = load("pterodactyl_backup_list.json")["data"][draw(st.integers(0, 3))]
    attributes = data["attributes"]
    for key in draw(st.lists(backup_keys, max_size=4)):
        if draw(st.booleans()):
            attributes.pop(key, None)
        else:
            attributes[key] = draw(json_values)
    if draw(st.booleans()):
        data[draw(st.sampled_from(["object", "attributes"]))] = draw(json_values)
    return data


@settings(max_examples=300, deadline=None)
@given(mangled_backups())
def test_mangled_backups_raise_only_response_validation_error(data: Any) -> None:
    try:
        backup = lenient.backup(data)
    except ResponseValidationError:
        return
    assert isinstance(backup.bytes, int)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_raises_only_response_validation_error(data: Any) -> None:
    for parse in (lenient.backup, lenient.backup_page, lenient.server_page, lenient.signed_url):
        try:
            parse(data)
        except ResponseValidationError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_response_validation_error(body: bytes) -> None:
    try:
        lenient.decode(body, "x")
    except ResponseValidationError:
        pass
