"""Apply a policy to scan reports: keep / drop / review lists with the reasons, and a summary.

One DuckDB pass over the reports decides every row (rules from rulebook.policy via report.flagsql)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vlmaudit.errors import UserError
from vlmaudit.rulebook.policy import ACTIONS, MODALITIES, Policy
from vlmaudit.report.reportset import listing_of
from vlmaudit.scan.writer import write_json_atomic
from vlmaudit.schema import SampleStatus


def unfinished_shards(info: dict, report_dir) -> list[str]:
    """Shards planned in run.json (or with stats) that have no finished report, and partial files
    (`info`: report.completeness.assess); truncated shards are finished, listed in the summary only.
    REPORT_DIR: a path, or an opened ReportSet or reading.ReportDir (its listing is reused)."""
    from vlmaudit.report.completeness import filter_entries

    problems = [e for e in filter_entries(info) if "(truncated" not in e]
    return problems + [f"{name} (unfinished)" for name in listing_of(report_dir).partial_names()]


def with_matches(decided: str, policy: Policy, matches: Path | None) -> str:
    """DECIDED with known-content matches (a `match` output) raised to the policy's match action,
    reason `bank:NAME` first."""
    if matches is None:
        return decided
    from vlmaudit.report import engine

    actions = engine.texts(ACTIONS)
    reason = (f"{{'rule': 'bank:' || m.bank, 'action': {engine.text(ACTIONS[policy.match])}, 'modality': 'image', "
              "'threshold': NULL::FLOAT, 'image_score': NULL::FLOAT, 'caption_score': NULL::FLOAT}")
    return f"""
        SELECT d.shard, d.key, d.sample_index, d.url, d.status,
               CASE WHEN m.bank IS NULL THEN d.action
                    ELSE {actions}[greatest(list_position({actions}, d.action), {policy.match + 1})] END AS action,
               CASE WHEN m.bank IS NULL THEN d.reasons ELSE list_concat([{reason}], d.reasons) END AS reasons, d.damaged
        FROM ({decided}) d
        LEFT JOIN (SELECT shard, key, min(bank) AS bank FROM read_parquet({engine.text(matches)}) GROUP BY shard, key) m
          ON d.shard = m.shard AND d.key = m.key"""


def decided_sql(policy: Policy, on_failed: int, files: list, damaged: str = "false") -> str:
    """Every row with its action and reasons: the most severe fired rule, at least --on-failed
    for rows whose status is not ok; failed rows carry a status reason first; `damaged` (SQL) says
    whether its scores are damaged (the score check, in the same pass)."""
    from vlmaudit.report import engine, flagsql

    rules = flagsql.Rules.from_policy(policy, np.ones(len(policy.concepts), bool))
    severity = engine.ints(policy.action)
    status_reason = (f"CASE WHEN failed THEN [{{'rule': 'status:' || status, 'action': {engine.text(ACTIONS[on_failed])}, "
                     f"'modality': NULL::VARCHAR, 'threshold': NULL::FLOAT, 'image_score': NULL::FLOAT, "
                     f"'caption_score': NULL::FLOAT}}] ELSE [] END")
    concept_reason = (f"list_transform(fired, lambda i: {{'rule': 'concept:' || {engine.texts(policy.concepts)}[i], "
                      f"'action': {engine.texts([ACTIONS[a] for a in policy.action])}[i], "
                      f"'modality': {engine.texts([MODALITIES[m] for m in policy.modality])}[i], "
                      f"'threshold': {engine.floats(policy.threshold)}[i], 'image_score': image_scores[i], "
                      f"'caption_score': caption_scores[i]}})")
    return f"""
        SELECT shard, key, sample_index, url, status,
               {engine.texts(ACTIONS)}[1 + greatest(coalesce(list_max(list_transform(fired, lambda i: {severity}[i])), 0),
                                                 CASE WHEN failed THEN {on_failed} ELSE 0 END)] AS action,
               list_concat({status_reason}, {concept_reason}) AS reasons, damaged
        FROM (SELECT shard, key, sample_index, url, status, image_scores, caption_scores,
                     coalesce(status, '') <> {engine.text(SampleStatus.OK)} AS failed, {flagsql.fired(rules)} AS fired,
                     coalesce({damaged}, false) AS damaged
              FROM {engine.source(files)})"""


def _private_temp(target: Path) -> Path:
    """A hidden, unique sibling of TARGET, created empty and exclusively (never through a planted
    symlink) before DuckDB writes into it."""
    from vlmaudit.storage.localfiles import create_exclusive, temp_path

    path = temp_path(target, "partial")
    create_exclusive(path).close()
    return path


def write_decisions(files: list, policy: Policy, on_failed: int, out_dir: Path,
                    matches: Path | None = None) -> tuple[dict, dict]:
    """One pass over the reports into a temporary Parquet of decisions, split by action into
    keep/review/drop.parquet (temporary names, renamed together); returns the counts."""
    from vlmaudit.report import engine
    from vlmaudit.report.reading import BadScores

    out_dir.mkdir(parents=True, exist_ok=True)
    decided = _private_temp(out_dir / "decided.parquet")
    partial = {a: _private_temp(out_dir / f"{a}.parquet") for a in ACTIONS}
    try:
        with engine.session(files, "filter") as con:
            columns = [d[0] for d in con.execute(f"SELECT * FROM {engine.source(files)} LIMIT 0").description]
            damaged = " OR ".join(engine.bad_score_conditions(columns, len(policy.action)).values()) or "false"
            con.execute(f"COPY ({with_matches(decided_sql(policy, on_failed, files, damaged), policy, matches)}) "
                        f"TO {engine.text(decided)} (FORMAT parquet, COMPRESSION zstd)")
            if con.execute(f"SELECT count_if(damaged) FROM read_parquet({engine.text(decided)})").fetchall()[0][0]:
                engine.check_scores(con, files, len(policy.action))  # names the file (raises)
                raise BadScores("a report holds scores that are NaN, infinite or outside [0, 1]")
            for action, path in partial.items():
                con.execute(f"COPY (SELECT * EXCLUDE (damaged) FROM read_parquet({engine.text(decided)}) WHERE action = "
                            f"{engine.text(action)}) TO {engine.text(path)} (FORMAT parquet, COMPRESSION zstd)")
            counts = dict(con.execute(f"SELECT action, count(*) FROM read_parquet({engine.text(decided)}) "
                                      "GROUP BY action").fetchall())
            fired = con.execute(f"SELECT r.rule, count(*) FROM (SELECT unnest(reasons) AS r FROM read_parquet("
                                f"{engine.text(decided)})) WHERE starts_with(r.rule, 'concept:') OR starts_with(r.rule, 'bank:') "
                                "GROUP BY r.rule").fetchall()
        for action, path in partial.items():
            os.replace(path, out_dir / f"{action}.parquet")
    finally:
        for path in [decided, *partial.values()]:
            path.unlink(missing_ok=True)
    return {a: counts.get(a, 0) for a in ACTIONS}, dict(fired)


def run_filter(report_dir: Path, policy: Policy, out_dir: Path, on_failed: str, allow_partial: bool,
               coverage: dict | None = None, matches: Path | None = None) -> dict:
    """REPORT_DIR: a path, or an opened ReportSet (validated; its listing, stats and run.json are
    reused, nothing is listed or read again). `coverage`: report.coverage_view.coverage_block,
    written to summary.json as "coverage"; `matches`: known-content matches (a `match` output),
    raised to the policy's match action."""
    from vlmaudit.report.completeness import assess, filter_entries
    from vlmaudit.report.reportset import ReportSet

    listing = listing_of(report_dir)
    info = assess(listing)
    missing = unfinished_shards(info, listing)
    if missing and not allow_partial:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise UserError(f"{listing}: {len(missing)} shard(s) have no finished report: {shown}; "
                        "finish the scan or pass --allow-partial")
    files = report_dir.files if isinstance(report_dir, ReportSet) else listing.report_files()
    with _local_out(out_dir) as local:
        counts, rule_counts = write_decisions(files, policy, ACTIONS.index(on_failed), local, matches)
        listed = filter_entries(info) + [m for m in missing if m.endswith("(unfinished)")]
        summary = _summary(policy, on_failed, listing.location, counts, rule_counts, listed) | info
        if coverage is not None:
            summary["coverage"] = coverage
        write_json_atomic(local / "summary.json", summary)
    return summary


def _summary(policy: Policy, on_failed: str, report_dir, counts: dict, rule_counts: dict, missing: list) -> dict:
    return {"policy": policy.name, "policy_fingerprint": policy.fingerprint, "on_failed": on_failed,
               "report_dir": str(report_dir), "samples": sum(counts.values()), "counts": counts,
               "rules_fired": dict(sorted(rule_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
               "incomplete_shards": missing,
               "known_matches": {rule[5:]: n for rule, n in rule_counts.items() if rule.startswith("bank:")}}


@contextmanager
def _local_out(out_dir):
    """The output directory itself, or for an fsspec URL (s3://...) a private local directory
    uploaded when the lists are complete: keep/review/drop.parquet first, summary.json last."""
    from vlmaudit.storage.location import is_url

    if not is_url(out_dir):
        yield Path(out_dir)
        return
    import tempfile

    from vlmaudit.storage.location import Location

    with tempfile.TemporaryDirectory(prefix="vlmaudit-filter-") as tmp:
        yield Path(tmp)
        target = Location(str(out_dir))
        for name in [f"{a}.parquet" for a in ACTIONS] + ["summary.json"]:
            with open(Path(tmp) / name, "rb") as source, target.open(name, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
