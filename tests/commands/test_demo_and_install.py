"""README's main-job command (`vlmaudit demo`) and, when CI asks, that the vlmaudit under test is the
installed package, not the source tree."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
from conftest import run_cli

import vlmaudit

CHECKOUT = Path(__file__).resolve().parents[2]


def test_demo_builds_scans_and_shows_the_dashboard_with_meaningless_scores_labelled(tmp_path):
    result = run_cli("demo", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    assert "MEANINGLESS" in result.output and "flagged rate per category" in result.output
    assert "vlmaudit scan 'laion-{00000..00099}.tar'" in result.output  # what to run next
    rows = pq.read_table(sorted((tmp_path / "demo" / "reports").glob("*.parquet"))).to_pylist()
    by_key = {r["key"]: r for r in rows}
    assert by_key["00002-noimage"]["status"] == "missing_image" and by_key["00002-noimage"]["caption_scores"]
    assert by_key["00002-broken"]["status"] == "decode_error" and by_key["00002-broken"]["error"]
    long_caption = by_key["00002-longcaption"]
    assert long_caption["status"] == "ok" and "caption_capped" in long_caption["notes"]
    assert len(rows) == 3 * 16 + 3


def test_demo_runs_again_into_the_same_directory(tmp_path):
    assert run_cli("demo", tmp_path / "d").exit_code == 0
    assert run_cli("demo", tmp_path / "d").exit_code == 0


def test_the_vlmaudit_command_runs_the_package_under_test_from_any_directory():
    """The console script, started from /, imports the same vlmaudit as these tests. With
    VLMAUDIT_TEST_INSTALLED=1 (set by .ci/run) that package must be the installed one: a packaging
    regression (a module missing from the wheel, rules/ not shipped) then fails CI."""
    script = shutil.which("vlmaudit")
    assert script, "no vlmaudit on PATH: install the package (pip install '.[test]')"
    probe = "import vlmaudit, sys; print(vlmaudit.__file__)"
    python = Path(script).read_text().splitlines()[0].removeprefix("#!")
    imported = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd="/", timeout=60)
    assert Path(imported.stdout.strip()).resolve() == Path(vlmaudit.__file__).resolve()
    out = subprocess.run([script, "concepts", "--json"], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    concepts = json.loads(out.stdout)["concepts"]  # read from the shipped rules/ of that package
    assert len(concepts) == 75 and concepts[0]["name"] == "Swastika"
    if os.environ.get("VLMAUDIT_TEST_INSTALLED") == "1":
        package = Path(vlmaudit.__file__).resolve()
        assert CHECKOUT not in package.parents, f"imported from the source tree: {package}"
        assert "site-packages" in package.parts
