"""rulebook.coverage at the unit: what a backend scores, read back from run.json / the footer, and
the refusals of gates and policy rules that could never fire (the end-to-end views of coverage are
in tests/report/test_coverage.py)."""

import pytest

from vlmaudit.errors import UserError
from vlmaudit.rulebook.coverage import Coverage, check_limits, check_policy, coverage_of, describe
from vlmaudit.rulebook.load import load_rules

TAX = load_rules().taxonomy


def first_concepts(category, n=2):
    return [c.id for c in TAX.concepts if c.category == category][:n]


def test_full_coverage_scores_everything():
    full = Coverage.full("m")
    assert full == Coverage("m", "concept", (), (), ("image", "caption"), everything=True)
    assert full.scores() and full.scores("hate", "caption") and full.scores_concept("anything")
    assert not full.category_level and Coverage.full().model == ""


def test_coverage_of_a_subset_keeps_the_taxonomy_order():
    wanted = first_concepts("violence") + first_concepts("hate", 1)
    cover = Coverage.of(TAX, 7, concepts=list(reversed(wanted)), modalities=["image"], level="category")
    assert cover == Coverage("7", "category", ("hate", "violence"), tuple(first_concepts("hate", 1) + first_concepts("violence")),
                             ("image",))
    assert cover.category_level and not cover.everything
    everything = Coverage.of(TAX, "m")
    assert everything.concepts == tuple(TAX.concept_ids) and everything.categories == tuple(TAX.category_ids)
    assert everything.modalities == ("image", "caption") and everything.level == "concept" and not everything.everything


def test_coverage_json_round_trip_and_untrusted_values():
    cover = Coverage("m", "category", ("sexual",), ("nudity",), ("caption",))
    assert cover.to_json() == {"model": "m", "level": "category", "categories": ["sexual"], "concepts": ["nudity"],
                               "modalities": ["caption"]}
    assert Coverage.from_json(cover.to_json()) == cover
    odd = Coverage.from_json({"model": None, "level": "weird", "categories": [1, "x"], "concepts": "nudity",
                              "modalities": ["image", "smell"]})
    assert odd == Coverage("the model", "concept", ("1", "x"), (), ("image",))
    assert Coverage.from_json(["not", "a", "dict"]) == Coverage.full()


def test_scores_by_category_modality_and_concept():
    cover = Coverage("m", "concept", ("sexual",), ("nudity",), ("image",))
    assert cover.scores() and cover.scores("sexual") and cover.scores(None, "image") and cover.scores("sexual", "image")
    assert not cover.scores("hate") and not cover.scores("sexual", "caption") and not cover.scores(None, "caption")
    assert cover.scores_concept("nudity") and not cover.scores_concept("torture")
    assert not cover.category_level
    assert cover.na_label() == "n/a - not scored by m" and cover.na_label("other") == "n/a - not scored by other"


def test_coverage_of_reads_run_json_first_then_the_footer():
    run = {"coverage": {"model": "from-run", "categories": ["hate"], "modalities": ["image"]}}
    meta = {"coverage": {"model": "from-footer", "categories": ["sexual"], "modalities": ["image"]}}
    assert coverage_of(run, meta).model == "from-run"
    assert coverage_of({"coverage": "damaged"}, meta).model == "from-footer"
    assert coverage_of(None, meta).model == "from-footer"
    assert coverage_of({}, None) == Coverage.full() and coverage_of(None, None) == Coverage.full()


def test_describe_names_categories_and_modalities():
    assert describe(Coverage("m", "concept", ("sexual", "hate"), (), ("image",))) == "sexual, hate; image only"
    assert describe(Coverage("m", "concept", ("hate",), (), ("image", "caption"))) == "hate; image and caption"
    assert describe(Coverage("m", "concept", (), (), ())) == "nothing; no modality"


def test_fail_above_on_an_unscored_category_is_refused():
    cover = Coverage("m", "concept", ("sexual",), (), ("image",))
    check_limits({"sexual": 0.1}, cover)
    with pytest.raises(UserError) as info:
        check_limits({"sexual": 0.1, "hate": 0.2, "violence": 0.3}, cover)
    assert str(info.value) == ("--fail-above hate, violence: n/a - not scored by m (it scores sexual; image only); "
                               "such a gate could never fail")


def test_policy_rules_that_could_never_fire_are_refused(tmp_path):
    nudity, other = first_concepts("sexual")
    cover = Coverage("m", "concept", ("sexual",), (nudity,), ("image",))
    categories = {c.id: c.category for c in TAX.concepts}
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"default: {{threshold: 0.5, modality: any, action: review}}\ncategories: {{sexual: {{modality: image}}}}\n"
                  f"concepts: {{{nudity}: {{action: drop}}}}\n")
    check_policy(ok, cover, categories)
    caption = tmp_path / "caption.yaml"
    caption.write_text(f"default: {{threshold: 0.5, modality: any, action: review}}\nconcepts: {{{nudity}: {{modality: caption}}}}\n")
    with pytest.raises(UserError, match=rf"policy .*caption.yaml: concepts.{nudity}.modality caption: n/a"):
        check_policy(caption, cover, categories)
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: {threshold: 0.5, modality: both, action: review}\n"
                   "categories: {hate: {action: drop}, sexual: {modality: caption}}\n"
                   f"concepts: {{{other}: {{action: drop}}, {nudity}: {{modality: image}}}}\n")
    with pytest.raises(UserError) as info:
        check_policy(bad, cover, categories)
    assert str(info.value) == (f"policy {bad}: default.modality both, categories.hate, categories.sexual.modality caption, "
                               f"concepts.{other}: n/a - not scored by m (it scores sexual; image only); a rule on it "
                               "could never fire - use a policy for what the model scores")
    check_policy(tmp_path / "not-even-read.yaml", Coverage.full(), categories)
