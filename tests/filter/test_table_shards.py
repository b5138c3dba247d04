"""filter --write-shards on Parquet and Arrow inputs, at the unit (filter.table_shards): the kept rows
copied with every column and the schema metadata across record batches, checked against the
scanned key and image digest; any damage (a differing or missing row, a damaged source) writes
nothing and leaves no partial file; Parquet output gathered into row groups of ROW_GROUP_BYTES."""

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SCHEMA = pa.schema([("key", pa.string()), ("caption", pa.string()), ("jpg", pa.binary())],
                   metadata={b"huggingface": b'{"info": "kept"}'})


def rows(n, key=True):
    table = pa.table({"key": [f"s{i:03d}" for i in range(n)], "caption": [f"c{i:03d}" for i in range(n)],
                      "jpg": [f"img{i:03d}".encode() for i in range(n)]}, SCHEMA)
    return table if key else table.drop_columns(["key"]).replace_schema_metadata(SCHEMA.metadata)


def write_parquet(path, table, row_group_size=None):
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def write_arrow(path, table):
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return str(path)


def kept_of(table, indices, digests=()):
    from vlmaudit.filter.matching import Kept

    keys = table.column("key").to_pylist()
    return Kept({i: keys[i] for i in indices}, {i: hashlib.sha256(f"img{i:03d}".encode()).digest() for i in digests})


def test_kept_parquet_rows_across_record_batches_keep_every_column_and_the_metadata(tmp_path):
    from vlmaudit.filter.table_shards import table_target, write_table_shard

    source = rows(40)  # record batches of 16 rows: kept rows in all three
    url = write_parquet(tmp_path / "in.parquet", source)
    target = table_target(tmp_path / "out", "in", url)
    target.parent.mkdir()
    written, damage = write_table_shard(url, kept_of(source, [0, 17, 39], digests=[17]), target)
    assert (written, bool(damage)) == (3, False) and target.name == "in.parquet"
    copy = pq.read_table(target)
    assert copy.schema.equals(SCHEMA, check_metadata=True) and copy.to_pylist() == source.take([0, 17, 39]).to_pylist()
    assert sorted(p.name for p in target.parent.iterdir()) == ["in.parquet"]


def test_kept_arrow_rows_are_written_as_an_arrow_stream(tmp_path):
    from vlmaudit.filter.table_shards import table_target, write_table_shard

    source = rows(20)
    url = write_arrow(tmp_path / "data.ARROW", source)
    target = table_target(tmp_path, "data", url)
    assert target == tmp_path / "data.arrow"
    assert write_table_shard(url, kept_of(source, [3, 18]), target)[0] == 2
    with pa.memory_map(str(target)) as f:
        copy = pa.ipc.open_stream(f).read_all()
    assert copy.schema.equals(SCHEMA, check_metadata=True) and copy.to_pylist() == source.take([3, 18]).to_pylist()


def test_rows_without_a_key_column_match_by_the_shard_stem_and_index(tmp_path):
    from vlmaudit.filter.matching import Kept
    from vlmaudit.filter.table_shards import write_table_shard

    source = rows(20, key=False)
    url = write_parquet(tmp_path / "part-7.parquet", source)
    written, damage = write_table_shard(url, Kept({2: "part-7/2", 19: "part-7/19"}), tmp_path / "out.parquet")
    assert (written, bool(damage)) == (2, False)
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == source.take([2, 19]).to_pylist()


def test_differing_and_missing_rows_write_nothing(tmp_path):
    from vlmaudit.filter.matching import Damage
    from vlmaudit.filter.table_shards import write_table_shard

    source = rows(40)
    url = write_parquet(tmp_path / "in.parquet", source)
    kept = kept_of(source, [0, 1, 20, 30], digests=[30])
    kept.keys[1], kept.keys[45] = "someone-else", "s045"  # a different sample at 1, a row past the end
    kept.digests[20] = b"\0" * 32  # same key, other image bytes
    target = tmp_path / "out" / "in.parquet"
    target.parent.mkdir()
    assert write_table_shard(url, kept, target) == (0, Damage(mismatched=2, missing=1))
    assert list(target.parent.iterdir()) == []


def test_a_table_whose_columns_cannot_be_resolved_matches_nothing(tmp_path):
    from vlmaudit.filter.matching import Damage, Kept
    from vlmaudit.filter.table_shards import write_table_shard

    url = write_parquet(tmp_path / "in.parquet", pa.table({"key": ["a", "b"], "n": [1, 2]}))
    assert write_table_shard(url, Kept({0: "a", 1: "b"}), tmp_path / "out.parquet") == (0, Damage(mismatched=2))
    assert not (tmp_path / "out.parquet").exists()


