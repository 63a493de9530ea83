"""Download benchmark vs curl; run: python benchmarks/bench_download.py [--quick] [--json PATH].

``--segmented``: ranged parallel downloads from nginx with a per-connection rate cap, against
curl and aria2c (see README.md, "Segmented downloads").

``--crash``: ``kill -9`` halfway through a download from nginx, then a new process downloads to
the same path and resumes (see README.md, "Crash and resume").
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuid_mod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import _nginx

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "_worker.py"
EXPERIMENT = HERE / "_experiment.py"
EXPERIMENTS = ("sdk", "split", "split-wb", "split-sfr", "sdk-nofsync")
BULK_EXPERIMENTS = ("sdk", "split", "split-sfr", "sdk-nofsync")
FILESERVER = HERE / "_fileserver.py"
MIB = 1024 * 1024
GEN_BLOCK = 4 * MIB  # small: workers inherit our peak RSS as their ru_maxrss floor

# The project's speed and memory targets; a ratio is "ours / other", so lower is better.
TARGET_VS_CURL = 1.25
TARGET_VS_PLAIN = 0.5
TARGET_BULK_VS_CURL = 1.2
TARGET_RSS_MIB = 32.0
TARGET_LAG_MS = 50.0
# --segmented: speeds as "time of the other / time of ours", so higher is better.
TARGET_SEG_VS_CURL = 5.0  # ours "auto" at least 5x curl's one capped stream
TARGET_SEG_VS_ARIA2 = 0.9  # ours "auto" at least 0.9x aria2c -x8's throughput
TARGET_SEG_RSS_MIB = 64.0
TARGET_SEG_UNTHROTTLED = 1.1  # unthrottled: "auto" time <= one stream's x 1.1
ARIA2_CONNECTIONS = 8
# --crash: the first process is killed once the journal vouches for this fraction of the file
# (--kill-on part: once the .part holds this much), then a new one resumes.
CRASH_AT = 0.5
CRASH_FALLBACK = 0.95  # --kill-on journal: or once the .part holds this much (a journal missing)
CRASH_POLL_S = 0.005
CRASH_QUIET_S = 1.0  # nginx has logged the killed run's requests: no new line for this long
TARGET_CRASH_FETCHED = 0.55  # range host: the second process fetches at most this fraction
TARGET_CRASH_RESTART = 0.99  # Wings-style host: the second process fetches the whole file again
# (host, segments of both processes): host "range" honours Range, "wings" ignores it.
CRASH_CASES = (("range", "1"), ("range", "auto"), ("wings", "auto"))


@dataclass(frozen=True)
class Archive:
    server: str
    uuid: str
    path: pathlib.Path
    size: int
    sha1: str


@dataclass
class Results:
    """Raw samples, by variant name."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, name: str, sample: dict[str, Any]) -> None:
        self.runs.setdefault(name, []).append(sample)

    def median(self, name: str, key: str) -> float:
        return statistics.median(float(s[key]) for s in self.runs[name])


# --------------------------------------------------------------------------------- setup


def fstype(path: pathlib.Path) -> str:
    out = subprocess.run(
        ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[-1]


def pick_base_dir(requested: str | None) -> pathlib.Path:
    """A directory on a real disk: the written bytes must go through the page cache to disk."""
    candidates = [requested] if requested else [tempfile.gettempdir(), "/var/tmp", str(HERE)]
    for candidate in candidates:
        path = pathlib.Path(candidate)
        if path.is_dir() and fstype(path) not in ("tmpfs", "ramfs"):
            return path
    raise SystemExit(f"no disk-backed temp dir among {candidates}; pass --tmp-dir")


def make_archive(path: pathlib.Path, size: int, base: bytes) -> str:
    """Write ``size`` random-ish bytes (urandom blocks, each with a counter); their SHA-1."""
    digest = hashlib.sha1()
    with open(path, "wb") as f:
        written = 0
        counter = 0
        while written < size:
            prefix = counter.to_bytes(16, "big")[: size - written]
            rest = memoryview(base)[16 : 16 + max(0, size - written - 16)]
            for part in (prefix, rest):
                digest.update(part)
                f.write(part)
            written += len(prefix) + len(rest)
            counter += 1
    return digest.hexdigest()


def make_archives(directory: pathlib.Path, sizes: Sequence[tuple[str, int]]) -> list[Archive]:
    base = os.urandom(GEN_BLOCK)
    archives = []
    for name, size in sizes:
        path = directory / name
        sha1 = make_archive(path, size, base)
        archives.append(Archive(os.urandom(4).hex(), str(uuid_mod.uuid4()), path, size, sha1))
    os.sync()  # no writeback of the sources during the timed runs
    return archives


@contextmanager
def file_server(
    archives: Sequence[Archive],
    workdir: pathlib.Path,
    link_base: str | None = None,
    name: str = "server",
) -> Iterator[str]:
    """The fake panel + link host, in its own process; yields its base URL.

    With ``link_base``, the signed URLs it hands out point at that host instead of at itself.
    """
    config = {
        a.uuid: {"server": a.server, "path": str(a.path), "bytes": a.size, "sha1": a.sha1}
        for a in archives
    }
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(config))
    extra = ["--link-base", link_base] if link_base else []
    proc = subprocess.Popen(
        [sys.executable, str(FILESERVER), str(config_path), *extra],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C reaches us; we stop it in order
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"file server did not start (exit code {proc.poll()})")
        yield f"http://127.0.0.1:{line}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ variants


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_worker(
    *args: str, script: pathlib.Path = WORKER, require_ok: bool = True
) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=worker_env(),
        check=False,
    )
    whole = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed ({proc.returncode}):\n{proc.stderr}")
    sample: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if require_ok and not sample["ok"]:
        raise RuntimeError(f"worker {args[0]}: the download did not verify")
    sample["whole_s"] = whole
    if "rss_after_kib" in sample:
        sample["rss_growth_mib"] = (sample["rss_after_kib"] - sample["rss_before_kib"]) / 1024
        sample["hwm_growth_mib"] = (sample["hwm_after_kib"] - sample["hwm_before_kib"]) / 1024
    return sample


