"""Progress on stderr: live bars for downloads (``TransferProgress``) and a spinner for waits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from .._models import DownloadProgress
from .._outcome import DownloadOutcome
from ._text import safe_markup
from ._units import human_size

__all__ = ["TransferProgress", "spinner"]

LABEL_WIDTH = 30
MIN_LABEL_WIDTH = 12
MIN_BAR = 10
#: What the columns after the bar take (bytes, speed, ETA, gaps), plus room for a "^C".
_FIXED_COLUMNS = 21 + 12 + 7 + 4 + 6


class _BytesColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        """``12.0 MiB / 40.0 MiB``."""
        total = human_size(task.total) if task.total is not None else "?"
        return Text(f"{human_size(task.completed)} / {total}", style="progress.download")


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        """``38.0 MiB/s`` in binary units, like the sizes."""
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{human_size(speed)}/s", style="progress.data.speed")


class TransferProgress:
    """Live bars on stderr: one per active download plus a total (bytes, speed, ETA).

    The rich implementation of ``_sync.TransferView``: ``expect`` announces a download,
    ``update`` is the SDK's ``progress`` callback, ``settle`` takes the outcomes of a batch.
    Does nothing when disabled or when stderr is not a terminal.
    """

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.enabled = enabled and console.is_terminal
        # On a narrow terminal the label gives way first, so that sizes, speed and ETA stay.
        label = min(LABEL_WIDTH, max(MIN_LABEL_WIDTH, console.width - MIN_BAR - _FIXED_COLUMNS))
        self._progress = Progress(
            TextColumn(
                "{task.description}",
                table_column=Column(width=label, no_wrap=True, overflow="ellipsis"),
            ),
            # Short of the full width on purpose: a "^C" echoed by the terminal after a full
            # line would wrap, and the transient display would then leave a line behind.
            BarColumn(bar_width=max(MIN_BAR, console.width - label - _FIXED_COLUMNS)),
            _BytesColumn(table_column=Column(min_width=21, justify="right")),
            _SpeedColumn(table_column=Column(min_width=12, justify="right")),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            disable=not self.enabled,
        )
        self._total: TaskID | None = None
        self._bars: dict[str, TaskID] = {}
        self._labels: dict[str, str] = {}
        self._sizes: dict[str, int | None] = {}
        self._done: dict[str, int] = {}
        self._finished: set[str] = set()

    def __enter__(self) -> TransferProgress:
        if self.enabled:
            self._progress.start()
            self._total = self._progress.add_task("[bold]total", total=0)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The display is best effort: a terminal that went away (SIGHUP) must not turn a
        # cancellation or a result into an OSError.
        with contextlib.suppress(OSError):
            self._progress.stop()

    def expect(self, uuid: str, label: str, size: int | None) -> None:
        """Announce a download, so that the total bar counts it from the start."""
        self._labels[uuid] = label
        self._sizes[uuid] = size or None
        self._refresh_total()

    def update(self, event: DownloadProgress) -> None:
        """The SDK's progress callback."""
        uuid = event.backup_uuid
        if self._sizes.get(uuid) is None and event.bytes_total:
            self._sizes[uuid] = event.bytes_total
        size = self._sizes.get(uuid)
        self._done[uuid] = event.bytes_done
        finished = size is not None and event.bytes_done >= size
        if finished:
            self._finished.add(uuid)
        else:
            self._finished.discard(uuid)
        if not self.enabled:
            return
        bar = self._bars.get(uuid)
        if finished:
            if bar is not None:
                self._progress.remove_task(self._bars.pop(uuid))
        elif bar is None:
            label = self._labels.get(uuid, uuid[:8])
            self._bars[uuid] = self._progress.add_task(
                safe_markup(label), total=size, completed=event.bytes_done
            )
        else:
            self._progress.update(bar, total=size, completed=event.bytes_done)
        self._refresh_total()

    def settle(self, outcomes: Iterable[DownloadOutcome]) -> None:
        """Account for finished downloads: skipped ones leave the total, failed ones stop."""
        for outcome in outcomes:
            uuid = outcome.backup_uuid
            if outcome.result is not None and outcome.result.skipped:
                self._sizes.pop(uuid, None)
                self._done.pop(uuid, None)
            else:
                done = self._done.get(uuid, 0)
                self._sizes[uuid] = done if outcome.result is None else outcome.result.bytes
                self._done[uuid] = self._sizes[uuid] or 0
                self._finished.add(uuid)
            if uuid in self._bars and self.enabled:
                self._progress.remove_task(self._bars.pop(uuid))
        self._refresh_total()

    def _refresh_total(self) -> None:
        if self._total is None:
            return
        total = sum(size or 0 for size in self._sizes.values())
        done = sum(self._done.get(uuid, 0) for uuid in self._sizes)
        files = len(self._sizes)
        finished = len(self._finished & self._sizes.keys())
        self._progress.update(
            self._total,
            total=total,
            completed=min(done, total),
            description=f"[bold]total[/] {finished}/{files} files",
        )


def spinner(console: Console, text: str) -> Progress:
    """A transient spinner with elapsed time, for waits (disabled off a terminal)."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
        disable=not console.is_terminal,
    )
    progress.add_task(safe_markup(text), total=None)
    return progress
