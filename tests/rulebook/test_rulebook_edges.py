"""Rulebook edges the older tests left open (found by mutation testing): every prompt field that a
file sets or leaves to its default, the file and field named by each prompt and policy error, the
`match` action of policies, the modality rule parts, thresholds on top of a base."""

import numpy as np
import pytest
import yaml

from conftest import rules_error
from vlmaudit.errors import UserError
from vlmaudit.rulebook.load import find_rule_file, load_rules, shipped_rules_dir
from vlmaudit.rulebook.policy import MODALITIES, load_policy, rule_parts
from vlmaudit.rulebook.prompts import load_prompts
from vlmaudit.rulebook.thresholds import Thresholds, load_thresholds

TAX = load_rules().taxonomy
IDS, CATS = TAX.concept_ids, [c.category for c in TAX.concepts]


def prompts_file(tmp_path, edit=lambda d: None):
    data = yaml.safe_load((shipped_rules_dir() / "prompts" / "unsafeconcepts.yaml").read_text())
    edit(data)
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def test_prompt_fields_come_from_the_file_when_it_sets_them(tmp_path):
    def edit(d):
        d["assistant_prefill"] = '{"answer": "'
        d["caption"].pop("image", None)

    path, data = prompts_file(tmp_path, edit)
    p = load_prompts(path)
    assert p.path == path and p.prefill == '{"answer": "' and p.rationale_question == data["rationale_question"]
    assert p.caption_questions == tuple(data["caption"]["questions"]) and p.caption_image == "none"


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d["caption"].update(questions=[" "]), "caption.questions[0]", "non-empty string"),
    (lambda d: d["caption"].update(context=" "), "caption.context", "non-empty string"),
    (lambda d: d["category_question"].update(none_option=" "), "category_question.none_option", "non-empty string"),
    (lambda d: d.update(rationale_question=" "), "rationale_question", "non-empty string"),
    (lambda d: d.update(image_questions=["ok", 3]), "image_questions[1]", "expected str, got int"),
])
def test_prompt_errors_name_the_file_and_field(tmp_path, edit, field, problem):
    path, _ = prompts_file(tmp_path, edit)
    message = rules_error(load_prompts, path)
    assert message.startswith(f"{path}: {field}: ") and problem in message


def policy(tmp_path, text):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return load_policy(path, IDS, CATS)


def test_policy_match_action_review_or_drop_never_keep(tmp_path):
    base = "default: {threshold: 0.5, modality: any, action: keep}\n"
    assert policy(tmp_path, base).match == 2  # drop unless the policy says otherwise
    assert policy(tmp_path, base + "match: review\n").match == 1
    assert policy(tmp_path, base + "match: drop\n").match == 2
    message = rules_error(policy, tmp_path, base + "match: keep\n")
    assert message == (f"{tmp_path / 'mine.yaml'}: match: 'keep' is not one of review, drop (a known-content match "
                       "is never kept)")
    assert rules_error(policy, tmp_path, base + "match: [drop]\n").startswith(f"{tmp_path / 'mine.yaml'}: match: ")


def test_policy_errors_name_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    assert rules_error(policy, tmp_path, "default: {threshold: 0.5, modality: any, action: keep}\nextra: 1\n").startswith(
        f"{path}: (top)")
    assert rules_error(policy, tmp_path, "default: {threshold: 2, modality: any, action: keep}\n").startswith(
        f"{path}: default.threshold")


def test_rule_parts_of_each_modality():
    assert {m: rule_parts(i) for i, m in enumerate(MODALITIES)} == {
        "image": (True, False, True), "caption": (False, True, True), "any": (True, True, False),
        "both": (True, True, True)}


def test_thresholds_file_applies_on_top_of_a_base_copy(tmp_path):
    base = Thresholds(np.full(len(IDS), 0.3, np.float32), np.full(len(IDS), 0.6, np.float32))
    same = load_thresholds(None, TAX, base=base)
    assert (same.image == 0.3).all() and (same.caption == 0.6).all()
    same.image[:] = 0.1
    assert (base.image == 0.3).all()  # a copy: the base is never changed
    path = tmp_path / "t.yaml"
    path.write_text("concepts: {torture: {image: 0.9}}\n")
    loaded = load_thresholds(path, TAX, base=base)
    t = IDS.index("torture")
    assert loaded.image[t] == pytest.approx(0.9) and loaded.caption[t] == pytest.approx(0.6)
    assert (np.delete(loaded.image, t) == np.float32(0.3)).all() and (base.image == 0.3).all()


def test_unknown_rule_kind_is_named_in_the_error():
    with pytest.raises(UserError, match=r"^no widgets named 'nope' \(shipped: \); or give a .yaml path$"):
        find_rule_file("widgets", "nope")