def run_experiments(res: Results, base: str, big: Archive, outdir: pathlib.Path) -> None:
    """Copies of the SDK's loop with one change each (see _experiment.py), and curl's ceiling."""
    fresh(outdir)
    res.add("x:curl-devnull", run_curl([(file_url(base, big), pathlib.Path(os.devnull))]))
    for variant in EXPERIMENTS:
        fresh(outdir)
        args = [file_url(base, big), str(outdir / "x.bin"), big.sha1]
        res.add(f"x:{variant}", run_worker(variant, "1", *args, script=EXPERIMENT))


def run_bulk_experiments(
    res: Results, base: str, bulk: Sequence[Archive], outdir: pathlib.Path, concurrency: int
) -> None:
    """The same for the bulk case, plus curl followed by sync(): curl with the SDK's fsyncs."""
    fresh(outdir)
    start = time.perf_counter()
    run_curl([(file_url(base, a), outdir / f"c{i}") for i, a in enumerate(bulk)], concurrency)
    os.sync()
    res.add("xb:curl+sync", {"whole_s": time.perf_counter() - start})
    for variant in BULK_EXPERIMENTS:
        fresh(outdir)
        args = [
            x for i, a in enumerate(bulk) for x in (file_url(base, a), f"{outdir}/x{i}", a.sha1)
        ]
        res.add(f"xb:{variant}", run_worker(variant, str(concurrency), *args, script=EXPERIMENT))


def run_curl(jobs: Sequence[tuple[str, pathlib.Path]], parallel: int = 1) -> dict[str, Any]:
    cmd = ["curl", "-s", "-S", "--no-progress-meter", "-f"]
    if len(jobs) > 1:
        cmd += ["--parallel", "--parallel-max", str(parallel)]
    for url, out in jobs:
        cmd += ["-o", str(out), url]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return {"whole_s": time.perf_counter() - start}


def run_aria2c(url: str, out: pathlib.Path) -> dict[str, Any]:
    """aria2c with 8 connections to one host, quiet, no preallocation, no checksum."""
    n = str(ARIA2_CONNECTIONS)
    cmd = ["aria2c", "--no-conf", "-q", "--console-log-level=error", "--summary-interval=0"]
    cmd += ["--download-result=hide", "--auto-file-renaming=false", "--max-tries=1"]
    cmd += [f"-x{n}", f"-s{n}", "-k1M", "--file-allocation=none", "--allow-overwrite=true"]
    cmd += ["-d", str(out.parent), "-o", out.name, url]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return {"whole_s": time.perf_counter() - start}


