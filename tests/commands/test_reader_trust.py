"""Readers other than `report` are as strict (issue 26 item 4): calibrate validates the reports like
`report`, keys samples by (shard, key) and prints ids through the terminal-safe path; distill never
turns a NaN judge score into a label and loads only the model named on the command line."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, write_tar


def report(out_dir, shard, image, keys):
    """A real report Parquet (the scanner's row builder and schema) with planted image scores."""
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.schema import report_meta, report_schema

    rules = load_rules()
    schema = report_schema(rules.taxonomy, report_meta(rules.taxonomy, rules.thresholds, {"backend": "planted"}))
    metas = [RowMeta(key, i, None, "c", "ok", image_row=i, caption_row=i) for i, key in enumerate(keys)]
    caption = np.zeros_like(image)
    batch = RowBuilder(rules.taxonomy, rules.thresholds, schema, "planted").build(shard, metas, image, caption)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_batches([batch], schema), out_dir / f"{shard}.parquet")
    (out_dir / f"{shard}.stats.json").write_text('{"status": "complete", "url": null}')
    return rules.taxonomy


def violence_scores(taxonomy, values):
    image = np.zeros((len(values), len(taxonomy.concepts)), np.float32)
    first = [i for i, c in enumerate(taxonomy.concepts) if c.category == "violence"][0]
    image[:, first] = values
    return image


def test_calibrate_keys_samples_by_shard_and_key(tmp_path):
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    keys = [f"k{i}" for i in range(20)]
    truth = np.arange(20) % 2 == 0
    # shard a: the positives score high; shard b: the same keys with the scores reversed
    report(tmp_path / "rep", "a", violence_scores(taxonomy, np.where(truth, 0.9, 0.1)), keys)
    report(tmp_path / "rep", "b", violence_scores(taxonomy, np.where(truth, 0.1, 0.9)), keys)
    labels = tmp_path / "labels.csv"
    labels.write_text("key,category,label\n" + "".join(f"{k},violence,{int(t)}\n" for k, t in zip(keys, truth)))
    result = run_cli("calibrate", tmp_path / "rep", "--labels", labels, "--target-precision", 0.9,
                     "--out", tmp_path / "t.yaml")
    assert result.exit_code == 2 and "key k0 is in 2 shards (a, b)" in result.output and "shard" in result.output
    labels.write_text("shard,key,category,label\n" + "".join(f"a,{k},violence,{int(t)}\n" for k, t in zip(keys, truth)))
    result = run_cli("calibrate", tmp_path / "rep", "--labels", labels, "--target-precision", 0.9,
                     "--out", tmp_path / "t.yaml", "--json")
    assert result.exit_code == 0, result.output
    group = json.loads(result.output)["groups"][0]
    assert group["precision"] == 1.0 and group["recall"] == 1.0  # shard a's scores, not b's


def test_calibrate_refuses_what_report_refuses(tmp_path):
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    report(tmp_path / "rep", "a", violence_scores(taxonomy, [0.9, 0.1]), ["x", "y"])
    (tmp_path / "rep" / "a.stats.json").unlink()  # an unfinished shard: report refuses it
    labels = tmp_path / "labels.csv"
    labels.write_text("key,category,label\nx,violence,1\ny,violence,0\n")
    result = run_cli("calibrate", tmp_path / "rep", "--labels", labels, "--target-precision", 0.9,
                     "--out", tmp_path / "t.yaml")
    assert result.exit_code == 2 and "stats.json" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "t.yaml").exists()


def test_distill_never_labels_a_nan_judge_score(tmp_path):
    from vlmaudit.errors import UserError
    from vlmaudit.head.distill import judge_verdicts
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    hot = [0.0] * len(taxonomy.concepts)
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"shard": ["s"] * 2, "key": ["ok", "nan"], "decided_by": ["vlm", "vlm"],
                             "image_unsafe": pa.array([0.8, float("nan")], pa.float32()),
                             "image_scores": pa.array([hot, hot], pa.list_(pa.float32()))}), path)
    with pytest.raises(UserError, match="NaN"):
        judge_verdicts([path], {"concepts": taxonomy.concept_ids}, taxonomy)


def test_distill_never_loads_the_model_a_report_names(tmp_path):
    from vlmaudit.commands.distill import DistillRequest, vision_model
    from vlmaudit.errors import UserError

    request = DistillRequest.__new__(DistillRequest)
    request.vision_model = None
    meta = {"model": {"screen": {"backend": "clip", "model": "evil/remote-code\x1b[31m"}}}
    with pytest.raises(UserError) as err:
        vision_model(request, meta)
    assert "--vision-model" in str(err.value) and "\x1b" not in str(err.value)


def test_table_keys_and_urls_are_capped_like_tar_names(tmp_path):
    from vlmaudit.scan.parquet_source import iter_table_samples
    from vlmaudit.scan.samples import MAX_NAME_CHARS
    from vlmaudit.scan.table_columns import ColumnChoice
    from vlmaudit.scan.tario import TarEnd

    long_key, long_url = "k" * (MAX_NAME_CHARS * 50), "https://x/" + "u" * (MAX_NAME_CHARS * 50)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"key": [long_key, long_key + "2", "ok"], "url": [long_url, None, "https://x/ok"],
                             "jpg": pa.array([b"a", b"b", b"c"], pa.binary()), "caption": ["c"] * 3}), path)
    with open(path, "rb") as stream:
        samples = list(iter_table_samples(stream, str(path), TarEnd(), ColumnChoice(), 1 << 20, 1000))
    assert all(len(s.key) <= MAX_NAME_CHARS and (s.url is None or len(s.url) <= MAX_NAME_CHARS) for s in samples)
    assert samples[0].key != samples[1].key and samples[0].status == "bad_name" and samples[0].image is None
    assert "url_capped" in samples[0].notes and samples[2].key == "ok" and samples[2].status is None


def test_stats_list_a_bounded_number_of_ignored_member_kinds(tmp_path):
    from vlmaudit.scan.samples import iter_samples
    from vlmaudit.scan.tario import MAX_IGNORED_KINDS, TarEnd

    shard = write_tar(tmp_path / "s.tar", [("a.jpg", b"x")] + [(f"a.e{i}", b"") for i in range(1000)])
    end = TarEnd()
    with open(shard, "rb") as stream:
        list(iter_samples(stream, end, 1 << 20, 1000))
    assert end.members_ignored == 1000 and len(end.ignored_kinds) <= MAX_IGNORED_KINDS + 1
    assert sum(end.ignored_kinds.values()) == 1000


def test_eval_confines_a_string_image_column_and_reads_only_regular_files(tmp_path):
    from vlmaudit.errors import UserError
    from vlmaudit.head.data import Example, parquet_records, read_image

    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"image": ["/dev/zero"], "unsafe_concept": ["x"]}), data / "t.parquet")
    with pytest.raises(UserError, match="leaves the data directory"):
        list(parquet_records(data))
    (data / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(UserError, match="leaves the data directory"):
        pq.write_table(pa.table({"image": ["zero.png"], "unsafe_concept": ["x"]}), data / "t.parquet")
        list(parquet_records(data))
    import os

    os.mkfifo(data / "fifo.png")
    with pytest.raises(UserError, match="not a regular file"):
        read_image(Example(data / "fifo.png", 0, 0, "fifo.png"))
