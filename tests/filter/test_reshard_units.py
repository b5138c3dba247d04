"""filter --write-shards on tar shards, at the unit (filter.reshard.write_shard): kept samples copied
byte for byte, the others passed over; every mismatch, special member and member over the size limit
counted; the img2dataset-style Parquet beside it holds key, url and sample_index only."""

import hashlib
import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

BIG = b"t" * 300  # over max_member_bytes=100 below


def write_shard(path, samples):
    """samples: [(key, [(ext, bytes)])], in this order; a `cont` member is a contiguous file (read
    as a file by the tar reader, never copied)."""
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                if ext == "cont":
                    info.type = tarfile.CONTTYPE
                tf.addfile(info, io.BytesIO(data))
    return str(path)


SAMPLES = [
    ("a", [("jpg", b"img-a"), ("txt", b"cap-a")]),
    ("b", [("jpg", b"img-b")]),
    ("c", [("jpg", b"img-c"), ("txt", b"cap-c")]),
    ("d", [("jpg", b"img-d"), ("txt", BIG)]),
    ("e", [("jpg", b"img-e"), ("cont", b"special")]),
    ("f", [("jpg", b"img-f"), ("txt", b"cap-f")]),
    ("g", [("jpg", b"img-g"), ("cont", b"special"), ("txt", BIG)]),
]


def members(path):
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def test_kept_samples_are_copied_byte_for_byte_and_the_rest_passed_over(tmp_path):
    from vlmaudit.filter.matching import Damage, Kept
    from vlmaudit.filter.reshard import write_shard as rewrite

    url = write_shard(tmp_path / "in.tar", SAMPLES)
    kept = Kept({0: "a", 3: "d", 5: "f"}, {5: hashlib.sha256(b"img-f").digest()})
    target = tmp_path / "out" / "in.tar"
    target.parent.mkdir()
    assert rewrite(url, kept, target, 100) == (3, 1, Damage())
    assert members(target) == [("a.jpg", b"img-a"), ("a.txt", b"cap-a"), ("d.jpg", b"img-d"), ("f.jpg", b"img-f"),
                               ("f.txt", b"cap-f")]
    assert sorted(p.name for p in target.parent.iterdir()) == ["in.tar"]


def test_every_mismatch_special_and_oversized_member_is_counted_and_nothing_written(tmp_path):
    from vlmaudit.filter.matching import Damage, Kept
    from vlmaudit.filter.reshard import write_shard as rewrite

    url = write_shard(tmp_path / "in.tar", SAMPLES)
    kept = Kept({0: "a", 1: "someone-else", 2: "zzz", 3: "d", 4: "e", 5: "f", 6: "g", 9: "gone"},
                {5: hashlib.sha256(b"other bytes").digest()})
    target = tmp_path / "out" / "in.tar"
    target.parent.mkdir()
    written, skipped, damage = rewrite(url, kept, target, 100)
    assert (written, skipped) == (4, 2)  # a, d, e, g; the big members of d and g
    assert damage == Damage(mismatched=3, missing=1, non_regular=2)
    assert list(target.parent.iterdir()) == []


def test_damage_description_names_the_source_only_when_rows_are_missing():
    from vlmaudit.filter.matching import Damage

    assert Damage(mismatched=1, source_error="EOFError").describe() == "1 differ from the scanned sample (key or image digest)"
    assert Damage(missing=2, source_error="EOFError").describe() == "2 missing, source damaged: EOFError"


def test_kept_parquet_holds_key_url_and_index_of_its_shard_only(tmp_path):
    from vlmaudit.filter.reshard import write_kept_parquet

    keep = tmp_path / "keep.parquet"
    pq.write_table(pa.table({"shard": ["s1", "s2", "s1"], "key": ["a", "b", "c"], "sample_index": [0, 0, 4],
                             "url": ["u0", None, "u4"], "action": ["keep"] * 3}), keep)
    write_kept_parquet(keep, "s1", tmp_path / "s1.parquet")
    assert pq.read_table(tmp_path / "s1.parquet").to_pylist() == [{"key": "a", "url": "u0", "sample_index": 0},
                                                                   {"key": "c", "url": "u4", "sample_index": 4}]
