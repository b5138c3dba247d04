import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, scan_args, write_shard
from vlmaudit.rulebook.load import load_rules
from vlmaudit.schema import read_meta


def read_all(out):
    return pq.read_table(sorted(out.glob("*.parquet"))).to_pylist()


def test_full_scan_every_sample_once_with_schema_and_concept_order(tmp_path, tiny_clip, demo_shards):
    out = tmp_path / "reports"
    result = run_cli(*scan_args(demo_shards, out, tiny_clip, "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    rows = read_all(out)
    assert len(rows) == 21
    assert sorted((r["shard"], r["key"]) for r in rows) == sorted(
        (f"{s:05d}", f"{s:05d}{i:04d}") for s in range(3) for i in range(7))
    taxonomy = load_rules().taxonomy
    meta = read_meta(pq.read_schema(out / "00000.parquet"))
    assert meta["concepts"] == taxonomy.concept_ids and meta["taxonomy_version"] == taxonomy.tag
    row = rows[0]
    assert row["status"] == "ok" and row["width"] == 96 and row["height"] == 80
    assert row["url"].startswith("https://example.invalid/") and row["caption"]
    assert len(row["image_scores"]) == 75 and all(0 <= s <= 1 for s in row["image_scores"])
    assert len(row["caption_scores"]) == 75
    assert row["image_top_score"] == pytest.approx(max(row["image_scores"]))
    assert row["image_top_concept"] == taxonomy.concept_ids[row["image_scores"].index(max(row["image_scores"]))]
    hate = [s for s, c in zip(row["image_scores"], taxonomy.concepts) if c.category == "hate"]
    assert row["image_cat_hate"] == pytest.approx(max(hate))
    assert row["flagged"] == (row["image_flagged"] or row["caption_flagged"])
    stats = json.loads((out / "00000.stats.json").read_text())
    assert stats["status"] == "complete" and stats["rows"] == 7 and stats["status_counts"] == {"ok": 7}
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == str(tiny_clip) and run["revision"].startswith("local-")
    assert run["taxonomy_fingerprint"] == taxonomy.fingerprint() and run["packages"]["torch"]


def test_parallel_workers_give_the_same_rows(tmp_path, tiny_clip, demo_shards):
    run_cli(*scan_args(demo_shards, tmp_path / "a", tiny_clip))
    args = scan_args(demo_shards, tmp_path / "b", tiny_clip)
    args[args.index("--workers") + 1] = "2"
    assert run_cli(*args).exit_code == 0
    a, b = read_all(tmp_path / "a"), read_all(tmp_path / "b")
    assert [r["key"] for r in a] == [r["key"] for r in b]
    assert np.allclose([r["image_scores"] for r in a], [r["image_scores"] for r in b], atol=1e-5)


def test_resume_skips_done_shards_and_overwrite_rescans(tmp_path, tiny_clip, demo_shards):
    out = tmp_path / "r"
    run_cli(*scan_args(demo_shards[:2], out, tiny_clip))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    result = run_cli(*scan_args(demo_shards, out, tiny_clip))
    assert "2 of 3 shards already done" in result.output
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert {k: after[k] for k in before} == before and "00002.parquet" in after
    run_cli(*scan_args(demo_shards, out, tiny_clip, "--overwrite"))
    assert all(p.stat().st_mtime_ns != before[p.name] for p in out.glob("*.parquet") if p.name in before)
    assert len(read_all(out)) == 21


def test_array_partitions_cover_every_shard_once(tmp_path, tiny_clip, demo_shards):
    out = tmp_path / "r"
    for index in range(2):
        assert run_cli(*scan_args(demo_shards, out, tiny_clip, "--num-shards", "2", "--shard-index", index)).exit_code == 0
    assert sorted(p.name for p in out.glob("*.parquet")) == ["00000.parquet", "00001.parquet", "00002.parquet"]
    assert len(read_all(out)) == 21


def test_corrupt_sample_becomes_a_row_and_the_scan_goes_on(tmp_path, tiny_clip):
    from vlmaudit.demo.build import demo_sample
    import random

    rng = random.Random(1)
    samples = [demo_sample(rng, "good"), {"__key__": "bad", "jpg": b"<html>not found</html>", "txt": b"hello"}]
    shard = write_shard(tmp_path / "s.tar", samples)
    result = run_cli(*scan_args([shard], tmp_path / "r", tiny_clip))
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in read_all(tmp_path / "r")}
    assert rows["bad"]["status"] == "decode_error" and "cannot identify image" in rows["bad"]["error"]
    assert rows["bad"]["image_scores"] is None and len(rows["bad"]["caption_scores"]) == 75
    assert rows["good"]["status"] == "ok"


@pytest.mark.parametrize("args, message", [
    (["scan", "{tmp}/nope.tar", "--out", "{tmp}/r"], "nope.tar: no such file"),
    (["scan", "{tmp}/*.tar", "--out", "{tmp}/r"], "no shard files match"),
    (["scan", "{shard}", "--out", "{tmp}/r", "--model", "no-such-org/no-such-model"], "is not available"),
    (["scan", "{shard}", "--out", "{tmp}/r", "--model", "{tmp}"], "not a loadable checkpoint"),
    (["scan", "{shard}", "--out", "{tmp}/r", "--rules", "{tmp}"], "no taxonomy.yaml"),
])
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, demo_shards, args, message):
    result = run_cli(*[a.format(tmp=tmp_path, shard=demo_shards[0]) for a in args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
    assert not (tmp_path / "r" / "run.json").exists()


def test_siglip_family_scans_through_the_auto_classes(tmp_path, demo_shards):
    from vlmaudit.demo.checkpoints import build_random_siglip

    model = build_random_siglip(tmp_path / "siglip")
    out = tmp_path / "r"
    assert run_cli(*scan_args(demo_shards[:1], out, model)).exit_code == 0
    rows = read_all(out)
    assert len(rows) == 7 and all(len(r["image_scores"]) == 75 and len(r["caption_scores"]) == 75 for r in rows)
    assert json.loads((out / "run.json").read_text())["model_info"]["family"] == "siglip"


def test_a_non_dual_encoder_model_is_refused_with_one_line(tmp_path, demo_shards):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(tmp_path / "bert")
    result = run_cli(*scan_args(demo_shards[:1], tmp_path / "r", tmp_path / "bert"))
    assert result.exit_code == 2 and "needs a dual encoder" in result.output


def test_pipe_and_http_shards_stream(tmp_path, tiny_clip, demo_shards):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(demo_shards[0].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        specs = [f"pipe:cat {demo_shards[0]}", "pipe:exit 3"]
        try:
            import aiohttp  # noqa: F401  (fsspec's http backend)

            specs.append(f"http://127.0.0.1:{server.server_address[1]}/{demo_shards[1].name}")
        except ImportError:
            pass
        result = run_cli(*scan_args(specs, tmp_path / "r", tiny_clip, "--retries", "1"))
    finally:
        server.shutdown()
    stats = {p.name.split(".")[0]: json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.stats.json")}
    assert result.exit_code == 1  # the failing pipe
    assert stats["00000"]["rows"] == 7 and stats["00000"]["status"] == "complete"
    failed = [s for s in stats.values() if s["status"] == "failed"]
    assert len(failed) == 1 and "exited with 3" in failed[0]["error"]
    if len(specs) == 3:
        assert stats["00001"]["rows"] == 7


@pytest.mark.parametrize("native_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_cpu_and_run_json_records_it(tmp_path, tiny_clip, demo_shards, monkeypatch,
                                                                native_bf16, expected):
    from vlmaudit.backends import device

    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: native_bf16)
    out = tmp_path / "auto"
    result = run_cli(*scan_args(demo_shards[:1], out, tiny_clip, "--precision", "auto"))
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["precision"] == expected and run["model_info"]["precision"] == expected
    exact = tmp_path / "fp32"
    assert run_cli(*scan_args(demo_shards[:1], exact, tiny_clip)).exit_code == 0
    auto_rows = pq.read_table(sorted(out.glob("*.parquet"))).column("image_scores").to_pylist()
    fp32_rows = pq.read_table(sorted(exact.glob("*.parquet"))).column("image_scores").to_pylist()
    for a, b in zip(auto_rows, fp32_rows):
        if a is not None:
            assert np.allclose(a, b, atol=3e-2 if expected == "bf16" else 1e-6)


def test_final_line_counts_the_rows_and_flagged_rows_written(tmp_path, tiny_clip, demo_shards):
    from conftest import rules_with_threshold

    out = tmp_path / "reports"  # threshold 0.05: some rows flagged, over several batches per shard
    result = run_cli(*scan_args(demo_shards, out, tiny_clip, "--batch-size", "2", "--rules",
                                rules_with_threshold(tmp_path, 0.05)))
    assert result.exit_code == 0, result.output
    rows = read_all(out)
    flagged = sum(1 for r in rows if r["flagged"])
    assert flagged > 0
    assert f"scanned {len(rows):,} samples in 3 shards, {flagged:,} flagged" in " ".join(result.output.split())
    for shard in ("00000", "00001", "00002"):  # each shard's stats time the scan's parts (README: stats JSON)
        stats = json.loads((out / f"{shard}.stats.json").read_text())
        assert sorted(stats["seconds"]) == ["decode_preprocess_workers", "model", "wall"]
        assert stats["finished_at"] >= stats["started_at"] and all(v >= 0 for v in stats["seconds"].values())
