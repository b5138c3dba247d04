"""Shard specs and the run plan (scan/shards.py, scan/runinfo.py) on small trees: expansion order,
refusal messages, partitions at their bounds, report names, resume checks and the run record."""

import hashlib
import json
import os

import fsspec
import pytest

from conftest import touch_files
from vlmaudit.errors import ResumeConflict, ShardSpecError, UserError
from vlmaudit.rulebook.load import load_rules
from vlmaudit.scan import runinfo as R
from vlmaudit.scan.runinfo import (IDENTITY, PACKAGES, check_resume, package_versions, plan_jobs, prepare_out_dir,
                                   refuse_credentials, run_record, split_done, write_run_record)
from vlmaudit.scan.shards import (expand_shard_specs, is_remote, output_names, select_partition, shard_stem)
from vlmaudit.scan.worker import ShardJob


def touch(root, *names):
    return touch_files(root, *names, data=b"x")


def refusal(specs, **kw) -> str:
    with pytest.raises(ShardSpecError) as info:
        expand_shard_specs(specs, **kw)
    return str(info.value)


@pytest.mark.parametrize("spec, remote", [("pipe:cat x", True), ("s3://b/x.tar", True), ("/x.tar", False),
                                          ("x.tar", False), ("folder:/x#0:1:a", False)])
def test_is_remote(spec, remote):
    assert is_remote(spec) is remote


def test_braces_globs_and_directories_expand_in_order_without_duplicates(tmp_path):
    touch(tmp_path, "a/0.tar", "a/1.tar", "a/2.TGZ", "a/3.tar.gz", "a/n.txt", "a/s/4.arrow", "b/9.parquet", "b/9.tar")
    got = expand_shard_specs([f"{tmp_path}/a/{{1,0}}.tar", f"{tmp_path}/a", f"{tmp_path}/b/*", f"{tmp_path}/a/1.tar"])
    assert got == [f"{tmp_path}/a/1.tar", f"{tmp_path}/a/0.tar", f"{tmp_path}/a/2.TGZ", f"{tmp_path}/a/3.tar.gz",
                   f"{tmp_path}/a/s/4.arrow", f"{tmp_path}/b/9.tar"]


def test_a_parquet_beside_a_tar_of_another_suffix_is_a_sidecar(tmp_path):
    touch(tmp_path, "x.tgz", "x.parquet", "y.tar.gz", "y.parquet", "z.parquet", "w.tar", "w2.parquet")
    assert expand_shard_specs([str(tmp_path)]) == [f"{tmp_path}/w.tar", f"{tmp_path}/w2.parquet", f"{tmp_path}/x.tgz",
                                                   f"{tmp_path}/y.tar.gz", f"{tmp_path}/z.parquet"]


def test_pipes_folder_shards_and_plain_urls_pass_through():
    specs = ["pipe:cat a.tar", "folder:/x#0:1:abc", "s3://b/x.tar", "http://h/{0,1}.tar"]
    assert expand_shard_specs(specs) == ["pipe:cat a.tar", "folder:/x#0:1:abc", "s3://b/x.tar", "http://h/0.tar",
                                         "http://h/1.tar"]


def test_a_directory_of_loose_images_becomes_folder_shards(tmp_path):
    touch(tmp_path, *[f"{i}.jpg" for i in range(5)])
    assert len(expand_shard_specs([str(tmp_path)], folder_shard_size=2)) == 3
    assert len(expand_shard_specs([str(tmp_path)])) == 1  # the default size holds them all


def test_refusals_name_the_spec(tmp_path):
    assert refusal([]) == "no shards given"
    assert refusal([f"{tmp_path}/*.tar"]) == f"{tmp_path}/*.tar: no shard files match this pattern"
    assert refusal([f"{tmp_path}/gone.tar"]) == f"{tmp_path}/gone.tar: no such file or directory"
    touch(tmp_path, "d/notes.txt")
    assert refusal([f"{tmp_path}/d"]) == (f"{tmp_path}/d: directory holds no .tar/.tar.gz/.tgz/.parquet/.arrow shards "
                                          "and no images (jpg, png, webp, ...)")


def test_an_unreadable_file_or_subdirectory_is_named(tmp_path, monkeypatch):
    touch(tmp_path, "a.tar", "d/x.tar", "d/s/y.tar", "d/t/z.tar")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert refusal([f"{tmp_path}/a.tar"]) == f"{tmp_path}/a.tar: not readable (permission denied)"
    monkeypatch.undo()
    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        onerror(PermissionError(13, "Permission denied", f"{top}/s"))
        onerror(PermissionError(13, "Permission denied", f"{top}/t"))
        yield from real_walk(top, **kw)

    monkeypatch.setattr(os, "walk", walk)
    assert refusal([f"{tmp_path}/d"]) == (f"{tmp_path}/d: cannot read {tmp_path}/d/s (Permission denied) and 1 more; "
                                          "fix its permissions or name the shards to scan")


