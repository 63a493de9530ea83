"""An in-process ``Transport`` with a fake clock, for retry, pacing and rate-limit tests.

``send`` hands each request to a handler (a plain function of the request and the fake time)
and records it; ``sleep`` advances the fake clock instead of waiting. Tests of the panel-call
logic then run in milliseconds and assert on exact times.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.lowlevel

from ptero_backups_async import RawResponse, Transport

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

#: Every page of a backup listing the handlers hand out: a recorded real-panel answer.
BACKUP_LIST = (FIXTURES / "pterodactyl_backup_list.json").read_bytes()


@dataclass
class Sent:
    """One request that reached the transport."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    time: float
    timeout: float


Handler = Callable[[Sent], RawResponse | Awaitable[RawResponse]]


def ok(body: bytes = BACKUP_LIST, headers: Mapping[str, str] | None = None) -> RawResponse:
    """A 200 with a JSON body."""
    return 200, {"Content-Type": "application/json", **(headers or {})}, body


def status(code: int, headers: Mapping[str, str] | None = None, body: Any = None) -> RawResponse:
    """A non-2xx answer with the panel's error JSON."""
    doc = body or {"errors": [{"code": "HttpException", "status": str(code), "detail": "x"}]}
    return code, {"Content-Type": "application/json", **(headers or {})}, json.dumps(doc).encode()


@dataclass
class ScriptedTransport(Transport):
    """Answers from ``handler`` (or, by default, a queue of answers) on a fake clock."""

    answers: list[RawResponse | BaseException] = field(default_factory=list)
    handler: Handler | None = None
    now: float = 1000.0
    sent: list[Sent] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    closed: bool = False

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        timeout: float,  # noqa: ASYNC109 - the Transport signature
    ) -> RawResponse:
        request = Sent(method, url, dict(headers), body, self.now, timeout)
        self.sent.append(request)
        await anyio.lowlevel.checkpoint()
        if self.handler is not None:
            answer = self.handler(request)
            if not isinstance(answer, tuple):
                answer = await answer
            return answer
        next_answer = self.answers.pop(0) if self.answers else ok()
        if isinstance(next_answer, BaseException):
            raise next_answer
        return next_answer

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
