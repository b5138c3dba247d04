"""Parquet and Arrow files as shards, in the exact schemas their writers produce.

img2dataset `--output_format parquet` (rom1504/img2dataset, img2dataset/downloader.py
`Downloader.download_shard` + img2dataset/writer.py `ParquetSampleWriter`): the input columns
(`save_additional_columns`, then `caption`, then `url`, see reader.py `column_list`), then
`key`, `status`, `error_message` (string), `width`, `height`, `original_width`, `original_height`
(int32), `sha256` (compute_hash default), and `ParquetSampleWriter` appends `jpg` (binary). Rows
that failed to download have `status` `failed_to_download`, an `error_message` and a null `jpg`;
rows are written by `pa.Table.from_pydict(buffer, schema)` in buffers of 100 (one row group each).

`datasets` files are written by the `datasets` library itself (`Dataset.to_parquet`,
`Dataset.save_to_disk` -> Arrow IPC stream `data-00000-of-00001.arrow`): the Image feature is a
struct `{bytes: binary, path: string}` declared in the `huggingface` schema metadata.
"""

import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import NoInputs, run_cli, scan_args

I2D_SCHEMA = pa.schema([
    ("caption", pa.string()), ("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
    ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()), ("sha256", pa.string()), ("jpg", pa.binary()),
])
COMPARED = ("key", "caption", "status", "width", "height", "image_scores", "caption_scores", "flagged")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip):
    """One demo tar and the same samples as img2dataset / `datasets` files (plus one failed
    download in the img2dataset file), scanned once for the tests of this module."""
    from vlmaudit.demo.build import build_demo_shards

    root = tmp_path_factory.mktemp("tables")
    tar = build_demo_shards(root / "tars", shards=1, per_shard=7)[0]
    grouped = {}
    with tarfile.open(tar) as tf:
        for member in tf.getmembers():
            key, ext = member.name.rsplit(".", 1)
            grouped.setdefault(key, {})[ext] = tf.extractfile(member).read()
    samples = [(k, m["jpg"], m["txt"].decode(), json.loads(m["json"])["url"]) for k, m in grouped.items()]
    data = root / "data"
    data.mkdir()
    write_img2dataset(data / "i2d.parquet", samples, FAILED)
    hf_dataset(samples).to_parquet(str(data / "hf.parquet"))
    hf_dataset(samples, with_id=False).save_to_disk(str(root / "saved"))
    # batches of 7: the 7 samples form the same batch in every file, so scores compare exactly
    result = run_cli(*scan_args([tar, data, root / "saved"], root / "out", tiny_clip, "--batch-size", "7"))
    assert result.exit_code == 0, result.output
    return {"root": root, "samples": samples, "out": root / "out", "model": tiny_clip, "data": data}


FAILED = [("404a", "a flag with a swastika at a rally", "https://x.invalid/a.jpg")]
SAVED = "data-00000-of-00001"


def write_img2dataset(path, samples, failed=()):
    """img2dataset's parquet output: successes, then rows that failed to download (jpg null)."""
    rows = [{"caption": c, "url": u, "key": k, "status": "success", "error_message": None, "width": 96, "height": 80,
             "original_width": 96, "original_height": 80, "sha256": "0" * 64, "jpg": b} for k, b, c, u in samples]
    rows += [{"caption": c, "url": u, "key": k, "status": "failed_to_download", "error_message": "HTTP Error 404",
              "width": None, "height": None, "original_width": None, "original_height": None, "sha256": None,
              "jpg": None} for k, c, u in failed]
    with pq.ParquetWriter(path, I2D_SCHEMA) as writer:
        for start in range(0, len(rows), 100):  # BufferedParquetWriter's buffer of 100 rows
            writer.write_table(pa.Table.from_pylist(rows[start:start + 100], I2D_SCHEMA))
    return path


