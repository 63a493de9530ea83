"""Events benchmark: wait() on the node's events vs polling, against FakePanel in-process.

Run: python benchmarks/bench_events.py [--quick] [--json PATH] [--seed N]

1. Latency: from the moment the fake records a backup's completion to the moment ``wait()``
   returns it, for ``via="events"`` and ``via="poll"`` (``poll_interval=2.0``, the default),
   one backup per server, each with a random duration.
2. Panel API requests per awaited backup (the create's POST not counted).
3. A crowd: N servers each awaiting one backup at once, durations spread over 30-60 s (times
   ``--scale``), on events and on polling at the same time (two fakes, one loop): API requests
   per minute, peak over a sliding 60 s window (also scaled), against Pelican's 256/min.

The fake's completion time: FakePanel has no public path to ``PanelState.subscribe`` and
``FakeBackup.completed_at`` is whole seconds, so each backup is created with a long
``backup_duration`` and the benchmark ends it itself at its random time with the public
``FakeBackup.complete()``, which records the result and publishes ``BackupFinished`` to the
node synchronously; the clock is read right before that call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any, Literal

import anyio

from ptero_backups_async import PteroClient
from ptero_backups_async.testing import FakeBackup, FakePanel, FakeServer

Via = Literal["events", "poll"]

# The targets.
TARGET_EVENTS_MEDIAN_MS = 50.0
TARGET_REQUESTS_PER_WAIT = 3
PELICAN_PER_MINUTE = 256

#: The SDK's default poll interval (``wait(poll_interval=2.0)``).
POLL_INTERVAL = 2.0
#: A backup created through the fake's API runs this long unless the benchmark ends it.
NEVER = 3600.0
#: The rate limit of the fakes: high, so that demand is counted, not throttled.
UNLIMITED = 1_000_000
#: Loop-lag probe period.
LAG_TICK = 0.01


@dataclass(frozen=True)
class Plan:
    events: int
    events_durations: tuple[float, float]
    polls: int
    poll_durations: tuple[float, float]
    servers: int
    crowd_durations: tuple[float, float]
    scale: float


FULL = Plan(20, (1.0, 5.0), 10, (0.5, 9.5), 50, (30.0, 60.0), 1.0)
QUICK = Plan(8, (0.5, 2.5), 4, (0.3, 4.7), 50, (30.0, 60.0), 0.2)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class LagProbe:
    """How late ``sleep(LAG_TICK)`` wakes up: a busy loop (or machine) shows here."""

    def __init__(self) -> None:
        self.late: list[float] = []

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await anyio.sleep(LAG_TICK)
            self.late.append(time.perf_counter() - before - LAG_TICK)

    def summary(self) -> dict[str, float]:
        if not self.late:
            return {"lag_max_ms": 0.0, "lag_p99_ms": 0.0}
        return {
            "lag_max_ms": max(self.late) * 1000,
            "lag_p99_ms": percentile(self.late, 0.99) * 1000,
        }


def fake_panel() -> FakePanel:
    # Pelican: the panel whose 256/min is the budget. Its limit is lifted to count demand.
    return FakePanel(
        dialect="pelican", rate_limit=UNLIMITED, create_throttle=None, backup_duration=NEVER
    )


async def complete_at(backup: FakeBackup, at: float, sample: dict[str, Any]) -> None:
    """End ``backup`` at ``at`` (perf_counter), noting when the fake recorded it."""
    await anyio.sleep(max(0.0, at - time.perf_counter()))
    sample["completed"] = time.perf_counter()
    backup.complete()


async def await_one(
    client: PteroClient,
    panel: FakePanel,
    server: FakeServer,
    duration: float,
    via: Via,
    poll_interval: float,
    sample: dict[str, Any],
) -> None:
    """Create a backup on ``server``, end it after ``duration`` s, ``wait()`` for it."""
    resource = client.backups(server.identifier)
    created = await resource.create(name=f"bench-{server.identifier}")
    sample["created"] = time.perf_counter()
    sample["uuid"] = created.uuid
    async with anyio.create_task_group() as tg:
        tg.start_soon(complete_at, panel.backup(created.uuid), sample["created"] + duration, sample)
        done = await resource.wait(created, timeout=600, poll_interval=poll_interval, via=via)
    sample["returned"] = time.perf_counter()
    if done.uuid != created.uuid or done.state.value != "completed":
        raise RuntimeError(f"wait() returned {done!r}")
    sample["latency_ms"] = (sample["returned"] - sample["completed"]) * 1000


def requests_of(panel: FakePanel, server: FakeServer) -> dict[str, int]:
    """The server's API requests after its create: token GETs, backup GETs, others."""
    prefix = f"/servers/{server.identifier}/"
    mine = [r for r in panel.api_requests() if prefix in r.path + "/"]
    after = [r for r in mine if not (r.method == "POST" and r.path.endswith("/backups"))]
    token = sum(1 for r in after if r.path.endswith("/websocket"))
    backup_gets = sum(1 for r in after if r.method == "GET" and "/backups/" in r.path)
    return {
        "requests": len(after),
        "token_gets": token,
        "backup_gets": backup_gets,
        "other": len(after) - token - backup_gets,
        "sockets": len(panel.node_connections(server)),
    }