def fresh(outdir: pathlib.Path) -> None:
    """Empty the output dir and flush dirty pages, so every run starts from the same state."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir()
    os.sync()


def file_url(base: str, archive: Archive) -> str:
    return f"{base}/file/{archive.path.name}"


def check_sizes(outdir: pathlib.Path, archives: Sequence[Archive]) -> None:
    files = sorted(p.stat().st_size for p in outdir.iterdir())
    if files != sorted(a.size for a in archives):
        raise RuntimeError(f"unexpected output sizes in {outdir}: {files}")


# ----------------------------------------------------------------------------- reporting


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mib_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


def check(
    label: str, value: float, target: float, unit: str = "", *, at_least: bool = False
) -> str:
    verdict = "ok" if (value >= target if at_least else value <= target) else "MISS"
    shown = f"{value:.2f}" if not unit else f"{value:.1f}{unit}"
    sign = ">=" if at_least else "<="
    return f"{label:<34} {shown:>9}   target {sign} {target:g}{unit}   {verdict}"


def report(res: Results, big: Archive, small: Archive, bulk: Sequence[Archive]) -> list[str]:
    bulk_size = sum(a.size for a in bulk)
    lines = [
        f"{'variant':<34} {'download s':>10} {'MiB/s':>8} {'process s':>10}",
        "-" * 66,
    ]

    def row(label: str, name: str, size: int, inproc: bool) -> None:
        whole = res.median(name, "whole_s")
        down = res.median(name, "download_s") if inproc else whole
        process = f"{whole:>10.3f}" if inproc else f"{'-':>10}"
        lines.append(f"{label:<34} {down:>10.3f} {mib_s(size, down):>8.0f} {process}")

    def worst(name: str, key: str) -> float:
        return max(float(s[key]) for s in res.runs[name])

    big_mib, small_mib = f"{big.size // MIB} MiB", f"{small.size // MIB} MiB"
    bulk_label = f"{len(bulk)}x{bulk[0].size // MIB} MiB"
    row(f"curl -o ({big_mib})", "curl", big.size, False)
    row(f"plain aiohttp+aiofiles ({big_mib})", "plain", big.size, True)
    row(f"ours download() ({big_mib})", "ours", big.size, True)
    row(f"ours download() ({small_mib})", "ours_small", small.size, True)
    row(f"curl --parallel-max 4 ({bulk_label})", "bulk_curl", bulk_size, False)
    row(f"ours download_many c=4 ({bulk_label})", "bulk_ours", bulk_size, True)

    ours = res.median("ours", "download_s")
    lines += [
        "",
        "Medians. Python variants: 'download s' is timed inside the process (for ours: two",
        "API calls + stream + hash + fsync + rename); 'process s' is the whole subprocess.",
        "curl: whole process (start-up ~5 ms). Ratios: in-process Python time / curl's whole.",
        "",
        check("ours / curl", ours / res.median("curl", "whole_s"), TARGET_VS_CURL),
        check("ours / plain", ours / res.median("plain", "download_s"), TARGET_VS_PLAIN),
        check(
            "bulk ours / curl --parallel",
            res.median("bulk_ours", "download_s") / res.median("bulk_curl", "whole_s"),
            TARGET_BULK_VS_CURL,
        ),
        check(
            f"RSS growth {small_mib} (max of runs)",
            worst("ours_small", "rss_growth_mib"),
            TARGET_RSS_MIB,
            " MiB",
        ),
        check(
            f"RSS growth {big_mib} (max of runs)",
            worst("ours", "rss_growth_mib"),
            TARGET_RSS_MIB,
            " MiB",
        ),
        check(
            f"loop lag max {big_mib} (all runs)", worst("ours", "lag_max_ms"), TARGET_LAG_MS, " ms"
        ),
        check(
            f"loop lag p99 {big_mib} (median)",
            res.median("ours", "lag_p99_ms"),
            TARGET_LAG_MS,
            " ms",
        ),
        "",
        "For comparison (no targets):",
        f"  ours peak ru_maxrss {big_mib}: {worst('ours', 'rss_after_kib') / 1024:.1f} MiB;"
        f" VmHWM growth {small_mib} / {big_mib}: {worst('ours_small', 'hwm_growth_mib'):.1f} /"
        f" {worst('ours', 'hwm_growth_mib'):.1f} MiB",
        f"  loop lag max: plain {worst('plain', 'lag_max_ms'):.1f} ms,"
        f" ours bulk {worst('bulk_ours', 'lag_max_ms'):.1f} ms"
        f" (p99 median {res.median('bulk_ours', 'lag_p99_ms'):.1f} ms)",
        f"  ours streams (result.segments, the SDK's default): {big_mib} "
        f"{streams_used(res, 'ours')}, {small_mib} {streams_used(res, 'ours_small')}",
    ]
    if "x:sdk" in res.runs:
        lines += experiment_report(res, big, bulk)
    return lines


def experiment_report(res: Results, big: Archive, bulk: Sequence[Archive]) -> list[str]:
    def table(title: str, prefix: str, curl: str, ours: str, rows: Sequence[str]) -> list[str]:
        curl_s, ours_s = res.median(curl, "whole_s"), res.median(ours, "download_s")
        lines = [
            "",
            title,
            f"{'variant':<22} {'download s':>10} {'finish s':>9} {'/ curl':>7} {'/ ours':>7}",
        ]
        for row in rows:
            name = prefix + row
            down = res.median(
                name, "download_s" if "download_s" in res.runs[name][0] else "whole_s"
            )
            finish = (
                f"{res.median(name, 'finish_s'):.3f}" if "finish_s" in res.runs[name][0] else "-"
            )
            lines.append(
                f"{row:<22} {down:>10.3f} {finish:>9} {down / curl_s:>7.2f} {down / ours_s:>7.2f}"
            )
        return lines

    return table(
        f"Experiments, {big.size // MIB} MiB (copies of the SDK loop, see _experiment.py;"
        " finish = fsync + rename)",
        "x:",
        "curl",
        "ours",
        ["curl-devnull", *EXPERIMENTS],
    ) + table(
        f"Bulk experiments, {len(bulk)}x{bulk[0].size // MIB} MiB (finish summed over files)",
        "xb:",
        "bulk_curl",
        "bulk_ours",
        ["curl+sync", *BULK_EXPERIMENTS],
    )


# ----------------------------------------------------------------------------- segmented

# Variant names of --segmented: "c:" on the capped nginx server, "u:" on the uncapped one.
SEG_ROUND = ("c:curl", "c:aria2c", "c:ours_auto", "c:ours_1", "u:ours_auto", "u:ours_1", "u:curl")


def check_ranges(url: str) -> None:
    """Fail early unless the link host answers a GET with ``Accept-Ranges: bytes``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("HEAD", parts.path)
        answer = conn.getresponse()
        ranges = answer.getheader("Accept-Ranges")
    finally:
        conn.close()
    if answer.status != 200 or ranges != "bytes":
        raise RuntimeError(f"{url}: {answer.status}, Accept-Ranges {ranges!r}; want 200, bytes")


