"""Dirty and hostile shards: every sample accounted for, nothing from a shard executed."""

import io
import json
import pickle
import random

import pyarrow.parquet as pq
from PIL import Image

from conftest import run_cli, scan_args, write_shard, write_tar
from vlmaudit.demo.build import synthetic_image


def jpg(seed=0, size=(48, 40)) -> bytes:
    return synthetic_image(random.Random(seed), size)


def scan(tmp_path, tiny_clip, shards, *extra):
    out = tmp_path / "out"
    result = run_cli(*scan_args(shards, out, tiny_clip, "--retries", "0", *extra))
    rows = pq.read_table(sorted(out.glob("*.parquet"))).to_pylist() if list(out.glob("*.parquet")) else []
    stats = {p.name.split(".")[0]: json.loads(p.read_text()) for p in out.glob("*.stats.json")}
    return result, rows, stats


def test_caption_problems_are_noted_not_fatal(tmp_path, tiny_clip):
    shard = write_tar(tmp_path / "s.tar", [
        ("a.jpg", jpg(1)), ("a.txt", b"caf\xe9 \xff bad utf8"),
        ("b.jpg", jpg(2)), ("b.txt", ("very long caption " * 2000).encode()),
        ("c.jpg", jpg(3)),
        ("d.txt", b"a caption without an image"),
        ("e.jpg", jpg(4)), ("e.json", b"{not json"),
        ("f.JPG", jpg(5)), ("f.json", json.dumps({"caption": "from json", "url": "http://x/f"}).encode()),
    ])
    result, rows, stats = scan(tmp_path, tiny_clip, [shard])
    assert result.exit_code == 0, result.output
    by = {r["key"]: r for r in rows}
    assert "caption_invalid_utf8" in by["a"]["notes"] and "\ufffd" in by["a"]["caption"]
    assert "caption_capped" in by["b"]["notes"] and len(by["b"]["caption"]) == 4096
    assert len(by["b"]["caption_scores"]) == 75
    assert by["c"]["caption"] is None and by["c"]["caption_scores"] is None and by["c"]["status"] == "ok"
    assert by["c"]["image_scores"] is not None
    assert by["d"]["status"] == "missing_image" and len(by["d"]["caption_scores"]) == 75
    assert by["e"]["status"] == "ok" and any(n.startswith("json_malformed") for n in by["e"]["notes"])
    assert by["f"]["caption"] == "from json" and by["f"]["url"] == "http://x/f" and by["f"]["status"] == "ok"
    assert stats["s"]["rows"] == 6 and sum(stats["s"]["status_counts"].values()) == 6


def test_keys_with_dots_dirs_and_non_adjacent_members(tmp_path, tiny_clip):
    shard = write_tar(tmp_path / "s.tar", [
        ("./dir/sub/000.jpg", jpg(1)), ("./dir/sub/000.txt", b"in a dir"),
        ("img.v2.jpg", jpg(2)), ("img.v2.txt", b"dotted"),
        ("k1.jpg", jpg(3)), ("k2.jpg", jpg(4)), ("k1.txt", b"late caption"),
    ])
    _, rows, _ = scan(tmp_path, tiny_clip, [shard])
    assert [(r["key"], r["status"]) for r in rows] == [
        ("dir/sub/000", "ok"), ("img.v2", "ok"), ("k1", "ok"), ("k2", "ok"), ("k1", "duplicate_key")]
    assert rows[0]["caption"] == "in a dir" and rows[1]["caption"] == "dotted"
    assert rows[2]["caption"] is None and "not merged" in rows[4]["error"]
    assert [r["sample_index"] for r in rows] == [0, 1, 2, 3, 4]


def test_truncated_and_corrupt_tars_keep_rows_before_the_damage(tmp_path, tiny_clip):
    members = [(f"{i:03d}.jpg", jpg(i)) for i in range(6)]
    whole = write_tar(tmp_path / "whole.tar", members).read_bytes()
    offsets = [whole.index(data) for _, data in members]
    (tmp_path / "cut.tar").write_bytes(whole[: offsets[3] + 10])  # inside member 3's data
    corrupt = bytearray(whole)
    corrupt[offsets[4] - 512: offsets[4] - 412] = b"\x07" * 100  # member 4's header
    (tmp_path / "bad.tar").write_bytes(bytes(corrupt))
    result, rows, stats = scan(tmp_path, tiny_clip, [tmp_path / "cut.tar", tmp_path / "bad.tar"])
    assert result.exit_code == 0
    keys = {s: [r["key"] for r in rows if r["shard"] == s] for s in ("cut", "bad")}
    assert keys == {"cut": ["000", "001", "002"], "bad": ["000", "001", "002", "003"]}
    assert stats["cut"]["status"] == "truncated" and "unexpected end" in stats["cut"]["error"]
    assert stats["bad"]["status"] == "truncated" and stats["bad"]["error"]


