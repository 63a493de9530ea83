"""``python -m ptero_backups_async``: the ``ptero-backups`` command line."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