def benchmark_segmented(
    args: argparse.Namespace, workdir: pathlib.Path
) -> tuple[Results, list[str]]:
    """Each round: capped curl, aria2c, ours auto, ours 1; uncapped ours auto, ours 1, curl."""
    src, outdir = workdir / "src", workdir / "out"
    src.mkdir()
    start = time.perf_counter()
    (big,) = make_archives(src, [("big.bin", args.size_mib * MIB)])
    log(f"generated {big.size // MIB} MiB in {time.perf_counter() - start:.1f}s")

    res = Results()
    with (
        _nginx.link_hosts(src, workdir / "nginx", args.rate_limit) as (capped, uncapped),
        file_server([big], workdir, link_base=capped, name="panel-capped") as panel_c,
        file_server([big], workdir, link_base=uncapped, name="panel-uncapped") as panel_u,
    ):
        url_c, url_u = file_url(capped, big), file_url(uncapped, big)
        check_ranges(url_c)
        check_ranges(url_u)
        log(
            f"nginx at {capped} (limit_rate {args.rate_limit}) and {uncapped} (no limit);"
            f" panels at {panel_c}, {panel_u}; outputs in {outdir} ({fstype(workdir)})"
        )
        fresh(outdir)  # warm-up, untimed: .pyc files, nginx's first answers
        run_worker("ours", panel_u, big.server, big.uuid, str(outdir), "auto")
        ours = {"c": panel_c, "u": panel_u}
        for i in range(1, args.runs + 1):
            for name in SEG_ROUND:
                host, variant = name.split(":")
                fresh(outdir)
                if variant == "curl":
                    sample = run_curl([(url_c if host == "c" else url_u, outdir / "curl.bin")])
                elif variant == "aria2c":
                    sample = run_aria2c(url_c, outdir / "aria2c.bin")
                else:
                    segments = variant.removeprefix("ours_")
                    sample = run_worker(
                        "ours", ours[host], big.server, big.uuid, str(outdir), segments
                    )
                res.add(name, sample)
                check_sizes(outdir, [big])
            log(
                f"round {i}: "
                + "  ".join(f"{name} {seconds(res.runs[name][-1]):.2f}s" for name in SEG_ROUND)
            )
        fresh(outdir)
    return res, segmented_report(res, big, args.rate_limit)


def streams_used(res: Results, name: str) -> str:
    """The distinct ``result.segments`` of a variant's runs ("-": not ours; "?": not reported)."""
    used = {s.get("segments", -1) for s in res.runs[name]}
    if used == {-1}:
        return "-"
    return "/".join("?" if u is None else str(u) for u in sorted(used, key=str))


def seconds(sample: dict[str, Any]) -> float:
    """A Python worker's in-process time, or a tool's whole-process time."""
    return float(sample.get("download_s", sample["whole_s"]))


def segmented_report(res: Results, big: Archive, rate: str) -> list[str]:
    size_label = f"{big.size // MIB} MiB"
    cap = _nginx.rate_bytes(rate) / MIB
    lines = [
        f"{'variant':<40} {'download s':>10} {'MiB/s':>8} {'process s':>10} {'streams':>8}",
        "-" * 80,
    ]

    def med(name: str) -> float:
        return statistics.median(seconds(s) for s in res.runs[name])

    def worst(name: str, key: str) -> float:
        return max(float(s[key]) for s in res.runs[name])

    def row(label: str, name: str) -> None:
        down = med(name)
        inproc = "download_s" in res.runs[name][0]
        process = f"{res.median(name, 'whole_s'):>10.3f}" if inproc else f"{'-':>10}"
        lines.append(
            f"{label:<40} {down:>10.3f} {mib_s(big.size, down):>8.0f} {process}"
            f" {streams_used(res, name):>8}"
        )

    n = ARIA2_CONNECTIONS
    lines.append(f"capped: nginx limit_rate {rate} per connection ({cap:g} MiB/s), {size_label}")
    row("  curl -o (one stream)", "c:curl")
    row(f"  aria2c -x{n} -s{n} -k1M", "c:aria2c")
    row('  ours segments="auto"', "c:ours_auto")
    row("  ours segments=1", "c:ours_1")
    lines.append(f"uncapped: nginx without limit_rate, {size_label}")
    row('  ours segments="auto"', "u:ours_auto")
    row("  ours segments=1", "u:ours_1")
    row("  curl -o (one stream)", "u:curl")

    auto_c, auto_u = med("c:ours_auto"), med("u:ours_auto")
    rss = max(worst("c:ours_auto", "rss_growth_mib"), worst("u:ours_auto", "rss_growth_mib"))
    lines += [
        "",
        "Medians. ours: timed inside the process (two API calls + ranged GETs + hash + fsync +",
        "rename); curl and aria2c: the whole process, no verification, no fsync. 'streams' is",
        "result.segments as the SDK reports it ('?': this SDK does not report it).",
        "",
        check(
            "curl / ours auto (capped)", med("c:curl") / auto_c, TARGET_SEG_VS_CURL, at_least=True
        ),
        check(
            "aria2c / ours auto (capped)",
            med("c:aria2c") / auto_c,
            TARGET_SEG_VS_ARIA2,
            at_least=True,
        ),
        check("RSS growth ours auto (max of runs)", rss, TARGET_SEG_RSS_MIB, " MiB"),
        check("ours auto / ours 1 (uncapped)", auto_u / med("u:ours_1"), TARGET_SEG_UNTHROTTLED),
        "",
        "For comparison (no targets):",
        f"  capped: ours 1 / curl {med('c:ours_1') / med('c:curl'):.2f};"
        f" one capped stream needs {big.size / MIB / cap:.2f} s",
        f"  uncapped: ours auto / curl {auto_u / med('u:curl'):.2f},"
        f" ours 1 / curl {med('u:ours_1') / med('u:curl'):.2f}",
        f"  RSS growth ours 1 (max): capped {worst('c:ours_1', 'rss_growth_mib'):.1f} MiB,"
        f" uncapped {worst('u:ours_1', 'rss_growth_mib'):.1f} MiB",
        f"  VmHWM growth ours auto (max): capped {worst('c:ours_auto', 'hwm_growth_mib'):.1f}"
        f" MiB, uncapped {worst('u:ours_auto', 'hwm_growth_mib'):.1f} MiB",
        f"  loop lag ours auto: max {worst('c:ours_auto', 'lag_max_ms'):.1f} /"
        f" {worst('u:ours_auto', 'lag_max_ms'):.1f} ms (capped / uncapped)",
    ]
    if any(s.get("segments") in (1, None) for s in res.runs["c:ours_auto"]):
        lines += [
            "",
            'NOTE: ours segments="auto" used one stream on the capped host (or this SDK does not',
            "report segments): it ignores segments=, and the capped speed targets cannot be met.",
        ]
    return lines


