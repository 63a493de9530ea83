"""Human units: sizes in binary units, rates, durations and ages."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["human_age", "human_duration", "human_rate", "human_size"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: float | None) -> str:
    """Bytes in binary units: ``1536`` → ``1.5 KiB``; None → ``—``."""
    if n is None:
        return "—"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(n_bytes: float, seconds: float) -> str:
    """A throughput: ``12.3 MiB/s`` (``—`` when no time passed)."""
    if seconds <= 0:
        return "—"
    return f"{human_size(n_bytes / seconds)}/s"


def human_duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 4 s``, ``2 h 5 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def human_age(when: datetime, now: datetime | None = None) -> str:
    """How long ago: ``just now``, ``42 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    now = now or datetime.now(timezone.utc)
    seconds = (now - when).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 86400 * 60:
        return f"{int(seconds // 86400)} d ago"
    return when.strftime("%Y-%m-%d")