def hf_dataset(samples, with_id=True):
    import datasets

    columns = {"image": [{"bytes": b, "path": f"{k}.jpg"} for k, b, *_ in samples], "text": [c for _, _, c, _ in samples]}
    features = {"image": datasets.Image(), "text": datasets.Value("string")}
    if with_id:
        columns["id"], features["id"] = [k for k, *_ in samples], datasets.Value("string")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def report(out):
    return {p.name[: -len(".parquet")]: pq.read_table(p).to_pylist() for p in sorted(out.glob("*.parquet"))}


def stats_of(out):
    return {p.name[: -len(".stats.json")]: json.loads(p.read_text()) for p in out.glob("*.stats.json")}


def scan(tmp_path, model, shards, *extra):
    result = run_cli(*scan_args(shards, tmp_path / "out", model, "--retries", "0", *extra))
    return result, report(tmp_path / "out"), stats_of(tmp_path / "out")


def test_img2dataset_and_datasets_files_scan_to_the_same_rows_as_the_tar(built):
    """Done-when of issue 15: the same samples give the same report rows from a tar, an
    img2dataset Parquet, a `datasets` Parquet and a `datasets` save_to_disk directory."""
    rows, stats, n = report(built["out"]), stats_of(built["out"]), len(built["samples"])
    assert set(rows) == {"00000", "i2d", "hf", SAVED}
    expected = [{c: r[c] for c in COMPARED} for r in rows["00000"]]
    assert len(expected) == n and all(r["status"] == "ok" for r in rows["00000"])
    for name in ("i2d", "hf", SAVED):
        same = [{c: r[c] for c in COMPARED if c != "key" or name != SAVED} for r in rows[name][:n]]
        assert same == [{c: v for c, v in e.items() if c != "key" or name != SAVED} for e in expected], name
        assert [r["sample_index"] for r in rows[name]] == list(range(len(rows[name])))
        assert stats[name]["status"] == "complete" and stats[name]["rows"] == len(rows[name])
    assert [r["url"] for r in rows["i2d"][:n]] == [u for *_, u in built["samples"]]
    assert [r["key"] for r in rows[SAVED]] == [f"{SAVED}/{i}" for i in range(n)]  # no key column: FILE/ROW


def test_failed_downloads_become_missing_image_rows_with_their_caption_scored(built):
    row = report(built["out"])["i2d"][-1]
    assert (row["key"], row["status"]) == ("404a", "missing_image")
    assert "failed_to_download" in row["error"] and "404" in row["error"]
    assert row["image_scores"] is None and row["caption_scores"] is not None and row["caption"] == FAILED[0][1]


def test_column_flags_null_path_only_and_oversized_images(tmp_path, built):
    """--image/--caption/--key-column beat detection; a null image and a path-only struct are
    missing_image (the path is never opened); an image over --max-member-bytes is too_large."""
    good = built["samples"][0][1]
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(good)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pixels = [{"bytes": good, "path": None}, None, {"bytes": None, "path": str(secret)}, {"bytes": b"x" * 5000, "path": None}]
    table = pa.table({"pixels": pa.array(pixels, struct), "alt": ["a", "b", "c", "d"], "uid": [10, 11, 12, 13],
                      "text": ["decoy"] * 4, "image": [b"decoy"] * 4})
    pq.write_table(table, tmp_path / "odd.parquet")
    result, rows, _ = scan(tmp_path, built["model"], [tmp_path / "odd.parquet"], "--max-member-bytes", "4096",
                           "--image-column", "pixels", "--caption-column", "alt", "--key-column", "uid")
    assert result.exit_code == 0, result.output
    got = [(r["key"], r["caption"], r["status"]) for r in rows["odd"]]
    assert got == [("10", "a", "ok"), ("11", "b", "missing_image"), ("12", "c", "missing_image"), ("13", "d", "too_large")]
    assert "never opened" in rows["odd"][2]["error"] and all(r["caption_scores"] is not None for r in rows["odd"])


