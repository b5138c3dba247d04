"""Loose image folders as input: `img.jpg` + `img.txt` / `img.json` pairs and Hugging Face
imagefolders (metadata.jsonl / metadata.csv with file_name), cut into stable shards that resume;
every sample a row with a status; nothing outside the folder opened; `train-head --data` and
`eval --data` read the same layouts."""

import csv
import json
import os

import pyarrow.parquet as pq
import pytest
from conftest import ROWS, png, run_cli, scan_args


def write_pairs(root):
    """8 samples (sorted keys): a/0 a/1 b/2 c/3 d/bad e/link f/fifo h/linkdir."""
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png(99))
    for folder in "abcdefh":
        (root / folder).mkdir(parents=True)
    (root / "a" / "0.png").write_bytes(png(0))
    (root / "a" / "0.txt").write_text("a txt caption")
    (root / "a" / "1.png").write_bytes(png(1))
    (root / "a" / "1.json").write_text(json.dumps({"caption": "a json caption", "url": "https://x.invalid/1.png"}))
    (root / "b" / "2.png").write_bytes(png(2))
    (root / "c" / "3.txt").write_text("a caption without an image")
    (root / "d" / "bad.jpg").write_bytes(b"not an image at all")
    os.symlink(outside / "secret.png", root / "e" / "link.png")
    os.mkfifo(root / "f" / "fifo.png")  # opening it for reading without O_NONBLOCK would hang the scan
    os.symlink(outside, root / "h" / "linkdir")
    return root


def rows_of(out):
    files = sorted(out.glob("*.parquet"))
    return {r["key"]: r for f in files for r in pq.read_table(f).to_pylist()}, [f.stem for f in files]


def test_pairs_folder_scans_into_stable_shards_that_resume(tmp_path, tiny_clip):
    from vlmaudit.scan.counting import count_samples
    from vlmaudit.scan.shards import expand_shard_specs, output_names

    root = write_pairs(tmp_path / "pairs")
    urls = expand_shard_specs([str(root)], folder_shard_size=3)
    assert sorted(output_names(urls).values()) == ["pairs-00000", "pairs-00001", "pairs-00002"]
    assert [count_samples(u) for u in urls] == [3, 3, 2]
    out = tmp_path / "reports"
    args = scan_args([root], out, tiny_clip, "--folder-shard-size", "3")
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    rows, names = rows_of(out)
    assert names == ["pairs-00000", "pairs-00001", "pairs-00002"]
    status = {k: r["status"] for k, r in rows.items()}
    assert status == {"a/0": "ok", "a/1": "ok", "b/2": "ok", "c/3": "missing_image", "d/bad": "decode_error",
                      "e/link": "bad_name", "f/fifo": "bad_name", "h/linkdir": "bad_name"}
    assert rows["a/0"]["caption"] == "a txt caption" and rows["a/1"]["caption"] == "a json caption"
    assert rows["a/1"]["url"] == "https://x.invalid/1.png" and rows["b/2"]["caption"] is None
    assert rows["c/3"]["caption_scores"] and not rows["c/3"]["image_scores"]  # the caption is still scored
    assert "symlink" in rows["e/link"]["error"] and "regular file" in rows["f/fifo"]["error"]
    assert not rows["e/link"]["image_scores"] and "not followed" in rows["h/linkdir"]["error"]
    stats = json.loads((out / "pairs-00000.stats.json").read_text())
    assert stats["url"].startswith("folder:") and stats["status"] == "complete"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before  # resumed: nothing rescanned
    (root / "a" / "00.png").write_bytes(png(5))  # shard 0 now holds other files: not skipped as done
    changed = run_cli(*args)
    assert changed.exit_code == 2 and "pairs-00000 was scanned from other files" in changed.output
    assert run_cli(*scan_args([root], out, tiny_clip, "--folder-shard-size", "4")).exit_code == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before


def test_oversized_files_are_too_large_rows(tmp_path, tiny_clip):
    root = tmp_path / "big"
    root.mkdir()
    (root / "0.png").write_bytes(png(0))
    (root / "0.txt").write_text("x" * 5000)
    out = tmp_path / "reports"
    assert run_cli(*scan_args([root], out, tiny_clip, "--max-member-bytes", "100")).exit_code == 0
    (row,) = rows_of(out)[0].values()
    assert row["status"] == "too_large" and row["caption"] is None and "100-byte limit" in row["error"]


def test_imagefolder_metadata_rows_and_containment(tmp_path, tiny_clip):
    root = tmp_path / "hf"
    (root / "train").mkdir(parents=True)
    (root / "train" / "0.png").write_bytes(png(0))
    (root / "train" / "1.png").write_bytes(png(1))
    (root / "unlisted.png").write_bytes(png(2))
    (tmp_path / "outside.png").write_bytes(png(3))
    lines = [{"file_name": "train/0.png", "text": "first", "url": "https://x.invalid/0"},
             {"file_name": "train/1.png", "caption": "second"},
             {"file_name": "../outside.png", "text": "escape"},
             {"file_name": "/etc/hostname", "text": "absolute"},
             {"file_name": "gone.png", "text": "listed, absent"}]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "reports"
    result = run_cli(*scan_args([root], out, tiny_clip))
    assert result.exit_code == 0, result.output
    rows, names = rows_of(out)
    assert names == ["hf-00000"]
    status = {k: (r["status"], r["caption"]) for k, r in rows.items()}
    assert status == {"train/0": ("ok", "first"), "train/1": ("ok", "second"), "unlisted": ("ok", None),
                      "metadata.jsonl/3": ("bad_name", "escape"), "metadata.jsonl/4": ("bad_name", "absolute"),
                      "gone": ("missing_image", "listed, absent")}
    assert rows["train/0"]["url"] == "https://x.invalid/0" and "leaves the folder" in rows["metadata.jsonl/3"]["error"]


