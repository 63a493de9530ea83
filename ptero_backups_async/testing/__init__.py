"""Test helpers: `FakePanel`, a loopback panel and link host that behave as docs/wire.md says.

`FakePanel` is a facade over parts, one module each; an arrow means "imports", and imports
point down only (no cycles, `TYPE_CHECKING` imports included)::

    _fakepanel   FakePanel: owns the aiohttp runners, wires the parts, the public API
        |
        +--> _routes     ApiRoutes: the client API (auth, rate limit, injected faults, routes)
        +--> _linkhost   LinkHost: Wings-style and S3-style links, scripted DownloadFaults
        +--> _node       NodeHost: Wings' websocket (tokens, Origin, auth, expiry, events,
        |                Pelican's limits), scripted SocketFaults
        |        (siblings: none imports another; the facade hands the routes
        |         `LinkHost.issue_link` and `NodeHost.issue_socket` as plain callables)
        v
    _http        request log plumbing, dropped connections, the shutdown signal
    _serialize   backup/server/page/error JSON in each dialect (pterodactyl, pelican, reference)
        |
        v
    _state       PanelConfig and PanelState: servers, backups, throttles, scripted faults,
        |        the request log, change notifications; changed only through its public methods
        v
    _models      FakeServer, FakeBackup, Fault, DownloadFault, SocketFault, RecordedRequest,
        |        NodeConnection, and the StateEvents (BackupFinished, RestoreFinished, ...)
        v
    _wire        leaf helpers: JSON/HTML/XML bodies, ranges, validation, ApiError, archives, JWT

No module reads or writes another's private attributes (`ruff --select SLF001` is clean).

The node learns of finished backups and restores from the state, never from the routes:
`PanelState.subscribe(callback)` is called with a `BackupFinished` / `RestoreFinished` /
`PowerChanged` right after the change is recorded, whoever made it (a route, a test calling
`FakeBackup.complete()`, or the timer that ends a timed backup or restore).
"""

from ._fakepanel import FakePanel
from ._models import (
    DownloadFault,
    FakeBackup,
    FakeServer,
    Fault,
    NodeConnection,
    RecordedRequest,
    SocketFault,
)

__all__ = [
    "DownloadFault",
    "FakeBackup",
    "FakePanel",
    "FakeServer",
    "Fault",
    "NodeConnection",
    "RecordedRequest",
    "SocketFault",
]
