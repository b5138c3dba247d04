"""The cascade's own logic without a scan: which samples each escalation rule picks (ties, NaN,
rounding), the metadata it writes (both stages, the rule, what it covers), how it is built."""

import numpy as np
import pyarrow as pa
import pytest

from vlmaudit.backends import BackendOptions, build_backend
from vlmaudit.backends.cascade import Cascade, cascade_coverage
from vlmaudit.backends.modelref import ModelOptions
from vlmaudit.errors import UserError
from vlmaudit.rulebook.load import load_rules

NAN = float("nan")


def table(image, caption, index=None):
    index = list(range(len(image))) if index is None else index
    return pa.table({"sample_index": pa.array(index, pa.int64()),
                     "image_top_score": pa.array([None if np.isnan(v) else v for v in image], pa.float32()),
                     "caption_top_score": pa.array([None if np.isnan(v) else v for v in caption], pa.float32())})


class Stage:
    """A first or second stage as the cascade sees it: its scores and its describe()."""

    def __init__(self, name, described, device="cpu", precision="fp32"):
        self.name, self.described, self.device, self.precision = name, described, device, precision
        self.preprocessor, self.calls = object(), []

    def describe(self):
        return dict(self.described)

    def score(self, inputs):
        self.calls.append(("score", inputs))
        return "scores"

    def forward_only(self, inputs):
        self.calls.append(("forward_only", inputs))


def rule(above=None, top=None):
    return Cascade(Stage("clip", {}), Stage("vlm", {}), above, top)


def test_above_picks_every_sample_whose_higher_modality_reaches_the_threshold():
    scores = table(image=[0.1, 0.5, NAN, 0.9, NAN, 0.49], caption=[0.6, 0.2, 0.5, NAN, NAN, 0.3],
                   index=[10, 11, 12, 13, 14, 15])
    assert rule(above=0.5).escalated(scores).tolist() == [10, 11, 12, 13]  # >= : 0.5 itself escalates
    assert rule(above=0.95).escalated(scores).tolist() == []
    assert rule(above=0.0).escalated(scores).tolist() == [10, 11, 12, 13, 15]  # never a sample with no score


def test_top_percent_of_the_scored_samples_rounds_up_and_breaks_ties_in_shard_order():
    scores = table(image=[0.2, 0.9, 0.5, NAN, 0.5, 0.1, 0.5, 0.8],
                   caption=[NAN, NAN, NAN, NAN, NAN, 0.95, NAN, NAN], index=[7, 3, 9, 1, 4, 8, 2, 5])
    # 7 scored samples (index 1 has no score); ranked: 8 (0.95), 3 (0.9), 5 (0.8), then the 0.5 ties 2, 4, 9
    assert rule(top=10).escalated(scores).tolist() == [8]  # ceil(0.7) = 1
    assert rule(top=30).escalated(scores).tolist() == [3, 5, 8]  # ceil(2.1) = 3, returned in shard order
    assert rule(top=58).escalated(scores).tolist() == [2, 3, 4, 5, 8]  # ceil(4.06) = 5: ties 2 and 4 before 9
    assert rule(top=100).escalated(scores).tolist() == [2, 3, 4, 5, 7, 8, 9]  # never the unscored sample 1
    assert rule(top=50).escalated(table([NAN, NAN], [NAN, NAN])).tolist() == []


def test_top_percent_counts_exactly_on_large_shards():
    scores = np.linspace(0.0, 1.0, 150)
    many = table(image=scores, caption=[NAN] * 150)
    assert len(rule(top=100).escalated(many)) == 150
    top_half = rule(top=50).escalated(many)
    assert len(top_half) == 75 and top_half.tolist() == list(range(75, 150))


def test_an_unscored_sample_never_takes_the_place_of_a_zero_score():
    scores = table(image=[NAN, 0.0, NAN], caption=[NAN, NAN, NAN], index=[0, 1, 2])
    assert rule(top=100).escalated(scores).tolist() == [1]
    assert rule(above=0.0).escalated(scores).tolist() == [1]


def test_the_cascade_scores_with_its_first_stage_and_carries_its_identity():
    screen, judge = Stage("head", {}, device="cuda", precision="fp16"), Stage("vlm", {})
    cascade = Cascade(screen, judge, 0.5, None)
    assert (cascade.name, cascade.stage, cascade.device, cascade.precision) == ("cascade", "head", "cuda", "fp16")
    assert cascade.preprocessor is screen.preprocessor and cascade.escalation is cascade and cascade.judge is judge
    assert cascade.score({"x": 1}) == "scores"
    assert cascade.forward_only({"y": 2}) is None
    assert screen.calls == [("score", {"x": 1}), ("forward_only", {"y": 2})] and judge.calls == []