def test_thresholds_yaml_is_what_load_thresholds_reads(tmp_path):
    from vlmaudit.rulebook.thresholds import thresholds_yaml

    text = thresholds_yaml({"categories": {"hate": {"image": 0.25, "caption": 0.5}}, "concepts": {"torture": {"image": 0.75}},
                            "empty": {}}, header="calibrated\nfrom labels")
    assert text.startswith("# calibrated\n# from labels\n") and "empty" not in text
    assert yaml.safe_load(text) == {"categories": {"hate": {"image": 0.25, "caption": 0.5}},
                                    "concepts": {"torture": {"image": 0.75}}}
    path = tmp_path / "t.yaml"
    path.write_text(text)
    loaded = load_thresholds(path, TAX, default=0.8)
    hate = np.array([c == "hate" for c in CATS])
    assert (loaded.image[hate] == np.float32(0.25)).all() and (loaded.caption[hate] == np.float32(0.5)).all()
    assert loaded.image[IDS.index("torture")] == np.float32(0.75) and loaded.caption[IDS.index("torture")] == np.float32(0.8)
    assert thresholds_yaml({"concepts": {}}) == "{}\n" and yaml.safe_load(thresholds_yaml({})) == {}
    assert thresholds_yaml({"concepts": {"torture": {"image": np.float32(0.5)}}}) == "concepts:\n  torture: {image: 0.5}\n"


def test_apply_to_report_uses_the_report_taxonomy_in_place(tmp_path):
    from vlmaudit.rulebook.thresholds import apply_to_report

    meta = {"concepts": ["a1", "a2", "b1"], "concept_categories": ["a", "a", "b"], "categories": ["a", "b"]}
    image, caption = np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5, 0.6])
    path = tmp_path / "t.yaml"
    path.write_text("categories: {a: {caption: 0.9}}\nconcepts: {b1: 0.05}\n")
    apply_to_report(path, meta, image, caption)
    assert image.tolist() == pytest.approx([0.1, 0.2, 0.05]) and caption.tolist() == pytest.approx([0.9, 0.9, 0.05])
    path.write_text("concepts: {zz: 0.5}\n")
    assert rules_error(apply_to_report, path, meta, image, caption).startswith(f"{path}: concepts")


@pytest.mark.parametrize("text, field, problem", [
    ("categories: {hate: {action: delete}}\n", "categories.hate.action", "'delete' is not one of keep, review, drop"),
    ("categories: {hate: {modality: 3}}\n", "categories.hate.modality", "non-empty string"),
    ("concepts: {torture: {threshold: -1}}\n", "concepts.torture.threshold", ""),
    ("categories: {nope: {action: drop}}\n", "categories", "nope"),
    ("concepts: {torture: {colour: red}}\n", "concepts.torture", "colour"),
    ("concepts: {nope: {action: drop}}\n", "concepts", "nope"),
])
def test_policy_rule_errors_name_the_file_and_field(tmp_path, text, field, problem):
    message = rules_error(policy, tmp_path, "default: {threshold: 0.5, modality: any, action: keep}\n" + text)
    assert message.startswith(f"{tmp_path / 'mine.yaml'}: {field}") and problem in message


def test_a_thresholds_file_overrides_the_rules_directory_where_it_sets_them(tmp_path):
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(shipped_rules_dir(), rules)
    (rules / "thresholds.yaml").write_text("default: 0.4\ncategories: {hate: {caption: 0.3}}\n")
    extra = tmp_path / "calibrated.yaml"
    extra.write_text("concepts: {torture: {image: 0.9}}\n")
    loaded = load_rules(rules, thresholds_file=str(extra)).thresholds
    hate, t = np.array([c == "hate" for c in CATS]), IDS.index("torture")
    assert loaded.image[t] == np.float32(0.9) and loaded.caption[t] == np.float32(0.4)
    assert (loaded.caption[hate] == np.float32(0.3)).all() and (np.delete(loaded.image, t) == np.float32(0.4)).all()


def taxonomy_file(tmp_path, edit):
    data = yaml.safe_load((shipped_rules_dir() / "taxonomy.yaml").read_text())
    edit(data)
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d["concepts"][0].pop("category"), "concepts[0].category", "missing"),
    (lambda d: d["concepts"][1].pop("prompts"), "concepts[1].prompts", "missing"),
    (lambda d: d["concepts"][0].update(id=" "), "concepts[0].id", "non-empty string"),
    (lambda d: d.update(prompt_templates="a photo of {name}"), "prompt_templates", "expected a list"),
    (lambda d: d.update(safe_prompts=["ok", 2]), "safe_prompts[1]", "expected str, got int"),
    (lambda d: d.update(version=" "), "version", "non-empty string"),
])
def test_taxonomy_errors_name_the_file_and_field(tmp_path, edit, field, problem):
    from vlmaudit.rulebook.taxonomy import load_taxonomy

    path = taxonomy_file(tmp_path, edit)
    message = rules_error(load_taxonomy, path)
    assert message.startswith(f"{path}: {field}: ") and problem in message


