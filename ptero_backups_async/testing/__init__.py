"""Test helpers: `FakePanel`, a loopback panel and link host that behave as docs/wire.md says.

`FakePanel` is a facade over parts, one module each; an arrow means "imports", and imports
point down only (no cycles, `TYPE_CHECKING` imports included)::

    _fakepanel   FakePanel: owns the aiohttp runners, wires the parts, the public API
        |
        +--> _routes     ApiRoutes: the client API (auth, rate limit, injected faults, routes)
        +--> _linkhost   LinkHost: Wings-style and S3-style links, scripted DownloadFaults
        |        (siblings: neither imports the other; the facade hands the routes
        |         `LinkHost.issue_link` as a plain callable)
        v
    _http        request log plumbing, dropped connections, the shutdown signal
    _serialize   backup/server/page/error JSON in each dialect (pterodactyl, pelican, reference)
        |
        v
    _state       PanelConfig and PanelState: servers, backups, throttles, scripted faults,
        |        the request log; changed only through its public methods
        v
    _models      FakeServer, FakeBackup, Fault, DownloadFault, RecordedRequest
    _wire        leaf helpers: JSON/HTML/XML bodies, ranges, validation, ApiError, archives

No module reads or writes another's private attributes (`ruff --select SLF001` is clean).

The node's websocket (docs/wire.md, "Events") comes next, as one more part: a `_node.py`
beside `_routes` and `_linkhost`, built on `PanelState`. The facade would serve it on a third
runner (Wings' own origin), hand `ApiRoutes` its token issuer as a callable for
`GET /servers/{server}/websocket` (as it hands over `issue_link`), and the node would learn of
finished backups and restores from the state (e.g. a subscriber list on `PanelState`), never
from the routes.
"""

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
