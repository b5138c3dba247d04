"""`vlmaudit filter`: policy -> keep/drop/review lists (+ optional filtered shards)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vlmaudit.commands.options import FilterRequest
from vlmaudit.errors import UserError
from vlmaudit.storage.location import is_url


def run_filter_command(request: FilterRequest) -> None:
    from vlmaudit.filter.lists import run_filter
    from vlmaudit.rulebook.policy import ACTIONS, load_policy
    from vlmaudit.report.reading import naming_damage
    from vlmaudit.report.reportset import ReportSet
    from vlmaudit.rulebook.coverage import check_policy, coverage_of
    from vlmaudit.rulebook.load import find_rule_file

    report_dir, policy_name, out, on_failed = request.report_dir, request.policy, request.out, request.on_failed
    allow_partial, write_shards, rules_dir = request.allow_partial, request.write_shards, request.rules
    reread, allow_mixed, progress, banks = request.reread(), request.allow_mixed, request.progress(), request.banks
    if write_shards and is_url(out):
        raise UserError("--write-shards needs a local --out (it reads the keep list from there); "
                        "write the lists locally, or drop --write-shards")
    if on_failed not in ACTIONS:
        raise UserError(f"--on-failed {on_failed}: expected one of {', '.join(ACTIONS)}")
    reports = ReportSet.open(report_dir, allow_mixed)  # listed, footers, stats and run.json read once
    meta = reports.meta
    policy_path = find_rule_file("policies", policy_name, rules_dir)
    policy = load_policy(policy_path, meta["concepts"], meta["concept_categories"])
    cover = coverage_of(reports.run, meta)
    check_policy(policy_path, cover, dict(zip(meta["concepts"], meta["concept_categories"])))
    loaded = _load_banks(banks or [])
    with naming_damage(reports.files, len(meta["concepts"])), tempfile.TemporaryDirectory(prefix="vlmaudit-match-") as tmp:
        from vlmaudit.report.coverage_view import coverage_block

        matches = known_matches_file(report_dir, reports.files, loaded, Path(tmp), None if is_url(out) else Path(out))
        summary = run_filter(reports, policy, out, on_failed, allow_partial, coverage_block(cover, meta["categories"]),
                             matches)
    counts = summary["counts"]
    print(f"{summary['samples']:,} samples: keep {counts['keep']:,}, review {counts['review']:,}, "
          f"drop {counts['drop']:,} (policy {policy.name}) -> {out}")
    if write_shards:
        from vlmaudit.filter.reshard import write_filtered_shards
        from vlmaudit.report.reread import ReReadOptions

        result = write_filtered_shards(reports, out / "keep.parquet", write_shards, reread or ReReadOptions(), progress)
        written = result["samples"]
        print(f"wrote {len(written)} filtered shards with {sum(written.values()):,} samples -> {write_shards}")
        if result["skipped_members"]:
            print(f"left out {result['skipped_members']:,} member(s) over --max-member-bytes")


def _load_banks(banks: list[str]) -> list:
    from vlmaudit.match.banks import read_bank

    return [bank for text in banks for bank in read_bank(text)]  # a bad bank is refused before any work


def known_matches_file(report_dir, files: list, banks: list, tmp: Path, out: Path | None) -> Path | None:
    """One Parquet of every known match: REPORT_DIR/matches (from `match` or `scan --bank`) plus
    the --bank files matched now (also written to OUT/matches.parquet); None when there are none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlmaudit.match.known import MATCH_FILE, read_matches

    tables = []
    stored = read_matches(report_dir, ["shard", "key", "bank"])  # from `match` or `scan --bank`
    if stored is not None:
        tables.append(stored)
    if banks:
        from vlmaudit.commands.match import match_files, write_outputs

        found = match_files(files, banks)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_outputs(found, out)
        tables.append(found.select(["shard", "key", "bank"]))
    if not tables:
        return None
    path = tmp / MATCH_FILE
    pq.write_table(pa.concat_tables(tables), path)
    return path