# --------------------------------------------------------------------------------- crash


def check_no_ranges(url: str) -> None:
    """Fail early unless the link host answers a ranged GET with 200 and no Accept-Ranges."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("GET", parts.path, headers={"Range": "bytes=0-0"})
        answer = conn.getresponse()  # the headers only: the body is dropped with the connection
        ranges = answer.getheader("Accept-Ranges")
    finally:
        conn.close()
    if answer.status != 200 or ranges is not None:
        raise RuntimeError(
            f"{url}: {answer.status}, Accept-Ranges {ranges!r} for a ranged GET; want 200, none"
        )


def newest_checkpoint(journal: pathlib.Path) -> tuple[int, int] | None:
    """The newest checkpoint's prefix in a download's journal, and how many it holds.

    None when there is none, or the journal is being rewritten (the SDK writes it in place).
    """
    try:
        doc = json.loads(journal.read_bytes())
        prefixes = [int(point[0]) for point in doc["checkpoints"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return (max(prefixes), len(prefixes)) if prefixes else None


def file_sizes(path: pathlib.Path) -> tuple[int, int]:
    """Length and allocated bytes (ranged pieces land out of order, so a .part has holes)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return 0, 0
    return info.st_size, info.st_blocks * 512


def run_killed(
    args: Sequence[str], final: pathlib.Path, size: int, cap: int, kill_on: str
) -> dict[str, Any]:
    """Run ``_worker.py ARGS`` and SIGKILL it once its download is about half done.

    Half done (``kill_on="journal"``): the journal's newest checkpoint covers ``CRASH_AT`` of
    ``size`` (or, should the journal be missing, the ``.part`` holds ``CRASH_FALLBACK`` of it).
    ``kill_on="part"``: the ``.part`` holds ``CRASH_AT`` of it. "Holds" counts allocated
    bytes, not the length: ranged pieces land out of order, and the last one sets the length.
    """
    part = final.with_name(final.name + ".part")
    journal = final.with_name(final.name + ".journal")
    out = final.parent.parent / "killed-worker.out"
    deadline = 60 + 4 * size / cap
    on_disk = CRASH_AT if kill_on == "part" else CRASH_FALLBACK
    with open(out, "w+") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=worker_env(),
        )
        start = time.perf_counter()
        trigger = None
        seen = (0, 0)
        try:
            while proc.poll() is None:
                point = newest_checkpoint(journal)
                seen = file_sizes(part)
                if kill_on == "journal" and point is not None and point[0] >= size * CRASH_AT:
                    trigger = "journal"
                elif seen[1] >= size * on_disk:
                    trigger = "part"
                if trigger is not None:
                    proc.send_signal(signal.SIGKILL)
                    break
                if time.perf_counter() - start > deadline:
                    raise RuntimeError(f"{args}: not half done after {deadline:.0f} s")
                time.sleep(CRASH_POLL_S)
            killed_s = time.perf_counter() - start
        finally:
            if proc.poll() is None and trigger is None:
                proc.kill()  # an error here, or Ctrl-C: no orphan worker
            proc.wait()
        sink.seek(0)
        output = sink.read()
    point = newest_checkpoint(journal)  # what the next run finds
    return {
        "killed": trigger is not None,
        "trigger": trigger,
        "returncode": proc.returncode,
        "output": output[-2000:] if trigger is None else "",
        "killed_s": killed_s,
        "part_at_kill": seen[0],
        "part_alloc_at_kill": seen[1],
        "part_after": file_sizes(part)[0],
        "checkpoint": point[0] if point else 0,
        "checkpoints": point[1] if point else 0,
    }


def settled_log(log: pathlib.Path, tag: str) -> list[_nginx.LogEntry]:
    """The requests of a killed run, once nginx has noticed its connections are gone.

    nginx logs a request when it ends; after a kill that is at its next write to the dead
    socket. Waits until a line of ``tag`` is there and no line came for ``CRASH_QUIET_S``.
    """
    deadline = time.monotonic() + 30
    count, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        lines = [e for e in _nginx.read_access_log(log) if e.tag == tag]
        if len(lines) != count:
            count, quiet_since = len(lines), time.monotonic()
        elif count > 0 and time.monotonic() - quiet_since >= CRASH_QUIET_S:
            return lines
        time.sleep(0.1)
    return [e for e in _nginx.read_access_log(log) if e.tag == tag]


