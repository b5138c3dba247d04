"""distill: a head trained on planted judge verdicts (a learnable colour signal) agrees with the
judge on held-out samples, and then screens a cascade."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, scan_args, write_shard


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """Two shards of coloured-shape images and a judge report whose verdicts follow the colours."""
    from vlmaudit.demo.build import build_shape_dataset
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.schema import report_meta, report_schema

    root = tmp_path_factory.mktemp("distill")
    rules = load_rules()
    taxonomy = rules.taxonomy
    labelled, safe = build_shape_dataset(root / "data", taxonomy, per_class=40)
    concept_of = {c.name: i for i, c in enumerate(taxonomy.concepts)}
    rows = [(p.read_bytes(), concept_of[line.split(",")[2]]) for line, p in
            ((line, labelled / line.split(",")[0]) for line in (labelled / "labels.csv").read_text().splitlines()[1:])]
    rows += [(p.read_bytes(), -1) for p in sorted(safe.glob("*.png"))]
    order = np.random.default_rng(0).permutation(len(rows))
    rows = [rows[i] for i in order]
    schema = report_schema(taxonomy, report_meta(taxonomy, rules.thresholds, {"backend": "vlm", "model": "planted"}))
    builder = RowBuilder(taxonomy, rules.thresholds, schema, "planted-judge")
    category_of = np.array(taxonomy.concept_category_index())
    shards, reports = [], root / "reports"
    reports.mkdir()
    (root / "shards").mkdir()
    for s, part in enumerate((rows[: len(rows) // 2], rows[len(rows) // 2:])):
        name = f"{s:05d}"
        samples = [{"__key__": f"{name}{i:04d}", "png": data, "txt": "a shape"} for i, (data, _) in enumerate(part)]
        shards.append(write_shard(root / "shards" / f"{name}.tar", samples))
        scores = np.zeros((len(part), len(taxonomy.concepts)), np.float32)
        unsafe = np.zeros(len(part), np.float32) + 0.05
        for i, (_, concept) in enumerate(part):
            if concept >= 0:
                scores[i, category_of == category_of[concept]] = 0.9
                scores[i, concept] = 0.9
                unsafe[i] = 0.9
        metas = [RowMeta(sm["__key__"], i, None, "a shape", "ok", image_row=i) for i, sm in enumerate(samples)]
        batch = builder.build(name, metas, scores, None, {"image_unsafe": unsafe}, "vlm")
        pq.write_table(pa.Table.from_batches([batch], schema), reports / f"{name}.parquet")
        (reports / f"{name}.stats.json").write_text('{"status": "complete", "url": null}')  # the shard finished
    return shards, reports, rows


@pytest.mark.end_to_end
def test_distilled_head_agrees_with_the_judge_and_screens_a_cascade(tmp_path, tiny_clip, tiny_vlms, judged):
    shards, reports, rows = judged
    out = tmp_path / "head"
    result = run_cli("distill", reports, "--shards", shards[0], "--shards", shards[1], "--out", out,
                     "--vision-model", tiny_clip, "--epochs", "60", "--dim", "64", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "held-out agreement with the judge" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] >= 20 and metrics["train_samples"] + metrics["samples"] == len(rows)
    assert metrics["unsafe_vs_safe_accuracy"] >= 0.9 and metrics["category_accuracy"] >= 0.9
    scan = tmp_path / "scan"
    result = run_cli(*scan_args(shards[:1], scan, tiny_clip, "--backend", "cascade", "--head", out, "--judge-model",
                                tiny_vlms("llava"), "--escalate-top", "10", "--batch-size", "8"))
    assert result.exit_code == 0, result.output
    table = pq.read_table(scan / "00000.parquet").to_pylist()
    stages = [r["decided_by"] for r in table]
    assert set(stages) == {"head", "vlm"} and stages.count("vlm") == int(np.ceil(0.1 * len(table)))
    screened = [r for r in table if r["decided_by"] == "head"]
    truth = {f"00000{i:04d}": c >= 0 for i, (_, c) in enumerate(rows[: len(rows) // 2])}
    agree = np.mean([(r["image_unsafe"] >= 0.5) == truth[r["key"]] for r in screened])
    assert agree >= 0.9


@pytest.mark.end_to_end
def test_distill_without_judge_verdicts_is_a_one_line_error(tmp_path, tiny_clip, demo_scan):
    result = run_cli("distill", demo_scan.reports, "--shards", demo_scan.shards[0], "--out", tmp_path / "head",
                     "--vision-model", tiny_clip)
    assert result.exit_code == 2 and result.output.startswith("error: no judge verdicts")


def test_distill_learns_only_the_judges_verdicts_never_the_rows_the_screen_decided(tmp_path):
    """Planted: the decided_by filter dropped or widened; a confident screen row must not become a label."""
    from vlmaudit.head.data import SAFE
    from vlmaudit.head.distill import judge_verdicts
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    n = len(taxonomy.concepts)
    hot = [0.0] * n
    hot[5] = 0.9
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({
        "shard": ["s"] * 5, "key": ["judged-unsafe", "judged-safe", "screened", "screened-unscored", "no-decider"],
        "decided_by": ["vlm", "vlm", "clip", "clip", None],
        "image_unsafe": pa.array([0.8, 0.1, 0.99, None, 0.95], pa.float32()),
        "image_scores": pa.array([hot, hot, hot, hot, hot], pa.list_(pa.float32()))}), path)
    verdicts = judge_verdicts([path], {"concepts": taxonomy.concept_ids}, taxonomy)
    assert set(verdicts) == {"s"} and set(verdicts["s"]) == {"judged-unsafe", "judged-safe"}
    assert verdicts["s"]["judged-unsafe"].concept == 5 and verdicts["s"]["judged-safe"].concept == SAFE


def write_judged(path, rows, n_concepts):
    """A report file of (key, decided_by, image_unsafe, top concept or None for no scores) rows."""
    def scores(top):
        if top is None:
            return None
        hot = [0.0] * n_concepts
        hot[top] = 0.9
        return hot

    pq.write_table(pa.table({
        "shard": [path.stem] * len(rows), "key": [r[0] for r in rows], "decided_by": [r[1] for r in rows],
        "image_unsafe": pa.array([r[2] for r in rows], pa.float32()),
        "image_scores": pa.array([scores(r[3]) for r in rows], pa.list_(pa.float32()))}), path)
    return path


@pytest.fixture(scope="module")
def taxonomy():
    from vlmaudit.rulebook.load import load_rules

    return load_rules().taxonomy


def verdicts_of(files, taxonomy, **options):
    from vlmaudit.head.distill import judge_verdicts

    found = judge_verdicts(files, {"concepts": taxonomy.concept_ids}, taxonomy, **options)
    return {shard: {key: (v.concept, v.category) for key, v in keys.items()} for shard, keys in found.items()}


def test_a_verdict_at_the_cutoff_is_unsafe_and_scores_0_and_1_are_verdicts(tmp_path, taxonomy):
    from vlmaudit.head.data import SAFE

    category = taxonomy.concept_category_index()
    path = write_judged(tmp_path / "s.parquet", [("at", "vlm", 0.5, 7), ("zero", "vlm", 0.0, 7), ("one", "vlm", 1.0, 40),
                                                 ("no-scores", "vlm", 0.9, None)], len(taxonomy.concepts))
    assert verdicts_of([path], taxonomy, cutoff=0.5) == {"s": {"at": (7, category[7]), "zero": (SAFE, SAFE),
                                                               "one": (40, category[40])}}
    assert verdicts_of([path], taxonomy, cutoff=0.6)["s"]["at"] == (SAFE, SAFE)


def test_max_samples_takes_that_many_verdicts_across_files(tmp_path, taxonomy):
    n = len(taxonomy.concepts)
    screened = write_judged(tmp_path / "a.parquet", [("s0", "clip", 0.9, 3)], n)  # a file with no verdict first
    one = write_judged(tmp_path / "b.parquet", [("j0", "vlm", 0.9, 3)], n)  # then a file with exactly one
    more = write_judged(tmp_path / "c.parquet", [(f"j{i}", "vlm", 0.9, 3) for i in range(1, 4)], n)
    assert [len(keys) for keys in verdicts_of([screened, one, more], taxonomy).values()] == [1, 3]
    for limit, sizes in ((1, [1]), (2, [1, 1]), (3, [1, 2])):
        assert [len(keys) for keys in verdicts_of([screened, one, more], taxonomy, limit=limit).values()] == sizes


def test_a_nan_concept_score_is_refused_never_a_verdict_label(tmp_path, taxonomy):
    from vlmaudit.report.reading import BadScores

    n = len(taxonomy.concepts)
    path = write_judged(tmp_path / "s.parquet", [("k", "vlm", 0.9, 7)], n)
    table = pq.read_table(path)
    damaged = [float("nan")] + [0.9 if i == 7 else 0.0 for i in range(1, n)]
    pq.write_table(table.set_column(4, "image_scores", pa.array([damaged], pa.list_(pa.float32()))), path)
    with pytest.raises(BadScores, match="NaN"):  # numpy's argmax would pick the NaN as the label
        verdicts_of([path], taxonomy)


@pytest.mark.parametrize("score", [1.5, -0.5, float("nan"), float("inf")])
def test_a_judge_score_outside_0_1_is_refused_never_turned_into_a_verdict(tmp_path, taxonomy, score):
    from vlmaudit.report.reading import BadScores

    path = write_judged(tmp_path / "s.parquet", [("ok", "vlm", 0.2, 1), ("bad", "vlm", score, 1)], len(taxonomy.concepts))
    with pytest.raises(BadScores, match=r"^a report holds judge scores \(image_unsafe\) that are NaN, infinite or "
                                        r"outside \[0, 1\]; a verdict is never guessed from them$"):
        verdicts_of([path], taxonomy)


def test_reports_of_another_taxonomy_or_without_verdicts_are_one_clear_error(tmp_path, taxonomy):
    from vlmaudit.errors import UserError
    from vlmaudit.head.distill import judge_verdicts

    n = len(taxonomy.concepts)
    files = [write_judged(tmp_path / f"{s}.parquet", [("k", "clip", 0.9, 1)], n) for s in "ab"]
    with pytest.raises(UserError) as info:
        judge_verdicts(files, {"concepts": ["x"], "taxonomy_version": "other-3"}, taxonomy)
    assert str(info.value) == f"{files[0]}: the reports were written with taxonomy other-3; pass the matching --rules"
    with pytest.raises(UserError) as info:
        verdicts_of(files, taxonomy)
    assert str(info.value) == ("no judge verdicts in these reports (rows with decided_by = vlm and an image score): "
                               "distill needs reports from `scan --backend vlm` or `--backend cascade`")