def test_unopenable_shard_fails_others_continue_exit_1_and_report_names_it(tmp_path, tiny_clip):
    good = write_shard(tmp_path / "good.tar", [{"__key__": "a", "jpg": jpg(1), "txt": b"x"}])
    (tmp_path / "junk.tar").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)  # broken gzip
    result, rows, stats = scan(tmp_path, tiny_clip, [good, tmp_path / "junk.tar"])
    assert result.exit_code == 1 and "1 shard(s) failed: junk" in result.output
    assert [r["key"] for r in rows] == ["a"] and stats["junk"]["status"] == "failed"
    assert not (tmp_path / "out" / "junk.parquet").exists()
    report = json.loads(run_cli("report", tmp_path / "out", "--json").output)
    assert report["failed_shards"] == ["junk"]


def test_empty_shard_is_valid_with_zero_rows(tmp_path, tiny_clip):
    shard = write_tar(tmp_path / "empty.tar", [])
    result, rows, stats = scan(tmp_path, tiny_clip, [shard])
    assert result.exit_code == 0 and rows == []
    assert stats["empty"] == {**stats["empty"], "status": "complete", "rows": 0}
    assert pq.read_table(tmp_path / "out" / "empty.parquet").num_rows == 0


class Planted:
    def __reduce__(self):
        return (open, ("/tmp/vlmaudit-pwned", "w"))


def test_pickles_in_a_shard_are_never_loaded(tmp_path, tiny_clip):
    import os

    payload = pickle.dumps(Planted())
    shard = write_tar(tmp_path / "s.tar", [("a.jpg", jpg(1)), ("a.pyd", payload), ("a.pickle", payload),
                                           ("b.pth", payload)])
    _, rows, stats = scan(tmp_path, tiny_clip, [shard])
    assert not os.path.exists("/tmp/vlmaudit-pwned")
    assert rows[0]["status"] == "ok" and "ignored_member:.pyd" in rows[0]["notes"]
    assert rows[1]["key"] == "b" and rows[1]["status"] == "missing_image"
    assert stats["s"]["members_ignored"] == 3


def test_oversized_member_and_pixels(tmp_path, tiny_clip):
    png = io.BytesIO()
    Image.new("RGB", (400, 400)).save(png, format="PNG")
    fat = io.BytesIO()
    Image.effect_noise((200, 200), 80).convert("RGB").save(fat, format="JPEG", quality=95)
    assert len(png.getvalue()) < 20000 < len(fat.getvalue())
    shard = write_tar(tmp_path / "s.tar", [("px.png", png.getvalue()), ("px.txt", b"caption"),
                                           ("fat.jpg", fat.getvalue()), ("ok.jpg", jpg(2, (24, 24)))])
    _, rows, _ = scan(tmp_path, tiny_clip, [shard], "--max-pixels", "10000", "--max-member-bytes", "20000")
    by = {r["key"]: r for r in rows}
    assert by["px"]["status"] == "too_large" and "400x400" in by["px"]["error"]
    assert by["px"]["caption_scores"] is not None
    assert by["fat"]["status"] == "too_large" and "20000-byte limit" in by["fat"]["error"]
    assert by["ok"]["status"] == "ok"


def test_pickle_weights_refused_unless_allowed(tmp_path, tiny_clip):
    import shutil

    import torch
    from safetensors.torch import load_file

    unsafe = tmp_path / "unsafe-model"
    shutil.copytree(tiny_clip, unsafe)
    torch.save(load_file(unsafe / "model.safetensors"), unsafe / "pytorch_model.bin")  # a pickle
    (unsafe / "model.safetensors").unlink()
    shard = write_shard(tmp_path / "s.tar", [{"__key__": "a", "jpg": jpg(1)}])
    result = run_cli(*scan_args([shard], tmp_path / "o", unsafe))
    assert result.exit_code == 2 and "--allow-unsafe-weights" in result.output
    assert run_cli(*scan_args([shard], tmp_path / "o", unsafe, "--allow-unsafe-weights")).exit_code == 0


def test_an_unexpected_error_inside_a_shard_ends_only_that_shard(tmp_path, tiny_clip, monkeypatch):
    import vlmaudit.scan.worker as worker

    real = worker.iter_samples

    def exploding(stream, end, *args):
        for i, sample in enumerate(real(stream, end, *args)):
            if "boom" in stream.name and i == 1:
                raise RuntimeError("kaboom")
            yield sample

    monkeypatch.setattr(worker, "iter_samples", exploding)
    boom = write_shard(tmp_path / "boom.tar", [{"__key__": f"k{i}", "jpg": jpg(i)} for i in range(3)])
    fine = write_shard(tmp_path / "fine.tar", [{"__key__": "a", "jpg": jpg(9)}])
    result, rows, stats = scan(tmp_path, tiny_clip, [boom, fine])
    assert result.exit_code == 0
    assert stats["boom"]["status"] == "truncated" and "kaboom" in stats["boom"]["error"]
    assert [r["key"] for r in rows if r["shard"] == "boom"] == ["k0"] and stats["fine"]["rows"] == 1