def test_metadata_without_file_name_is_one_clear_line(tmp_path, tiny_clip):
    root = tmp_path / "broken"
    root.mkdir()
    (root / "0.png").write_bytes(png(0))
    (root / "metadata.jsonl").write_text(json.dumps({"image": "0.png"}) + "\n")
    result = run_cli(*scan_args([root], tmp_path / "out", tiny_clip))
    assert result.exit_code == 2 and "has no file_name" in result.output and "Traceback" not in result.output


def labelled_imagefolder(root, fmt="csv"):
    root.mkdir()
    rows = []
    for i, (category, concept, _) in enumerate(ROWS):
        (root / f"{i}.png").write_bytes(png(i))
        rows.append({"file_name": f"{i}.png", "category": category, "unsafe_concept": concept})
    if fmt == "csv":
        with open(root / "metadata.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:  # img.png + img.json pairs
        for row in rows:
            (root / row["file_name"].replace(".png", ".json")).write_text(json.dumps(row))
    return root


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "pairs"])
def test_eval_and_train_head_read_the_same_labelled_folder(tmp_path, fmt):
    from vlmaudit.evaluate.data import load_eval_data, read_eval_image
    from vlmaudit.head.data import load_examples
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    root = labelled_imagefolder(tmp_path / "labelled", fmt)
    items = load_eval_data(root, taxonomy)
    examples = load_examples(root, taxonomy)
    expected = [taxonomy.concepts.index(next(c for c in taxonomy.concepts if c.name == concept))
                for _, concept, _ in ROWS]
    assert [it.concept for it in items] == [ex.concept for ex in examples] == expected
    assert read_eval_image(items[2].image, "").size == (48, 40)


def test_labelled_folder_refuses_paths_out_of_it(tmp_path):
    from vlmaudit.errors import UserError
    from vlmaudit.head.data import load_examples
    from vlmaudit.rulebook.load import load_rules

    root = labelled_imagefolder(tmp_path / "labelled", "csv")
    (tmp_path / "secret.png").write_bytes(png(9))
    with open(root / "metadata.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["../secret.png", "Hate", "Swastika"])
    with pytest.raises(UserError, match="leaves the folder"):
        load_examples(root, load_rules().taxonomy)
    pairs = labelled_imagefolder(tmp_path / "pairs", "pairs")
    os.symlink(tmp_path / "secret.png", pairs / "9.png")
    (pairs / "9.json").write_text(json.dumps({"category": "Hate", "unsafe_concept": "Swastika"}))
    with pytest.raises(UserError, match="symlink"):
        load_examples(pairs, load_rules().taxonomy)


def test_eval_and_train_head_cli_on_an_imagefolder(tmp_path, tiny_clip):
    root = labelled_imagefolder(tmp_path / "labelled", "csv")
    result = run_cli("eval", "--data", root, "--model", tiny_clip, "--format", "json", "-q", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["evaluated"] == len(ROWS)
    result = run_cli("train-head", "--data", root, "--vision-model", tiny_clip, "--out", tmp_path / "head",
                     "--epochs", "2", "--dim", "16", "-q")
    assert result.exit_code == 0, result.output


def test_gallery_shows_folder_images_and_write_shards_refuses_them(tmp_path, tiny_clip):
    root = write_pairs(tmp_path / "pairs")
    out = tmp_path / "reports"
    assert run_cli(*scan_args([root], out, tiny_clip)).exit_code == 0
    page = tmp_path / "r.html"
    result = run_cli("report", out, "--threshold", "0", "--format", "html", "--output", page)
    assert result.exit_code == 0, result.output
    assert "data:image/jpeg;base64," in page.read_text() and "note:" not in result.output
    result = run_cli("filter", out, "--policy", "permissive", "--out", tmp_path / "f", "--write-shards", tmp_path / "kept")
    assert result.exit_code == 2 and "loose image folder" in result.output


def test_ray_engine_reads_a_folder_like_the_local_engine(tmp_path, tiny_clip):
    import ray
    from conftest import rows, same_rows

    root = write_pairs(tmp_path / "pairs")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert run_cli(*scan_args([root], local, tiny_clip, "--folder-shard-size", "3")).exit_code == 0
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_cli(*scan_args([root], distributed, tiny_clip, "--folder-shard-size", "3", "--engine", "ray",
                                    "--workers", "2"))
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in distributed.glob("*.parquet")) == ["pairs-00000.parquet", "pairs-00001.parquet",
                                                                     "pairs-00002.parquet"]
    assert same_rows(rows(distributed), rows(local))


def test_a_shard_whose_files_changed_after_listing_fails_instead_of_mixing(tmp_path):
    from vlmaudit.scan.folder_source import expand_folder, iter_folder_samples, list_folder
    from vlmaudit.scan.tario import TarEnd

    root = write_pairs(tmp_path / "pairs")
    (url,) = expand_folder(str(root), 100)
    assert len(list(iter_folder_samples(url, TarEnd(), 1 << 20, 100))) == 8
    (root / "a" / "00.png").write_bytes(png(5))
    list_folder.cache_clear()  # a worker that lists the folder again
    end = TarEnd()
    assert list(iter_folder_samples(url, end, 1 << 20, 100)) == [] and end.status == "failed"
    assert "changed" in end.error