SCREEN = {"backend": "clip", "model": "tiny-clip", "revision": "r1", "family": "clip",
          "coverage": {"model": "tiny-clip", "level": "concept", "categories": ["hate"], "concepts": ["swastika"],
                       "modalities": ["image", "caption"]}}
JUDGE = {"backend": "vlm", "model": "tiny-llava", "revision": "r2", "family": "llava",
         "coverage": {"model": "tiny-llava", "level": "category", "categories": ["hate", "sexual"], "concepts": [],
                      "modalities": ["image", "caption"]}}


@pytest.mark.parametrize("above,top,rule_text", [(0.25, None, "above=0.25"), (None, 12.5, "top=12.5%")])
def test_describe_names_both_stages_and_the_rule(above, top, rule_text):
    cascade = Cascade(Stage("clip", SCREEN), Stage("vlm", JUDGE), above, top)
    assert cascade.describe() == {
        "backend": "cascade", "model": "tiny-clip", "revision": f"r1+r2+{rule_text}", "family": "clip",
        "device": "cpu", "precision": "fp32", "screen": SCREEN, "judge": JUDGE, "escalate_above": above,
        "escalate_top_percent": top,
        "coverage": {"model": "tiny-clip+tiny-llava", "level": "category", "categories": ["hate"],
                     "concepts": ["swastika"], "modalities": ["image", "caption"]}}


def test_coverage_is_the_screens_at_the_coarser_level_of_the_two():
    concept_judge = {**JUDGE, "coverage": {**JUDGE["coverage"], "level": "concept"}}
    merged = cascade_coverage(SCREEN, concept_judge)
    assert merged == {**SCREEN["coverage"], "model": "tiny-clip+tiny-llava", "level": "concept"}
    category_screen = {**SCREEN, "coverage": {**SCREEN["coverage"], "level": "category"}}
    assert cascade_coverage(category_screen, concept_judge)["level"] == "category"
    assert cascade_coverage(SCREEN, {"model": "j"}) == {**SCREEN["coverage"], "model": "tiny-clip+j", "level": "concept"}


def test_a_screen_without_coverage_leaves_the_judges():
    assert cascade_coverage({"model": "s"}, JUDGE) == JUDGE["coverage"]
    assert cascade_coverage({"model": "s", "coverage": None}, {"model": "j"}) is None


@pytest.mark.parametrize("above,top", [(None, None), (0.5, 10.0)])
def test_exactly_one_escalation_rule_is_needed(tiny_clip, above, top, monkeypatch):
    import vlmaudit.backends.stages as stages

    monkeypatch.setattr(stages, "build_screen", lambda *a: pytest.fail("a model loaded before the options were checked"))
    with pytest.raises(UserError) as err:
        build_backend("cascade", load_rules(), ModelOptions(str(tiny_clip), "cpu"),
                      BackendOptions(escalate_above=above, escalate_top=top))
    assert str(err.value) == "--backend cascade needs exactly one of --escalate-above SCORE or --escalate-top PERCENT"


def test_built_from_a_clip_screen_and_the_judge_model(tiny_clip, tiny_vlms):
    options = ModelOptions(str(tiny_clip), "cpu", "fp32")
    cascade = build_backend("cascade", load_rules(), options,
                            BackendOptions(judge_model=str(tiny_vlms("llava")), escalate_top=20.0, rationale=True))
    described = cascade.describe()
    assert (cascade.stage, cascade.top_percent, cascade.above) == ("clip", 20.0, None)
    assert described["screen"]["model"] == str(tiny_clip) and described["judge"]["model"] == str(tiny_vlms("llava"))
    assert described["judge"]["rationale"] is True and described["judge"]["prompts"] == "unsafeconcepts.yaml"
    assert cascade.judge.precision == "fp32" and cascade.judge.options.flag == "--judge-model"


def test_the_default_judge_is_llava_1_5_and_is_named_as_the_judge_model(tiny_clip, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from vlmaudit.errors import ModelError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # never the real 7B model
    with pytest.raises(ModelError) as err:
        build_backend("cascade", load_rules(), ModelOptions(str(tiny_clip), "cpu", "fp32"),
                      BackendOptions(escalate_above=0.5))
    assert "model 'llava-hf/llava-1.5-7b-hf'" in str(err.value) and "pass --judge-model DIR" in str(err.value)


def test_built_from_a_head_screen(tmp_path, tiny_clip, tiny_vlms):
    from conftest import save_tiny_head

    save_tiny_head(tmp_path / "head", tiny_clip)
    cascade = build_backend("cascade", load_rules(), ModelOptions(None, "cpu", "fp32"),
                            BackendOptions(head=tmp_path / "head", judge_model=str(tiny_vlms("llava")), escalate_above=0.7))
    assert cascade.stage == "head" and cascade.describe()["screen"]["backend"] == "head"
    assert cascade.describe()["revision"].endswith("+above=0.7")
