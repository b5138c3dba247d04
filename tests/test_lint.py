"""ruff, with the project's rules from pyproject.toml, over the package users install and these tests
(copied side by side under the config, so its per-file rules match wherever the package is installed)."""
import shutil
import subprocess
from pathlib import Path


def test_ruff_finds_nothing(tmp_path):
    import vlmaudit

    ruff = shutil.which("ruff")
    assert ruff, "ruff is in the test extra: pip install '.[test]'"
    here = Path(__file__).resolve().parent
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy(here.parent / "pyproject.toml", tmp_path / "pyproject.toml")  # CI copies it beside tests/
    shutil.copytree(Path(vlmaudit.__file__).resolve().parent, tmp_path / "vlmaudit", ignore=skip)
    shutil.copytree(here, tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "data"))
    result = subprocess.run([ruff, "check", "--no-cache", "--config", str(tmp_path / "pyproject.toml"), "vlmaudit", "tests"],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
