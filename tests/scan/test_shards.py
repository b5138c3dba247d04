import pytest

from conftest import touch_files
from vlmaudit.errors import ShardSpecError
from vlmaudit.scan.shards import expand_shard_specs, output_names, select_partition, shard_stem


def test_brace_range_glob_and_directory(tmp_path):
    touch_files(tmp_path, "a-000.tar", "a-001.tar", "a-002.tar", "sub/b.tar.gz", "sub/c.tgz", "sub/notes.txt")
    assert expand_shard_specs([f"{tmp_path}/a-{{000..001}}.tar"]) == [f"{tmp_path}/a-000.tar", f"{tmp_path}/a-001.tar"]
    assert expand_shard_specs([f"{tmp_path}/a-*.tar"])[-1] == f"{tmp_path}/a-002.tar"
    assert expand_shard_specs([str(tmp_path / "sub")]) == [f"{tmp_path}/sub/b.tar.gz", f"{tmp_path}/sub/c.tgz"]


def test_duplicates_removed_and_remote_specs_kept(tmp_path):
    touch_files(tmp_path, "x.tar")
    specs = [str(tmp_path / "x.tar"), str(tmp_path / "x.tar"), "s3://bucket/y.tar", "pipe:cat z.tar"]
    assert expand_shard_specs(specs) == [str(tmp_path / "x.tar"), "s3://bucket/y.tar", "pipe:cat z.tar"]


@pytest.mark.parametrize("spec, message", [
    ("{tmp}/missing.tar", "no such file"),
    ("{tmp}/none-*.tar", "no shard files match"),
    ("{tmp}/empty", "holds no .tar"),
])
def test_bad_specs_name_the_problem(tmp_path, spec, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardSpecError, match=message):
        expand_shard_specs([spec.format(tmp=tmp_path)])


def test_partitions_cover_every_shard_exactly_once():
    shards = [f"s{i}.tar" for i in range(23)]
    parts = [select_partition(shards, 5, i) for i in range(5)]
    assert sorted(s for part in parts for s in part) == sorted(shards)
    assert parts == [select_partition(shards, 5, i) for i in range(5)]  # deterministic
    with pytest.raises(ShardSpecError):
        select_partition(shards, 5, 5)


def test_output_names_are_stems_disambiguated_on_collision():
    names = output_names(["/a/00000.tar", "/b/00000.tar.gz", "/b/00001.tgz", "pipe:curl -s http://h/x/7.tar"])
    assert names["/b/00001.tgz"] == "00001"
    assert names["/a/00000.tar"].startswith("00000-") and names["/a/00000.tar"] != names["/b/00000.tar.gz"]
    assert shard_stem("pipe:curl -s http://h/x/7.tar") == "7"