def one_line_error(result, *needles):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("columns, flags, needles", [
    ({"caption": ["a"], "score": [0.5]}, [], ["no image column", "'caption' string", "'score' double",
                                              "--image-column"]),
    ({"URL": ["https://x.invalid/1.jpg"], "TEXT": ["a cat"]}, [], ["only image URLs", "'URL'", "img2dataset"]),
    ({"jpg": [b"x"], "caption": [7]}, [], ["'caption' is int64", "--caption-column"]),
    ({"image": ["not bytes"]}, [], ["'image' is string", "--image-column"]),
    ({"jpg": [b"x"]}, ["--image-column", "nope"], ["--image-column 'nope': no such column", "'jpg' binary"]),
    ({"jpg": [b"x"], "key": [[1, 2]]}, [], ["'key' is list<", "--key-column"]),
])
def test_bad_tables_get_one_line_and_exit_2_before_the_model_loads(tmp_path, columns, flags, needles):
    pq.write_table(pa.table(columns), tmp_path / "bad.parquet")
    result = run_cli(*scan_args([tmp_path / "bad.parquet"], tmp_path / "out", tmp_path / "no-model-here", *flags))
    one_line_error(result, "bad.parquet", *needles)


def test_detection_prefers_a_usable_image_column_and_reads_datasets_metadata():
    from vlmaudit.scan.table_columns import ColumnChoice, resolve_columns

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", pa.string()), ("jpg", pa.binary()), ("TEXT", pa.string()), ("id", pa.int64())])
    columns = resolve_columns(schema, "x", ColumnChoice())
    assert (columns.image, columns.image_kind, columns.caption, columns.key) == ("jpg", "binary", "TEXT", "id")
    declared = pa.schema([("jpg", pa.binary()), ("photo", struct)],
                         metadata={"huggingface": json.dumps({"info": {"features": {"photo": {"_type": "Image"}}}})})
    assert resolve_columns(declared, "x", ColumnChoice()).image == "photo"  # the Image feature beats the name
    img2dataset = resolve_columns(I2D_SCHEMA, "x", ColumnChoice())
    assert (img2dataset.image, img2dataset.status, img2dataset.url) == ("jpg", "status", "url")


def test_column_names_from_the_file_are_escaped(tmp_path):
    pq.write_table(pa.table({"\x1b[31mred": [1]}), tmp_path / "bad.parquet")
    result = run_cli(*scan_args([tmp_path / "bad.parquet"], tmp_path / "out", tmp_path / "m"))
    one_line_error(result, "'\\x1b[31mred'")
    assert "\x1b" not in result.output


