"""The pure core: URLs, headers, ids, checksums, Retry-After, rate limits, error bodies."""

from __future__ import annotations

import json
import pathlib
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from ptero_backups_async import (
    APIStatusError,
    AuthenticationError,
    BackupFailedError,
    BackupLockedError,
    BackupNotCompletedError,
    BadRequestError,
    Checksum,
    ChecksumMismatchError,
    ConflictError,
    DownloadError,
    InsufficientStorageError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PteroError,
    RateLimitError,
    ServerError,
    TooManyBackupsError,
    UnprocessableEntityError,
)
from ptero_backups_async._errors import MAX_HISTORY_ENTRY, MAX_MESSAGE
from ptero_backups_async._sansio import (
    MAX_JSON_DEPTH,
    bound_text,
    check_backup_uuid,
    check_server_id,
    encode_ignored,
    join_url,
    mask_key,
    normalize_panel_url,
    parse_checksum,
    parse_error,
    parse_rate_limit,
    parse_retry_after,
    redact_json,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
UUID = "a4962fe6-90c8-4b89-ba62-a5d3b06426c0"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://panel.example.com", "https://panel.example.com"),
        ("https://panel.example.com/", "https://panel.example.com"),
        ("https://host.example/panel/", "https://host.example/panel"),
        ("https://host.example/panel/api/client", "https://host.example/panel"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_panel_url_keeps_prefix(base: str, expected: str) -> None:
    assert normalize_panel_url(base) == expected
    assert join_url(expected, "/api/client/servers") == expected + "/api/client/servers"


@pytest.mark.parametrize(
    "bad", ["panel.example.com", "ftp://x", "https://", "https://x/?a=1", "https://u:p@x", 5]
)
def test_bad_panel_url(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        normalize_panel_url(bad)


@pytest.mark.parametrize("good", ["d3aac109", "D3AAC109", UUID])
def test_server_ids(good: str) -> None:
    assert check_server_id(good) == good


@pytest.mark.parametrize(
    "bad", ["../x", "d3aac10", "d3aac109/../../", "", "d3aac10%", "d3aac109\x00", None, UUID + "x"]
)
def test_bad_server_ids_are_value_errors(bad: object) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_server_id(bad)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, PteroError)


@pytest.mark.parametrize("bad", ["d3aac109", "../" + UUID, UUID[:-1] + "g", "", 3])
def test_bad_backup_uuids(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        check_backup_uuid(bad)


def test_mask_key() -> None:
    key = "ptlc_" + "A" * 39 + "wxyz"
    assert mask_key(key) == "ptlc_…wxyz"
    assert mask_key("pacc_" + "b" * 40 + "1234") == "pacc_…1234"
    assert mask_key("short") == "…"
    assert mask_key("nounderscorekey0123456789") == "…6789"
    assert "secret" not in mask_key("ptlc_secret")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sha1:" + "a" * 40, Checksum("sha1", "a" * 40)),
        ("sha1:" + "A" * 40, Checksum("sha1", "a" * 40)),
        ("sha256:" + "0" * 64, Checksum("sha256", "0" * 64)),
        ("SHA256:" + "f" * 64, Checksum("sha256", "f" * 64)),
        ("sha1:" + "a" * 39, None),
        ("sha1:" + "g" * 40, None),
        ("sha256:" + "a" * 40, None),
        ("crc32:deadbeef", None),
        ("a" * 64, None),
        ("", None),
        (None, None),
    ],
)
def test_parse_checksum(raw: str | None, expected: Checksum | None) -> None:
    assert parse_checksum(raw) == expected


def test_bare_hex_takes_the_dialect_algorithm() -> None:
    assert parse_checksum("b" * 64, bare_algorithm="sha256") == Checksum("sha256", "b" * 64)
    assert parse_checksum("b" * 40, bare_algorithm="sha256") is None
    assert str(Checksum("sha1", "c" * 40)) == "sha1:" + "c" * 40


@given(st.text(max_size=80))
def test_parse_checksum_never_raises(raw: str) -> None:
    result = parse_checksum(raw)
    if result is not None:
        assert str(result).lower() == raw.strip().lower()


def test_retry_after_both_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("1.5") == 1.5
    http_date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(http_date, now=now) == 30.0
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    for junk in (None, "", "soon", "-5", "nan", "inf"):
        value = parse_retry_after(junk)
        assert value is None or value == 0.0


@given(st.text(max_size=40))
def test_retry_after_never_raises_nor_goes_negative(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or result >= 0


def test_rate_limit_headers() -> None:
    rl = parse_rate_limit(
        {
            "X-RateLimit-Limit": "720",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1767225600",
        }
    )
    assert rl is not None
    assert (rl.limit, rl.remaining) == (720, 0)
    assert rl.reset_at == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_rate_limit({"X-RateLimit-Limit": "x", "X-RateLimit-Remaining": "1"}) is None
    assert parse_rate_limit({}) is None


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "TooManyBackupsException", TooManyBackupsError),
        (400, "BackupLockedException", BackupLockedError),
        (400, "BackupIsLockedException", BackupLockedError),
        (400, "BadRequestHttpException", BadRequestError),
        (401, "AuthenticationException", AuthenticationError),
        (401, "InvalidCredentialsException", AuthenticationError),
        (403, "AccessDeniedHttpException", PermissionDeniedError),
        (403, "InsufficientPermissionsException", PermissionDeniedError),
        (404, "NotFoundHttpException", NotFoundError),
        (409, "ServerStateConflictException", ConflictError),
        (409, "ConflictingServerStateException", ConflictError),
        (422, "ValidationException", UnprocessableEntityError),
        (429, "ThrottleRequestsException", RateLimitError),
        (500, None, ServerError),
        (502, "DaemonConnectionException", ServerError),
        (507, "InsufficientStorageException", InsufficientStorageError),
        (405, "MethodNotAllowedHttpException", APIStatusError),
        # A code that belongs to another status never overrides the status.
        (404, "TooManyBackupsException", NotFoundError),
    ],
)
def test_error_class_by_status_then_code(status: int, code: str | None, cls: type) -> None:
    body = json.dumps({"errors": [{"code": code, "status": str(status), "detail": "d"}]})
    error = parse_error(status, {}, body.encode(), method="GET", url="u")
    assert type(error) is cls
    assert (error.status, error.code, error.method, error.url) == (status, code, "GET", "u")


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("BackupNotCompletedException", BackupNotCompletedError),
        ("BackupFailedException", BackupFailedError),
    ],
)
def test_page_state_codes_are_state_errors_and_bad_requests(code: str, cls: type) -> None:
    body = json.dumps({"errors": [{"code": code, "status": "400", "detail": "no"}]})
    error = parse_error(400, {}, body.encode())
    assert isinstance(error, cls)
    assert isinstance(error, BadRequestError)
    assert isinstance(error, PteroError)


