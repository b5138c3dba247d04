"""Nothing is written outside the output (issue 26 item 3): temporary and probe files have unique
names and are created exclusively; outputs are renamed into place, so a symlink planted at any name
a command writes is replaced and its target never changes; DuckDB spills into a private mkdtemp."""

import os
import stat
import tempfile

import pytest

from conftest import run_cli


def plant(directory, names, victim):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).symlink_to(victim)


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


def test_write_probes_never_follow_a_planted_symlink(tmp_path, victim):
    from vlmaudit.scan.runinfo import prepare_out_dir
    from vlmaudit.storage.localfiles import check_writable_dir

    out = tmp_path / "out"
    plant(out, [f".write-test-{os.getpid()}", ".write-test", ".write-test.tmp"], victim)
    prepare_out_dir(out)
    check_writable_dir(out)
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in out.iterdir() if not p.is_symlink()) == []


def test_duckdb_spills_into_a_private_directory_removed_afterwards(tmp_path):
    from vlmaudit.report import engine

    with engine.session([], "test") as con:
        spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        parent = os.path.dirname(spill)
        assert os.path.basename(parent) != f"vlmaudit-duckdb-{os.getpid()}"  # not a name others can predict
        assert os.path.dirname(parent) == tempfile.gettempdir()
        assert stat.S_IMODE(os.lstat(parent).st_mode) == 0o700 and not os.path.islink(parent)
    assert not os.path.exists(parent)


def test_outputs_replace_planted_symlinks_and_never_write_their_targets(tmp_path, victim, scanned):
    report_out = tmp_path / "r"
    plant(report_out, ["report.html", "card.md", "card.json"], victim)
    assert run_cli("report", scanned, "--format", "html", "--output", report_out / "report.html").exit_code == 0
    assert run_cli("report", scanned, "--format", "card", "--out", report_out / "card").exit_code == 0
    sheet = tmp_path / "sheet"
    plant(sheet, ["review.csv", "review.parquet", "design.json", "review.html"], victim)
    result = run_cli("sample", scanned, "--size", 10, "--out", sheet, "--overwrite")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    for path in [*report_out.iterdir(), *sheet.iterdir()]:
        assert not path.is_symlink() and path.stat().st_size > 0, path
    assert not [p for p in [*report_out.iterdir(), *sheet.iterdir()] if p.name.startswith(".")]


def test_filter_write_shards_never_writes_through_old_partial_names(tmp_path, victim, scanned):
    out, kept = tmp_path / "lists", tmp_path / "kept"
    names = [n for shard in ("00000", "00001") for n in (f".{shard}.tar.partial", f".{shard}.parquet.partial",
                                                          f".{shard}.tar.{os.getpid()}.partial",
                                                          f".{shard}.parquet.{os.getpid()}.partial")]
    plant(kept, names, victim)
    result = run_cli("filter", scanned, "--policy", "permissive", "--out", out, "--write-shards", kept)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious" and (kept / "00000.tar").is_file()
