import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import decide_by_policy, run_cli, scan_args
from vlmaudit.errors import RulesError
from vlmaudit.rulebook.policy import load_policy
from vlmaudit.rulebook.load import load_rules, shipped_rules_dir

TAX = load_rules().taxonomy
IDS, CATS = TAX.concept_ids, [c.category for c in TAX.concepts]


def policy_file(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_policy(path, IDS, CATS)


def scores(**values):
    row = np.zeros((1, 75), np.float32)
    for cid, v in values.items():
        row[0, IDS.index(cid.replace("_", "-"))] = v
    return row


@pytest.mark.parametrize("modality, image, caption, fires", [
    ("image", 0.9, 0.1, True), ("image", 0.1, 0.9, False),
    ("caption", 0.1, 0.9, True), ("caption", 0.9, 0.1, False),
    ("any", 0.1, 0.9, True), ("any", 0.1, 0.1, False),
    ("both", 0.9, 0.9, True), ("both", 0.9, 0.1, False),
])
def test_each_modality_mode(tmp_path, modality, image, caption, fires):
    policy = policy_file(tmp_path, f"default: {{threshold: 0.5, modality: {modality}, action: drop}}\n")
    [(fired, action)] = decide_by_policy(policy, scores(swastika=image), scores(swastika=caption), tmp_path)
    assert (IDS.index("swastika") in fired) is fires and fired in ([], [IDS.index("swastika")])
    assert action == (2 if fires else 0)


def test_concept_overrides_category_overrides_default_and_most_severe_wins(tmp_path):
    policy = policy_file(tmp_path, """
default: {threshold: 0.5, modality: any, action: drop}
categories: {hate: {action: review, threshold: 0.7}}
concepts: {swastika: {action: keep}}
""")
    assert policy.action[IDS.index("swastika")] == 0 and policy.threshold[IDS.index("swastika")] == pytest.approx(0.7)
    assert policy.action[IDS.index("ss-runes")] == 1 and policy.action[IDS.index("torture")] == 2
    [(_, both)] = decide_by_policy(policy, scores(swastika=0.9, ss_runes=0.9), np.zeros((1, 75), np.float32), tmp_path)
    assert both == 1  # keep + review -> review
    [(_, with_drop)] = decide_by_policy(policy, scores(swastika=0.9, ss_runes=0.9, torture=0.6),
                                        np.zeros((1, 75), np.float32), tmp_path)
    assert with_drop == 2


@pytest.mark.parametrize("text, field", [
    ("default: {threshold: 0.5, modality: any, action: drop}\nextra: 1\n", "(top).extra"),
    ("default: {threshold: 0.5, modality: any, action: drop}\ncategories: {spam: {action: drop}}\n", "categories.spam"),
    ("default: {threshold: 0.5, modality: any, action: drop}\nconcepts: {nope: {action: drop}}\n", "concepts.nope"),
    ("default: {threshold: 0.5, modality: any, action: burn}\n", "default.action"),
    ("default: {threshold: 0.5, modality: eyes, action: drop}\n", "default.modality"),
    ("default: {threshold: 2, modality: any, action: drop}\n", "default.threshold"),
    ("default: {threshold: 0.5, action: drop}\n", "default.modality"),
])
def test_policy_errors_name_file_and_field(tmp_path, text, field):
    with pytest.raises(RulesError) as info:
        policy_file(tmp_path, text)
    assert str(tmp_path / "p.yaml") in str(info.value) and field in str(info.value)


@pytest.mark.parametrize("name", ["default", "strict", "permissive"])
def test_shipped_policies_load(name):
    assert load_policy(shipped_rules_dir() / "policies" / f"{name}.yaml", IDS, CATS).name == name


def read(path):
    return pq.read_table(path).to_pylist()


def test_filter_counts_add_up_reasons_and_on_failed(tmp_path, scanned):
    out = tmp_path / "f"
    result = run_cli("filter", scanned, "--policy", "strict", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    keep, drop, review = (read(out / f"{a}.parquet") for a in ("keep", "drop", "review"))
    assert len(keep) + len(drop) + len(review) == summary["samples"] == 63
    assert summary["counts"] == {"keep": len(keep), "review": len(review), "drop": len(drop)}
    failed = [r for r in keep + drop + review if r["key"] == "00002-broken"][0]  # the demo's broken JPEG
    assert failed["reasons"][0]["rule"] == "status:decode_error" and failed in review + drop
    for row in drop:
        fired = [r for r in row["reasons"] if r["rule"].startswith("concept:")]
        assert fired and all(max(r["image_score"] or 0, r["caption_score"] or 0) >= r["threshold"] for r in fired)
    out2 = tmp_path / "f2"
    run_cli("filter", scanned, "--policy", "permissive", "--out", out2, "--on-failed", "drop")
    broken = [r for r in read(out2 / "drop.parquet") if r["key"] == "00002-broken"]
    assert len(broken) == 1 and broken[0]["reasons"][0] == {"rule": "status:decode_error", "action": "drop", "modality": None,
                                                            "threshold": None, "image_score": None, "caption_score": None}


def test_rerun_is_idempotent(tmp_path, scanned):
    out = tmp_path / "f"
    run_cli("filter", scanned, "--out", out)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    run_cli("filter", scanned, "--out", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def test_write_shards_hold_exactly_the_kept_samples_byte_identical(tmp_path, scanned, demo_scan):
    import tarfile

    import webdataset as wds

    out, shards = tmp_path / "f", tmp_path / "kept"
    assert run_cli("filter", scanned, "--policy", "permissive", "--out", out, "--write-shards", shards).exit_code == 0
    keep = read(out / "keep.parquet")
    assert keep, "the permissive policy should keep some samples"
    dataset = wds.WebDataset([str(p) for p in sorted(shards.glob("*.tar"))], shardshuffle=False)
    assert sorted(s["__key__"] for s in dataset) == sorted(r["key"] for r in keep)
    originals = {}
    for shard in demo_scan.shards:
        with tarfile.open(shard) as tf:
            originals.update({m.name: tf.extractfile(m).read() for m in tf.getmembers()})
    for path in shards.glob("*.tar"):
        with tarfile.open(path) as tf:
            for member in tf.getmembers():
                assert tf.extractfile(member).read() == originals[member.name]
    per_shard = read(shards / "00000.parquet")
    assert [r["key"] for r in per_shard] == [r["key"] for r in keep if r["shard"] == "00000"]


def test_incomplete_reports_refused_unless_allowed(tmp_path, tiny_clip, demo_shards):
    out = tmp_path / "reports"
    run_cli(*scan_args(demo_shards, out, tiny_clip, "--num-shards", "3", "--shard-index", "0"))
    result = run_cli("filter", out, "--out", tmp_path / "f")
    assert result.exit_code == 2 and "2 shard(s) have no finished report: 00001 (not scanned)" in result.output
    assert not (tmp_path / "f" / "keep.parquet").exists()
    assert run_cli("filter", out, "--out", tmp_path / "f", "--allow-partial").exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["--policy", "nope"], "no policy named 'nope'"),
    (["--policy", "missing.yaml"], "missing.yaml: no such file"),
    (["--on-failed", "burn"], "--on-failed burn"),
])
def test_filter_user_errors(tmp_path, scanned, args, message):
    result = run_cli("filter", scanned, "--out", tmp_path / "f", *args)
    assert result.exit_code == 2 and message in result.output


def test_filter_never_writes_through_a_planted_symlink_and_leaves_no_temporaries(tmp_path, scanned):
    out, victim = tmp_path / "filtered", tmp_path / "victim.txt"
    victim.write_text("precious")
    out.mkdir()
    for name in (".keep.parquet.partial", ".decided.parquet.partial", ".drop.parquet.partial"):  # the old names
        (out / name).symlink_to(victim)
    result = run_cli("filter", scanned, "--out", out)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    left = sorted(p.name for p in out.iterdir() if p.name.endswith(".partial") and not p.is_symlink())
    assert left == [] and (out / "keep.parquet").is_file()
