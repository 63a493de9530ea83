"""The node's websocket on the wire, as pure functions: Origin, token claims, frames and the
``backup completed`` payload."""

from __future__ import annotations

import base64
import json

import pytest

from ptero_backups_async import Checksum
from ptero_backups_async._sansio import (
    jwt_claims,
    may_read_backups,
    origin_of,
    parse_backup_completed,
    parse_node_frame,
)

UUID = "0e9d0c6e-4b50-4f64-9fc4-0d6c8d1b9e2a"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://panel.example.com", "https://panel.example.com"),
        ("https://panel.example.com/", "https://panel.example.com"),
        ("https://panel.example.com/panel/prefix", "https://panel.example.com"),
        ("https://panel.example.com:8443/x", "https://panel.example.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("HTTPS://Panel.Example.COM", "https://panel.example.com"),
        ("https://[::1]:9000/p", "https://[::1]:9000"),
    ],
)
def test_origin_is_scheme_host_and_a_port_only_when_named(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def _token(claims: object) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2lnbmF0dXJl"


def test_jwt_claims_are_read_without_the_signature() -> None:
    claims = {"exp": 1700000600, "permissions": ["backup.read"], "scope": "websocket"}
    assert jwt_claims(_token(claims)) == claims
    for bad in ("", "no-dots", "a.!!!.c", _token([1, 2]), "a." + "e" * 3 + ".c"):
        assert jwt_claims(bad) == {}


@pytest.mark.parametrize(
    ("permissions", "expected"),
    [
        (["*"], True),
        (["backup.read", "websocket.connect"], True),
        (["websocket.connect", "control.console"], False),
        ([], False),
        (None, True),  # nothing said: keep listening, with the safety poll
    ],
)
def test_backup_events_need_backup_read_or_star(
    permissions: list[str] | None, expected: bool
) -> None:
    claims = {} if permissions is None else {"permissions": permissions}
    assert may_read_backups(claims) is expected


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"args": ["x"]}',
        '{"event": 5}',
        '{"event": "x", "args": "not a list"}',
        "[" * 100_000,
    ],
)
def test_frames_that_are_not_events_are_none(text: str) -> None:
    assert parse_node_frame(text) is None


def test_frames_are_events_and_args() -> None:
    assert parse_node_frame('{"event": "auth success"}') == ("auth success", ())
    assert parse_node_frame('{"event": "status", "args": ["running"]}') == ("status", ("running",))
    assert parse_node_frame('{"event": "x", "args": [{"a": 1}]}') == ("x", ('{"a": 1}',))


def test_backup_completed_payload_is_a_json_string() -> None:
    digest = "a" * 40
    ok = json.dumps(
        {
            "uuid": UUID.upper(),
            "is_successful": True,
            "checksum": digest,
            "checksum_type": "sha1",
            "file_size": 1234,
        }
    )
    assert parse_backup_completed([ok]) == (UUID, True, Checksum("sha1", digest), 1234)
    failed = json.dumps({"uuid": UUID, "is_successful": False, "checksum": "", "file_size": 0})
    assert parse_backup_completed([failed]) == (UUID, False, None, 0)
    prefixed = json.dumps({"uuid": UUID, "is_successful": True, "checksum": f"sha1:{digest}"})
    assert parse_backup_completed([prefixed]) == (UUID, True, Checksum("sha1", digest), 0)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["not json"],
        ['{"uuid": "../../x", "is_successful": true}'],
        ['{"uuid": "' + UUID + '"}'],
        ['{"uuid": "' + UUID + '", "is_successful": "yes"}'],
        ['["a list"]'],
    ],
)
def test_a_backup_completed_without_a_usable_payload_is_none(args: list[str]) -> None:
    assert parse_backup_completed(args) is None
