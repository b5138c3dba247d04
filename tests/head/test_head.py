"""The safety head: training on a learnable synthetic task, the data layouts, scanning with it,
and refusing a head trained for another taxonomy."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from vlmaudit.rulebook.load import load_rules


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from vlmaudit.demo.build import build_shape_dataset

    return build_shape_dataset(tmp_path_factory.mktemp("shapes"), load_rules().taxonomy, per_class=40)


@pytest.fixture(scope="module")
def trained_head(tmp_path_factory, shapes, tiny_clip):
    labelled, safe = shapes
    out = tmp_path_factory.mktemp("heads") / "head"
    result = run_cli("train-head", "--data", labelled, "--safe-images", safe, "--vision-model", tiny_clip,
                     "--out", out, "--epochs", "25", "--dim", "64", "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.end_to_end
def test_train_head_learns_a_synthetic_task_to_90_percent_held_out(trained_head):
    metrics = json.loads((trained_head / "metrics.json").read_text())
    assert metrics["samples"] == 40  # 20% of 5 classes x 40 images, stratified
    assert metrics["category_accuracy"] >= 0.9 and metrics["concept_accuracy"] >= 0.9
    assert set(metrics["per_category"]) == set(load_rules().taxonomy.category_ids) | {"safe"}
    assert metrics["per_category"]["hate"]["support"] == 8
    config = json.loads((trained_head / "head_config.json").read_text())
    assert config["concepts"] == load_rules().taxonomy.concept_ids and config["tokens"] == 16
    assert (trained_head / "head.safetensors").is_file()
    assert not list(trained_head.glob("*.bin")) and not list(trained_head.glob("*.pt"))


@pytest.mark.end_to_end
def test_feature_cache_is_reused_by_a_second_run(tmp_path, shapes, tiny_clip, trained_head):
    labelled, safe = shapes
    result = run_cli("train-head", "--data", labelled, "--safe-images", safe, "--vision-model", tiny_clip,
                     "--out", tmp_path / "again", "--epochs", "1", "--dim", "64",
                     "--cache-dir", trained_head / "feature-cache")
    assert result.exit_code == 0, result.output
    assert "reusing the cache" in result.output


@pytest.mark.end_to_end
def test_parquet_layout_like_the_hf_export_trains(tmp_path, shapes, tiny_clip):
    import csv

    labelled, safe = shapes
    rows = list(csv.DictReader(open(labelled / "labels.csv")))[::8]
    table = pa.table({
        "image": [{"bytes": (labelled / r["image"]).read_bytes(), "path": r["image"]} for r in rows],
        "category": [r["category"] for r in rows], "unsafe_concept": [r["unsafe_concept"] for r in rows],
    })
    pq.write_table(table, tmp_path / "train.parquet")
    result = run_cli("train-head", "--data", tmp_path / "train.parquet", "--safe-images", safe, "--vision-model",
                     tiny_clip, "--out", tmp_path / "head", "--epochs", "1", "--dim", "64", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "head" / "metrics.json").read_text())["train_samples"] > 0


def test_unknown_concept_in_the_labels_is_one_clear_line(tmp_path, shapes, tiny_clip):
    labelled, _ = shapes
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").write_bytes((labelled / "swastika-0000.png").read_bytes())
    (tmp_path / "data" / "labels.csv").write_text("image,category,unsafe_concept\na.png,Hate,Unicorns\n")
    result = run_cli("train-head", "--data", tmp_path / "data", "--vision-model", tiny_clip, "--out", tmp_path / "h")
    assert result.exit_code == 2 and "unknown unsafe_concept 'Unicorns'" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["../outside.png", "/etc/hostname", "sub/../../outside.png"])
def test_a_label_file_never_reaches_an_image_outside_the_data_directory(tmp_path, name):
    """Planted: the containment check dropped from the CSV / Parquet loaders train-head and distill use."""

    from vlmaudit.errors import UserError
    from vlmaudit.head.data import load_examples

    taxonomy = load_rules().taxonomy
    (tmp_path / "outside.png").write_bytes(b"x")
    for kind in ("csv", "parquet"):
        data = tmp_path / kind
        data.mkdir()
        if kind == "csv":
            (data / "labels.csv").write_text(f"image,category,unsafe_concept\n{name},Hate,swastika\n")
        else:
            pq.write_table(pa.table({"image": [{"bytes": None, "path": name}], "unsafe_concept": ["swastika"]}),
                           data / "train.parquet")
        with pytest.raises(UserError, match="leaves the data directory"):
            load_examples(data, taxonomy)


@pytest.mark.end_to_end
def test_scan_with_the_head_backend_is_readable_by_report(tmp_path, trained_head, demo_shards):
    out = tmp_path / "reports"
    result = run_cli("scan", *demo_shards, "--out", out, "--backend", "head", "--head", trained_head, "-q", "--workers", "0")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(sorted(out.glob("*.parquet"))).to_pylist()
    assert len(rows) == 21 and {r["decided_by"] for r in rows} == {"head"}
    assert all(r["image_top_score"] == pytest.approx(r["image_unsafe"]) for r in rows)
    assert all(r["caption_scores"] is None for r in rows)  # the head is an image classifier
    report = run_cli("report", out, "--json")
    assert report.exit_code == 0 and json.loads(report.output)["overview"]["backend"] == "head"


@pytest.mark.end_to_end
def test_a_head_for_another_taxonomy_is_refused_before_reading_shards(tmp_path, trained_head, demo_shards):
    import shutil

    from vlmaudit.rulebook.load import shipped_rules_dir

    rules = tmp_path / "rules"
    shutil.copytree(shipped_rules_dir(), rules)
    text = (rules / "taxonomy.yaml").read_text()
    (rules / "taxonomy.yaml").write_text(text.replace("id: swastika", "id: swastika-symbol", 1))
    out = tmp_path / "reports"
    result = run_cli("scan", *demo_shards, "--out", out, "--backend", "head", "--head", trained_head,
                     "--rules", rules, "-q", "--workers", "0")
    assert result.exit_code == 2 and "trained for taxonomy" in result.output
    assert not list(out.glob("*.parquet"))


@pytest.mark.end_to_end
def test_train_head_on_one_labelled_row_is_one_error_line_and_two_rows_train(tmp_path, tiny_clip):
    """Planted: the empty validation split indexed as a float array (IndexError traceback)."""
    import pyarrow as pa

    from conftest import png

    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    pq.write_table(pa.table({"image": [png(0)], "category": ["Hate"], "unsafe_concept": ["Swastika"]}), one)
    result = run_cli("train-head", "--data", one, "--vision-model", tiny_clip, "--out", tmp_path / "h1", "-q")
    assert result.exit_code == 2 and "needs at least 2" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    # two classes of one image each: nothing to hold out, the head still trains
    pq.write_table(pa.table({"image": [png(0), png(1)], "category": ["Hate", None], "unsafe_concept": ["Swastika", None]}),
                   two)
    result = run_cli("train-head", "--data", two, "--vision-model", tiny_clip, "--out", tmp_path / "h2", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "h2" / "metrics.json").read_text())["samples"] == 0


def test_a_saved_head_loads_with_its_own_shape_and_scores_the_same(tmp_path):
    import torch

    from vlmaudit.head.model import SafetyHead, load_head, read_head_config, save_head

    torch.manual_seed(0)
    head = SafetyHead(6, 3, 2, dim=8, tokens=3, heads=2).eval()
    out = tmp_path / "new" / "head"  # made as needed
    config = {"vision_dim": 6, "concepts": ["a", "b", "c"], "categories": ["x", "y"], "dim": 8, "tokens": 3, "heads": 2}
    save_head(head, out, config)
    assert sorted(p.name for p in out.iterdir()) == ["head.safetensors", "head_config.json"]
    assert read_head_config(out) == {"format": "vlmaudit-safety-head", **config}
    save_head(head, out, config)  # a second training run into the same --out replaces the head
    loaded = load_head(out, read_head_config(out))
    patches = torch.randn(4, 9, 6)
    with torch.inference_mode():
        for mine, theirs in zip(head(patches), loaded(patches)):
            assert torch.allclose(mine, theirs)


def test_a_directory_that_holds_no_head_is_one_clear_error(tmp_path):
    from vlmaudit.errors import ModelError
    from vlmaudit.head.model import read_head_config

    with pytest.raises(ModelError, match=r"^--head .*: no readable head_config.json \(.*No such file.*\); "
                                         r"train one with `vlmaudit train-head`$"):
        read_head_config(tmp_path)
    (tmp_path / "head_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="no readable head_config.json"):
        read_head_config(tmp_path)
    not_ours = f"^--head {tmp_path}: not a safety head written by `vlmaudit train-head`$"
    (tmp_path / "head_config.json").write_text(json.dumps({"format": "other"}))
    (tmp_path / "head.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=not_ours):
        read_head_config(tmp_path)
    (tmp_path / "head_config.json").write_text(json.dumps({"format": "vlmaudit-safety-head"}))
    (tmp_path / "head.safetensors").unlink()
    with pytest.raises(ModelError, match=not_ours):
        read_head_config(tmp_path)
