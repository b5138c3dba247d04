"""Fast tests of the rulebook (YAML checks, taxonomy, thresholds, policies, prompts, rule lookup):
exact boundaries, precedence and the file/field named in each error. Written to kill the mutants
the older tests let survive."""

import shutil

import numpy as np
import pytest
import yaml

from conftest import decide_by_policy, rules_error
from vlmaudit.errors import UserError
from vlmaudit.rulebook import yamlfile as Y
from vlmaudit.rulebook.load import find_rule_file, load_rules, shipped_rules_dir
from vlmaudit.rulebook.policy import load_policy
from vlmaudit.rulebook.prompts import category_options, load_prompts
from vlmaudit.rulebook.taxonomy import load_taxonomy
from vlmaudit.rulebook.thresholds import Thresholds, load_thresholds, target_mask

TAX = load_rules().taxonomy
IDS, CATS = TAX.concept_ids, [c.category for c in TAX.concepts]


# ---- yamlfile --------------------------------------------------------------------------------------

def test_read_yaml_names_the_file_for_unreadable_and_invalid_files(tmp_path):
    assert rules_error(Y.read_yaml, tmp_path / "none.yaml").startswith(f"{tmp_path / 'none.yaml'}: (file): cannot read")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    message = rules_error(Y.read_yaml, bad)
    assert message.startswith(f"{bad}: (file): invalid YAML: ") and "\n" not in message
    good = tmp_path / "good.yaml"
    good.write_text("a: {b: 1}\n")
    assert Y.read_yaml(good) == {"a": {"b": 1}}


def test_field_checks_accept_exactly_what_they_promise():
    assert Y.check_mapping("f", "x", {"a": 1}, {"a", "b"}, {"a"}) == {"a": 1}
    assert rules_error(Y.check_mapping, "f", "x", [1], {"a"}) == "f: x: expected a mapping, got list"
    assert rules_error(Y.check_mapping, "f", "x", {"c": 1}, {"b", "a"}) == "f: x.c: unknown key (allowed: a, b)"
    assert rules_error(Y.check_mapping, "f", "x", {}, {"a", "b"}, {"b", "a"}) == "f: x.a: missing"
    assert Y.check_list("f", "l", [], str) == [] and Y.check_list("f", "l", ["a"], str, non_empty=True) == ["a"]
    assert rules_error(Y.check_list, "f", "l", "abc") == "f: l: expected a list, got str"
    assert rules_error(Y.check_list, "f", "l", [], str, True) == "f: l: must not be empty"
    assert rules_error(Y.check_list, "f", "l", ["a", 2], str) == "f: l[1]: expected str, got int"
    assert Y.check_list("f", "l", ["a", 2]) == ["a", 2]
    assert Y.check_str("f", "s", " x ") == " x "
    for bad in ("", "  ", None, 3):
        assert rules_error(Y.check_str, "f", "s", bad) == "f: s: expected a non-empty string"


@pytest.mark.parametrize("value, ok", [(0, True), (1, True), (0.0, True), (1.0, True), (0.5, True),
                                       (-0.001, False), (1.001, False), (True, False), ("0.5", False), (None, False)])
def test_unit_floats_include_both_ends(value, ok):
    if ok:
        result = Y.check_unit_float("f", "t", value)
        assert result == value and type(result) is float
    else:
        assert rules_error(Y.check_unit_float, "f", "t", value) == f"f: t: expected a number between 0 and 1, got {value!r}"


# ---- taxonomy --------------------------------------------------------------------------------------