def test_a_damaged_source_is_counted_missing_with_its_error(tmp_path):
    from vlmaudit.filter.table_shards import write_table_shard

    source = rows(8)
    data = (tmp_path / "in.parquet").write_bytes(b"PAR1" + b"x" * 100 + b"PAR1")
    assert data
    written, damage = write_table_shard(str(tmp_path / "in.parquet"), kept_of(source, [0, 5]), tmp_path / "out.parquet")
    assert written == 0 and damage.missing == 2 and damage.mismatched == 0
    assert damage.source_error.startswith(("OSError: ", "ArrowInvalid: ")) and "Parquet" in damage.source_error
    assert not (tmp_path / "out.parquet").exists()


def test_damage_after_the_intact_rows_names_where(tmp_path):
    from vlmaudit.filter.table_shards import write_table_shard

    source = rows(48)
    url = write_parquet(tmp_path / "in.parquet", source, row_group_size=16)
    data = bytearray((tmp_path / "in.parquet").read_bytes())
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    chunk = meta.row_group(2).column(SCHEMA.names.index("jpg"))
    data[chunk.data_page_offset:chunk.data_page_offset + 16] = b"\xff" * 16  # page header of the third group
    (tmp_path / "in.parquet").write_bytes(bytes(data))
    written, damage = write_table_shard(url, kept_of(source, [1, 20, 40]), tmp_path / "out.parquet")
    assert written == 0 and damage.missing == 1 and damage.mismatched == 0
    assert damage.source_error.startswith("damaged after 32 rows: ") and not damage.source_error.endswith("NoneType")
    assert "source damaged: damaged after 32 rows" in damage.describe()


@pytest.mark.parametrize("extra, groups", [(0, [1, 1, 1, 1]), (1, [2, 2])])
def test_parquet_row_groups_gather_about_row_group_bytes(tmp_path, monkeypatch, extra, groups):
    from vlmaudit.filter import table_shards

    source = rows(64)  # one kept row per record batch of 16: four one-row batches of the same size
    one_row = source.to_batches()[0].take(pa.array([0], pa.int64())).nbytes
    monkeypatch.setattr(table_shards, "ROW_GROUP_BYTES", one_row + extra)
    url = write_parquet(tmp_path / "in.parquet", source)
    assert table_shards.write_table_shard(url, kept_of(source, [0, 16, 32, 48]), tmp_path / "out.parquet")[0] == 4
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == groups
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == source.take([0, 16, 32, 48]).to_pylist()


def test_a_damaged_source_with_no_kept_rows_writes_nothing_and_counts_no_damage(tmp_path):
    from vlmaudit.filter.matching import Kept
    from vlmaudit.filter.table_shards import write_table_shard

    (tmp_path / "in.parquet").write_bytes(b"PAR1" + b"x" * 100 + b"PAR1")
    written, damage = write_table_shard(str(tmp_path / "in.parquet"), Kept({}), tmp_path / "out.parquet")
    assert written == 0 and not damage and (damage.mismatched, damage.missing) == (0, 0)
    assert damage.source_error.startswith(("OSError: ", "ArrowInvalid: ")) and damage.describe() == ""
    assert not (tmp_path / "out.parquet").exists()


def test_a_long_source_error_is_cut_to_300_characters(tmp_path, monkeypatch):
    from vlmaudit.filter import table_shards

    def damaged(stream, url):
        raise ValueError("v" * 400)

    url = write_parquet(tmp_path / "in.parquet", rows(4))
    monkeypatch.setattr(table_shards, "open_table", damaged)
    written, damage = table_shards.write_table_shard(url, kept_of(rows(4), [1]), tmp_path / "out.parquet")
    assert (written, damage.missing) == (0, 1)
    assert damage.source_error == "ValueError: " + "v" * 288 and len(damage.source_error) == 300


def test_an_error_inside_the_table_writer_propagates_and_closes_the_file(tmp_path):
    from vlmaudit.filter.table_shards import _TableWriter

    writer = _TableWriter(tmp_path / "out.parquet", SCHEMA, "in.parquet")
    with pytest.raises(OSError, match="disk full"), writer:
        raise OSError("disk full")
    assert writer.handle.closed