async def run_waits(
    panel: FakePanel, durations: Sequence[float], via: Via, poll_interval: float
) -> list[dict[str, Any]]:
    """One backup per server, all awaited at once; one sample each."""
    servers = [panel.add_server(name=f"{via}-{i}") for i in range(len(durations))]
    samples: list[dict[str, Any]] = [
        {"via": via, "server": s.identifier, "duration": d}
        for s, d in zip(servers, durations, strict=True)
    ]
    async with PteroClient(panel.url, panel.api_key) as client:
        async with anyio.create_task_group() as tg:
            for server, duration, sample in zip(servers, durations, samples, strict=True):
                tg.start_soon(
                    await_one, client, panel, server, duration, via, poll_interval, sample
                )
    for server, sample in zip(servers, samples, strict=True):
        sample.update(requests_of(panel, server))
    return samples


async def latency_phase(
    via: Via, n: int, span: tuple[float, float], rng: random.Random
) -> dict[str, Any]:
    durations = [rng.uniform(*span) for _ in range(n)]
    probe = LagProbe()
    started = time.perf_counter()
    async with fake_panel() as panel, anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        samples = await run_waits(panel, durations, via, POLL_INTERVAL)
        tg.cancel_scope.cancel()
    return {
        "via": via,
        "durations": span,
        "seconds": time.perf_counter() - started,
        "samples": samples,
        **probe.summary(),
    }