def taxonomy_file(tmp_path, edit=lambda d: None):
    data = yaml.safe_load((shipped_rules_dir() / "taxonomy.yaml").read_text())
    edit(data)
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_taxonomy_fields_prompts_and_identity(tmp_path):
    concept = TAX.concepts[0]
    assert TAX.prompts_for(concept)[:len(concept.prompts)] == list(concept.prompts)
    assert TAX.prompts_for(concept)[len(concept.prompts):] == [t.format(name=concept.name) for t in TAX.prompt_templates]
    assert TAX.concept_category_index()[:2] == [0, 0] and TAX.concept_category_index()[-1] == len(TAX.categories) - 1
    assert TAX.tag == f"{TAX.version}+{TAX.fingerprint()[:10]}" and len(TAX.fingerprint()) == 64
    assert TAX.categories[0].description and TAX.concepts[0].category == TAX.categories[0].id
    same = load_taxonomy(taxonomy_file(tmp_path))
    assert same.fingerprint() == TAX.fingerprint()
    (tmp_path / "b").mkdir()
    renamed = load_taxonomy(taxonomy_file(tmp_path / "b", lambda d: d["concepts"][0].update(name="Swastika!")))
    assert renamed.fingerprint() != TAX.fingerprint() and renamed.concepts[0].name == "Swastika!"
    (tmp_path / "c").mkdir()
    numeric = load_taxonomy(taxonomy_file(tmp_path / "c", lambda d: (d.update(version=3), d["categories"][0].pop("description"))))
    assert numeric.version == "3" and numeric.categories[0].description == ""


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d["prompt_templates"].append("no placeholder"), "prompt_templates[3]", "must contain {name}"),
    (lambda d: d["categories"][1].update(id=d["categories"][0]["id"]), "categories[1].id", "duplicate id"),
    (lambda d: d["categories"][2].pop("name"), "categories[2].name", "missing"),
    (lambda d: d["categories"][2].update(name=" "), "categories[2].name", "non-empty string"),
    (lambda d: d.update(categories=[]), "categories", "must not be empty"),
    (lambda d: d.update(concepts=[]), "concepts", "must not be empty"),
    (lambda d: d.update(safe_prompts=[]), "safe_prompts", "must not be empty"),
    (lambda d: d["concepts"][0].update(name=""), "concepts[0].name", "non-empty string"),
    (lambda d: d["concepts"][0].update(prompts=["a", 1]), "concepts[0].prompts[1]", "expected str"),
    (lambda d: d.update(extra=1), "(top).extra", "unknown key"),
])
def test_taxonomy_errors_name_the_field(tmp_path, edit, field, problem):
    path = taxonomy_file(tmp_path, edit)
    message = rules_error(load_taxonomy, path)
    assert message.startswith(f"{path}: {field}: ") and problem in message


# ---- thresholds ------------------------------------------------------------------------------------

def thresholds_file(tmp_path, text):
    path = tmp_path / "thresholds.yaml"
    path.write_text(text)
    return load_thresholds(path, TAX)


def test_threshold_precedence_does_not_depend_on_file_order(tmp_path):
    t = thresholds_file(tmp_path, "concepts: {swastika: {caption: 0.3}}\ncategories: {hate: 0.6}\ndefault: 0.4\n")
    sw, runes, torture = IDS.index("swastika"), IDS.index("ss-runes"), IDS.index("torture")
    assert (t.image[sw], t.caption[sw]) == (pytest.approx(0.6), pytest.approx(0.3))
    assert (t.image[runes], t.caption[runes]) == (pytest.approx(0.6), pytest.approx(0.6))
    assert (t.image[torture], t.caption[torture]) == (pytest.approx(0.4), pytest.approx(0.4))
    assert t.image.dtype == np.float32 and t.caption.dtype == np.float32


def test_thresholds_defaults_fingerprint_and_dict(tmp_path):
    default = load_thresholds(None, TAX)
    assert np.all(default.image == np.float32(0.8)) and np.all(default.caption == np.float32(0.8))
    assert load_thresholds(None, TAX, 0.3).image[0] == np.float32(0.3)
    empty = thresholds_file(tmp_path, "")
    assert empty.fingerprint() == default.fingerprint()
    swapped = Thresholds.uniform(TAX, 0.8)
    swapped.image[0], swapped.caption[1] = 0.5, 0.5
    other = Thresholds.uniform(TAX, 0.8)
    other.image[1], other.caption[0] = 0.5, 0.5
    assert swapped.fingerprint() != other.fingerprint() != default.fingerprint()
    as_dict = swapped.as_dict(TAX)
    assert list(as_dict) == IDS and as_dict[IDS[0]] == {"image": 0.5, "caption": pytest.approx(0.8)}


