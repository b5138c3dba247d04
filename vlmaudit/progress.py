"""A rich progress bar for scans: shards done/total, samples/s, flagged so far, ETA."""

from __future__ import annotations

import time


class RichProgress:
    def __init__(self, total_shards: int, console=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]scan"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
            TextColumn("{task.fields[samples]:,} samples  {task.fields[rate]:,.1f}/s  flagged {task.fields[flagged]:,}"),
            TimeRemainingColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task("scan", total=total_shards, samples=0, rate=0.0, flagged=0)
        self.samples = self.flagged = 0
        self.started = time.perf_counter()

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def batch(self, rows: int, flagged: int) -> None:
        self.samples += rows
        self.flagged += flagged
        rate = self.samples / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, samples=self.samples, flagged=self.flagged, rate=rate)

    def shard_done(self, name: str, status: str) -> None:
        if status != "complete":
            self.progress.console.print(f"[yellow]shard {name}: {status}")
        self.progress.advance(self.task)