def test_remote_globs_and_prefixes_on_an_fsspec_filesystem():
    fs = fsspec.filesystem("memory")
    for name in ("r/a.tar", "r/b.TAR", "r/b.parquet", "r/c.parquet", "r/sub/d.tar", "r/n.txt"):
        fs.pipe(f"/{name}", b"x")
    try:
        assert expand_shard_specs(["memory://r/*.tar"]) == ["memory:///r/a.tar"]
        assert expand_shard_specs(["memory://r/"]) == ["memory:///r/a.tar", "memory:///r/b.TAR",
                                                       "memory:///r/c.parquet", "memory:///r/sub/d.tar"]
        assert refusal(["memory://r/*.zip"]) == "memory://r/*.zip: no shard files match this pattern"
    finally:
        fs.rm("/r", recursive=True)


def test_a_remote_listing_error_is_one_line(monkeypatch):
    import fsspec.implementations.memory as memory

    def broken(self, path, **kw):
        raise OSError("listing refused")

    monkeypatch.setattr(memory.MemoryFileSystem, "glob", broken)
    assert refusal(["memory://r/*.tar"]) == "memory://r/*.tar: cannot list (OSError: listing refused)"


@pytest.mark.parametrize("count, index, expected", [(1, 0, [0, 1, 2, 3, 4]), (2, 0, [0, 2, 4]), (2, 1, [1, 3]),
                                                    (5, 4, [4]), (7, 6, [])])
def test_partitions_are_round_robin(count, index, expected):
    assert select_partition(list(range(5)), count, index) == expected


@pytest.mark.parametrize("count, index", [(0, 0), (2, 2), (2, -1), (-1, 0)])
def test_partitions_out_of_range_are_refused(count, index):
    with pytest.raises(ShardSpecError) as info:
        select_partition([1], count, index)
    assert str(info.value) == f"--shard-index must be in [0, {count}), got {index}"


@pytest.mark.parametrize("spec, stem", [
    ("/d/00001.tar", "00001"), ("/d/a.TAR.GZ", "a"), ("x.tgz", "x"), ("/d/t.parquet", "t"), ("/d/.tar", "shard"),
    ("/d/dir/", "dir"), ("s3://b/p/x.arrow", "x"), ("pipe:curl -s http://h/a/part-3.tar | zcat", "zcat"),
    ("pipe:cat /d/x.tar", "x"), ("/", "shard"), ("/d/name", "name"), ("folder:/d/pics#2:10:abc", "pics-00002"),
])
def test_shard_stems(spec, stem):
    assert shard_stem(spec) == stem


def test_output_names_are_stems_made_safe_and_disambiguated_by_a_hash():
    specs = ["/a/x.tar", "/b/x.tar", "/c/y z.tar", "/d/é.tar"]
    names = output_names(specs)
    assert names["/c/y z.tar"] == "z" and names["/d/é.tar"] == "_"
    assert names["/a/x.tar"] == "x-" + hashlib.sha1(b"/a/x.tar").hexdigest()[:8]
    assert names["/b/x.tar"] == "x-" + hashlib.sha1(b"/b/x.tar").hexdigest()[:8]
    assert output_names(["/a/x.tar"]) == {"/a/x.tar": "x"}


# ---- runinfo -------------------------------------------------------------------------------------

def test_plan_jobs_makes_absolute_local_paths_and_names_from_the_whole_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path, "a.tar", "b.tar", "c.tar")
    jobs, names = plan_jobs(["*.tar", "s3://b/d.tar", "pipe:cat e.tar"], num_shards=2, shard_index=1)
    assert names == ["a", "b", "c", "d", "e"]
    assert jobs == [ShardJob(f"{tmp_path}/b.tar", "b"), ShardJob("s3://b/d.tar", "d")]
    jobs, _ = plan_jobs(["pipe:cat e.tar"])
    assert jobs == [ShardJob("pipe:cat e.tar", "e")]


def test_plan_jobs_refuses_credentials_in_a_spec():
    with pytest.raises(UserError) as info:
        plan_jobs(["s3://key:secret@b/x.tar"])
    assert str(info.value) == ("shard s3://b/x.tar: credentials in a URL are not accepted (they would be written to "
                               "run.json and the stats); use environment variables or the cloud config")
    refuse_credentials("s3://b/x.tar", "shard")


