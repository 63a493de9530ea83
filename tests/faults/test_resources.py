"""What a finished download leaves alive: nothing of its buffers, even in log records."""

from __future__ import annotations

import logging
import os
import pathlib
import types
from collections.abc import Iterator

import pytest

from ptero_backups_async import PteroClient
from ptero_backups_async.testing import DownloadFault, FakePanel

pytestmark = pytest.mark.anyio


class _Keep(logging.Handler):
    """Keeps every record, as pytest's log capture and logging.handlers.MemoryHandler do."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _frames(exc: BaseException) -> Iterator[types.FrameType]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            yield tb.tb_frame
            tb = tb.tb_next
        current = current.__cause__ or current.__context__


def _pinned_bytes(frame: types.FrameType) -> int:
    total = 0
    for value in frame.f_locals.values():
        if isinstance(value, (bytes, bytearray)):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(v) for v in value if isinstance(v, (bytes, bytearray)))
    return total


async def test_failed_attempt_log_records_pin_no_buffers(
    panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    content = os.urandom(3 * 1024 * 1024)
    backup = panel.add_backup(server, content=content)
    panel.script_download(backup, DownloadFault.drop_after(2 * 1024 * 1024))
    keep = _Keep()
    sdk = logging.getLogger("ptero_backups_async")
    sdk.addHandler(keep)
    try:
        async with PteroClient(panel.url, panel.api_key) as client:
            result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    finally:
        sdk.removeHandler(keep)
    assert result.verified
    exceptions = [
        arg
        for record in keep.records
        if isinstance(record.args, tuple)
        for arg in record.args
        if isinstance(arg, BaseException)
    ]
    pinned = sum(_pinned_bytes(f) for exc in exceptions for f in _frames(exc))
    assert exceptions == [], f"{len(exceptions)} exception(s) in log records pin {pinned} bytes"
