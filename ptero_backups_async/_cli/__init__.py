"""The ``ptero-backups`` command line (needs the ``cli`` extra: ``rich``).

``main(argv)`` parses, runs one command and returns the exit code: 0 ok, 1 the operation failed
(or an entry of the panel's listing was unusable: reported and skipped), 2 a usage or
configuration error, 130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM), 129 hung up
(SIGHUP). Each of these signals cancels the running task first, so downloads remove their
``.part`` files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._parser import build_parser

__all__ = ["main"]

EXTRA_MISSING = (
    "ptero-backups: the command line needs the 'cli' extra: pip install 'ptero-backups-async[cli]'"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else 2
    try:
        import rich  # noqa: F401
    except ImportError:
        print(EXTRA_MISSING, file=sys.stderr)
        return 2
    from ._app import run

    return run(args)