def test_a_corrupt_parquet_fails_alone_the_others_are_scanned_and_resume_works(tmp_path, built):
    shards = tmp_path / "shards"
    shards.mkdir()
    good = write_img2dataset(shards / "good.parquet", built["samples"][:3])
    data = good.read_bytes()
    (shards / "corrupt.parquet").write_bytes(data[: len(data) // 2])  # footer gone
    (shards / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    result, rows, stats = scan(tmp_path, built["model"], [shards])
    assert result.exit_code == 1 and "2 shard(s) failed" in result.output
    assert stats["corrupt"]["status"] == stats["garbage"]["status"] == "failed"
    assert "Parquet" in stats["corrupt"]["error"]
    assert set(rows) == {"good"} and stats["good"]["rows"] == 3
    again = scan(tmp_path, built["model"], [shards])[0]
    assert again.exit_code == 1 and "1 of 3 shards already done" in again.output


def test_filter_writes_filtered_parquet_with_the_input_schema_and_metadata(tmp_path, built):
    lists, kept = tmp_path / "lists", tmp_path / "kept"
    result = run_cli("filter", built["out"], "--policy", "permissive", "--out", lists, "--write-shards", kept)
    assert result.exit_code == 0, result.output
    keep = pq.read_table(lists / "keep.parquet").to_pylist()
    assert keep and {r["shard"] for r in keep} >= {"i2d", "hf", SAVED}
    assert "404a" not in {r["key"] for r in keep}  # failed rows go to review
    assert sorted(p.name for p in kept.iterdir()) == ["00000.parquet", "00000.tar", f"{SAVED}.arrow", "hf.parquet",
                                                      "i2d.parquet"]
    for name in ("i2d", "hf"):
        source, written = pq.read_table(built["data"] / f"{name}.parquet"), pq.read_table(kept / f"{name}.parquet")
        assert written.schema.equals(source.schema, check_metadata=True)
        indices = [r["sample_index"] for r in keep if r["shard"] == name]
        assert written.to_pylist() == source.take(indices).to_pylist()  # every column, image bytes identical
    with pa.memory_map(str(kept / f"{SAVED}.arrow")) as f:
        arrow = pa.ipc.open_stream(f).read_all()
    saved = pa.ipc.open_stream(pa.memory_map(str(built["root"] / "saved" / f"{SAVED}.arrow"))).read_all()
    assert arrow.schema.equals(saved.schema, check_metadata=True) and b"huggingface" in arrow.schema.metadata
    assert arrow.to_pylist() == saved.take([r["sample_index"] for r in keep if r["shard"] == SAVED]).to_pylist()



def test_html_gallery_thumbnails_come_from_parquet_and_arrow_shards(built):
    from vlmaudit.report.reread import ReReadOptions
    from vlmaudit.report.exports import load_thumbnails

    items = [{"shard": "i2d", "key": "000000001"}, {"shard": SAVED, "key": f"{SAVED}/2"},
             {"shard": "i2d", "key": "404a"}]  # no image: no thumbnail
    thumbs, refused = load_thumbnails(built["out"], {"examples": {"c": items}}, ReReadOptions())
    assert not refused  # recorded sources are local files: allowed
    assert set(thumbs) == {("i2d", "000000001"), (SAVED, f"{SAVED}/2")}

# ---- listing: files, directories, globs, img2dataset sidecars, hf://datasets/ ---------------------

def test_directories_and_globs_list_parquet_and_arrow_beside_tars_but_not_img2dataset_sidecars(tmp_path):
    from vlmaudit.scan.shards import expand_shard_specs, output_names

    for name in ("wds/00000.tar", "wds/00000.parquet", "wds/00000_stats.json", "pq/00000.parquet", "pq/00001.parquet",
                 "saved/train/data-00000-of-00001.arrow", "saved/train/state.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert expand_shard_specs([str(tmp_path / "wds")]) == [str(tmp_path / "wds/00000.tar")]  # metadata sidecar skipped
    assert expand_shard_specs([str(tmp_path / "wds/*")]) == [str(tmp_path / "wds/00000.tar")]
    assert expand_shard_specs([str(tmp_path / "wds/00000.parquet")]) == [str(tmp_path / "wds/00000.parquet")]
    listed = expand_shard_specs([str(tmp_path / "pq/*.parquet"), str(tmp_path / "saved")])
    assert listed == [str(tmp_path / "pq/00000.parquet"), str(tmp_path / "pq/00001.parquet"),
                      str(tmp_path / "saved/train/data-00000-of-00001.arrow")]
    names = output_names(listed + [str(tmp_path / "wds/00000.tar")])
    assert names[listed[1]] == "00001" and names[listed[2]] == "data-00000-of-00001"
    assert names[listed[0]] != names[str(tmp_path / "wds/00000.tar")]  # same stem: disambiguated


@pytest.mark.parametrize("split, config, expected", [
    (None, None, ["data/test-00000-of-00001.parquet", "data/train-00000-of-00002.parquet",
                  "data/train-00001-of-00002.parquet", "data/validation-00000-of-00001.parquet"]),
    ("train", None, ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]),
    ("test", None, ["data/test-00000-of-00001.parquet"]),
])
def test_hub_split_selection_on_the_default_layout(split, config, expected):
    """File names as the hub's `datasets` push_to_hub writes them: data/SPLIT-NNNNN-of-NNNNN.parquet."""
    from vlmaudit.scan.hfhub import select_files

    paths = ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
             "data/test-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"]
    assert sorted(select_files(paths, split, config)) == expected


def test_hub_config_and_split_on_the_parquet_conversion_layout():
    """refs/convert/parquet: CONFIG/SPLIT/NNNN.parquet (and CONFIG/partial-SPLIT/ for big datasets)."""
    from vlmaudit.errors import ShardSpecError
    from vlmaudit.scan.hfhub import select_files

    paths = ["default/train/0000.parquet", "default/train/0001.parquet", "default/test/0000.parquet",
             "other/train/0000.parquet", "constrained/latest/0000.parquet"]
    assert select_files(paths, "train", "default") == ["default/train/0000.parquet", "default/train/0001.parquet"]
    assert select_files(paths, "test", None) == ["default/test/0000.parquet"]  # not 'latest'
    assert select_files(paths, None, "other") == ["other/train/0000.parquet"]
    with pytest.raises(ShardSpecError, match="--config 'nope'.*default, other"):
        select_files(paths, None, "nope")
    with pytest.raises(ShardSpecError, match="--split 'dev'"):
        select_files(paths, "dev", None)


def test_hub_urls_parse_and_revisions_are_quoted():
    from vlmaudit.errors import ShardSpecError
    from vlmaudit.scan.hfhub import _quote_revision, parse_hub_url

    assert parse_hub_url("hf://datasets/org/name") == ("org/name", None, "")
    assert parse_hub_url("hf://datasets/org/name@v1.0/data/x.parquet") == ("org/name", "v1.0", "data/x.parquet")
    assert _quote_revision("refs/convert/parquet") == "refs/convert/parquet"
    assert _quote_revision("my/branch") == "my%2Fbranch"
    with pytest.raises(ShardSpecError, match="expected hf://datasets/ORG/NAME"):
        parse_hub_url("hf://datasets/justone")


def test_hub_dataset_offline_is_one_line_exit_2(tmp_path, monkeypatch):
    """Tests run with HF_HUB_OFFLINE=1: listing fails before any model loads, with one line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    result = run_cli(*scan_args(["hf://datasets/org/name"], tmp_path / "out", tmp_path / "m", "--split", "train"))
    one_line_error(result, "hf://datasets/org/name", "cannot list the dataset")
    assert "hf_secretvalue" not in result.output


def test_hub_flags_without_a_hub_dataset_are_refused(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"")
    result = run_cli(*scan_args([tmp_path / "a.tar"], tmp_path / "out", tmp_path / "m", "--split", "train"))
    one_line_error(result, "--split, --config and --revision apply to hf://datasets/")


# ---- streaming --------------------------------------------------------------------------------------

MEMORY_PROBE = """
import sys
from vlmaudit.scan.parquet_source import open_table

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20

path = sys.argv[1]
schema, batches = open_table(open(path, "rb"), path)
before = peak = rss_mib()
for batch in batches(["jpg"]):
    peak = max(peak, rss_mib())
print(peak - before)
"""


def test_memory_stays_flat_however_large_the_row_group(tmp_path):
    """ONE row group of 24 MB and one of 96 MB (pages of one value each): the reader's peak
    resident memory is the same for both. (pyarrow's default unbuffered column-chunk reads
    grow with the row group: about +70 MB here.)"""
    import os
    import subprocess
    import sys

    blob, growth = os.urandom(1 << 19), []
    for rows in (48, 192):
        path = tmp_path / f"rows{rows}.parquet"
        table = pa.table({"jpg": [blob[i:] + blob[:i] for i in range(rows)]})
        pq.write_table(table, path, row_group_size=rows, use_dictionary=False, compression="none", write_batch_size=1)
        del table
        assert pq.ParquetFile(path).metadata.num_row_groups == 1
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        growth.append(int(out.stdout))
    assert growth[1] - growth[0] < 24 and growth[1] < 96, growth


# ---- reading without a model: object storage, damaged bytes ------------------------------------------

def read_shard(url, **settings):
    from vlmaudit.scan.worker import ScanSettings, ShardJob, prepare_shard

    batches = list(prepare_shard(ShardJob(url, "t"), NoInputs(), ScanSettings(batch_size=5, retries=0, **settings)))
    return [m for b in batches for m in b.metas], batches[-1].end


def small_i2d_bytes(tmp_path, rows=12):
    from vlmaudit.demo.build import demo_sample

    import random

    rng = random.Random(1)
    samples = [(s["__key__"], s["jpg"], s["txt"].decode(), f"https://x.invalid/{i}") for i, s in
               enumerate(demo_sample(rng, f"k{i:03d}") for i in range(rows))]
    path = tmp_path / "small.parquet"
    rows_table = pa.Table.from_pylist([{"caption": c, "url": u, "key": k, "status": "success", "error_message": None,
                                        "width": 96, "height": 80, "original_width": 96, "original_height": 80,
                                        "sha256": None, "jpg": b} for k, b, c, u in samples], I2D_SCHEMA)
    pq.write_table(rows_table, path, row_group_size=4)  # three row groups
    return path.read_bytes()


def test_parquet_on_s3_is_listed_by_glob_checked_and_streamed(tmp_path, s3):
    import fsspec

    from vlmaudit.errors import UserError
    from vlmaudit.scan.parquet_source import check_table_shards
    from vlmaudit.scan.table_columns import ColumnChoice
    from vlmaudit.scan.shards import expand_shard_specs

    _, bucket = s3
    with fsspec.open(f"s3://{bucket}/d/00000.parquet", "wb") as f:
        f.write(small_i2d_bytes(tmp_path))
    urls = expand_shard_specs([f"s3://{bucket}/d/*.parquet"])
    assert urls == [f"s3://{bucket}/d/00000.parquet"]
    check_table_shards(urls, ColumnChoice())
    metas, end = read_shard(urls[0])
    assert end.status == "complete" and [m.key for m in metas] == [f"k{i:03d}" for i in range(12)]
    assert all(m.status == "ok" and m.url.startswith("https://") for m in metas)
    with fsspec.open(f"s3://{bucket}/meta/laion.parquet", "wb") as f:
        pq.write_table(pa.table({"URL": ["https://x.invalid/a.jpg"], "TEXT": ["a"]}), f)
    with pytest.raises(UserError, match="download the images first"):
        check_table_shards([f"s3://{bucket}/meta/laion.parquet"], ColumnChoice())


@pytest.mark.parametrize("cut", [0, 4, 100, 0.5, -9, -1])
def test_a_truncated_parquet_is_a_failed_shard_never_a_crash(tmp_path, cut):
    data = small_i2d_bytes(tmp_path)
    path = tmp_path / "cut.parquet"
    path.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    metas, end = read_shard(str(path))
    assert metas == [] and end.status == "failed" and "Parquet" in end.error


def test_flipped_bytes_never_crash_the_reader(tmp_path):
    """Damage inside the pages: rows up to the damage (possibly with undecodable images), then a
    truncated or failed shard; never an exception out of the reader."""
    import random

    data, rng = small_i2d_bytes(tmp_path), random.Random(0)
    path = tmp_path / "flip.parquet"
    for _ in range(40):
        damaged = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(4, len(data) - 8)] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        metas, end = read_shard(str(path))
        assert end.status in ("complete", "truncated", "failed") and len(metas) <= 12
        assert all(m.status in ("ok", "decode_error", "missing_image", "too_large") for m in metas)


def test_a_damaged_row_group_truncates_the_shard_after_the_intact_rows(tmp_path):
    data = bytearray(small_i2d_bytes(tmp_path))  # row groups of 4 rows
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    chunk = meta.row_group(2).column(meta.schema.names.index("jpg"))
    data[chunk.data_page_offset:chunk.data_page_offset + 16] = b"\xff" * 16  # page header of the third group
    path = tmp_path / "damaged.parquet"
    path.write_bytes(bytes(data))
    metas, end = read_shard(str(path))
    assert end.status == "truncated" and "damaged after 8 rows" in end.error
    assert [m.key for m in metas] == [f"k{i:03d}" for i in range(8)] and all(m.status == "ok" for m in metas)