@pytest.mark.parametrize("text, field", [
    ("default: {image: 0.5, text: 0.5}\n", "default.text"),
    ("default: 1.5\n", "default"),
    ("categories: {hate: {image: 2}}\n", "categories.hate.image"),
    ("concepts: {nope: 0.5}\n", "concepts.nope"),
    ("colours: 1\n", "(top).colours"),
])
def test_threshold_errors_name_the_field(tmp_path, text, field):
    message = rules_error(thresholds_file, tmp_path, text)
    assert message.startswith(f"{tmp_path / 'thresholds.yaml'}: {field}")


def test_target_masks():
    assert target_mask(IDS, CATS, "default", "p", "f").all() and target_mask(IDS, CATS, "*", "p", "f").all()
    hate = target_mask(IDS, CATS, "hate", "p", "f")
    assert hate.sum() == CATS.count("hate") and all(CATS[i] == "hate" for i in np.flatnonzero(hate))
    assert np.flatnonzero(target_mask(IDS, CATS, "torture", "p", "f")).tolist() == [IDS.index("torture")]
    assert rules_error(target_mask, IDS, CATS, "nope", "p", "f") == "p: f: unknown category or concept 'nope'"


# ---- policies --------------------------------------------------------------------------------------

def policy(tmp_path, text, name="p"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_policy(path, IDS, CATS)


def test_policy_fields_and_the_both_mode(tmp_path):
    p = policy(tmp_path, "description: strictish\ndefault: {threshold: 0.5, modality: both, action: review}\n"
                         "concepts: {torture: {modality: image, threshold: 0.9}}\n", name="mine")
    assert (p.name, p.description, p.concepts) == ("mine", "strictish", IDS) and len(p.fingerprint) == 16
    t = IDS.index("torture")
    assert p.modality[t] == 0 and p.modality[0] == 3 and p.threshold[t] == pytest.approx(0.9) and p.action[t] == 1
    image = np.zeros((3, len(IDS)), np.float32)
    caption = np.zeros_like(image)
    image[0, 0], caption[0, 0] = 0.5, 0.5      # both at the threshold: fires
    image[1, 0], caption[1, 0] = 0.5, 0.49     # caption below: does not
    image[2, t], caption[2, t] = 0.95, np.nan  # image-only rule with no caption: fires
    assert decide_by_policy(p, image, caption, tmp_path) == [([0], 1), ([], 0), ([t], 1)]
    assert policy(tmp_path, "default: {threshold: 0.5, modality: any, action: drop}\n").fingerprint != p.fingerprint


def test_policy_any_mode_ignores_unscored_modalities(tmp_path):
    p = policy(tmp_path, "default: {threshold: 0.5, modality: any, action: drop}\n")
    image = np.full((2, len(IDS)), np.nan, np.float32)
    caption = np.full_like(image, np.nan)
    caption[1, 4] = 0.7
    assert decide_by_policy(p, image, caption, tmp_path) == [([], 0), ([4], 2)]


def test_policy_needs_a_complete_default_rule(tmp_path):
    message = rules_error(policy, tmp_path, "default: {threshold: 0.5, modality: any}\n")
    assert "default.action: missing" in message
    assert "(top).default: missing" in rules_error(policy, tmp_path, "concepts: {torture: {action: drop}}\n")
    assert "categories.hate.action" in rules_error(
        policy, tmp_path, "default: {threshold: 0.5, modality: any, action: drop}\ncategories: {hate: {action: ''}}\n")


# ---- prompts ---------------------------------------------------------------------------------------

def prompts_file(tmp_path, edit):
    data = yaml.safe_load((shipped_rules_dir() / "prompts" / "unsafeconcepts.yaml").read_text())
    edit(data)
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_category_options_letter_the_categories_in_order_then_none():
    text, letters = category_options(["Hate", "Harassment", "Violence"], "None of these")
    assert text == "A. Hate\nB. Harassment\nC. Violence\nD. None of these" and letters == ["A", "B", "C", "D"]


def test_prompt_file_fields_and_defaults(tmp_path):
    p = load_prompts(prompts_file(tmp_path, lambda d: (d.pop("assistant_prefill", None), d.pop("rationale_question", None))))
    assert (p.safe_answers, p.unsafe_answers) == (("Yes", "yes"), ("No", "no"))
    assert p.prefill == "" and p.rationale_question.startswith("Explain briefly") and p.caption_image == "none"
    assert len(p.image_questions) == 5 and "{caption}" in p.caption_context and "{options}" in p.category_image
    assert "{options}" in p.category_caption and p.none_option
    blank = load_prompts(prompts_file(tmp_path, lambda d: d["caption"].update(image="blank")))
    assert blank.caption_image == "blank"


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d["caption"].update(context="no field"), "caption.context", "must contain {caption}"),
    (lambda d: d["category_question"].update(image="no field"), "category_question.image", "must contain {options}"),
    (lambda d: d["category_question"].update(caption="x"), "category_question.caption", "must contain {options}"),
    (lambda d: d["caption"].update(image="grey"), "caption.image", "expected one of none, blank, got 'grey'"),
    (lambda d: d["answers"].update(safe=[]), "answers.safe", "must not be empty"),
    (lambda d: d["answers"].update(unsafe=[" "]), "answers.unsafe[0]", "non-empty string"),
    (lambda d: d.update(image_questions="one"), "image_questions", "expected a list"),
    (lambda d: d["caption"].pop("questions"), "caption.questions", "missing"),
    (lambda d: d.pop("category_question"), "(top).category_question", "missing"),
])
def test_prompt_file_errors_name_the_field(tmp_path, edit, field, problem):
    path = prompts_file(tmp_path, edit)
    message = rules_error(load_prompts, path)
    assert message.startswith(f"{path}: {field}: ") and problem in message


