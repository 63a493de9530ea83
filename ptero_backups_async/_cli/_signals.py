"""The signals that stop a command: their exit codes, and how they interrupt one.

SIGINT (Ctrl-C), SIGTERM (a service manager stopping us) and SIGHUP (the terminal went away)
all cancel the running command, so that downloads remove their ``.part`` files, and then exit
128 + the signal's number: 130, 143, 129. In a blocking prompt they raise instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from ._context import EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_TERMINATED, Interrupted

__all__ = ["STOP_MESSAGES", "interruptible", "raising_signals", "stop_signals"]

#: The signals that stop a command cleanly, with their exit codes and what stderr says.
_STOP_SIGNALS: dict[str, tuple[int, str]] = {
    "SIGINT": (EXIT_INTERRUPTED, "interrupted"),
    "SIGTERM": (EXIT_TERMINATED, "terminated (SIGTERM)"),
    "SIGHUP": (EXIT_HANGUP, "hung up (SIGHUP)"),  # not on Windows
}
#: What stderr says when a command ends with one of these exit codes.
STOP_MESSAGES = {code: message for code, message in _STOP_SIGNALS.values()}


def stop_signals() -> dict[signal.Signals, int]:
    """The stop signals this platform has, with their exit codes."""
    found = {}
    for name, (code, _) in _STOP_SIGNALS.items():
        signum = getattr(signal, name, None)
        if signum is not None:
            found[signal.Signals(signum)] = code
    return found


def _raiser(code: int) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(code)

    return handler


@contextlib.contextmanager
def raising_signals() -> Iterator[None]:
    """Let the stop signals interrupt a blocking call on the main thread, such as ``input()``.

    The event loop's signal handlers would only run after the call returns. Inside this block
    SIGINT raises ``KeyboardInterrupt`` and SIGTERM and SIGHUP raise ``Interrupted`` (exit 143,
    129); the previous handlers come back at its end. Off the main thread it does nothing.
    """
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum, code in stop_signals().items():
            previous[signum] = signal.getsignal(signum)
            if signum == signal.SIGINT:
                signal.signal(signum, signal.default_int_handler)
            else:
                signal.signal(signum, _raiser(code))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


async def interruptible(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro``; the first SIGINT, SIGTERM or SIGHUP cancels it and cleanup runs.

    The command then returns 128 + that signal's number. During the cleanup a second Ctrl-C
    interrupts it (KeyboardInterrupt); further SIGTERM and SIGHUP are ignored, because they
    come in pairs (a closing terminal's shell and then the kernel both send SIGHUP), and the
    cleanup is what they are waiting for.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    exit_code: int | None = None

    def on_signal(signum: signal.Signals, code: int) -> None:
        nonlocal exit_code
        if exit_code is not None:
            return
        exit_code = code
        if signal.SIGINT in installed:
            loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C raises
            installed.remove(signal.SIGINT)
        if task is not None:
            task.cancel()

    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for signum, code in stop_signals().items():
            try:
                loop.add_signal_handler(signum, on_signal, signum, code)
            except (NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt as usual
                break
            installed.append(signum)
    try:
        return await coro
    except asyncio.CancelledError:
        if exit_code is not None:
            return exit_code
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
