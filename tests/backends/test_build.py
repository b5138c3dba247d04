"""build_backend: which scorer each --backend / --model gives, the options each receives (rules'
prompts directory, thresholds, rationale), and the option errors, raised before any model loads."""

import shutil

import pytest

from vlmaudit.backends import BACKENDS, BackendOptions, build_backend
from vlmaudit.backends.modelref import ModelOptions
from vlmaudit.errors import UserError
from vlmaudit.rulebook.load import load_rules, shipped_rules_dir


@pytest.fixture
def nothing_loads(monkeypatch):
    from vlmaudit.backends import head, stages

    def fail(*args, **kwargs):
        pytest.fail("a model was loaded")

    for module, name in ((stages, "build_screen"), (stages, "build_judge"), (head, "HeadScorer")):
        monkeypatch.setattr(module, name, fail)


def user_error(*args) -> str:
    with pytest.raises(UserError) as err:
        build_backend(*args)
    return str(err.value)


@pytest.mark.parametrize("name", ["vlm", "head", "cascade"])
def test_compile_is_refused_for_every_backend_but_clip(nothing_loads, name):
    options = ModelOptions("some/model", "cpu", compile=True)
    assert user_error(name, load_rules(), options) == f"--compile: supported by the clip backend only, not --backend {name}"


def test_an_unknown_backend_names_the_available_ones(nothing_loads):
    assert user_error("siglip", load_rules(), ModelOptions("m")) == (
        "--backend siglip: unknown backend (available: clip, vlm, head, cascade)")
    assert BACKENDS == ("clip", "vlm", "head", "cascade")


def test_the_head_backend_needs_a_head_directory(nothing_loads):
    assert user_error("head", load_rules(), ModelOptions("m")) == (
        "--backend head needs --head HEAD_DIR (a directory written by `vlmaudit train-head`)")


def test_default_backend_options():
    options = BackendOptions()
    assert (options.prompts, options.rationale, options.head, options.judge_model, options.escalate_above,
            options.escalate_top) == ("unsafeconcepts", False, None, None, None, None)


def test_clip_gives_the_zero_shot_scorer_and_compile_is_allowed(tiny_clip, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    backend = build_backend("clip", load_rules(), ModelOptions(str(tiny_clip), "cpu", "fp32", compile=True))
    assert backend.name == "clip" and backend.describe()["model"] == str(tiny_clip)


def test_model_opennsfw_gives_the_bundled_open_nsfw_screen():
    backend = build_backend("clip", load_rules(), ModelOptions("opennsfw", "cpu"))
    assert backend.name == "opennsfw" and backend.describe()["family"] == "open_nsfw"


def test_the_judge_gets_the_rules_thresholds_and_the_rationale_switch(tiny_vlms):
    rules = load_rules()
    judge = build_backend("vlm", rules, ModelOptions(str(tiny_vlms("llava")), "cpu", "fp32"),
                          BackendOptions(rationale=True))
    assert judge.name == "vlm" and judge.rationale is True and judge.thresholds is rules.thresholds
    assert judge.prompts.path.name == "unsafeconcepts.yaml"


def test_a_prompt_file_in_the_rules_directory_is_found_by_name(tmp_path, tiny_vlms):
    rules_dir = tmp_path / "rules"
    shutil.copytree(shipped_rules_dir(), rules_dir)
    text = (rules_dir / "prompts" / "unsafeconcepts.yaml").read_text()
    (rules_dir / "prompts" / "mine.yaml").write_text(text.replace("  image: none", "  image: blank"))
    judge = build_backend("vlm", load_rules(rules_dir), ModelOptions(str(tiny_vlms("llava")), "cpu", "fp32"),
                          BackendOptions(prompts="mine"))
    assert judge.prompts.path == rules_dir / "prompts" / "mine.yaml" and judge.prompts.caption_image == "blank"


def test_head_gives_the_safety_head_scorer(tmp_path, tiny_clip):
    from conftest import save_tiny_head

    save_tiny_head(tmp_path / "head", tiny_clip)
    backend = build_backend("head", load_rules(), ModelOptions(None, "cpu"), BackendOptions(head=tmp_path / "head"))
    assert backend.name == "head" and backend.describe()["model"] == str(tmp_path / "head")
