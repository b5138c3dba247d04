"""One ReportSet per command: the report directory listed once, each Parquet footer, stats file and
run.json read once, then passed down (filter, report --format card / --policy, calibrate); and one reader for
local and remote reports: a damaged file is refused with the same message on disk and on S3."""

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_cli, s3fs_client


@pytest.fixture
def reports(scanned):
    """The shared demo scan's reports (read-only)."""
    return scanned


class Reads:
    """Spies on what the Python side reads of one report directory (DuckDB's own reads of the rows
    are not seen here): listings of the directory, Parquet footers opened per file, small JSON
    files (stats, run.json) read per file."""

    def __init__(self, monkeypatch, report_dir: Path):
        from vlmaudit.report import reading

        self.root = report_dir.resolve()
        self.listings, self.footers, self.json = 0, Counter(), Counter()
        real_scandir, real_listdir, real_file = os.scandir, os.listdir, pq.ParquetFile
        real_json = reading.read_json_file
        spy = self

        def scandir(path="."):
            spy._listed(path)
            return real_scandir(path)

        def listdir(path="."):
            spy._listed(path)
            return real_listdir(path)

        class ParquetFile(real_file):
            def __init__(self, source, *args, **kwargs):
                path = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "")
                spy._mine(path, spy.footers)
                super().__init__(source, *args, **kwargs)

        def read_json_file(path):
            spy._mine(path, spy.json)
            return real_json(path)

        monkeypatch.setattr(os, "scandir", scandir)
        monkeypatch.setattr(os, "listdir", listdir)
        monkeypatch.setattr(pq, "ParquetFile", ParquetFile)
        monkeypatch.setattr(reading, "read_json_file", read_json_file)

    def _listed(self, path) -> None:
        if not isinstance(path, int) and Path(os.fsdecode(path)).resolve() == self.root:
            self.listings += 1

    def _mine(self, path, counter: Counter) -> None:
        path = Path(os.fsdecode(path))
        if path.parent.resolve() == self.root:
            counter[path.name] += 1


def labels_for(reports: Path, out: Path) -> Path:
    keys = pq.read_table(sorted(reports.glob("*.parquet")), columns=["key"]).column("key").to_pylist()
    out.write_text("key,category,label\n" + "".join(f"{k},violence,{i % 2}\n" for i, k in enumerate(keys)))
    return out


def commands(reports: Path, tmp_path: Path) -> dict:
    return {
        "filter": ["filter", reports, "--out", tmp_path / "lists"],
        "card": ["report", reports, "--format", "card", "--output", tmp_path / "card.md"],
        "policy": ["report", reports, "--format", "json", "--policy", "strict", "--output", tmp_path / "r.json"],
        "calibrate": ["calibrate", reports, "--labels", labels_for(reports, tmp_path / "labels.csv"),
                      "--target-precision", "0.5", "--out", tmp_path / "thr.yaml"],
    }


@pytest.mark.parametrize("command", ["filter", "card", "policy", "calibrate"])
def test_a_command_lists_the_report_directory_once_and_reads_each_footer_and_stats_file_once(
        reports, tmp_path, monkeypatch, command):
    args = commands(reports, tmp_path)[command]
    parquet = sorted(p.name for p in reports.glob("*.parquet"))
    small = sorted(p.name for p in reports.glob("*.stats.json")) + ["run.json"]
    reads = Reads(monkeypatch, reports)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert len(parquet) == 3 and reads.listings == 1, reads.listings
    # calibrate reads the labelled rows with pyarrow: one more footer per file, for that one pass;
    # report --policy reads the rows (DuckDB): the lazy open checked the first footer, the rows path all
    twice = {"calibrate": parquet, "policy": parquet[:1]}.get(command, [])
    assert reads.footers == Counter({name: 2 if name in twice else 1 for name in parquet})
    assert reads.json == Counter({name: 1 for name in small})


def test_filter_passes_its_report_set_down_instead_of_reopening_the_directory(reports, tmp_path, monkeypatch):
    """run_filter, completeness.assess and write_filtered_shards take the ReportSet the command opened."""
    from vlmaudit.report.reportset import ReportSet

    opened = []
    real = ReportSet.open.__func__

    def open_(cls, location, *args, **kwargs):
        opened.append(location)
        return real(cls, location, *args, **kwargs)

    monkeypatch.setattr(ReportSet, "open", classmethod(open_))
    reads = Reads(monkeypatch, reports)
    result = run_cli("filter", reports, "--out", tmp_path / "lists", "--write-shards", tmp_path / "kept")
    assert result.exit_code == 0, result.output  # the shards are re-read from the sources their stats record
    assert opened == [reports] and reads.listings == 1
    assert len(list((tmp_path / "kept").glob("*.tar"))) == 3
    assert max(reads.json.values()) == 1
    summary = json.loads((tmp_path / "lists" / "summary.json").read_text())
    assert summary["report_dir"] == str(reports) and summary["complete"] is True


def damage_cases():
    def cut(path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def meta_not_json(path):
        from vlmaudit.schema import META_KEY

        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata({META_KEY: b"{nope"}), path)

    return [
        ("truncated parquet", lambda d: cut(d / "00000.parquet")),
        ("empty parquet", lambda d: (d / "00000.parquet").write_bytes(b"")),
        ("metadata not JSON", lambda d: meta_not_json(d / "00000.parquet")),
        ("stats not JSON", lambda d: (d / "00001.stats.json").write_text("{")),
        ("stats a list", lambda d: (d / "00001.stats.json").write_text("[]")),
        ("stats 6 MB", lambda d: (d / "00001.stats.json").write_text(json.dumps({"pad": "x" * (6 << 20)}))),
        ("stats missing", lambda d: (d / "00001.stats.json").unlink()),
        ("run.json not JSON", lambda d: (d / "run.json").write_text("{{")),
        ("run.json planned not a list", lambda d: (d / "run.json").write_text('{"planned_shards": 3}')),
    ]


def test_a_damaged_report_is_refused_with_the_same_message_locally_and_on_s3(reports, tmp_path, s3):
    endpoint, bucket = s3
    fs = s3fs_client(endpoint)
    for number, (case, damage) in enumerate(damage_cases()):
        local = tmp_path / f"case{number}"
        shutil.copytree(reports, local)
        damage(local)
        url = f"s3://{bucket}/case{number}"
        for path in sorted(local.iterdir()):
            fs.put(str(path), f"{bucket}/case{number}/{path.name}")
        for command in (["report", "--format", "json"], ["filter", "--out", tmp_path / f"lists{number}"]):
            here, there = run_cli(command[0], local, *command[1:]), run_cli(command[0], url, *command[1:])
            assert here.exit_code == there.exit_code == 2, (case, here.output, there.output)
            mine = here.output.strip().replace(str(local), "DIR")
            theirs = there.output.strip().replace(url, "DIR")
            assert mine.startswith("error: DIR/") and len(mine.splitlines()) == 1, (case, mine)
            assert theirs == mine, case