def sha1_of(path: pathlib.Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha1()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(GEN_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def crash_case(
    big: Archive,
    base: str,
    host: str,
    segments: str,
    workdir: pathlib.Path,
    log: pathlib.Path,
    cap: int,
    run: int,
    kill_on: str,
) -> dict[str, Any]:
    """One process killed halfway, then a new one to the same path; what each fetched."""
    outdir = workdir / "out"
    fresh(outdir)
    final = outdir / f"{big.uuid}.tar.gz"  # download(uuid, dir) names it so
    tags = [f"{host}-{segments}-{run}-{step}" for step in ("killed", "resumed")]
    with file_server([big], workdir, link_base=f"{base}/{tags[0]}", name=tags[0]) as panel:
        worker = ["ours", panel, big.server, big.uuid, str(outdir), segments]
        first = run_killed(worker, final, big.size, cap, kill_on)
    first_log = settled_log(log, tags[0])
    os.sync()  # the second run does not pay for the first one's writeback
    with file_server([big], workdir, link_base=f"{base}/{tags[1]}", name=tags[1]) as panel:
        worker = ["ours", panel, big.server, big.uuid, str(outdir), segments]
        try:
            second = run_worker(*worker, require_ok=False)
        except RuntimeError as exc:
            second = {"ok": False, "error": str(exc)[-2000:]}
    digest = sha1_of(final)
    time.sleep(0.2)  # the second run's last request is logged as it ends; leave nginx a moment
    entries = _nginx.read_access_log(log)
    first_log = [e for e in entries if e.tag == tags[0]] or first_log
    second_log = [e for e in entries if e.tag == tags[1]]
    fetched = sum(e.body_bytes_sent for e in second_log)
    return {
        "host": host,
        "segments_arg": segments,
        "first": first,
        "second": second,
        "first_requests": [asdict(e) for e in first_log],
        "second_requests": [asdict(e) for e in second_log],
        "first_sent": sum(e.body_bytes_sent for e in first_log),
        "fetched": fetched,
        "fetched_fraction": fetched / big.size,
        "sha1_matches": digest == big.sha1,
        "verified": bool(second.get("ok")) and digest == big.sha1,
    }


def benchmark_crash(args: argparse.Namespace, workdir: pathlib.Path) -> tuple[Results, list[str]]:
    """Each round: the range host with segments=1 and "auto", the Wings-style host."""
    src = workdir / "src"
    src.mkdir()
    start = time.perf_counter()
    (big,) = make_archives(src, [("big.bin", args.size_mib * MIB)])
    log(f"generated {big.size // MIB} MiB in {time.perf_counter() - start:.1f}s")
    cap = _nginx.rate_bytes(args.rate_limit)
    access_log = workdir / "access.log"
    hosts = [_nginx.Host(args.rate_limit), _nginx.Host(args.rate_limit, ranges=False)]
    res = Results()
    with _nginx.serve(src, workdir / "nginx", hosts, access_log) as (ranged, wings):
        check_ranges(file_url(ranged, big))
        check_no_ranges(file_url(wings, big))
        bases = {"range": ranged, "wings": wings}
        log(
            f"nginx at {ranged} (Range) and {wings} (max_ranges 0), limit_rate"
            f" {args.rate_limit} each; access log {access_log}; outputs in {workdir / 'out'}"
            f" ({fstype(workdir)})"
        )
        for i in range(1, args.runs + 1):
            for host, segments in CRASH_CASES:
                sample = crash_case(
                    big, bases[host], host, segments, workdir, access_log, cap, i, args.kill_on
                )
                res.add(f"{host}:{segments}", sample)
                log(f"round {i}: {crash_summary(sample, big.size)}")
        fresh(workdir / "out")
    return res, crash_report(res, big, args.rate_limit, args.kill_on)


def crash_summary(sample: dict[str, Any], size: int) -> str:
    first, second = sample["first"], sample["second"]
    resumed = second.get("resumed_from")
    return (
        f"{sample['host']} segments={sample['segments_arg']}: killed at"
        f" {first['killed_s']:.2f}s (checkpoint {first['checkpoint'] / MIB:.0f} MiB),"
        f" resumed_from {'-' if resumed is None else f'{resumed / MIB:.0f} MiB'}, fetched"
        f" {100 * sample['fetched_fraction']:.1f}% in {seconds_or_dash(second)},"
        f" {'verified' if sample['verified'] else 'NOT verified'}"
    )


def seconds_or_dash(sample: dict[str, Any]) -> str:
    return f"{sample['download_s']:.2f}s" if "download_s" in sample else "-"


def crash_report(res: Results, big: Archive, rate: str, kill_on: str) -> list[str]:
    cap = _nginx.rate_bytes(rate)
    size = big.size

    def mib(n: int | None) -> str:
        return "-" if n is None else f"{n / MIB:.1f}"

    label = {
        "range:1": "range host, segments=1",
        "range:auto": 'range host, "auto"',
        "wings:auto": 'Wings-style, "auto"',
    }
    head = (
        f"{'case':<24} {'kill s':>6} {'.part':>7} {'alloc':>7} {'ckpt':>7} {'sent 1':>7}"
        f" {'resumed':>7} {'fetch 2':>7} {'fetch %':>7} {'2nd s':>6} {'GETs':>4} {'str':>3}"
        f" verifies"
    )
    when = {
        "journal": "the journal's newest checkpoint reaches",
        "part": "the .part's allocated bytes reach",
    }[kill_on]
    lines = [
        f"Crash and resume, {size // MIB} MiB: nginx limit_rate {rate} per connection"
        f" ({cap / MIB:g} MiB/s; one stream needs {size / cap:.2f} s for the file).",
        f"kill -9 once {when} {CRASH_AT:.0%} of the file, then a new process downloads to the"
        " same path (both with the case's segments=).",
        "",
        head,
        "-" * len(head),
    ]
    notes: list[str] = []
    for name, title in label.items():
        for n, s in enumerate(res.runs.get(name, []), 1):
            first, second = s["first"], s["second"]
            two = second.get("download_s")
            lines.append(
                f"{title:<24} {first['killed_s']:>6.2f} {mib(first['part_at_kill']):>7}"
                f" {mib(first['part_alloc_at_kill']):>7} {mib(first['checkpoint']):>7}"
                f" {mib(s['first_sent']):>7} {mib(second.get('resumed_from')):>7}"
                f" {mib(s['fetched']):>7} {100 * s['fetched_fraction']:>7.1f}"
                f" {'-' if two is None else f'{two:.2f}':>6} {len(s['second_requests']):>4}"
                f" {second.get('segments') or '-'!s:>3} {'yes' if s['verified'] else 'NO'}"
            )
            where = f"{title} (run {n})"
            if not first["killed"]:
                notes.append(
                    f"{where}: the first process ended before the kill (exit"
                    f" {first['returncode']}): {first['output'].strip()[-300:]}"
                )
            elif first["trigger"] != kill_on:
                notes.append(f"{where}: killed on the .part's allocated bytes: no journal yet")
            if "error" in second:
                notes.append(f"{where}: the second process failed: {second['error'][-500:]}")
            resumed = second.get("resumed_from")
            if name.startswith("range") and resumed is not None:
                extra = s["fetched"] - (size - resumed)
                notes.append(
                    f"{where}: resumed_from {'=' if resumed == first['checkpoint'] else '!='}"
                    f" the journal's newest checkpoint; fetched - (size - resumed_from) ="
                    f" {extra / MIB:+.1f} MiB; bytes of the first run fetched again:"
                    f" {(s['first_sent'] - resumed) / MIB:.1f} MiB"
                )
    lines += [
        "",
        "kill s: first process, start to SIGKILL (includes start-up). .part / alloc: its length",
        "and allocated bytes when killed; ckpt: the journal's newest checkpoint after the kill;",
        "sent 1 / fetch 2: body bytes nginx sent to the first / second process (access log);",
        "resumed: result.resumed_from of the second; 2nd s: its download() call; GETs: its",
        "requests to the link host; str: result.segments. Sizes in MiB.",
        "",
    ]
    lines += notes
    lines.append("")

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISS"

    for name in ("range:1", "range:auto"):
        runs = res.runs.get(name, [])
        if runs:
            worst = max(s["fetched_fraction"] for s in runs)
            lines.append(
                f"{label[name] + ': fetched by the 2nd':<46} {100 * worst:>6.1f} %"
                f"   target <= {100 * TARGET_CRASH_FETCHED:g} %   "
                f"{verdict(worst <= TARGET_CRASH_FETCHED)}"
            )
    runs = res.runs.get("wings:auto", [])
    if runs:
        least = min(s["fetched_fraction"] for s in runs)
        lines.append(
            f"{label['wings:auto'] + ': starts over (fetched)':<46} {100 * least:>6.1f} %"
            f"   target >= {100 * TARGET_CRASH_RESTART:g} %   "
            f"{verdict(least >= TARGET_CRASH_RESTART)}"
        )
    for name, title in label.items():
        runs = res.runs.get(name, [])
        if runs:
            good = sum(bool(s["verified"]) for s in runs)
            lines.append(
                f"{title + ': verifies':<46} {good:>3}/{len(runs):<3}   result.verified and"
                f" SHA-1 of the file   {verdict(good == len(runs))}"
            )
    return lines


# ---------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size-mib", type=int, help="the single-file size (1024; --crash: 512)")
    p.add_argument("--small-mib", type=int, default=256, help="second size for RSS (256)")
    p.add_argument("--runs", type=int, help="alternating rounds (5; --crash: 1)")
    p.add_argument("--bulk-count", type=int, default=8, help="files in the bulk case (8)")
    p.add_argument("--bulk-mib", type=int, default=128, help="size of each bulk file (128)")
    p.add_argument("--concurrency", type=int, default=4, help="bulk concurrency (4)")
    p.add_argument("--quick", action="store_true", help="256 MiB, 2 runs, 8x32 MiB, 64 MiB small")
    p.add_argument("--json", metavar="PATH", help="dump raw samples and medians here")
    p.add_argument(
        "--experiments", action="store_true", help="also time copies of the SDK loop (slow)"
    )
    p.add_argument("--tmp-dir", help="where to put sources and outputs (must not be tmpfs)")
    p.add_argument(
        "--segmented",
        action="store_true",
        help="instead: ranged parallel downloads from nginx with a per-connection cap,"
        " vs curl and aria2c (needs nginx and aria2c)",
    )
    p.add_argument(
        "--crash",
        action="store_true",
        help="instead: kill -9 halfway through a download from nginx, then resume it in a new"
        " process (needs nginx)",
    )
    p.add_argument(
        "--kill-on",
        choices=("journal", "part"),
        default="journal",
        help="--crash: kill once the journal's newest checkpoint (default) or the .part's"
        " allocated bytes reach half the file",
    )
    p.add_argument(
        "--rate-limit",
        default="64m",
        metavar="RATE",
        help="--segmented, --crash: nginx limit_rate per connection, nginx syntax (64m = 64 MiB/s)",
    )
    args = p.parse_args(argv)
    if args.segmented and args.crash:
        p.error("--segmented and --crash are two different runs: pick one")
    if args.size_mib is None:
        args.size_mib = 512 if args.crash else 1024
    if args.runs is None:
        args.runs = 1 if args.crash else 5
    if args.quick:
        args.size_mib, args.small_mib, args.runs, args.bulk_mib = 256, 64, 2, 32
    try:
        _nginx.rate_bytes(args.rate_limit)
    except ValueError as exc:
        p.error(str(exc))
    return args


def require_tools(args: argparse.Namespace) -> None:
    """Exit with the install command when a tool the chosen mode runs is missing."""
    missing = [] if args.crash or shutil.which("curl") else ["curl"]
    if args.segmented or args.crash:
        missing += [] if _nginx.nginx_binary() else ["nginx"]
    if args.segmented:
        missing += [] if shutil.which("aria2c") else ["aria2c"]
    if missing:
        hint = f"; on Debian/Ubuntu: {_nginx.INSTALL_HINT}" if args.segmented else ""
        hint += " curl" if args.segmented and "curl" in missing else ""
        hint += f"; on Debian/Ubuntu: {_nginx.INSTALL_HINT_CRASH}" if args.crash else ""
        raise SystemExit(f"{', '.join(missing)} required but not found{hint}")


def benchmark(args: argparse.Namespace, workdir: pathlib.Path) -> tuple[Results, list[str]]:
    src, outdir = workdir / "src", workdir / "out"
    src.mkdir()
    start = time.perf_counter()
    sizes = [("big.bin", args.size_mib * MIB), ("small.bin", args.small_mib * MIB)]
    sizes += [(f"bulk{i}.bin", args.bulk_mib * MIB) for i in range(args.bulk_count)]
    big, small, *bulk = make_archives(src, sizes)
    log(f"generated {sum(s for _, s in sizes) // MIB} MiB in {time.perf_counter() - start:.1f}s")

    res = Results()
    with file_server([big, small, *bulk], workdir) as base:
        log(f"file server at {base}; outputs in {outdir} ({fstype(workdir)})")
        fresh(outdir)  # warm-up, untimed: the server's first answers, .pyc files
        run_worker("ours", base, small.server, small.uuid, str(outdir))
        for i in range(1, args.runs + 1):
            fresh(outdir)
            res.add("curl", run_curl([(file_url(base, big), outdir / "curl.bin")]))
            check_sizes(outdir, [big])
            fresh(outdir)
            res.add("plain", run_worker("plain", file_url(base, big), str(outdir / "p"), big.sha1))
            fresh(outdir)
            res.add("ours", run_worker("ours", base, big.server, big.uuid, str(outdir)))
            check_sizes(outdir, [big])
            fresh(outdir)
            res.add("ours_small", run_worker("ours", base, small.server, small.uuid, str(outdir)))
            if args.experiments:
                run_experiments(res, base, big, outdir)
            log(
                f"round {i}: curl {res.runs['curl'][-1]['whole_s']:.2f}s  "
                f"plain {res.runs['plain'][-1]['download_s']:.2f}s  "
                f"ours {res.runs['ours'][-1]['download_s']:.2f}s"
            )
        for i in range(1, args.runs + 1):
            fresh(outdir)
            jobs = [(file_url(base, a), outdir / f"c{n}") for n, a in enumerate(bulk)]
            res.add("bulk_curl", run_curl(jobs, args.concurrency))
            check_sizes(outdir, bulk)
            fresh(outdir)
            pairs = [f"{a.server}:{a.uuid}" for a in bulk]
            res.add(
                "bulk_ours",
                run_worker("ours-many", base, str(outdir), str(args.concurrency), *pairs),
            )
            check_sizes(outdir, bulk)
            if args.experiments:
                run_bulk_experiments(res, base, bulk, outdir, args.concurrency)
            log(
                f"bulk round {i}: curl {res.runs['bulk_curl'][-1]['whole_s']:.2f}s  "
                f"ours {res.runs['bulk_ours'][-1]['download_s']:.2f}s"
            )
        fresh(outdir)
    return res, report(res, big, small, bulk)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: server down, temp files gone


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    require_tools(args)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = pathlib.Path(
        tempfile.mkdtemp(prefix="bench-download-", dir=pick_base_dir(args.tmp_dir))
    )
    try:
        run = (
            benchmark_crash if args.crash else benchmark_segmented if args.segmented else benchmark
        )
        res, lines = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps({"args": vars(args), "runs": res.runs}, indent=2) + "\n"
        )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
