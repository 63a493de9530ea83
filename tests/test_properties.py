"""Property tests of the pure parts: converter, Retry-After, pagination, checksums, retries.

These extend tests/test_converter.py, tests/test_sansio.py and tests/test_retry.py (which test
single backups, examples and "never raises"): here whole list bodies with random pagination
round-trip, parsers round-trip what they parse, and the pager and the retry policy keep their
bounds for any input.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptero_backups_async import (
    Backup,
    BackupState,
    Checksum,
    Page,
    RateLimitError,
    ResponseValidationError,
)
from ptero_backups_async._converter import WireConverter
from ptero_backups_async._pagination import iterate_pages
from ptero_backups_async._retry import RetryPolicy
from ptero_backups_async._sansio import DIGEST_SIZES, parse_checksum, parse_error, parse_retry_after

strict = WireConverter(strict=True)
lenient = WireConverter()

# ---------------------------------------------------------------------------- strategies

offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)


def hexdigests(size: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdefABCDEF", min_size=size, max_size=size)


checksums = st.sampled_from(sorted(DIGEST_SIZES)).flatmap(
    lambda alg: hexdigests(DIGEST_SIZES[alg]).map(lambda h: Checksum(alg, h.lower()))
)
raw_checksums = st.one_of(
    st.none(),
    st.sampled_from(["sha1", "sha256"]).flatmap(
        lambda alg: hexdigests(DIGEST_SIZES[alg]).map(lambda h: f"{alg}:{h}")
    ),
    st.text(max_size=70),
)


@st.composite
def backup_attributes(draw: st.DrawFn, dialect: str) -> dict[str, Any]:
    completed = draw(st.none() | moments)
    attributes: dict[str, Any] = {
        "uuid": str(draw(st.uuids())),
        "name": draw(st.text(max_size=40)),
        "ignored_files": draw(st.lists(st.text(max_size=12), max_size=3)),
        "bytes": draw(st.integers(0, 2**63)),
        "created_at": draw(moments).isoformat(),
        "completed_at": completed.isoformat() if completed else None,
        "is_successful": draw(st.booleans()),
        "is_locked": draw(st.booleans()),
    }
    if dialect == "reference":
        attributes["sha256_hash"] = draw(st.none() | hexdigests(64))
        attributes["is_successful"] = draw(st.none() | st.booleans())
    else:
        attributes["checksum"] = draw(raw_checksums)
    if dialect == "pelican":
        attributes["is_scheduled"] = draw(st.booleans())
    return attributes


def expected_backup(a: dict[str, Any], dialect: str) -> Backup:
    completed = datetime.fromisoformat(a["completed_at"]) if a["completed_at"] else None
    if dialect == "reference":
        raw = a["sha256_hash"]
        checksum = parse_checksum(raw, bare_algorithm="sha256")
        successful = a["is_successful"]
    else:
        raw = a["checksum"]
        checksum = parse_checksum(raw)
        successful = True if a["is_successful"] else (None if completed is None else False)
    return Backup(
        uuid=a["uuid"],
        name=a["name"],
        ignored_files=tuple(a["ignored_files"]),
        checksum=checksum,
        checksum_raw=raw,
        bytes=a["bytes"],
        created_at=datetime.fromisoformat(a["created_at"]),
        completed_at=completed,
        is_successful=successful,
        is_locked=a["is_locked"],
        is_scheduled=a.get("is_scheduled"),
    )


not_ints: st.SearchStrategy[Any] = st.one_of(
    st.booleans(), st.floats(allow_nan=False), st.text(max_size=5), st.none(), st.just([])
)
pagination_values = st.integers() | not_ints
PAGINATION_KEYS = ("total", "count", "per_page", "current_page", "total_pages")


@st.composite
def list_bodies(
    draw: st.DrawFn, dialect: str, *, min_items: int = 0, valid_meta: bool = False
) -> tuple[dict[str, Any], bool]:
    """A list body with valid items and random pagination; True if its meta is valid."""
    items = draw(st.lists(backup_attributes(dialect), min_size=min_items, max_size=6))
    values = st.integers() if valid_meta else pagination_values
    pagination: dict[str, Any] = {k: draw(values) for k in PAGINATION_KEYS}
    if draw(st.booleans()):
        pagination["links"] = draw(
            st.just({}) | st.fixed_dictionaries({"next": st.text(max_size=30)})
        )
    meta: dict[str, Any] = {"pagination": pagination}
    if dialect != "reference":
        meta["backup_count"] = draw(st.integers(0, 10**6) | (st.none() if valid_meta else not_ints))
    valid = all(type(pagination[k]) is int for k in PAGINATION_KEYS) and (
        type(meta.get("backup_count", 0)) is int or meta.get("backup_count") is None
    )
    body = {"object": "list", "data": [{"object": "backup", "attributes": a} for a in items]}
    return {**body, "meta": meta}, valid


# ---------------------------------------------------------------------------- converter


@pytest.mark.parametrize("dialect", ["pterodactyl", "pelican", "reference"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_list_bodies_round_trip_or_raise_response_validation_error(
    dialect: str, data: st.DataObject
) -> None:
    body, valid = data.draw(list_bodies(dialect))
    wire = json.loads(json.dumps(body))  # exactly what would arrive
    for converter in (strict, lenient):
        if not valid:
            with pytest.raises(ResponseValidationError, match=r"\$\.meta"):
                converter.backup_page(wire)
            continue
        page = converter.backup_page(wire)
        p = body["meta"]["pagination"]
        assert (page.page, page.per_page, page.total, page.total_pages) == (
            p["current_page"],
            p["per_page"],
            p["total"],
            p["total_pages"],
        )
        assert page.backup_count == body["meta"].get("backup_count")
        expected = [expected_backup(item["attributes"], dialect) for item in body["data"]]
        assert list(page.items) == expected
        for backup in page.items:
            assert backup.created_at.tzinfo is not None
            assert backup.state in BackupState
            if backup.checksum is not None:
                assert str(backup.checksum) == f"{backup.checksum.algorithm}:" + (
                    backup.checksum.hexdigest
                )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), key=st.sampled_from(["uuid", "bytes", "name", "created_at"]))
def test_one_bad_item_names_its_index(data: st.DataObject, key: str) -> None:
    body, valid = data.draw(list_bodies("pterodactyl", min_items=1, valid_meta=True))
    assert valid
    index = data.draw(st.integers(0, len(body["data"]) - 1))
    body["data"][index]["attributes"][key] = data.draw(st.none() | st.floats() | st.just([]))
    with pytest.raises(ResponseValidationError, match=rf"\$\.data\[{index}\]"):
        lenient.backup_page(body)


@settings(max_examples=100, deadline=None)
@given(
    servers=st.lists(
        st.fixed_dictionaries(
            {
                "identifier": st.text(max_size=8),
                "uuid": st.uuids().map(str),
                "name": st.text(max_size=20),
                "status": st.none() | st.sampled_from(["restoring_backup", "suspended"]),
                "extra": st.integers(),  # servers carry many fields the SDK ignores
            }
        ),
        max_size=5,
    ),
    pagination=st.fixed_dictionaries({k: pagination_values for k in PAGINATION_KEYS}),
)
def test_server_lists_round_trip(servers: list[dict[str, Any]], pagination: Any) -> None:
    body = {
        "object": "list",
        "data": [{"object": "server", "attributes": s} for s in servers],
        "meta": {"pagination": pagination},
    }
    valid = all(type(v) is int for v in pagination.values())
    for converter in (strict, lenient):
        if not valid:
            with pytest.raises(ResponseValidationError):
                converter.server_page(body)
            continue
        page = converter.server_page(body)
        assert [(s.identifier, s.uuid, s.name, s.status) for s in page.items] == [
            (s["identifier"], s["uuid"], s["name"], s["status"]) for s in servers
        ]
        assert page.total_pages == pagination["total_pages"]


# ---------------------------------------------------------------------------- Retry-After

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


@given(seconds=st.integers(0, 10**9), pad=st.sampled_from(["", " ", "\t", "  "]))
def test_retry_after_delta_seconds_round_trip(seconds: int, pad: str) -> None:
    assert parse_retry_after(f"{pad}{seconds}{pad}", now=NOW) == float(seconds)


@given(seconds=st.integers(-(10**6), 10**7))
def test_retry_after_http_dates_round_trip(seconds: int) -> None:
    when = NOW + timedelta(seconds=seconds)
    value = format_datetime(when, usegmt=True)
    assert parse_retry_after(value, now=NOW) == max(0.0, float(seconds))


@given(seconds=st.floats(0, 1e6, allow_nan=False, allow_infinity=False))
def test_retry_after_fractions_are_honoured(seconds: float) -> None:
    assert parse_retry_after(repr(seconds), now=NOW) == seconds


@given(value=st.text(max_size=40) | st.integers(0, 10**6).map(str))
def test_a_429_carries_exactly_the_parsed_retry_after(value: str) -> None:
    error = parse_error(429, {"Retry-After": value}, b"")
    assert isinstance(error, RateLimitError)
    parsed = parse_retry_after(value)
    if parsed is None:
        assert error.retry_after is None
    else:
        # The date form depends on the clock; both were read within a second of each other.
        assert error.retry_after is not None
        assert abs(error.retry_after - parsed) <= 1.0


# ---------------------------------------------------------------------------- pagination


def _page(items: tuple[str, ...], number: int, total_pages: int) -> Page[str]:
    return Page(
        items=items,
        page=number,
        per_page=max(len(items), 1),
        total=len(items) * max(total_pages, 1),
        total_pages=total_pages,
        backup_count=None,
    )


def _walk(fetch: Callable[[int], Awaitable[Page[str]]]) -> tuple[list[str], list[int]]:
    fetched: list[int] = []

    async def counted(number: int) -> Page[str]:
        fetched.append(number)
        assert len(fetched) <= 10_000, "the pager does not terminate"
        return await fetch(number)

    async def main() -> list[str]:
        return [item async for item in iterate_pages(counted, lambda s: s)]

    return anyio.run(main, backend="asyncio"), fetched


keys = st.text("abcdefgh", min_size=1, max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    pages=st.lists(st.lists(keys, max_size=6).map(tuple), max_size=8),
    reported=st.lists(st.integers(-2, 12), min_size=8, max_size=8),
)
def test_pager_terminates_and_yields_each_key_once(
    pages: list[tuple[str, ...]], reported: list[int]
) -> None:
    """Random totals, duplicates across and within pages, empty pages in the middle."""

    async def fetch(number: int) -> Page[str]:
        items = pages[number - 1] if number <= len(pages) else ()
        return _page(items, number, reported[min(number, len(reported)) - 1])

    yielded, fetched = _walk(fetch)
    assert fetched == list(range(1, len(fetched) + 1)), "pages are fetched in order, once"
    assert len(fetched) <= len(pages) + 1
    assert len(yielded) == len(set(yielded))
    seen: list[str] = []
    for number in fetched:
        for key in pages[number - 1] if number <= len(pages) else ():
            if key not in seen:
                seen.append(key)
    assert yielded == seen  # every key of every fetched page, in first-seen order
    # Never past the first page's total_pages, whatever later pages claim.
    assert max(fetched) <= max(1, reported[0])
    # The walk ends for a reason: an empty page, the page's own total_pages, the first
    # page's total_pages, or a page that brought no key not seen before.
    last = fetched[-1]
    last_items = pages[last - 1] if last <= len(pages) else ()
    earlier = {k for n in fetched[:-1] for k in (pages[n - 1] if n <= len(pages) else ())}
    assert (
        not last_items
        or last >= reported[min(last, len(reported)) - 1]
        or last >= reported[0]
        or set(last_items) <= earlier
    )


@settings(max_examples=100, deadline=None)
@given(items=st.lists(keys, max_size=6).map(tuple), total_pages=st.integers(1, 60))
def test_pager_behind_a_cache_that_ignores_the_page_number_terminates(
    items: tuple[str, ...], total_pages: int
) -> None:
    """A proxy that caches the first page for every ?page=: bounded by total_pages."""

    async def fetch(number: int) -> Page[str]:
        return _page(items, 1, total_pages)

    yielded, fetched = _walk(fetch)
    assert len(fetched) <= total_pages
    assert yielded == list(dict.fromkeys(items))


# ---------------------------------------------------------------------------- checksums


@given(checksum=checksums, upper=st.booleans(), pad=st.sampled_from(["", " ", "\n "]))
def test_checksums_round_trip(checksum: Checksum, upper: bool, pad: str) -> None:
    assert parse_checksum(str(checksum)) == checksum
    raw = str(checksum).upper() if upper else str(checksum)
    assert parse_checksum(f"{pad}{raw}{pad}") == checksum
    assert parse_checksum(checksum.hexdigest, bare_algorithm=checksum.algorithm) == checksum
    assert str(parse_checksum(raw)) == str(checksum)


@given(checksum=checksums, cut=st.integers(1, 5), extra=st.sampled_from(["0", "g", "z", ":"]))
def test_checksums_of_the_wrong_length_or_alphabet_are_none(
    checksum: Checksum, cut: int, extra: str
) -> None:
    assert parse_checksum(str(checksum)[:-cut]) is None
    assert parse_checksum(str(checksum) + extra) is None


# ---------------------------------------------------------------------------- retry policy

policies = st.builds(
    RetryPolicy,
    max_retries=st.integers(0, 20),
    backoff_base=st.floats(0.001, 100),
    backoff_max=st.floats(0.001, 1000),
    max_retry_after=st.floats(0, 3600),
)


@given(
    policy=policies,
    retries=st.integers(0, 1000),
    r=st.floats(0, 1, exclude_max=True),
)
def test_backoff_stays_within_its_bounds(policy: RetryPolicy, retries: int, r: float) -> None:
    delay = policy.delay(retries, rand=lambda: r)
    step = min(policy.backoff_max, policy.backoff_base * 2.0**retries)
    assert step / 2 <= delay <= step
    assert 0 < delay <= policy.backoff_max


@given(policy=policies, retries=st.integers(0, 50), retry_after=st.floats(0, 1e6))
def test_retry_after_wins_and_the_cap_decides(
    policy: RetryPolicy, retries: int, retry_after: float
) -> None:
    assert policy.delay(retries, retry_after=retry_after, rand=lambda: 0.9) == retry_after
    assert policy.retry_after_too_long(retry_after) is (retry_after > policy.max_retry_after)


@given(
    policy=policies,
    retries=st.integers(0, 40),
    method=st.sampled_from(["GET", "DELETE", "PUT", "POST", "post"]),
    status=st.integers(100, 599),
)
def test_the_budget_and_the_post_rule_hold_for_any_policy(
    policy: RetryPolicy, retries: int, method: str, status: int
) -> None:
    decided = policy.should_retry(method, retries, status=status)
    if retries >= policy.max_retries:
        assert not decided
    elif method.upper() == "POST":
        assert decided is (status == 429)
    else:
        assert decided is (status in (429, 500, 502, 503, 504))


@given(retries=st.integers(1024, 10**6))
def test_backoff_never_overflows(retries: int) -> None:
    policy = RetryPolicy(max_retries=10**6)
    assert policy.delay(retries, rand=lambda: 0.5) <= policy.backoff_max