def test_error_details_and_422_meta() -> None:
    error = parse_error(422, {}, (FIXTURES / "error_validation.json").read_bytes())
    assert error.errors[0].meta == {"source_field": "truncate", "rule": "required"}
    assert error.errors[0].status == 422
    assert "truncate" in str(error)


@pytest.mark.parametrize("body", [b"", b"<html>Bad Gateway</html>", b"{]", b"[1,2]"])
def test_non_json_error_bodies_still_map_by_status(body: bytes) -> None:
    error = parse_error(502, {"Content-Type": "text/html"}, body)
    assert type(error) is ServerError
    assert error.errors == ()
    assert "the panel sent" in str(error)


def test_429_carries_retry_after() -> None:
    error = parse_error(429, {"Retry-After": "12"}, b"")
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 12.0


def test_encode_ignored() -> None:
    assert encode_ignored(["*.log", "cache/*"]) == "*.log\ncache/*"
    assert encode_ignored("*.log\r\ncache/*\n\n") == "*.log\ncache/*"
    assert encode_ignored(None) is None
    assert encode_ignored([]) == ""
    with pytest.raises(InvalidArgumentError):
        encode_ignored(["a\nb"])
    with pytest.raises(InvalidArgumentError):
        encode_ignored(["a\x00"])


# ---------------------------------------------------------------------- bounds


