"""Report readers on S3 (moto's real S3 API) see exactly the files a local disk shows, dot-named
ones included, with one listing of the report prefix."""

import json
from collections import Counter

from conftest import run_cli, s3fs_client, scan_args


def count_s3_calls(monkeypatch) -> Counter:
    import s3fs

    calls, real = Counter(), s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        calls[getattr(method, "__name__", method)] += 1
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    return calls


def test_dot_named_report_files_count_on_s3_as_locally(tmp_path, s3, tiny_clip, demo_shards, monkeypatch):
    endpoint, bucket = s3
    dotted = demo_shards[0].rename(demo_shards[0].with_name(".dot.tar"))
    local = tmp_path / "local"
    assert run_cli(*scan_args([dotted, *demo_shards[1:]], local, tiny_clip)).exit_code == 0
    assert (local / ".dot.parquet").is_file() and (local / ".dot.stats.json").is_file()
    fs = s3fs_client(endpoint)
    for path in local.iterdir():
        fs.put(str(path), f"{bucket}/reports/{path.name}")
    url = f"s3://{bucket}/reports"

    mine = json.loads(run_cli("report", local, "--json").output)
    calls = count_s3_calls(monkeypatch)
    theirs = run_cli("report", url, "--json")
    assert theirs.exit_code == 0, theirs.output
    theirs = json.loads(theirs.output)
    assert theirs["overview"]["samples"] == mine["overview"]["samples"] == 21
    assert theirs["overview"]["shards"] == mine["overview"]["shards"] == 3
    assert theirs["categories"] == mine["categories"]
    listings = calls["list_objects_v2"] + calls["list_objects"]
    assert listings == 1, dict(calls)
    assert calls["head_object"] == 0, dict(calls)

    gate = [f"{c['id']}=0" for c in mine["categories"] if c.get("flagged")][:1]
    if gate:
        assert run_cli("report", local, "--fail-above", gate[0]).exit_code == 3
        assert run_cli("report", url, "--fail-above", gate[0]).exit_code == 3