# ---- finding rule files ----------------------------------------------------------------------------

def test_find_rule_file_prefers_paths_then_the_rules_dir_then_the_shipped_rules(tmp_path):
    mine = tmp_path / "mine.yml"
    mine.write_text("x")
    assert find_rule_file("policies", str(mine)) == mine
    with pytest.raises(UserError, match="missing.yaml: no such file"):
        find_rule_file("policies", str(tmp_path / "missing.yaml"))
    assert find_rule_file("policies", "strict") == shipped_rules_dir() / "policies" / "strict.yaml"
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "strict.yaml").write_text("x")
    assert find_rule_file("policies", "strict", tmp_path) == tmp_path / "policies" / "strict.yaml"
    assert find_rule_file("policies", "permissive", tmp_path) == shipped_rules_dir() / "policies" / "permissive.yaml"
    with pytest.raises(UserError, match=r"no policy named 'nope' \(shipped: default, permissive, strict\)"):
        find_rule_file("policies", "nope", tmp_path)


def test_load_rules_errors_and_missing_thresholds_file(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        load_rules(tmp_path / "absent")
    with pytest.raises(UserError, match="no taxonomy.yaml in it"):
        load_rules(tmp_path)
    shutil.copy(shipped_rules_dir() / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    rules = load_rules(tmp_path)
    assert rules.directory == tmp_path and np.all(rules.thresholds.image == np.float32(0.8))
    shipped = load_rules()
    assert shipped.thresholds.image[IDS.index("skull-and-crossbones")] == pytest.approx(0.9)


def test_a_policy_over_no_concepts_keeps_every_row(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("default: {threshold: 0.5, modality: any, action: drop}\n")
    empty = load_policy(path, [], [])
    decided = decide_by_policy(empty, np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32), tmp_path)
    assert decided == [([], 0)] * 3


def test_policy_thresholds_compare_in_float32_like_the_scores(tmp_path):
    """0.7 is not exact in binary: a float64 threshold would miss a float32 score of 0.7."""
    p = policy(tmp_path, "default: {threshold: 0.7, modality: image, action: drop}\n")
    image = np.full((1, len(IDS)), np.float32(0.7))
    assert p.threshold.dtype == np.float32
    assert decide_by_policy(p, image, image, tmp_path) == [(list(range(len(IDS))), 2)]


def test_threshold_set_errors_name_the_target_and_answers_need_both_lists(tmp_path):
    t = Thresholds.uniform(TAX, 0.5)
    assert rules_error(t.set, TAX, "nope", 0.5) == "--threshold: nope: unknown category or concept 'nope'"
    path = prompts_file(tmp_path, lambda d: d["answers"].pop("unsafe"))
    assert rules_error(load_prompts, path) == f"{path}: answers.unsafe: missing"
    path = prompts_file(tmp_path, lambda d: d["category_question"].pop("none_option"))
    assert rules_error(load_prompts, path) == f"{path}: category_question.none_option: missing"
