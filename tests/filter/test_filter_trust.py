"""filter --write-shards writes exactly the kept samples of the data that was scanned (issue 26):
samples are matched by key and image SHA-256, never by position; anything else is counted per shard
in one line with a non-zero exit and the shard is not written; non-regular tar members are never copied."""

import hashlib
import io
import json
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, scan_args, write_tar


def report_for(tmp_path, shards: dict, kept: dict, digests: bool = True):
    """A hand-made report of `shards` {name: [(key, image bytes)]} with keep list `kept` {name: [index]}."""
    report, keep_rows = tmp_path / "report", []
    report.mkdir()
    for name, samples in shards.items():
        (tmp_path / "scanned").mkdir(exist_ok=True)
        members = [m for key, image in samples for m in ((f"{key}.jpg", image), (f"{key}.txt", b"c"))]
        tar = write_tar(tmp_path / "scanned" / f"{name}.tar", members)
        columns = {"key": [k for k, _ in samples], "sample_index": list(range(len(samples)))}
        if digests:
            columns["image_sha256"] = pa.array([hashlib.sha256(i).digest() for _, i in samples], pa.binary(32))
        pq.write_table(pa.table(columns), report / f"{name}.parquet")
        (report / f"{name}.stats.json").write_text(json.dumps({"status": "complete", "url": str(tar), "rows": len(samples)}))
        keep_rows += [{"shard": name, "key": samples[i][0], "url": None, "sample_index": i} for i in kept[name]]
    pq.write_table(pa.Table.from_pylist(keep_rows), tmp_path / "keep.parquet")
    return report, tmp_path / "keep.parquet"


def write(report, keep, out, shards=()):
    from vlmaudit.filter.reshard import write_filtered_shards
    from vlmaudit.report.reread import ReReadOptions

    return write_filtered_shards(report, keep, out, ReReadOptions(shards=[str(s) for s in shards]))


def names(tar):
    with tarfile.open(tar) as tf:
        return tf.getnames()


def test_a_substituted_shard_with_the_same_keys_is_caught_by_the_image_digest(tmp_path):
    from vlmaudit.errors import UserError

    samples = {"a": [("k0", b"clean0"), ("k1", b"UNSAFE"), ("k2", b"clean2")], "b": [("k0", b"B0")]}
    report, keep = report_for(tmp_path, samples, {"a": [0, 2], "b": [0]})
    other = tmp_path / "other"
    other.mkdir()  # same names, same keys, other images: the dropped image now sits at a kept position
    write_tar(other / "a.tar", [("k0.jpg", b"UNSAFE"), ("k0.txt", b"c"), ("k1.jpg", b"clean0"), ("k1.txt", b"c"),
                                ("k2.jpg", b"clean2"), ("k2.txt", b"c")])
    shutil.copy(tmp_path / "scanned" / "b.tar", other / "b.tar")
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        write(report, keep, out, [other / "a.tar", other / "b.tar"])
    assert "1 shard(s) not written" in str(err.value) and "a: 1 differ" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (out / "a.tar").exists() and names(out / "b.tar") == ["k0.jpg", "k0.txt"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_substituted_shard_with_other_keys_is_caught_without_digests(tmp_path):
    from vlmaudit.errors import UserError

    samples = {"a": [("a0", b"x"), ("a1", b"UNSAFE")]}
    report, keep = report_for(tmp_path, samples, {"a": [0]}, digests=False)
    other = tmp_path / "other"
    other.mkdir()
    write_tar(other / "a.tar", [("z1.jpg", b"UNSAFE"), ("a0.jpg", b"x")])  # order changed
    with pytest.raises(UserError, match="a: 1 differ"):
        write(report, keep, tmp_path / "out", [other / "a.tar"])
    assert not (tmp_path / "out" / "a.tar").exists()


def test_a_truncated_source_names_the_missing_samples(tmp_path):
    from vlmaudit.errors import UserError

    samples = {"a": [(f"k{i}", bytes([i]) * 600) for i in range(6)]}
    report, keep = report_for(tmp_path, samples, {"a": [0, 4, 5]})
    source = tmp_path / "scanned" / "a.tar"
    source.write_bytes(source.read_bytes()[:4000])
    with pytest.raises(UserError, match=r"a: 2 missing, source damaged"):
        write(report, keep, tmp_path / "out")
    assert not (tmp_path / "out" / "a.tar").exists()


def test_sparse_and_contiguous_members_are_never_copied(tmp_path):
    samples = {"a": [("k0", b"img")]}
    report, keep = report_for(tmp_path, samples, {"a": [0]})
    source = tmp_path / "scanned" / "a.tar"
    with tarfile.open(source, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, kind in (("k0.jpg", b"img", tarfile.REGTYPE), ("k0.txt", b"c", tarfile.CONTTYPE),
                                 ("k0.cls", b"1", tarfile.GNUTYPE_SPARSE)):
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            tf.addfile(info, io.BytesIO(data))
    result = write(report, keep, tmp_path / "out")
    assert names(tmp_path / "out" / "a.tar") == ["k0.jpg"]
    assert result["non_regular_members"] >= 1


def test_cli_refuses_in_one_line_and_exits_non_zero(tmp_path, tiny_clip):
    from vlmaudit.demo.build import build_demo_shards

    shards = build_demo_shards(tmp_path / "shards", shards=2, per_shard=5)
    reports = tmp_path / "reports"
    assert run_cli(*scan_args(shards, reports, tiny_clip)).exit_code == 0
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(shards[1], swapped / shards[0].name)  # shard 0's name, shard 1's samples
    shutil.copy(shards[1], swapped / shards[1].name)
    result = run_cli("filter", reports, "--policy", "permissive", "--out", tmp_path / "f",
                     "--write-shards", tmp_path / "kept", "--shards", swapped)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not written" in errors[0] and shards[0].stem in errors[0]
    assert not (tmp_path / "kept" / f"{shards[0].stem}.tar").exists()


def test_a_substituted_parquet_shard_is_caught_and_a_matching_one_copied(tmp_path):
    from vlmaudit.errors import UserError

    def table(images):
        return pa.table({"key": ["k0", "k1", "k2"], "jpg": pa.array(images, pa.binary()), "caption": ["c"] * 3})

    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(table([b"clean0", b"UNSAFE", b"clean2"]), data / "t.parquet")
    report = tmp_path / "report"
    report.mkdir()
    pq.write_table(pa.table({"key": ["k0", "k1", "k2"], "sample_index": [0, 1, 2], "image_sha256": pa.array(
        [hashlib.sha256(i).digest() for i in (b"clean0", b"UNSAFE", b"clean2")], pa.binary(32))}), report / "t.parquet")
    (report / "t.stats.json").write_text(json.dumps({"status": "complete", "url": str(data / "t.parquet"), "rows": 3}))
    pq.write_table(pa.Table.from_pylist([{"shard": "t", "key": k, "url": None, "sample_index": i}
                                         for i, k in ((0, "k0"), (2, "k2"))]), tmp_path / "keep.parquet")
    out = tmp_path / "out"
    assert write(report, tmp_path / "keep.parquet", out)["samples"] == {"t": 2}
    assert pq.read_table(out / "t.parquet").column("jpg").to_pylist() == [b"clean0", b"clean2"]
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(table([b"UNSAFE", b"clean0", b"clean2"]), other / "t.parquet")
    with pytest.raises(UserError, match="t: 1 differ"):
        write(report, tmp_path / "keep.parquet", tmp_path / "out2", [other / "t.parquet"])
    assert not (tmp_path / "out2" / "t.parquet").exists()
