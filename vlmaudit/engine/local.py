"""The local engine: one process scores every shard, the model built here once."""

from __future__ import annotations


class LocalEngine:
    """This process: the model here, DataLoader worker processes for decoding."""

    def __init__(self, spec):
        """SPEC: an engine.spec.ScannerSpec; the local engine has no options of its own."""
        self.scanner = spec.build()

    def describe(self) -> dict:
        return self.scanner.backend.describe()

    def run(self, jobs, progress=None):
        self.scanner.progress = progress or self.scanner.progress
        return self.scanner.run(jobs)

    def close(self) -> None: ...
