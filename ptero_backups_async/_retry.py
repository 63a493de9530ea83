"""The retry policy as data: which failures are retried, and how long to wait."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

from attrs import frozen

__all__ = ["Failure", "RetryPolicy"]

#: Methods the panel may have acted on once the request was sent: retried only when it
#: provably did nothing (429, or the connection was never made).
UNSAFE_METHODS = frozenset({"POST"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Failure(enum.Enum):
    """How an attempt failed, as far as retrying is concerned.

    A ``Transport`` says it in ``TransportError.failure``; None there is a failure that a
    retry cannot fix (a bad certificate, an invalid URL).
    """

    NOT_SENT = "not sent"
    """Connection refused, DNS, connect timeout: the panel saw nothing (even a POST is retried)."""
    CONNECTION = "connection"
    """The connection broke once the request may have been sent (a POST is not retried)."""
    TIMEOUT = "timeout"
    """No answer in time; the panel may have acted (a POST is not retried)."""


@frozen
class RetryPolicy:
    """Retries with exponential backoff and jitter; ``Retry-After`` honoured up to a cap."""

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    max_retry_after: float = 60.0

    def should_retry(
        self,
        method: str,
        retries_done: int,
        *,
        status: int | None = None,
        failure: Failure | None = None,
    ) -> bool:
        """Whether an attempt that failed this way is tried again."""
        if retries_done >= self.max_retries:
            return False
        unsafe = method.upper() in UNSAFE_METHODS
        if status is not None:
            if unsafe:
                return status == 429
            return status in RETRY_STATUSES
        if failure is Failure.NOT_SENT:
            return True
        return failure is not None and not unsafe

    def delay(
        self,
        retries_done: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number ``retries_done + 1``.

        ``Retry-After`` wins when given (it is what the panel asked for); otherwise "equal
        jitter": half the exponential step, plus a random part of the other half, so that
        concurrent clients spread out and no retry comes sooner than half the step.
        """
        if retry_after is not None:
            return max(0.0, retry_after)
        # The exponent is capped: past 64 doublings the step is the maximum anyway.
        step = min(self.backoff_max, self.backoff_base * 2.0 ** min(retries_done, 64))
        return step / 2 + rand() * step / 2

    def retry_after_too_long(self, retry_after: float | None) -> bool:
        """True when the panel asks for a wait longer than the cap: give up at once."""
        return retry_after is not None and retry_after > self.max_retry_after
