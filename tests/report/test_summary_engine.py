"""The DuckDB summary and filter against a small independent reference: plain Python over the rows
of reports with known contents (scores exactly at the threshold and one float32 step below, rows
without image scores or without any scores, failed rows, several shards)."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from vlmaudit.rulebook.load import load_rules
from vlmaudit.rulebook.policy import ACTIONS

RULES = load_rules()
TAX = RULES.taxonomy
IDS, CATS = TAX.concept_ids, [c.category for c in TAX.concepts]
POLICY = """
default: {threshold: 0.7, modality: any, action: drop}
categories:
  hate: {modality: both, action: review}
  sexual: {modality: image, threshold: 0.5}
concepts:
  swastika: {action: keep}
  gore-and-mutilation: {modality: caption, action: review}
"""


def build_reports(out, seed=0, shards=3, per_shard=120):
    """Report files written by the scanner's own row builder and writer; returns nothing, the
    reference reads the files back with pyarrow."""
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.scan.writer import open_parquet_writer
    from vlmaudit.schema import report_meta, report_schema

    meta = report_meta(TAX, RULES.thresholds, {"model": "synthetic", "backend": "synthetic"})
    schema = report_schema(TAX, meta)
    builder = RowBuilder(TAX, RULES.thresholds, schema, "synthetic@0")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    thr_i, thr_c = RULES.thresholds.image, RULES.thresholds.caption
    for s in range(shards):
        n = per_shard
        image = rng.beta(0.6, 6.0, (n, 75)).astype(np.float32)
        caption = rng.beta(0.6, 6.0, (n, 75)).astype(np.float32)
        hot = rng.random((n, 75)) < 0.03 * (s + 1)  # shards differ in flagged rate
        image[hot] = rng.uniform(0.6, 1.0, hot.sum())
        caption[rng.random((n, 75)) < 0.02] = 0.95
        image[0, 0], caption[0, 0] = thr_i[0], np.nextafter(thr_c[0], np.float32(0))  # at / one step below
        caption[1, 7] = thr_c[7]
        image[2, 30] = caption[2, 30] = 0.91  # both modalities, same concept
        metas = []
        for j in range(n):
            status, image_row, caption_row = "ok", j, j
            if j % 17 == 3:
                status, image_row = "missing_image", -1
            elif j % 23 == 4:
                status, image_row, caption_row = "inference_error", -1, -1
            elif j % 29 == 5:
                status, image_row = "decode_error", -1
            metas.append(RowMeta(f"s{s}k{j:04d}", j, f"http://x/{j}", f"caption {j}", status,
                                 image_row=image_row, caption_row=caption_row))
        name = f"{s:05d}"
        with open_parquet_writer(out / f"{name}.parquet", schema) as writer:
            writer.write_batch(builder.build(name, metas, image, caption))
        stats = {"shard": name, "status": "complete", "started_at": 10.0 * s, "finished_at": 10.0 * s + 5}
        (out / f"{name}.stats.json").write_text(json.dumps(stats))
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return build_reports(tmp_path_factory.mktemp("engine") / "reports")


def rows_of(out):
    return pq.read_table(sorted(out.glob("*.parquet"))).to_pylist()


def threshold_flags(row, thr_i, thr_c, counted):
    img = {i for i, v in enumerate(row["image_scores"] or []) if counted[i] and v >= thr_i[i]}
    cap = {i for i, v in enumerate(row["caption_scores"] or []) if counted[i] and v >= thr_c[i]}
    return img, cap


def policy_fired(row, rules):
    """rules: per concept (threshold, modality, action) straight from the policy semantics."""
    img, cap = row["image_scores"] or [None] * 75, row["caption_scores"] or [None] * 75
    out = []
    for i, (t, mode, _) in enumerate(rules):
        hi, hc = img[i] is not None and img[i] >= t, cap[i] is not None and cap[i] >= t
        if {"image": hi, "caption": hc, "any": hi or hc, "both": hi and hc}[mode]:
            out.append(i)
    return out


def policy_flags(row, rules):
    img, cap = set(), set()
    for i in policy_fired(row, rules):
        t, mode, action = rules[i]
        if action == "keep":
            continue
        if mode != "caption" and row["image_scores"] and row["image_scores"][i] >= t:
            img.add(i)
        if mode != "image" and row["caption_scores"] and row["caption_scores"][i] >= t:
            cap.add(i)
    return img, cap


def p95(values):
    if not values:
        return None
    k = math.ceil(0.95 * len(values))
    value = sorted(values)[k - 1]
    return round((min(int(np.float32(value) * np.float32(1000)), 999) + 1) / 1000, 4)


def reference(rows, flags, top, keep=3, concept=None):
    """Every figure of the summary, computed with loops over the rows."""
    rate = lambda a, b: a / b if b else 0.0  # noqa: E731
    n = len(rows)
    cat_index = {c: k for k, c in enumerate(TAX.category_ids)}
    per_concept = {i: [0, 0, 0] for i in range(75)}
    per_cat = {k: [0, 0, 0, 0] for k in range(len(cat_index))}
    flagged = both = image_only = caption_only = 0
    shards, status, best = {}, {}, {i: [] for i in range(75)}
    for row in rows:
        img, cap = flags(row)
        status[row["status"]] = status.get(row["status"], 0) + 1
        entry = shards.setdefault(row["shard"], [0, 0])
        entry[0] += 1
        for i in img | cap:
            per_concept[i][0] += 1
            score = max(([row["image_scores"][i]] if i in img else []) + ([row["caption_scores"][i]] if i in cap else []))
            best[i].append((score, row["shard"], row["sample_index"]))
        for i in img:
            per_concept[i][1] += 1
        for i in cap:
            per_concept[i][2] += 1
        icat, ccat = {cat_index[CATS[i]] for i in img}, {cat_index[CATS[i]] for i in cap}
        for k in icat | ccat:
            per_cat[k][0] += 1
            per_cat[k][1] += k in icat and k in ccat
            per_cat[k][2] += k in icat and k not in ccat
            per_cat[k][3] += k in ccat and k not in icat
        if img or cap:
            flagged += 1
            entry[1] += 1
            both += bool(img and cap)
            image_only += bool(img and not cap)
            caption_only += bool(cap and not img)
    order = sorted((i for i in range(75) if per_concept[i][0]), key=lambda i: (-per_concept[i][0], i))[:top]
    scores = lambda i, side: [r[f"{side}_scores"][i] for r in rows if r[f"{side}_scores"] is not None]  # noqa: E731
    mean = lambda v: round(sum(v) / len(v), 4) if v else None  # noqa: E731
    by_key = {(r["shard"], r["sample_index"]): r for r in rows}
    failed = n - status.get("ok", 0)
    names = [c.name for c in TAX.concepts]
    out = {
        "samples": n, "failed": failed, "failed_rate": rate(failed, n), "status": dict(sorted(status.items())),
        "flagged": flagged, "flagged_rate": rate(flagged, n),
        "categories": [{"id": c.id, "name": c.name, "flagged": per_cat[k][0], "rate": rate(per_cat[k][0], n),
                        "both": per_cat[k][1], "image_only": per_cat[k][2], "caption_only": per_cat[k][3],
                        "agreement": rate(per_cat[k][1], per_cat[k][0])} for k, c in enumerate(TAX.categories)],
        "top_concepts": [{"id": IDS[i], "name": names[i], "category": CATS[i], "flagged": per_concept[i][0],
                          "rate": rate(per_concept[i][0], n), "image": per_concept[i][1],
                          "caption": per_concept[i][2], "mean_image": mean(scores(i, "image")),
                          "p95_image": p95(scores(i, "image")), "mean_caption": mean(scores(i, "caption")),
                          "p95_caption": p95(scores(i, "caption"))} for i in order],
        "modality": {"both": both, "image_only": image_only, "caption_only": caption_only,
                     "agreement": rate(both, flagged)},
        "top_shards": sorted(({"shard": s, "samples": a, "flagged": f, "rate": rate(f, a)}
                              for s, (a, f) in shards.items()), key=lambda r: (-r["rate"], r["shard"]))[:top],
        "shard_rates": [rate(shards[s][1], shards[s][0]) for s in sorted(shards)],
        "examples": {IDS[i]: examples(i, best[i], by_key, keep) for i in order},
    }
    if concept is not None:
        fold = lambda v: [sum(1 for x in v if min(int(np.float32(x) * np.float32(1000)), 999) // 50 == b)  # noqa: E731
                          for b in range(20)]
        out["histogram"] = {"concept": IDS[concept], "bins": 20, "image": fold(scores(concept, "image")),
                            "caption": fold(scores(concept, "caption"))}
    return out


def examples(i, candidates, by_key, keep):
    items = []
    for _, shard, index in sorted(candidates, reverse=True)[:8]:
        row = by_key[(shard, index)]
        image = row["image_scores"][i] if row["image_scores"] else None
        caption = row["caption_scores"][i] if row["caption_scores"] else None
        score, modality = max((image or -1.0, "image"), (caption or -1.0, "caption"))
        items.append({"shard": shard, "key": row["key"], "url": row["url"], "caption": row["caption"],
                      "score": round(score, 4), "modality": modality})
    return sorted(items, key=lambda x: (-x["score"], x["shard"], x["key"]))[:keep]


def compare(summary, expected):
    o = summary["overview"]
    for key in ("samples", "failed", "failed_rate", "status", "flagged", "flagged_rate"):
        assert o[key] == pytest.approx(expected[key]), key
    for items in summary["examples"].values():  # `fired` is pinned by the operator-view tests
        for item in items:
            assert item.pop("fired") in ("image", "caption", "both")
    for key in ("categories", "top_concepts", "modality", "top_shards", "shard_rates", "examples", "histogram"):
        if key in expected:
            assert summary[key] == pytest.approx(expected[key]) if key == "shard_rates" else summary[key] == expected[key], key


def report_json(*args):
    result = run_cli("report", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_default_summary_matches_the_reference(reports):
    rows = rows_of(reports)
    summary = report_json(reports, "--top", "75")
    thr = RULES.thresholds
    expected = reference(rows, lambda r: threshold_flags(r, thr.image, thr.caption, [True] * 75), 75)
    compare(summary, expected)
    assert summary["overview"]["flagged"] > 0 and summary["modality"]["both"] > 0
    assert summary["overview"]["status"]["missing_image"] > 0 and summary["overview"]["status"]["inference_error"] > 0
    # the boundary rows: at the threshold flags, one float32 step below does not
    first = {(r["shard"], r["sample_index"]): r for r in rows}[("00000", 0)]
    assert IDS[0] in first["image_flagged_concepts"] and IDS[0] not in first["caption_flagged_concepts"]
    # recomputing the flags from the score lists (an override that changes nothing) agrees
    same = report_json(reports, "--top", "75", "--threshold", f"{IDS[1]}={float(thr.image[1])}")
    assert same["overview"]["thresholds"]["source"].startswith("override")
    compare(same, expected)


def test_default_summary_names_the_scan_thresholds_and_the_scan_span(reports):
    overview = report_json(reports)["overview"]
    values = [float(v) for v in (*RULES.thresholds.image, *RULES.thresholds.caption)]
    assert overview["thresholds"] == pytest.approx({"source": "scan", "min": min(values), "max": max(values),
                                                    "median": float(np.median(values))})
    # shard s ran from 10 s to 10 s + 5 (build_reports): the first start to the last finish
    assert (overview["scan_seconds"], overview["samples_per_s"]) == (25.0, round(360 / 25, 2))


def test_the_scan_span_leaves_out_failed_shards(reports, tmp_path):
    """A shard that failed (no report, only stats) does not stretch the time the scan took."""
    import shutil

    out = shutil.copytree(reports, tmp_path / "r")
    failed = {"shard": "00009", "status": "failed", "started_at": 0.0, "finished_at": 1000.0, "rows": 0}
    (out / "00009.stats.json").write_text(json.dumps(failed))
    overview = report_json(out)["overview"]
    assert (overview["scan_seconds"], overview["samples_per_s"]) == (25.0, round(360 / 25, 2))


def test_rethreshold_category_shard_and_concept_match_the_reference(reports):
    rows = rows_of(reports)
    thr = np.where(np.array(CATS) == "hate", np.float32(0.95), np.float32(0.5)).astype(np.float32)
    chosen = [r for r in rows if r["shard"] in ("00001", "00002")]
    counted = [c == "violence" for c in CATS]
    summary = report_json(reports, "--top", "5", "--threshold", "0.5", "--threshold", "hate=0.95",
                          "--category", "violence", "--shard", "0000[12]")
    compare(summary, reference(chosen, lambda r: threshold_flags(r, thr, thr, counted), 5))
    assert 0 < summary["overview"]["flagged"] < len(chosen) and summary["overview"]["shards"] == 2
    concept = CATS.index("hate")  # --concept: only it counts, plus its exact score histogram
    summary = report_json(reports, "--threshold", "hate=0.95", "--concept", IDS[concept])
    only = [i == concept for i in range(75)]
    hate = np.array(CATS) == "hate"
    ti, tc = (np.where(hate, np.float32(0.95), t).astype(np.float32) for t in (RULES.thresholds.image, RULES.thresholds.caption))
    compare(summary, reference(rows, lambda r: threshold_flags(r, ti, tc, only), 10, concept=concept))
    assert sum(summary["histogram"]["image"]) > 0


def test_policy_summary_matches_the_reference(reports, tmp_path):
    from vlmaudit.rulebook.policy import MODALITIES, load_policy

    (tmp_path / "mixed.yaml").write_text(POLICY)
    policy = load_policy(tmp_path / "mixed.yaml", IDS, CATS)
    rules = [(float(t), MODALITIES[m], ACTIONS[a]) for t, m, a in zip(policy.threshold, policy.modality, policy.action)]
    summary = report_json(reports, "--top", "75", "--policy", str(tmp_path / "mixed.yaml"))
    compare(summary, reference(rows_of(reports), lambda r: policy_flags(r, rules), 75))
    assert summary["modality"]["image_only"] > 0 and summary["modality"]["caption_only"] > 0


@pytest.mark.parametrize("side, other", [("image", "caption"), ("caption", "image")])
def test_policy_whose_rules_all_look_at_one_modality_counts_no_flags_in_the_other(reports, tmp_path, side, other):
    from vlmaudit.rulebook.policy import MODALITIES, load_policy

    (tmp_path / "one.yaml").write_text(f"default: {{threshold: 0.6, modality: {side}, action: drop}}\n")
    policy = load_policy(tmp_path / "one.yaml", IDS, CATS)
    rules = [(float(t), MODALITIES[m], ACTIONS[a]) for t, m, a in zip(policy.threshold, policy.modality, policy.action)]
    summary = report_json(reports, "--top", "75", "--policy", str(tmp_path / "one.yaml"))
    compare(summary, reference(rows_of(reports), lambda r: policy_flags(r, rules), 75))
    modality = summary["modality"]
    assert modality[f"{side}_only"] > 0 and modality[f"{other}_only"] == modality["both"] == 0


def test_filter_matches_the_reference(reports, tmp_path):
    from vlmaudit.rulebook.policy import MODALITIES, load_policy

    (tmp_path / "mixed.yaml").write_text(POLICY)
    policy = load_policy(tmp_path / "mixed.yaml", IDS, CATS)
    rules = [(float(t), MODALITIES[m], ACTIONS[a]) for t, m, a in zip(policy.threshold, policy.modality, policy.action)]
    out = tmp_path / "f"
    result = run_cli("filter", reports, "--policy", str(tmp_path / "mixed.yaml"), "--out", out, "--on-failed", "review")
    assert result.exit_code == 0, result.output
    got = {}
    for action in ACTIONS:
        for row in pq.read_table(out / f"{action}.parquet").to_pylist():
            got[(row["shard"], row["sample_index"])] = (action, [r["rule"] for r in row["reasons"]])
    expected, fired_counts = {}, {}
    for row in rows_of(reports):
        fired = policy_fired(row, rules)
        severity = max([ACTIONS.index(rules[i][2]) for i in fired] + [0])
        if row["status"] != "ok":
            severity = max(severity, ACTIONS.index("review"))
        reasons = ([f"status:{row['status']}"] if row["status"] != "ok" else []) + [f"concept:{IDS[i]}" for i in fired]
        expected[(row["shard"], row["sample_index"])] = (ACTIONS[severity], reasons)
        for i in fired:
            fired_counts[f"concept:{IDS[i]}"] = fired_counts.get(f"concept:{IDS[i]}", 0) + 1
    assert got == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rules_fired"] == dict(sorted(fired_counts.items(), key=lambda kv: (-kv[1], kv[0])))
    assert {a for a, _ in got.values()} == set(ACTIONS)
    keep = pq.read_table(out / "keep.parquet").to_pylist()
    assert [(r["shard"], r["sample_index"]) for r in keep] == sorted((r["shard"], r["sample_index"]) for r in keep)


@pytest.mark.parametrize("dropped", ["image_flagged_scores", "image_flagged_concepts"])
def test_reports_without_the_stored_flag_columns_count_from_the_scores(reports, tmp_path, dropped):
    import shutil

    copy = tmp_path / "reports"
    shutil.copytree(reports, copy)
    side = dropped.split("_")[0]
    for path in copy.glob("*.parquet"):  # the optional flag columns gone (both sides: one, or both kinds)
        table = pq.read_table(path)
        pq.write_table(table.drop_columns([dropped, dropped.replace(side, "caption")]), path)
    thr = RULES.thresholds
    expected = reference(rows_of(reports), lambda r: threshold_flags(r, thr.image, thr.caption, [True] * 75), 75)
    compare(report_json(copy, "--top", "75"), expected)


def test_reports_on_object_storage_give_the_same_summary_and_filter(reports, s3, tmp_path):
    import fsspec

    endpoint, bucket = s3
    fs = fsspec.filesystem("s3")
    for path in sorted(reports.iterdir()):
        fs.put_file(str(path), f"{bucket}/reports/{path.name}")
    local = report_json(reports, "--top", "75")
    remote = report_json(f"s3://{bucket}/reports", "--top", "75")
    assert remote == local and remote["overview"]["samples"] == 360
    for source, out in ((reports, tmp_path / "local"), (f"s3://{bucket}/reports", tmp_path / "remote")):
        result = run_cli("filter", source, "--policy", "strict", "--out", out)
        assert result.exit_code == 0, result.output
    for action in ACTIONS:
        assert pq.read_table(tmp_path / "remote" / f"{action}.parquet") == pq.read_table(tmp_path / "local" / f"{action}.parquet")
    result = run_cli("filter", f"s3://{bucket}/reports", "--policy", "strict", "--out", f"s3://{bucket}/filtered")
    assert result.exit_code == 0, result.output  # lists written straight to the bucket, summary last
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/filtered")) == [
        "drop.parquet", "keep.parquet", "review.parquet", "summary.json"]
    for action in ACTIONS:
        with fs.open(f"{bucket}/filtered/{action}.parquet", "rb") as handle:
            assert pq.read_table(handle) == pq.read_table(tmp_path / "local" / f"{action}.parquet")
    result = run_cli("filter", reports, "--out", f"s3://{bucket}/f2", "--write-shards", tmp_path / "shards")
    assert result.exit_code == 2 and "needs a local --out" in result.output
    fs.rm_file(f"{bucket}/reports/00001.parquet")  # a shard with stats but no report: refused, named
    result = run_cli("filter", f"s3://{bucket}/reports", "--out", tmp_path / "again")
    assert result.exit_code == 2 and "00001 (not scanned)" in result.output


def test_a_damaged_report_file_is_one_error_line_not_a_traceback(reports, tmp_path):
    import shutil

    copy = tmp_path / "reports"
    shutil.copytree(reports, copy)
    (copy / "zzz.parquet").write_bytes(b"PAR1 not really parquet \x1b[31m PAR1")
    for args in (["report", copy], ["filter", copy, "--out", tmp_path / "f", "--allow-partial"]):
        result = run_cli(*args)
        assert result.exit_code == 2, result.output
        assert "zzz.parquet: not a readable Parquet file" in result.output and "Traceback" not in result.output
        assert "\x1b" not in result.output and len(result.output.strip().splitlines()) == 1


def test_report_file_names_are_never_globs(reports, tmp_path):
    import shutil

    copy = tmp_path / "reports"
    shutil.copytree(reports, copy)
    (copy / "00000.parquet").rename(copy / "0000[0-2].parquet")  # would match 00001 and 00002 again
    result = run_cli("report", copy)
    assert result.exit_code == 2 and "0000[0-2].parquet" in result.output  # refused (by validation first)
    from vlmaudit.report import engine

    # the engine reads the file itself, never the files its name would match as a glob
    with engine.session([copy / "0000[0-2].parquet"], "test") as con:
        shards = con.execute(f"SELECT DISTINCT shard FROM {engine.source([copy / '0000[0-2].parquet'])}").fetchall()
    assert shards == [("00000",)]


@pytest.mark.parametrize("name", ["bob's reports", "run [1]", "run*?]"])
def test_report_and_filter_read_a_directory_whose_name_holds_quotes_or_glob_characters(reports, tmp_path, name):
    """Planted: a report path pasted into the SQL unquoted, or read by DuckDB as a glob."""
    import shutil

    copy = tmp_path / name
    shutil.copytree(reports, copy)
    for args in (["report", "--format", "json"], ["report", "--format", "json", "--policy", "strict"]):
        here, there = run_cli(*args, reports), run_cli(*args, copy)
        assert there.exit_code == 0, there.output
        assert json.loads(there.output)["overview"] == json.loads(here.output)["overview"]
    result = run_cli("filter", copy, "--policy", "strict", "--out", tmp_path / f"{name} filtered")
    assert result.exit_code == 0, result.output
    run_cli("filter", reports, "--policy", "strict", "--out", tmp_path / "plain")
    for action in ACTIONS:
        assert pq.read_table(tmp_path / f"{name} filtered" / f"{action}.parquet") == pq.read_table(
            tmp_path / "plain" / f"{action}.parquet")


def test_mean_and_p95_read_every_row_below_4m_rows_and_every_kth_file_above():
    from vlmaudit.report.details import sample_files

    files = [f"{i:05d}.parquet" for i in range(100)]
    assert sample_files(files, 3_999_999, exact=False) == files
    assert sample_files(files, 10_000_000, exact=False) == files[::5]
    assert sample_files(files, 10_000_000, exact=True) == files
