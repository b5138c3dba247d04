"""scan --out s3://..., shards read from s3://, and the report readers, against moto's real S3 API."""

import json

import pyarrow.parquet as pq

from conftest import run_cli, s3fs_client, scan_args
from s3_server import CREDENTIALS

STABLE = ["shard", "key", "sample_index", "status", "image_scores", "caption_scores", "flagged"]


def test_scan_reads_shards_from_s3_and_writes_reports_to_s3(tmp_path, s3, tiny_clip, demo_shards):
    from vlmaudit.report.reading import read_report_meta, read_stats, report_files

    endpoint, bucket = s3
    fs = s3fs_client(endpoint)
    for shard in demo_shards:
        fs.put(str(shard), f"{bucket}/shards/{shard.name}")
    local = tmp_path / "local"
    assert run_cli(*scan_args(demo_shards, local, tiny_clip)).exit_code == 0
    url = f"s3://{bucket}/reports"
    result = run_cli(*scan_args([f"s3://{bucket}/shards/*.tar"], url, tiny_clip))
    assert result.exit_code == 0, result.output

    objects = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/reports"))
    names = sorted(s.name[: -len(".tar")] for s in demo_shards)
    assert objects == sorted([f"{n}{suffix}" for n in names for suffix in (".parquet", ".stats.json", ".summary.json",
                                                                           ".hist.bin")] + ["run.json"])
    files = report_files(url)
    assert [str(f) for f in files] == [f"{url}/{n}.parquet" for n in names]
    assert read_report_meta(files)["concepts"]
    stats = read_stats(url)
    assert sorted(stats) == names and {s["status"] for s in stats.values()} == {"complete"}
    assert all(s["url"].startswith(f"s3://{bucket}/shards/") for s in stats.values())
    import pyarrow as pa

    remote_rows = pa.concat_tables(pq.read_table(fs.open(f"{bucket}/reports/{n}.parquet"), columns=STABLE)
                                   for n in names)
    local_rows = pq.read_table(sorted(local.glob("*.parquet")), columns=STABLE)
    assert remote_rows.to_pylist() == local_rows.to_pylist()
    assert sum(s["rows"] for s in stats.values()) == remote_rows.num_rows == 21

    again = run_cli(*scan_args([f"s3://{bucket}/shards/"], url, tiny_clip))
    assert again.exit_code == 0 and "3 of 3 shards already done" in again.output


def test_credentials_never_reach_run_json_or_reports(s3, tiny_clip, demo_shards):
    endpoint, bucket = s3
    fs = s3fs_client(endpoint)
    fs.put(str(demo_shards[0]), f"{bucket}/in/a.tar")
    key, secret = CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    shard = f"s3://{key}:{secret}@{bucket}/in/a.tar"  # credentials typed into a URL: refused
    refused = run_cli(*scan_args([shard], f"s3://{bucket}/out", tiny_clip))
    assert refused.exit_code == 2 and "credentials in a URL are not accepted" in refused.output
    assert secret not in refused.output and key not in refused.output
    result = run_cli(*scan_args([f"s3://{bucket}/in/a.tar"], f"s3://{bucket}/out", tiny_clip))
    assert result.exit_code == 0 and secret not in result.output
    for path in fs.find(f"{bucket}/out"):
        data = fs.cat(path)
        assert secret.encode() not in data and key.encode() not in data, path
    run = json.loads(fs.cat(f"{bucket}/out/run.json"))
    assert run["config"]["shards"] == [f"s3://{bucket}/in/a.tar"]


def test_unwritable_bucket_is_one_line(s3, tiny_clip, demo_shards):
    result = run_cli(*scan_args(demo_shards[:1], "s3://no-such-bucket-vlmaudit/out", tiny_clip))
    assert result.exit_code == 2
    assert result.output.startswith("error: --out s3://no-such-bucket-vlmaudit/out: cannot write there")
    assert "Traceback" not in result.output