@given(st.text(max_size=3000), st.integers(min_value=0, max_value=2000))
def test_bound_text_never_exceeds_its_limit_and_says_it_cut(text: str, limit: int) -> None:
    bounded = bound_text(text, limit)
    assert len(bounded) <= limit
    if len(text) <= limit:
        assert bounded == text
    elif limit >= 64:
        assert "characters cut] … " in bounded
        assert bounded.startswith(text[: limit // 2])


def test_bound_text_counts_what_it_cut() -> None:
    text = "a" * 1000 + "b" * 1000
    bounded = bound_text(text, 100)
    assert len(bounded) <= 100
    head, rest = bounded.split(" … [")
    count, tail = rest.split(" characters cut] … ")
    assert int(count.replace(",", "")) == len(text) - len(head) - len(tail)
    assert text.startswith(head)
    assert text.endswith(tail)


def test_a_message_set_later_is_bounded_too() -> None:
    error = PteroError("short")
    error.message = "x" * 100_000
    assert len(str(error)) <= MAX_MESSAGE
    assert error.args == (str(error),)
    assert "[" in str(error)


def test_download_error_history_is_bounded_entry_by_entry_and_in_count() -> None:
    history = tuple(f"attempt text {i} " + "h" * 10_000 for i in range(100))
    error = DownloadError("m" * 10_000, attempts=100, history=history)
    text = str(error)
    assert len(text) <= MAX_MESSAGE
    assert "(95 more attempts)" in text
    assert "attempt 1: attempt text 0 " in text
    assert "attempt 100: attempt text 99 " in text
    assert len(error.history) == 100
    assert all(len(entry) <= MAX_HISTORY_ENTRY for entry in error.history)
    assert error.history[7].startswith("attempt text 7 ")
    few = DownloadError("failed", attempts=2, history=("one", "two"))
    assert str(few) == "failed\n  attempt 1: one\n  attempt 2: two"


def test_checksum_mismatch_error_is_bounded() -> None:
    sha1 = Checksum(algorithm="sha1", hexdigest="0" * 40)
    error = ChecksumMismatchError(
        "x" * 50_000, expected=sha1, actual=sha1, attempts=20, history=("y" * 9000,) * 20
    )
    assert len(str(error)) <= MAX_MESSAGE
    assert "(15 more attempts)" in str(error)


def test_ten_thousand_error_entries_make_a_short_message() -> None:
    errors = [{"code": "V", "status": "422", "detail": f"field {i} is bad"} for i in range(10_000)]
    error = parse_error(422, {}, json.dumps({"errors": errors}).encode())
    assert len(str(error)) <= MAX_MESSAGE
    assert "(9,995 more errors)" in str(error)
    assert len(error.errors) == 10_000


def test_parse_error_masks_the_key_before_it_cuts_wherever_the_cut_falls() -> None:
    key = "ptlc_" + "0123456789abcdef" * 3
    for offset in range(1100):
        detail = "a" * offset + key + "b" * 1000
        body = json.dumps({"errors": [{"code": "X", "status": "422", "detail": detail}]})
        error = parse_error(422, {}, body.encode(), secret=key)
        assert "characters cut]" in str(error)
        for text in (str(error), str(error.detail), repr(error.errors)):
            assert "0123456789abcdef" not in text
            assert "ptlc_0123" not in text


def test_parse_error_masks_the_key_in_a_snippet_of_a_body_it_cannot_read() -> None:
    key = "ptlc_" + "0123456789abcdef" * 3
    for offset in range(0, 130):
        body = ("<" * offset + key + ">" * 200).encode()
        error = parse_error(502, {"Content-Type": "text/html"}, body, secret=key)
        assert "0123456789abcdef" not in str(error)
        assert "ptlc_0123" not in str(error)


def test_redact_json_walks_any_depth_and_cuts_below_the_bound() -> None:
    key = "ptlc_" + "k" * 40
    deep: dict[str, object] = {"leaf": key}
    for _ in range(100_000):
        deep = {"a": deep, key: [key, 1, None]}
    copy = redact_json({"first": key, "nested": deep, "z": 2}, key)
    assert list(copy) == ["first", "nested", "z"]
    assert copy["first"] == mask_key(key)
    text = json.dumps(copy)
    assert key not in text
    assert "cut" in text
    depth, node = 1, copy
    while isinstance(node, dict) and "a" in node:
        node, depth = node["a"], depth + 1
    assert depth <= MAX_JSON_DEPTH


def test_a_422_meta_deeper_than_python_can_recurse_is_kept_shallow() -> None:
    meta = '{"source_field":"name","deep":' + '{"a":' * 900 + "1" + "}" * 900 + "}"
    body = '{"errors":[{"code":"ValidationException","status":"422","meta":' + meta + "}]}"
    error = parse_error(422, {}, body.encode())
    [detail] = error.errors
    assert detail.meta is not None
    assert detail.meta["source_field"] == "name"
    repr(error.errors)
    json.dumps(detail.meta)


def test_json_too_deep_to_parse_is_named_as_such() -> None:
    error = parse_error(422, {"Content-Type": "application/json"}, b"[" * 200_000)
    assert isinstance(error, UnprocessableEntityError)
    assert "nested too deeply" in str(error)


def test_parse_error_reads_headers_case_insensitively_while_masking_the_key() -> None:
    key = "ptlc_" + "0123456789abcdef" * 3
    headers = CIMultiDict({"retry-after": "12", "x-echo": key, "content-type": "text/plain"})
    error = parse_error(429, headers, b"", secret=key)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 12.0
    assert "text/plain" in str(error)
    assert error.headers["x-echo"] == mask_key(key)
