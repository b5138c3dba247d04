"""Everything needed to build a Scanner, in a small picklable record: the local engine builds it
in-process, each Ray actor builds it once in its constructor, so both score shards identically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmaudit.scan.worker import ScanSettings


@dataclass
class ScannerSpec:
    backend: str
    model: object  # backends.modelref.ModelOptions
    options: object  # backends.BackendOptions
    settings: ScanSettings
    out: str
    rules_dir: Path | None = None
    thresholds_file: Path | None = None  # scan --thresholds
    decode: str = "auto"  # --decode, resolved once the backend (and its device) is known

    def build(self, progress=None):
        """Load the rules and the model, then return a ready Scanner (heavy: once per process)."""
        from vlmaudit.backends import build_backend
        from vlmaudit.rulebook.load import load_rules
        from vlmaudit.scan.scanner import Scanner
        from vlmaudit.schema import report_meta, report_schema

        rules = load_rules(self.rules_dir, self.thresholds_file)
        from dataclasses import replace

        from vlmaudit.scan.gpu_decode import resolve_decode

        backend = build_backend(self.backend, rules, self.model, self.options)
        settings = replace(self.settings, decode=resolve_decode(self.decode, backend))
        schema = report_schema(rules.taxonomy, report_meta(rules.taxonomy, rules.thresholds, backend.describe()))
        from vlmaudit.report.shard_summary import summarize_table

        return Scanner(backend, rules, self.out, settings, schema, progress, summarizer=summarize_table)


def known_identity(backend: str, model: str | None, head, rules) -> dict:
    """The run.json identity fields that are known before the model loads (all but the revision),
    spelled as the backends' describe() spells them."""
    from vlmaudit.backends.opennsfw import MODEL_NAME

    screen = "opennsfw" if model == MODEL_NAME else "clip"
    names = {"clip": screen, "vlm": "vlm", "head": "head", "cascade": "cascade"}
    if backend not in names:
        return {}
    if backend == "head" or (backend == "cascade" and head is not None):
        model = str(head)
    return {"backend": names[backend], "model": model, "taxonomy_fingerprint": rules.taxonomy.fingerprint(),
            "thresholds_fingerprint": rules.thresholds.fingerprint()}