def test_a_concept_without_description_has_an_empty_one(tmp_path):
    from vlmaudit.rulebook.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(taxonomy_file(tmp_path, lambda d: d["concepts"][0].pop("description", None)))
    assert taxonomy.concepts[0].description == ""


def test_taxonomy_prompt_templates_are_optional_and_need_the_name(tmp_path):
    from vlmaudit.rulebook.taxonomy import load_taxonomy

    assert load_taxonomy(taxonomy_file(tmp_path, lambda d: d.pop("prompt_templates"))).prompt_templates == ()
    path = taxonomy_file(tmp_path, lambda d: d.update(prompt_templates=["a photo of {name}", "no field"]))
    assert rules_error(load_taxonomy, path) == f"{path}: prompt_templates[1]: must contain {{name}}"


# 1 mapping + key a + [1, 2, 3] (4) + key b + [*x, *x] (1 + 4 + 4): 16 nodes with the aliases expanded;
# after key b the count is exactly 7
ALIASED = "a: &x [1, 2, 3]\nb: [*x, *x]\n"


@pytest.mark.parametrize("limit, accepted", [(16, True), (15, False), (7, False)])
def test_yaml_nodes_are_counted_with_aliases_expanded(tmp_path, monkeypatch, limit, accepted):
    from vlmaudit.rulebook import yamlfile

    monkeypatch.setattr(yamlfile, "MAX_YAML_NODES", limit)
    path = tmp_path / "a.yaml"
    path.write_text(ALIASED)
    if accepted:
        assert yamlfile.read_yaml(path) == {"a": [1, 2, 3], "b": [[1, 2, 3], [1, 2, 3]]}
    else:
        assert rules_error(yamlfile.read_yaml, path) == f"{path}: (file): aliases expand to over {limit} nodes (a YAML alias bomb?)"


def test_a_recursive_yaml_document_is_refused(tmp_path):
    from vlmaudit.rulebook.yamlfile import read_yaml

    path = tmp_path / "r.yaml"
    for text in ("&a [1, *a]\n", "&a [*a]\n"):
        path.write_text(text)
        assert "aliases expand to over" in rules_error(read_yaml, path)


def test_read_yaml_size_limit_is_exact(tmp_path, monkeypatch):
    from vlmaudit.rulebook import yamlfile

    path = tmp_path / "s.yaml"
    path.write_text("a: 1234\n")  # 8 bytes
    monkeypatch.setattr(yamlfile, "MAX_YAML_BYTES", 8)
    assert yamlfile.read_yaml(path) == {"a": 1234}
    monkeypatch.setattr(yamlfile, "MAX_YAML_BYTES", 7)
    assert rules_error(yamlfile.read_yaml, path) == f"{path}: (file): over the 7-byte limit for a rules file"


@pytest.mark.parametrize("content, message", [
    (b"a: \xff\n", "(file): not UTF-8 text (invalid start byte at byte 3)"),
    (b"a: [1,\n  2\nb: }\n", "(file): invalid YAML: while parsing a flow sequence"),
    (b"[" * 5000 + b"]" * 5000, "(file): nested too deeply"),
])
def test_read_yaml_errors_name_the_file(tmp_path, content, message):
    from vlmaudit.rulebook.yamlfile import read_yaml

    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    text = rules_error(read_yaml, path)
    assert text.startswith(f"{path}: {message}") and "\n" not in text and "XX" not in text
    assert rules_error(read_yaml, tmp_path / "missing.yaml") == f"{tmp_path / 'missing.yaml'}: (file): cannot read: No such file or directory"


def test_policy_category_rules_and_an_absent_description(tmp_path):
    p = policy(tmp_path, "default: {threshold: 0.5, modality: any, action: keep}\ncategories: {hate: {action: drop}}\n")
    hate = np.array([c == "hate" for c in CATS])
    assert (p.action[hate] == 2).all() and (p.action[~hate] == 0).all() and p.description == ""


def test_thresholds_yaml_keeps_the_given_order():
    from vlmaudit.rulebook.thresholds import thresholds_yaml

    text = thresholds_yaml({"concepts": {"torture": {"image": 0.5, "caption": 0.25}, "blood": {"image": 0.75}}})
    assert text == "concepts:\n  torture: {image: 0.5, caption: 0.25}\n  blood: {image: 0.75}\n"


def test_prompt_templates_must_be_strings(tmp_path):
    from vlmaudit.rulebook.taxonomy import load_taxonomy

    path = taxonomy_file(tmp_path, lambda d: d.update(prompt_templates=["a photo of {name}", 3]))
    assert rules_error(load_taxonomy, path).startswith(f"{path}: prompt_templates[1]: expected str")
