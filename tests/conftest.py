import io
import os
import tarfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP saved with save_pretrained; loaded through the real from_pretrained path."""
    from vlmaudit.demo.checkpoints import build_random_clip

    return build_random_clip(tmp_path_factory.mktemp("models") / "tiny-clip", size="tiny")


class NoInputs:
    """A preprocessor stand-in for tests of the shard reader: no model inputs at all."""

    draft_size = None

    def prepare(self, images, captions):
        return {}


def write_tar(path: Path, members: list[tuple[str, bytes]], gz: bool = False) -> Path:
    """Write members in exactly this order (for layouts TarWriter would not produce)."""
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def write_shard(path: Path, samples: list[dict]) -> Path:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


@pytest.fixture
def demo_shards(tmp_path) -> list[Path]:
    from vlmaudit.demo.build import build_demo_shards

    return build_demo_shards(tmp_path / "shards", shards=3, per_shard=7)


def run_cli(*args: str):
    from typer.testing import CliRunner

    from vlmaudit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def scanned_demo(root: Path, model, shards: int, per_shard: int) -> tuple[list[Path], Path]:
    """(demo shards, their reports): ROOT/shards scanned into ROOT/reports with MODEL."""
    from vlmaudit.demo.build import build_demo_shards

    paths = build_demo_shards(root / "shards", shards=shards, per_shard=per_shard)
    assert run_cli(*scan_args(paths, root / "reports", model)).exit_code == 0
    return paths, root / "reports"


def scan_args(shards, out, model, *extra) -> list[str]:
    """fp32 pinned: tests compare scores exactly, and auto picks bf16 on CPUs with native bf16."""
    base = ["scan", *map(str, shards), "--out", str(out), "--model", str(model), "--workers", "0", "-q"]
    return base + ([] if "--precision" in extra else ["--precision", "fp32"]) + list(extra)


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory):
    """Tiny random image-text-to-text checkpoints of three families, built lazily and shared."""
    from vlmaudit.demo.vlm_checkpoints import build_random_vlm

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_random_vlm(tmp_path_factory.mktemp("vlms") / family, family)
        return built[family]

    return get


def rules_with_threshold(tmp_path: Path, value: float) -> Path:
    """A copy of the shipped rules whose every threshold is VALUE."""
    import shutil

    from vlmaudit.rulebook.load import shipped_rules_dir

    rules = tmp_path / "rules"
    shutil.copytree(shipped_rules_dir(), rules)
    (rules / "thresholds.yaml").write_text(f"default: {value}\n")
    return rules


from s3_server import s3, s3_endpoint  # noqa: E402,F401  (fixtures: a moto S3 server on 127.0.0.1)
