"""Scale benchmark for `vlmaudit report` and `vlmaudit filter` against hand-written DuckDB SQL.

    python examples/bench_report.py DIR --rows 10000000 --files 1000   # generate DIR (once), then time
    python examples/bench_report.py DIR --time                         # time an existing DIR
    python examples/bench_report.py DIR --simulate-shards 100000       # 1 billion rows' summaries, rows linked

Workloads, each in a fresh process (peak RSS is that process's):
- `dashboard`: `vlmaudit report DIR` as a user runs it, from the per-shard summaries (`vlmaudit
  summarize` writes them after generation, standing in for the scan) and the top concepts' histograms.
- `rethreshold-hist`: `vlmaudit report DIR --threshold 0.5`, from the histograms (0.5 is a bin edge).
- `summary` / `rethreshold`: the same numbers from the rows (the path reports without summaries,
  or a threshold between bin edges, take).
- `filter`: `vlmaudit filter` with the default policy.
The hand-written SQL computes, from the rows, the numbers the command prints: samples, flagged rows,
flagged per category, and the top 10 concepts' counts, image means and image p95 (above 2 M rows both
sides take the means and p95 from every k-th file on the rows path; summaries use every row); the
last column says whether both sides agree. --simulate-shards N builds a directory of N 10,000-row
shards from one template shard (its summary and histograms under each name, each shard's Parquet a
hard link to one file of 10 of the template's rows, so the footer each summary is checked against
is real) and times `dashboard` and `rethreshold-hist` over it.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKLOADS = ("dashboard", "rethreshold-hist", "summary", "rethreshold", "filter")
THREADS_MEMORY = ("SET threads = {threads}; SET memory_limit = '640MB'; SET preserve_insertion_order = true; "
                  "SET temp_directory = '{tmp}';")


def generate(out: Path, rows: int, files: int, seed: int = 0) -> None:
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.schema import report_meta, report_schema
    from vlmaudit.scan.writer import open_parquet_writer

    rules = load_rules()
    meta = report_meta(rules.taxonomy, rules.thresholds, {"model": "synthetic", "backend": "synthetic", "revision": "0"})
    schema = report_schema(rules.taxonomy, meta)
    builder = RowBuilder(rules.taxonomy, rules.thresholds, schema, "synthetic@0")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    per_file, chunk = rows // files, 20_000
    for f in range(files):
        name = f"{f:05d}"
        with open_parquet_writer(out / f"{name}.parquet", schema) as writer:
            for start in range(0, per_file, chunk):
                n = min(chunk, per_file - start)
                metas = [RowMeta(f"{name}{i:07d}", i, None, None, "ok", image_row=j, caption_row=j)
                         for j, i in enumerate(range(start, start + n))]
                image = rng.beta(0.6, 6.0, (n, 75)).astype(np.float32)
                caption = rng.beta(0.6, 6.0, (n, 75)).astype(np.float32)
                writer.write_batch(builder.build(name, metas, image, caption))
        stats = {"shard": name, "status": "complete", "rows": per_file, "started_at": 0.0, "finished_at": 1.0}
        (out / f"{name}.stats.json").write_text(json.dumps(stats))
        print(f"\rwrote {f + 1}/{files} files", end="", flush=True)
    print()


# ---------------------------------------------------------------- vlmaudit's engine (child process)

def run_engine(report_dir: str, workload: str) -> dict:
    from vlmaudit.commands.report import ReportRequest, build_view
    from vlmaudit.report.reading import read_report_meta, report_files
    from vlmaudit.report.summary import summarize

    if workload in ("dashboard", "rethreshold-hist"):
        return command(report_dir, ["0.5"] if workload == "rethreshold-hist" else [])
    meta = read_report_meta(report_files(report_dir))
    if workload == "filter":
        from vlmaudit.filter.lists import run_filter
        from vlmaudit.rulebook.load import shipped_rules_dir
        from vlmaudit.rulebook.policy import load_policy

        policy = load_policy(shipped_rules_dir() / "policies" / "default.yaml", meta["concepts"], meta["concept_categories"])
        summary = run_filter(Path(report_dir), policy, Path(report_dir).parent / "bench-filter-engine", "review", True)
        return {"samples": summary["samples"], "counts": summary["counts"]}
    thresholds = ["0.5"] if workload == "rethreshold" else []
    # the rows path: a plain directory argument (not an opened ReportSet) never uses the summaries
    summary = summarize(report_dir, 10, build_view(ReportRequest(report_dir=Path(report_dir), thresholds=thresholds), meta))
    return numbers(summary)


def numbers(summary: dict) -> dict:
    return {"samples": summary["overview"]["samples"], "flagged": summary["overview"]["flagged"],
            "categories": [c["flagged"] for c in summary["categories"]],
            "top": [(c["id"], c["flagged"], c["mean_image"], c["p95_image"]) for c in summary["top_concepts"]]}


def command(report_dir: str, thresholds: list[str]) -> dict:
    """`vlmaudit report DIR --format json [--threshold T]` in this process (what a user runs: the
    per-shard summaries, or for a threshold on a bin edge their histograms; completeness, coverage,
    known matches), its JSON read back for the numbers."""
    import tempfile

    from vlmaudit.commands.report import ReportRequest, run_report_command

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        code = run_report_command(ReportRequest(report_dir=Path(report_dir), fmt="json", output=out, thresholds=thresholds))
        summary = json.loads(out.read_text())
    assert code == 0 and summary["overview"]["samples"]
    return numbers(summary)


def simulate(out: Path, shards: int, rows: int = 10_000, seed: int = 0) -> None:
    """A report directory of N shards of `rows` rows each, without scanning or writing N times the
    rows: one template shard written by the scanner's own writer (Parquet, summary, hist.bin); per
    shard, its summary and stats renamed, its hist.bin hard-linked, and a small Parquet file whose
    footer digest its summary records: 10 of the template's rows under the shard's name for the
    first shard and the last 1,000 (the files `report` checks in full: the first, and those holding
    the example candidates, which all-equal summaries break ties to), a hard link to one file of
    those rows with a null shard column for the others (checked by footer digest only, as every
    file is). Every file `report` reads per shard is there and checked (footer digest, stats,
    summary, histograms); the candidates point at rows the small files do not hold, so no example
    is found (the cost of looking is paid)."""
    from vlmaudit.report.shard_summary import summarize_table
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.scan.writer import ShardWriter
    from vlmaudit.schema import report_meta, report_schema

    rules = load_rules()
    meta = report_meta(rules.taxonomy, rules.thresholds, {"model": "synthetic", "backend": "synthetic", "revision": "0"})
    schema = report_schema(rules.taxonomy, meta)
    builder = RowBuilder(rules.taxonomy, rules.thresholds, schema, "synthetic@0")
    rng = np.random.default_rng(seed)
    template = out.parent / f"{out.name}-template"
    if not (template / "TEMPLATE.stats.json").exists():
        template.mkdir(parents=True, exist_ok=True)
        writer = ShardWriter.claim_shard(template, "TEMPLATE", schema, summarizer=summarize_table)
        for start in range(0, rows, 5000):
            metas = [RowMeta(f"t{i:07d}", i, f"http://example.com/{i}.jpg", f"caption {i}", "ok", image_row=j, caption_row=j)
                     for j, i in enumerate(range(start, min(rows, start + 5000)))]
            image = rng.beta(0.6, 6.0, (len(metas), 75)).astype(np.float32)
            caption = rng.beta(0.6, 6.0, (len(metas), 75)).astype(np.float32)
            writer.add(builder.build("TEMPLATE", metas, image, caption))
        writer.commit({"shard": "TEMPLATE", "status": "complete", "started_at": 0.0, "finished_at": 1.0})
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlmaudit.schema import footer_digest

    summary = (template / "TEMPLATE.summary.json").read_text()
    stats = json.loads((template / "TEMPLATE.stats.json").read_text())
    head = pq.read_table(template / "TEMPLATE.parquet").slice(0, 10)
    shared = template / "ROWS.parquet"  # 10 rows, shard column null: one file, hard-linked
    pq.write_table(head.set_column(head.schema.get_field_index("shard"), "shard", pa.nulls(len(head), pa.string())),
                   shared)
    print(f"per shard of {rows:,} rows: summary.json {len(summary.encode()):,} bytes, hist.bin "
          f"{(template / 'TEMPLATE.hist.bin').stat().st_size:,} bytes, Parquet {(template / 'TEMPLATE.parquet').stat().st_size:,} bytes")
    out.mkdir(parents=True, exist_ok=True)
    for f in range(shards):
        name = f"{f:06d}"
        rows_file = out / f"{name}.parquet"
        if not rows_file.exists():
            if f == 0 or f >= shards - 1000:  # checked in full: the first file, the example candidates' files
                pq.write_table(head.set_column(head.schema.get_field_index("shard"), "shard",
                                               pa.array([name] * len(head), pa.string())), rows_file)
            else:
                os.link(link_source(shared, f), rows_file)
        if not (out / f"{name}.hist.bin").exists():
            os.link(link_source(template / "TEMPLATE.hist.bin", f), out / f"{name}.hist.bin")
        with open(rows_file, "rb") as handle:
            digest = footer_digest(handle)
        text = json.loads(summary.replace('"TEMPLATE"', f'"{name}"'))
        text["footer_sha256"] = digest
        (out / f"{name}.summary.json").write_text(json.dumps(text, sort_keys=True))
        (out / f"{name}.stats.json").write_text(json.dumps(dict(stats, shard=name)))
        if f % 1000 == 999:
            print(f"\rwrote {f + 1}/{shards} shards", end="", flush=True)
    print()


def link_source(path: Path, f: int) -> Path:
    """A copy of `path` for shard f to hard-link to: one per 50,000 shards (ext4 allows 65,000 links)."""
    import shutil

    copy = path.with_name(f"{path.name}.{f // 50_000}")
    if not copy.exists():
        shutil.copyfile(path, copy)
    return copy


# ---------------------------------------------------------------- hand-written DuckDB SQL (child process)

def hand_sql(report_dir: str, workload: str) -> dict:
    import os
    import tempfile

    import duckdb
    import pyarrow.parquet as pq

    from vlmaudit.schema import read_meta

    files = sorted(str(p) for p in Path(report_dir).glob("*.parquet"))
    meta = read_meta(pq.read_schema(files[0]))
    con = duckdb.connect()
    con.execute(THREADS_MEMORY.format(threads=min(os.cpu_count() or 1, 16),
                                      tmp=os.path.join(tempfile.gettempdir(), f"bench-sql-{os.getpid()}")))
    con.execute(f"CREATE VIEW src AS SELECT * FROM read_parquet({files})")
    con.execute("CREATE TABLE concepts AS SELECT unnest(range(1, 76)) AS i, unnest(?::VARCHAR[]) AS concept, "
                "unnest(?::VARCHAR[]) AS category", [meta["concepts"], meta["concept_categories"]])
    if workload == "filter":
        return hand_filter(con, meta, Path(report_dir).parent / "bench-filter-sql")
    if workload in ("summary", "dashboard"):  # the stored flag columns: (concept, score) per flagged modality
        con.execute("""CREATE TEMP TABLE hits AS
            SELECT shard, sample_index, concept, bool_or(side = 'image') AS img, bool_or(side = 'caption') AS cap,
                   max(score) AS score FROM (
              SELECT shard, sample_index, 'image' AS side, unnest(image_flagged_concepts) AS concept,
                     unnest(image_flagged_scores) AS score FROM src
              UNION ALL
              SELECT shard, sample_index, 'caption', unnest(caption_flagged_concepts), unnest(caption_flagged_scores)
              FROM src) GROUP BY ALL""")
    else:  # --threshold 0.5: every score list
        con.execute("""CREATE TEMP TABLE hits AS
            SELECT shard, sample_index, concept, bool_or(side = 'image') AS img, bool_or(side = 'caption') AS cap,
                   max(score) AS score
            FROM (SELECT shard, sample_index, 'image' AS side, i, image_scores[i] AS score
                  FROM (SELECT shard, sample_index, image_scores,
                               unnest(list_filter(range(1, 76), lambda i: image_scores[i] >= 0.5)) AS i FROM src)
                  UNION ALL
                  SELECT shard, sample_index, 'caption', i, caption_scores[i]
                  FROM (SELECT shard, sample_index, caption_scores,
                               unnest(list_filter(range(1, 76), lambda i: caption_scores[i] >= 0.5)) AS i FROM src))
            JOIN concepts USING (i) GROUP BY ALL""")
    return hand_summary(con, files, exact=workload in ("dashboard", "rethreshold-hist", "summary"))


def hand_summary(con, files, exact: bool) -> dict:
    """exact: means and p95 over every row (the summaries, the rows path at the scan's thresholds);
    else over every k-th file above 2 M rows (the rows path of a re-threshold)."""
    rows = con.execute("SELECT shard, status, count(*) FROM src GROUP BY ALL").fetchall()
    flagged_rows = con.execute("""SELECT shard, count(*) AS n, count_if(i AND c), count_if(i AND NOT c), count_if(c AND NOT i)
        FROM (SELECT shard, sample_index, bool_or(img) AS i, bool_or(cap) AS c FROM hits GROUP BY ALL) GROUP BY shard""").fetchall()
    concepts = con.execute("SELECT concept, count(*), count_if(img), count_if(cap) FROM hits GROUP BY concept").fetchall()
    categories = dict((k, n) for k, n, *_ in con.execute("""SELECT category, count(*), count_if(i AND c), count_if(i AND NOT c),
        count_if(c AND NOT i) FROM (SELECT shard, sample_index, category, bool_or(img) AS i, bool_or(cap) AS c
        FROM hits JOIN concepts USING (concept) GROUP BY ALL) GROUP BY category""").fetchall())
    index = dict(con.execute("SELECT concept, i FROM concepts").fetchall())
    top = sorted(concepts, key=lambda r: (-r[1], index[r[0]]))[:10]
    names = [r[0] for r in top]
    candidates = con.execute("""SELECT concept, max_by({'shard': shard, 'i': sample_index},
        {'s': score, 'shard': shard, 'i': sample_index}, 8) FROM hits WHERE list_contains(?, concept) GROUP BY concept""",
                             [names]).fetchall()
    total = sum(n for *_, n in rows)
    sampled = files if exact else files[::max(1, total // 2_000_000)]
    def binned(x: str) -> str:  # the bin whose float32 edges hold x, as vlmaudit's score_bins
        b = f"greatest(least(trunc({x} * 1000.0::FLOAT)::INTEGER, 999), 0)"
        return (f"({b} - CASE WHEN {b} > 0 AND {x} < ({b} / 1000.0)::FLOAT THEN 1 ELSE 0 END "
                f"+ CASE WHEN {b} < 999 AND {x} >= (({b} + 1) / 1000.0)::FLOAT THEN 1 ELSE 0 END)")

    stats = ", ".join(f"avg(image_scores[{index[c]}]), histogram({binned(f'image_scores[{index[c]}]')}), "
                      f"avg(caption_scores[{index[c]}]), histogram({binned(f'caption_scores[{index[c]}]')})" for c in names)
    details = con.execute(f"SELECT {stats} FROM read_parquet({sampled})").fetchone() if names else ()
    wanted = sorted({(p["shard"], p["i"]) for _, items in candidates for p in items})
    if wanted:
        con.execute("SELECT shard, sample_index, key, url, caption, image_scores, caption_scores FROM src "
                    "WHERE (shard, sample_index) IN (SELECT unnest(?), unnest(?))",
                    [[s for s, _ in wanted], [i for _, i in wanted]]).fetchall()
    p95 = []
    for k in range(0, len(details), 4):
        hist = np.zeros(1000, np.int64)
        for b, n in details[k + 1].items():
            hist[b] = n
        p95.append(round((int(np.searchsorted(np.cumsum(hist), 0.95 * hist.sum())) + 1) / 1000, 4))
    flagged = sum(r[1] for r in flagged_rows)
    return {"samples": total, "flagged": flagged, "categories": categories,
            "top": [(c[0], c[1], round(details[4 * k], 4), p95[k]) for k, c in enumerate(top)]}


def hand_filter(con, meta, out: Path) -> dict:
    import shutil

    from vlmaudit.rulebook.load import shipped_rules_dir
    from vlmaudit.rulebook.policy import ACTIONS, MODALITIES, load_policy

    policy = load_policy(shipped_rules_dir() / "policies" / "default.yaml", meta["concepts"], meta["concept_categories"])
    con.execute("CREATE TABLE rules AS SELECT unnest(?::FLOAT[]) AS t, unnest(?::VARCHAR[]) AS mode, "
                "unnest(?::INTEGER[]) AS severity, unnest(?::VARCHAR[]) AS action",
                [policy.threshold.tolist(), [MODALITIES[m] for m in policy.modality], policy.action.tolist(),
                 [ACTIONS[a] for a in policy.action]])
    t, mode, sev, act = (con.execute(f"SELECT list({c}) FROM rules").fetchone()[0] for c in ("t", "mode", "severity", "action"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    hit = "coalesce({s}_scores[i] >= $t[i], false)"
    fires = (f"CASE $mode[i] WHEN 'image' THEN {hit.format(s='image')} WHEN 'caption' THEN {hit.format(s='caption')} "
             f"WHEN 'any' THEN {hit.format(s='image')} OR {hit.format(s='caption')} "
             f"ELSE {hit.format(s='image')} AND {hit.format(s='caption')} END")
    con.execute(f"""COPY (SELECT shard, key, sample_index, url, status,
            ['keep', 'review', 'drop'][1 + greatest(coalesce(list_max(list_transform(fired, lambda i: $sev[i])), 0),
                                                    CASE WHEN status <> 'ok' THEN 1 ELSE 0 END)] AS action,
            list_concat(CASE WHEN status <> 'ok' THEN [{{'rule': 'status:' || status, 'action': 'review',
                'modality': NULL::VARCHAR, 'threshold': NULL::FLOAT, 'image_score': NULL::FLOAT,
                'caption_score': NULL::FLOAT}}] ELSE [] END,
                list_transform(fired, lambda i: {{'rule': 'concept:' || $names[i], 'action': $act[i],
                'modality': $mode[i], 'threshold': $t[i], 'image_score': image_scores[i],
                'caption_score': caption_scores[i]}})) AS reasons
          FROM (SELECT *, list_filter(range(1, 76), lambda i: {fires}) AS fired FROM src))
        TO '{out}/all.parquet' (FORMAT parquet, COMPRESSION zstd)""".replace("$t", f"({t}::FLOAT[])")
                .replace("$mode", f"({mode}::VARCHAR[])").replace("$sev", f"({sev}::INTEGER[])")
                .replace("$act", f"({act}::VARCHAR[])").replace("$names", f"({meta['concepts']}::VARCHAR[])"))
    for action in ACTIONS:
        con.execute(f"COPY (SELECT * FROM '{out}/all.parquet' WHERE action = '{action}') TO '{out}/{action}.parquet' "
                    "(FORMAT parquet, COMPRESSION zstd)")
    counts = dict(con.execute(f"SELECT action, count(*) FROM '{out}/all.parquet' GROUP BY action").fetchall())
    con.execute(f"SELECT r.rule, count(*) FROM (SELECT unnest(reasons) AS r FROM '{out}/all.parquet') "
                "WHERE starts_with(r.rule, 'concept:') GROUP BY ALL").fetchall()
    return {"samples": sum(counts.values()), "counts": {a: counts.get(a, 0) for a in ACTIONS}}


# ---------------------------------------------------------------- driver

def child(report_dir: str, side: str, workload: str) -> None:
    started = time.perf_counter()
    result = (run_engine if side == "vlmaudit" else hand_sql)(report_dir, workload)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "result": result}))


def measure(report_dir: Path, side: str, workload: str) -> dict:
    out = subprocess.run([sys.executable, __file__, str(report_dir), "--child", side, workload],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{side} {workload} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_numbers(engine: dict, sql: dict, workload: str) -> bool:
    if workload == "filter":
        return engine == sql
    categories = sorted(sql["categories"].values(), reverse=True)
    return (engine["samples"], engine["flagged"], engine["top"]) == (sql["samples"], sql["flagged"],
                                                                       [tuple(t) for t in sql["top"]]) \
        and sorted((c for c in engine["categories"] if c), reverse=True) == categories


def time_all(report_dir: Path, workloads) -> None:
    print(f"{'workload':<12} {'vlmaudit s':>10} {'SQL s':>8} {'ratio':>6} {'vlmaudit RSS':>13} {'SQL RSS':>9}  same numbers")
    for workload in workloads:
        sql = measure(report_dir, "sql", workload)
        engine = measure(report_dir, "vlmaudit", workload)
        if "top" in engine["result"]:
            engine["result"]["top"] = [tuple(t) for t in engine["result"]["top"]]
        print(f"{workload:<12} {engine['seconds']:>10.2f} {sql['seconds']:>8.2f} {engine['seconds'] / sql['seconds']:>6.2f} "
              f"{engine['peak_rss_mib']:>9.0f} MiB {sql['peak_rss_mib']:>5.0f} MiB  "
              f"{same_numbers(engine['result'], sql['result'], workload)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--time", action="store_true", help="time an existing DIR (no generation)")
    parser.add_argument("--only", choices=WORKLOADS, action="append", help="time only these workloads")
    parser.add_argument("--simulate-shards", type=int, help="summaries of N 10,000-row shards, no rows; time the dashboard")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(str(args.dir), *args.child)
    if args.simulate_shards:
        if not args.time:
            started = time.perf_counter()
            simulate(args.dir, args.simulate_shards)
            print(f"simulated {args.simulate_shards:,} shards in {time.perf_counter() - started:.0f} s")
        for workload in ("dashboard", "rethreshold-hist"):
            result = measure(args.dir, "vlmaudit", workload)
            print(f"{workload} over {args.simulate_shards:,} shards ({args.simulate_shards * 10_000:,} rows): "
                  f"{result['seconds']:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
        return None
    if not args.time:
        started = time.perf_counter()
        generate(args.dir, args.rows, args.files)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        from vlmaudit.commands.options import SummarizeRequest
        from vlmaudit.commands.summarize import run_summarize

        run_summarize(SummarizeRequest(report_dir=args.dir))
        print(f"wrote the per-shard summaries in {time.perf_counter() - started:.0f} s (the scan's share)")
    time_all(args.dir, args.only or WORKLOADS)


if __name__ == "__main__":
    main()
