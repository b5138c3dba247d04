from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from vlmaudit.errors import RulesError
from vlmaudit.rulebook.load import load_rules, shipped_rules_dir

SHARED = Path(__file__).resolve().parents[1] / "data" / "unsafe_concepts.yaml"  # copy of shared/taxonomy


def test_shipped_taxonomy_has_75_concepts_in_9_categories_with_prompts():
    taxonomy = load_rules().taxonomy
    assert len(taxonomy.categories) == 9 and len(taxonomy.concepts) == 75
    assert all(len(taxonomy.prompts_for(c)) >= 3 for c in taxonomy.concepts)
    assert len(set(taxonomy.concept_ids)) == 75


def test_names_match_the_authors_exactly():
    source = yaml.safe_load(SHARED.read_text())
    taxonomy = load_rules().taxonomy
    assert [c.name for c in taxonomy.categories] == [c["name"] for c in source["categories"]]
    assert [c.name for c in taxonomy.concepts] == [n for c in source["categories"] for n in c["concepts"]]


def rules_copy(tmp_path, edit) -> Path:
    data = yaml.safe_load((shipped_rules_dir() / "taxonomy.yaml").read_text())
    edit(data)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d["concepts"][3].update(colour="red"), "concepts[3].colour", "unknown key"),
    (lambda d: d["concepts"][4].update(id="swastika"), "concepts[4].id", "duplicate id"),
    (lambda d: d["concepts"][5].update(prompts=[]), "concepts[5].prompts", "must not be empty"),
    (lambda d: d["concepts"][6].update(category="spam"), "concepts[6].category", "unknown category"),
    (lambda d: d.pop("safe_prompts"), "safe_prompts", "missing"),
])
def test_validation_errors_name_file_and_field(tmp_path, edit, field, problem):
    directory = rules_copy(tmp_path, edit)
    with pytest.raises(RulesError) as info:
        load_rules(directory)
    assert str(directory / "taxonomy.yaml") in str(info.value) and field in str(info.value)
    assert problem in str(info.value)
    result = run_cli("concepts", "--rules", directory)
    assert result.exit_code == 2 and field in result.output and "Traceback" not in result.output


def test_thresholds_file_and_overrides(tmp_path):
    rules_copy(tmp_path, lambda d: None)
    (tmp_path / "thresholds.yaml").write_text("default: 0.5\ncategories: {hate: {image: 0.6}}\nconcepts: {swastika: 0.7}\n")
    rules = load_rules(tmp_path)
    ids = rules.taxonomy.concept_ids
    t = rules.thresholds
    assert t.image[ids.index("swastika")] == pytest.approx(0.7)
    assert t.image[ids.index("ss-runes")] == pytest.approx(0.6) and t.caption[ids.index("ss-runes")] == 0.5
    t.set(rules.taxonomy, "violence", 0.9)
    assert t.caption[ids.index("torture")] == pytest.approx(0.9)
    (tmp_path / "thresholds.yaml").write_text("concepts: {nope: 0.7}\n")
    with pytest.raises(RulesError, match="concepts.nope"):
        load_rules(tmp_path)


def test_concepts_command_json():
    import json

    result = run_cli("concepts", "--json")
    data = json.loads(result.output)
    assert result.exit_code == 0 and len(data["concepts"]) == 75
    assert data["concepts"][0]["name"] == "Swastika" and data["concepts"][0]["category"] == "hate"