def test_split_done_and_a_changed_folder(tmp_path):
    jobs = [ShardJob("/x/a.tar", "a"), ShardJob("/x/b.tar", "b")]
    out = touch(tmp_path / "out", "a.parquet")
    (out / "a.stats.json").write_text(json.dumps({"status": "complete"}))
    assert split_done(jobs, out, overwrite=False) == ([jobs[1]], [jobs[0]])
    assert split_done(jobs, out, overwrite=True) == (jobs, [])
    folder = ShardJob("folder:/p/pics#0:5:new", "pics-00000")
    touch(out, "pics-00000.parquet")
    (out / "pics-00000.stats.json").write_text(json.dumps({"status": "complete", "url": "folder:/p/pics#0:5:new"}))
    assert split_done([folder], out, False) == ([], [folder])
    (out / "pics-00000.stats.json").write_text(json.dumps({"status": "complete", "url": "folder:/p/pics#0:5:old"}))
    with pytest.raises(ResumeConflict) as info:
        split_done([folder], out, False)
    assert str(info.value) == (f"{out}: pics-00000 was scanned from other files or another --folder-shard-size "
                               "(recorded 'folder:/p/pics#0:5:old', now 'folder:/p/pics#0:5:new'); use another --out, "
                               "or --overwrite to rescan")


def test_prepare_out_dir_probes_and_leaves_nothing(tmp_path):
    prepare_out_dir(tmp_path / "new" / "out")
    assert list((tmp_path / "new" / "out").iterdir()) == []
    prepare_out_dir("memory://probe-out")
    assert fsspec.filesystem("memory").find("/probe-out") == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError) as info:
        prepare_out_dir(tmp_path / "file" / "out")
    assert str(info.value) == f"--out {tmp_path / 'file' / 'out'}: cannot write there (Not a directory)"
    with pytest.raises(UserError, match="^--out s3://b/o: credentials in a URL are not accepted"):
        prepare_out_dir("s3://k:s@b/o")


def test_package_versions_name_every_package():
    versions = package_versions()
    assert list(versions) == ["python", *PACKAGES] and versions["numpy"] == __import__("numpy").__version__
    assert PACKAGES == ("vlmaudit", "torch", "transformers", "pyarrow", "webdataset", "pillow", "numpy", "tokenizers")


def test_a_missing_package_is_none(monkeypatch):
    monkeypatch.setattr(R, "PACKAGES", ("surely-not-installed-pkg",))
    assert package_versions()["surely-not-installed-pkg"] is None


def test_the_run_record(monkeypatch):
    rules = load_rules()
    monkeypatch.setattr("sys.argv", ["vlmaudit", "scan", "s3://k:s@b/x.tar"])
    info = {"backend": "clip", "model": "m", "revision": "r", "device": "cpu", "precision": "fp32", "extra": 1,
            "coverage": {"level": "concept"}}
    record = run_record(info, rules, {"batch_size": 2}, ["a", "b"])
    assert record["planned_shards"] == ["a", "b"] and record["model_info"] is info
    assert {k: record[k] for k in ("backend", "model", "revision", "device", "precision")} == {
        "backend": "clip", "model": "m", "revision": "r", "device": "cpu", "precision": "fp32"}
    assert record["coverage"] == {"level": "concept"} and record["command"] == ["vlmaudit", "scan", "s3://b/x.tar"]
    assert record["taxonomy_version"] == rules.taxonomy.tag and record["rules_dir"] == str(rules.directory)
    assert run_record({}, rules, {}, [])["coverage"] is None and record["created_at"] > 0


def test_resume_checks_only_the_identity_keys(tmp_path):
    record = {k: "v" for k in IDENTITY} | {"device": "cpu"}
    write_run_record(tmp_path, record)
    assert json.loads((tmp_path / "run.json").read_text()) == record
    check_resume(tmp_path, {**record, "device": "cuda"}, overwrite=False)
    with pytest.raises(ResumeConflict) as info:
        check_resume(tmp_path, {**record, "model": "w", "revision": "x"}, overwrite=False)
    assert str(info.value) == (f"{tmp_path} holds a run with a different model, revision; use another --out, or "
                               "--overwrite to rescan everything with the new settings")
    check_resume(tmp_path, {**record, "model": "w"}, overwrite=True)
    check_resume(tmp_path, {**record, "model": "w"}, overwrite=False, keys=("backend",))
    (tmp_path / "run.json").write_text("[1]")
    check_resume(tmp_path, {}, overwrite=False)


def test_plan_jobs_keeps_folder_shard_urls(tmp_path):
    touch(tmp_path / "pics", "a.jpg", "b.jpg", "c.jpg")
    jobs, names = plan_jobs([str(tmp_path / "pics")], folder_shard_size=2)
    assert [job.url.startswith(f"folder:{tmp_path}/pics#") for job in jobs] == [True, True]
    assert names == ["pics-00000", "pics-00001"] == [job.name for job in jobs]
