"""nginx as an S3-like (or Wings-like) link host for ``bench_download.py``.

One nginx (``daemon off``, a child of the benchmark) with a few servers on 127.0.0.1, each
serving ``SRC/<name>`` at ``/file/<name>`` and at ``/<tag>/file/<name>`` (the tag lets the
access log tell runs apart) with sendfile. ``--segmented`` uses two: one with ``limit_rate``
per connection, one without, both with nginx's default ``Accept-Ranges: bytes`` (206 +
``Content-Range`` for a ``Range`` GET). ``--crash`` uses a capped one with ranges and a capped
one with ``max_ranges 0`` (Range ignored, no ``Accept-Ranges``: a Wings-style host), and an
access log. Everything nginx writes (pid, logs, temp dirs) stays in its own directory; as root,
its workers run as root too (``user`` directive), so they can read the 0700 temp dir.
"""

from __future__ import annotations

import grp
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

INSTALL_HINT = "apt-get install -y nginx-light aria2"
INSTALL_HINT_CRASH = "apt-get install -y nginx-light"
RATE_RE = re.compile(r"^[1-9][0-9]*[kKmM]?$")
_UNIT = {"": 1, "k": 1024, "m": 1024 * 1024}
# Temp-path directives whose module this nginx may have been built without.
_TEMP_MODULES = ("proxy", "fastcgi", "uwsgi", "scgi")
#: One access-log line per request, fields split on spaces; the Range header last ("-": none).
LOG_FORMAT = (
    "$msec $server_port $request_uri $status $bytes_sent $body_bytes_sent $request_time $http_range"
)


@dataclass(frozen=True)
class Host:
    """One nginx server: its per-connection cap (nginx syntax) and whether it honours Range."""

    rate: str | None = None
    ranges: bool = True  # False: max_ranges 0, so Range is ignored and no Accept-Ranges sent


@dataclass(frozen=True)
class LogEntry:
    """One request of the access log (``LOG_FORMAT``)."""

    msec: float
    port: int
    uri: str
    status: int
    bytes_sent: int  # headers + body, as nginx handed them to the kernel
    body_bytes_sent: int
    request_time: float
    range: str | None

    @property
    def tag(self) -> str | None:
        """``TAG`` of ``/TAG/file/<name>``; None for ``/file/<name>``."""
        parts = self.uri.split("/")
        return parts[1] if len(parts) == 4 and parts[2] == "file" else None


def read_access_log(path: pathlib.Path) -> list[LogEntry]:
    """The complete lines of an access log written with ``LOG_FORMAT`` (none: empty)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.split("\n")[:-1]:  # the last piece is "" or a line being written
        msec, port, uri, status, sent, body, took, rng = line.split(" ", 7)
        entries.append(
            LogEntry(
                float(msec),
                int(port),
                uri,
                int(status),
                int(sent),
                int(body),
                float(took),
                None if rng == "-" else rng,
            )
        )
    return entries


def rate_bytes(rate: str) -> int:
    """nginx's size syntax ("64m": 64 MiB) → bytes per second."""
    if not RATE_RE.match(rate):
        raise ValueError(f"not an nginx rate: {rate!r} (e.g. 64m, 512k, 1048576)")
    unit = rate[-1].lower() if rate[-1].isalpha() else ""
    return int(rate.rstrip("kKmM")) * _UNIT[unit]


def nginx_binary() -> str | None:
    """``nginx`` from PATH, or Debian's /usr/sbin/nginx (not on a normal user's PATH)."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _missing_modules(binary: str) -> set[str]:
    build = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stderr
    return {m for m in _TEMP_MODULES if f"--without-http_{m}_module" in build}


def render_config(
    root: pathlib.Path,
    src: pathlib.Path,
    servers: Sequence[tuple[int, Host]],
    missing: set[str],
    access_log: pathlib.Path | None = None,
) -> str:
    """The whole nginx.conf: no include, no path outside ``root`` but ``src`` (and the log)."""
    user = ""
    if os.geteuid() == 0:  # as root, nginx would switch its workers to "nobody"
        user = f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"
    temps = "\n".join(
        f"    {m}_temp_path {root}/{m}_temp;" for m in _TEMP_MODULES if m not in missing
    )
    log_lines = "    access_log off;"
    if access_log is not None:
        log_lines = f"    log_format bench '{LOG_FORMAT}';\n    access_log {access_log} bench;"
    blocks = []
    for port, host in servers:
        limit = f"\n            limit_rate {host.rate};" if host.rate else ""
        ranges = "" if host.ranges else "\n        max_ranges 0;"
        blocks.append(f"""\
    server {{
        listen 127.0.0.1:{port};{ranges}
        location /file/ {{
            alias {src}/;{limit}
        }}
        location ~ ^/[A-Za-z0-9_-]+/file/(?<name>[^/]+)$ {{
            alias {src}/$name;{limit}
        }}
    }}""")
    body = "\n".join(blocks)
    return f"""\
{user}
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
{log_lines}
    client_body_temp_path {root}/client_body_temp;
{temps}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
{body}
}}
"""


def _wait_ready(proc: subprocess.Popen[bytes], ports: Sequence[int], log: pathlib.Path) -> None:
    deadline = time.monotonic() + 10
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{text.strip()}")
        try:
            with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.5):
                pending.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not listen on {pending} within 10 s") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM to the master: fast shutdown, workers too
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the master and its workers
            proc.wait()


@contextmanager
def serve(
    src: pathlib.Path,
    root: pathlib.Path,
    hosts: Sequence[Host],
    access_log: pathlib.Path | None = None,
) -> Iterator[list[str]]:
    """Start nginx with one server per host; yield their base URLs; stop it on the way out."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError(f"nginx is not installed: {INSTALL_HINT}")
    root.mkdir()
    missing = _missing_modules(binary)
    for attempt in range(3):  # a free port can be taken between the probe and nginx's bind
        ports = _free_ports(len(hosts))
        conf = root / "nginx.conf"
        conf.write_text(
            render_config(root, src, list(zip(ports, hosts, strict=True)), missing, access_log)
        )
        error_log = root / "error.log"
        proc = subprocess.Popen(
            # -e: the log for before the config is read (the default is a root path)
            [binary, "-p", f"{root}/", "-c", str(conf), "-e", str(error_log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us; we stop it in order
        )
        try:
            _wait_ready(proc, ports, error_log)
        except BaseException as exc:  # Ctrl-C / SIGTERM while starting: stop it too
            _stop(proc)
            if isinstance(exc, RuntimeError) and "already in use" in str(exc) and attempt < 2:
                continue
            raise
        break
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        _stop(proc)


@contextmanager
def link_hosts(src: pathlib.Path, root: pathlib.Path, rate: str) -> Iterator[tuple[str, str]]:
    """``--segmented``: yield the base URLs (throttled, unthrottled) of a running nginx."""
    with serve(src, root, [Host(rate), Host()]) as (throttled, unthrottled):
        yield throttled, unthrottled
