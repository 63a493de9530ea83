"""The ``ptero-backups`` command line (needs the ``cli`` extra: ``rich``).

``main(argv)`` parses, runs one command and returns the exit code (the README's table):
0 ok; 1 the operation failed or partly failed (an entry of the panel's listing unusable:
reported and skipped), or the user declined at the confirmation prompt; 2 a usage or
configuration error, found before anything is sent (a destructive command without ``--yes``
when stdin is not a terminal is one: nobody can answer); 130 interrupted (SIGINT, Ctrl-C),
143 terminated (SIGTERM), 129 hung up (SIGHUP); 141 stdout closed early (``| head``). Each of
these signals cancels the running task first, so downloads remove their ``.part`` files.

Output: on a terminal, tables fit its width (``_layout``); elsewhere they are TSV and the
lines around them go to stderr, so that stdout holds only data.

Layers: a module imports only modules listed below it (imports inside functions and under
``TYPE_CHECKING`` count too). The one lazy import is ``_app`` in ``main()``: without ``rich``,
``main()`` says which extra to install instead of failing with a traceback.

    module      job                                   imports from _cli
    __init__    main(): parse, check for rich         _parser, _context, (_app)
    _app        run(): event loop, logging, codes     _commands, _demo, _signals, _context, R
    _demo       ``demo``: the job on a FakePanel      _commands, _sync, _context, R
    _commands   the subcommands                       _prompt, _sync, _context, _report, R
    _prompt     the confirmation question             _signals, _context
    _signals    stop signals: cancel, exit codes      _context
    _sync       downloads, mirrors; TransferView      _documents, _text, _report, _shard
    ── R: render, split by what it renders ─────────────────────────────────────────────────
    _tables     tables, the sync's summary line       _layout, _describe, _text, _units, _report
    _layout     FitTable: fit a terminal, or TSV      _text
    _documents  ``--json`` documents, manifests       _describe, _text, _report
    _progress   download bars, spinner                _text, _units
    _console    the two consoles, headings            _text
    _describe   checksums, errors, backups in words   _text, _units, _report
    _text       visible(): panel text made safe       —
    _units      human sizes, rates, durations, ages   —
    ── leaves ──────────────────────────────────────────────────────────────────────────────
    _context    Context, UsageError/Failed/…, codes   —
    _report     what a sync did (plain data)          _shard
    _parser     the argument parser (no rich)         _shard
    _shard      ``sync --shard K/N``: the split       —
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._context import EXIT_USAGE
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
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        import rich  # noqa: F401
    except ImportError:
        print(EXTRA_MISSING, file=sys.stderr)
        return EXIT_USAGE
    # Imported only now: everything from here on needs rich.
    from ._app import run

    return run(args)
