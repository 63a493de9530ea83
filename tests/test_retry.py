"""The retry policy is data: pure decisions and bounded delays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptero_backups_async._retry import Failure, RetryPolicy

policy = RetryPolicy(max_retries=3)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_reads_and_deletes_retry_transient_statuses(method: str, status: int) -> None:
    assert policy.should_retry(method, 0, status=status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 422, 501, 507])
def test_other_statuses_never_retry(status: int) -> None:
    assert not policy.should_retry("GET", 0, status=status)


def test_post_retries_only_when_the_panel_did_nothing() -> None:
    assert policy.should_retry("POST", 0, status=429)
    assert policy.should_retry("POST", 0, failure=Failure.NOT_SENT)
    for status in (500, 502, 503, 504):
        assert not policy.should_retry("POST", 0, status=status)
    assert not policy.should_retry("POST", 0, failure=Failure.CONNECTION)
    assert not policy.should_retry("POST", 0, failure=Failure.TIMEOUT)


def test_connection_failures_retry_reads() -> None:
    for failure in Failure:
        assert policy.should_retry("GET", 0, failure=failure)
    assert not policy.should_retry("GET", 0, failure=None)


def test_budget() -> None:
    assert policy.should_retry("GET", 2, status=503)
    assert not policy.should_retry("GET", 3, status=503)
    assert not RetryPolicy(max_retries=0).should_retry("GET", 0, status=503)


def test_retry_after_wins_and_is_capped() -> None:
    assert policy.delay(0, retry_after=7.0) == 7.0
    assert policy.retry_after_too_long(61.0)
    assert not policy.retry_after_too_long(60.0)
    assert not policy.retry_after_too_long(None)


@given(st.integers(0, 50), st.floats(0, 1, exclude_max=True))
def test_backoff_stays_within_bounds(retries: int, r: float) -> None:
    delay = policy.delay(retries, rand=lambda: r)
    step = min(policy.backoff_max, policy.backoff_base * 2.0**retries)
    assert step / 2 <= delay <= step
    assert delay <= policy.backoff_max
