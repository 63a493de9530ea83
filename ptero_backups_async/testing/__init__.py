"""Test helpers: `FakePanel`, a loopback panel and link host that behave as docs/wire.md describes."""

from ._fakepanel import FakePanel
from ._models import DownloadFault, FakeBackup, FakeServer, Fault, RecordedRequest

__all__ = [
    "DownloadFault",
    "FakeBackup",
    "FakePanel",
    "FakeServer",
    "Fault",
    "RecordedRequest",
]
