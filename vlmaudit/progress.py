"""Progress for long commands: a live bar on a terminal, plain log lines elsewhere, nothing with --quiet.

    from vlmaudit.progress import start_progress

    with start_progress("match", samples=total, quiet=quiet, every=progress_every) as progress:
        for batch in batches:
            ...
            progress.batch(len(batch), flagged=hits)   # samples done, of which flagged
        progress.shard_done(name, "complete")          # optional: commands that work shard by shard

On a terminal the bar counts samples (shards when the sample total is unknown) with rate, flagged
and ETA. Not on a terminal (a log file, SLURM output) it writes one plain line at most every
`every` seconds, one at each shard's end and one at the end. `samples` may be an int, None
(unknown) or a callable returning either (a total still being counted in the background).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Union
from vlmaudit.schema import ShardStatus


Total = Union[int, None, Callable[[], Union[int, None]]]
DEFAULT_EVERY = 30.0


class Tracker:
    """Counts and the one-line description both displays share."""

    def __init__(self, label: str, shards: int | None, samples: Total, flagged: str | None = "flagged"):
        self.label, self.shards_total, self._samples, self.flagged_label = label, shards, samples, flagged
        self.shards_done = self.samples_done = self.flagged = 0
        self.started = time.perf_counter()

    @property
    def samples_total(self) -> int | None:
        total = self._samples() if callable(self._samples) else self._samples
        return None if total is None else max(int(total), self.samples_done)

    def rate(self) -> float:
        return self.samples_done / max(time.perf_counter() - self.started, 1e-9)

    def eta(self) -> float | None:
        """Seconds left: from samples when their total is known, else from whole shards."""
        elapsed, total = time.perf_counter() - self.started, self.samples_total
        if total is not None and self.samples_done:
            return (total - self.samples_done) / self.rate()
        if self.shards_total and self.shards_done:
            return elapsed / self.shards_done * (self.shards_total - self.shards_done)
        return None

    def fraction(self) -> float | None:
        total = self.samples_total
        if total:
            return self.samples_done / total
        return self.shards_done / self.shards_total if self.shards_total else None

    def describe(self) -> str:
        total = self.samples_total
        parts = [] if self.shards_total is None else [f"shards {self.shards_done:,}/{self.shards_total:,}"]
        parts.append(f"samples {self.samples_done:,}/{'unknown' if total is None else f'{total:,}'}")
        parts.append(f"{self.rate():,.1f} samples/s")
        if self.flagged_label:
            parts.append(f"{self.flagged_label} {self.flagged:,}")
        parts.append(f"ETA {format_seconds(self.eta())}")
        return ", ".join(parts)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Display:
    """Shared by the bar and the log lines: counting, and the context-manager protocol."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def batch(self, rows: int, flagged: int = 0) -> None:
        self.tracker.samples_done += rows
        self.tracker.flagged += flagged
        self.update(False)

    advance = batch

    def shard_done(self, name: str, status: str) -> None:
        self.tracker.shards_done += 1
        if status != ShardStatus.COMPLETE:
            self.note(f"shard {name}: {status}")
        self.update(True)

    def update(self, shard_end: bool) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class Silent(_Display):
    """--quiet: counts (callers may read them) and shows nothing."""


class LogLines(_Display):
    """Not a terminal: one plain line at most every `every` seconds, at each shard's end, at the end."""

    def __init__(self, tracker: Tracker, every: float, stream=None):
        super().__init__(tracker)
        self.every, self.stream = every, stream
        self.last_line, self.last_state = time.perf_counter(), None

    def update(self, shard_end: bool) -> None:
        if shard_end or time.perf_counter() - self.last_line >= self.every:
            self._line()

    def note(self, text: str) -> None:
        self._write(f"{self.tracker.label}: {text}")

    def close(self) -> None:
        if self.last_state != self._state():
            self._line()

    def _state(self) -> tuple:
        return self.tracker.samples_done, self.tracker.shards_done

    def _line(self) -> None:
        self.last_line, self.last_state = time.perf_counter(), self._state()
        self._write(f"{self.tracker.label}: {self.tracker.describe()}")

    def _write(self, text: str) -> None:
        from vlmaudit.report.safetext import safe_text

        stream = self.stream or sys.stderr
        stream.write(safe_text(text) + "\n")
        stream.flush()


class LiveBar(_Display):
    """A terminal: a rich bar over samples (shards while the sample total is unknown)."""

    def __init__(self, tracker: Tracker, console):
        from rich.progress import BarColumn, Progress, TextColumn

        super().__init__(tracker)
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[text]}"),
                                 console=console, transient=False)
        self.task = self.progress.add_task(_plain(tracker.label), total=1.0, completed=0.0, text="")
        self.progress.start()
        self.update(False)

    def update(self, shard_end: bool) -> None:
        fraction = self.tracker.fraction()
        self.progress.update(self.task, completed=fraction or 0.0, total=1.0 if fraction is not None else None,
                             text=_plain(self.tracker.describe()))

    def note(self, text: str) -> None:
        self.progress.console.print(f"[yellow]{_plain(text)}")

    def close(self) -> None:
        self.update(True)
        self.progress.stop()


def _plain(text: str) -> str:
    from vlmaudit.report.safetext import rich_markup

    return rich_markup(text)


def start_progress(label: str, *, shards: int | None = None, samples: Total = None, quiet: bool = False,
                   every: float = DEFAULT_EVERY, console=None, flagged: str | None = "flagged") -> _Display:
    """The display for this output: Silent with quiet, a LiveBar on a terminal, else LogLines.
    `flagged`: what the second count is called (None: not shown)."""
    tracker = Tracker(label, shards, samples, flagged)
    if quiet:
        return Silent(tracker)
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if console.is_terminal:
        return LiveBar(tracker, console)
    return LogLines(tracker, every, console.file)



@dataclass(frozen=True)
class ProgressOptions:
    """--quiet and --progress-every, handed from a command to the code that does the work.
    The default is quiet, so library callers and tests print nothing unless asked."""

    quiet: bool = True
    every: float = DEFAULT_EVERY

    def start(self, label: str, *, shards: int | None = None, samples: Total = None, console=None,
              flagged: str | None = "flagged") -> _Display:
        return start_progress(label, shards=shards, samples=samples, quiet=self.quiet, every=self.every,
                              console=console, flagged=flagged)

    def note(self, text: str, stream=None) -> None:
        """One plain line (a phase starting), on a terminal or in a log, unless quiet."""
        if not self.quiet:
            from vlmaudit.report.safetext import safe_text

            stream = stream or sys.stderr
            stream.write(safe_text(text) + "\n")
            stream.flush()
