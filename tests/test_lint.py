"""ruff, with the project's rules from pyproject.toml, over the package users install and these tests."""
import shutil
import subprocess
from pathlib import Path


def test_ruff_finds_nothing():
    import vlmaudit

    ruff = shutil.which("ruff")
    assert ruff, "ruff is in the test extra: pip install '.[test]'"
    config = Path(__file__).resolve().parents[1] / "pyproject.toml"  # CI copies it beside tests/
    package = Path(vlmaudit.__file__).resolve().parent
    result = subprocess.run([ruff, "check", "--no-cache", "--config", str(config), str(package), str(Path(__file__).parent)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