def peak_in_window(times: Sequence[float], window: float) -> int:
    """The most request times in any half-open interval of ``window`` seconds."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def crowd_phase(via: Via, durations: Sequence[float], scale: float) -> dict[str, Any]:
    async with fake_panel() as panel:
        samples = await run_waits(panel, durations, via, POLL_INTERVAL * scale)
        times = [r.time for r in panel.api_requests()]
    span = max(times) - min(times)
    window = 60.0 * scale
    peak = peak_in_window(times, window)
    return {
        "via": via,
        "requests": len(times),
        "span_s": span,
        # The window is one minute of the (scaled) timeline: its count is the per-minute rate.
        "peak_per_min": peak,
        "mean_per_min": len(times) / span * 60 * scale if span > 0 else float("nan"),
        "request_times": [t - min(times) for t in times],
        "samples": samples,
    }


async def crowd(plan: Plan, rng: random.Random) -> dict[str, Any]:
    """Both modes at once on two fakes, with the same durations."""
    lo, hi = plan.crowd_durations
    durations = [rng.uniform(lo, hi) * plan.scale for _ in range(plan.servers)]
    results: dict[str, Any] = {}
    probe = LagProbe()
    started = time.perf_counter()

    async def one(via: Via) -> None:
        results[via] = await crowd_phase(via, durations, plan.scale)

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        async with anyio.create_task_group() as modes:
            modes.start_soon(one, "events")
            modes.start_soon(one, "poll")
        tg.cancel_scope.cancel()
    return {
        "seconds": time.perf_counter() - started,
        "durations": [lo * plan.scale, hi * plan.scale],
        **results,
        **probe.summary(),
    }


# ---------------------------------------------------------------------------------- report


def latency_row(name: str, phase: dict[str, Any]) -> str:
    lat = [s["latency_ms"] for s in phase["samples"]]
    req = [s["requests"] for s in phase["samples"]]
    return (
        f"{name:<30} {len(lat):>3} {statistics.median(lat):>10.1f} {percentile(lat, 0.9):>9.1f}"
        f" {max(lat):>9.1f} {statistics.median(req):>8g} {max(req):>5}"
        f" {phase['lag_max_ms']:>8.1f}"
    )


def crowd_row(name: str, phase: dict[str, Any]) -> str:
    lat = [s["latency_ms"] for s in phase["samples"]]
    req = [s["requests"] + 1 for s in phase["samples"]]  # + the create
    return (
        f"{name:<30} {phase['requests']:>8} {phase['peak_per_min']:>10.0f}"
        f" {phase['mean_per_min']:>9.0f} {phase['span_s']:>7.1f} {statistics.median(req):>7g}"
        f" {statistics.median(lat):>9.1f}"
    )


def check(label: str, ok: bool, measured: str, target: str) -> str:
    return f"  {label:<46} {measured:>12}  target {target:<10} {'ok' if ok else 'MISS'}"


def report(result: dict[str, Any]) -> list[str]:
    meta, plan = result["meta"], result["plan"]
    ev, po, cr = result["latency"]["events"], result["latency"]["poll"], result["crowd"]
    ev_med = statistics.median(s["latency_ms"] for s in ev["samples"])
    po_med = statistics.median(s["latency_ms"] for s in po["samples"])
    ev_req = max(s["requests"] for s in ev["samples"])
    ev_req_med = statistics.median(s["requests"] for s in ev["samples"])
    po_req_med = statistics.median(s["requests"] for s in po["samples"])
    scale = plan["scale"]
    lo, hi = cr["durations"]
    lines = [
        f"Events benchmark, {meta['date']}, {meta['command']}",
        f"python {meta['python']}, aiohttp {meta['aiohttp']}, anyio {meta['anyio']},"
        f" {meta['cpus']} CPUs, load average {meta['load_before']} -> {meta['load_after']},"
        f" seed {meta['seed']}, {meta['seconds']:.0f} s in all",
        "",
        "Latency: the fake records the completion -> wait() returns it (ms); requests after"
        " the create",
        f"{'mode':<30} {'n':>3} {'median':>10} {'p90':>9} {'max':>9} {'req/wait':>8} {'max':>5}"
        f" {'lag max':>8}",
        latency_row('events (via="events")', ev),
        latency_row(f'poll (via="poll", {POLL_INTERVAL:g} s)', po),
        f"  durations: events {ev['durations'][0]:g}-{ev['durations'][1]:g} s,"
        f" poll {po['durations'][0]:g}-{po['durations'][1]:g} s (uniform);"
        " the poll backs off 2, 3, 4.5, 6.75 s ...",
        "",
        f"Crowd: {plan['servers']} servers, one backup each, durations {lo:g}-{hi:g} s,"
        f" both modes at once (scale {scale:g}: poll interval {POLL_INTERVAL * scale:g} s,"
        f" window {60 * scale:g} s = one minute)",
        f"{'mode':<30} {'requests':>8} {'peak/min':>10} {'mean/min':>9} {'span s':>7}"
        f" {'req/srv':>7} {'median ms':>9}",
        crowd_row("events", cr["events"]),
        crowd_row(f"poll ({POLL_INTERVAL:g} s{'' if scale == 1 else ' scaled'})", cr["poll"]),
        "  peak/min: most requests in any window of one (scaled) minute; mean/min: requests"
        " / span x one minute; req/srv: with the create",
        f"  median ms: as measured (polling's grows with the scale); loop lag during the crowd:"
        f" max {cr['lag_max_ms']:.1f} ms, p99 {cr['lag_p99_ms']:.1f} ms",
        "",
        "Ratios (poll / events):",
        f"  median latency {po_med / ev_med:.0f}x; requests per wait"
        f" {po_req_med / ev_req_med:.2f}x;"
        f" crowd peak per minute"
        f" {cr['poll']['peak_per_min'] / cr['events']['peak_per_min']:.2f}x",
        "",
        "Checks:",
        check(
            "events median latency",
            ev_med <= TARGET_EVENTS_MEDIAN_MS,
            f"{ev_med:.1f} ms",
            f"<= {TARGET_EVENTS_MEDIAN_MS:g} ms",
        ),
        check(
            "requests per awaited backup on events (max)",
            ev_req <= TARGET_REQUESTS_PER_WAIT,
            f"{ev_req}",
            f"<= {TARGET_REQUESTS_PER_WAIT}",
        ),
        check(
            "crowd on events, peak per minute",
            cr["events"]["peak_per_min"] < PELICAN_PER_MINUTE,
            f"{cr['events']['peak_per_min']:.0f}",
            f"< {PELICAN_PER_MINUTE}",
        ),
        check(
            "crowd on polling, peak per minute",
            cr["poll"]["peak_per_min"] > PELICAN_PER_MINUTE,
            f"{cr['poll']['peak_per_min']:.0f}",
            f"> {PELICAN_PER_MINUTE}",
        ),
    ]
    return lines


# ---------------------------------------------------------------------------------- main


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def benchmark(plan: Plan, rng: random.Random) -> dict[str, Any]:
    log(f"latency on events: {plan.events} backups ...")
    events = await latency_phase("events", plan.events, plan.events_durations, rng)
    log(f"latency on polling: {plan.polls} backups ...")
    poll = await latency_phase("poll", plan.polls, plan.poll_durations, rng)
    lo, hi = plan.crowd_durations
    log(
        f"crowd: {plan.servers} servers on events and {plan.servers} on polling,"
        f" {lo * plan.scale:g}-{hi * plan.scale:g} s ..."
    )
    return {"latency": {"events": events, "poll": poll}, "crowd": await crowd(plan, rng)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 + 4 backups, crowd at scale 0.2 (~20 s)")
    p.add_argument("--json", metavar="PATH", help="write the raw samples here")
    p.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    p.add_argument("--servers", type=int, help="servers in the crowd (50)")
    p.add_argument("--scale", type=float, help="time scale of the crowd (1.0; --quick: 0.2)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.servers is not None:
        plan = Plan(**{**asdict(plan), "servers": args.servers})
    if args.scale is not None:
        plan = Plan(**{**asdict(plan), "scale": args.scale})
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    meta: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_events.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "anyio": version("anyio"),
        "cpus": os.cpu_count(),
        "load_before": load(),
        "seed": seed,
    }
    started = time.perf_counter()
    result = asyncio.run(benchmark(plan, rng))
    meta["seconds"] = time.perf_counter() - started
    meta["load_after"] = load()
    result = {"meta": meta, "plan": asdict(plan), **result}
    print("\n".join(report(result)))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
