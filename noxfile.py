"""The test suite on every supported Python: ``nox -s tests``.

The full suite runs on ``FULL`` (the Python CI's own test command uses); the others run it too,
less the tests marked ``slow`` (long soaks, subprocess kills, the four-process fleet), so that
the whole matrix fits in a CI run. ``nox -s tests -- --full`` runs everything everywhere;
other arguments after ``--`` go to pytest.

On a machine with pyenv, the interpreters pyenv has installed are found without activating
them: the newest patch release of each minor version is put on ``PYENV_VERSION``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
FULL = "3.11"

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


def _pyenv_versions() -> str | None:
    """``PYENV_VERSION`` naming the newest installed release of each of ``PYTHONS``."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    root = pathlib.Path(
        subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
    )
    newest: dict[str, tuple[int, ...]] = {}
    for entry in (root / "versions").glob("3.*"):
        parts = entry.name.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            continue  # dev builds, virtualenvs
        minor = ".".join(parts[:2])
        if minor in PYTHONS:
            newest[minor] = max(newest.get(minor, ()), tuple(map(int, parts)))
    if not newest:
        return None
    return ":".join(".".join(map(str, v)) for _, v in sorted(newest.items()))


if "PYENV_VERSION" not in os.environ and (versions := _pyenv_versions()):
    os.environ["PYENV_VERSION"] = versions


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite: all of it on FULL, all but ``slow`` on the others."""
    session.install("-e", ".[test]")
    args = list(session.posargs)
    if "--full" in args:
        args.remove("--full")
    elif session.python != FULL:
        args = ["-m", "not slow", *args]
    session.run("python", "-m", "pytest", "-q", *args)
