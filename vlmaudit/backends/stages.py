"""The two kinds of stage a backend is built from: a screen (CLIP/SigLIP, or open_nsfw) and a VLM
judge. build_backend (the package) and the cascade both build theirs here, so neither imports
the other."""

from __future__ import annotations


def build_screen(taxonomy, options):
    """The CLIP/SigLIP scorer, or the open_nsfw model for --model opennsfw."""
    from vlmaudit.backends.opennsfw import MODEL_NAME

    if options.model == MODEL_NAME:
        from vlmaudit.backends.opennsfw import OpenNsfwScorer

        return OpenNsfwScorer(taxonomy, options)
    from vlmaudit.backends.clip import ClipScorer

    return ClipScorer(taxonomy, options)


def build_judge(rules, options, extra):
    """The VLM judge; `extra`: the package's BackendOptions (prompts, rationale)."""
    from vlmaudit.backends.vlm import VlmJudge
    from vlmaudit.rulebook.prompts import load_prompts
    from vlmaudit.rulebook.load import find_rule_file

    prompts = load_prompts(find_rule_file("prompts", extra.prompts, rules.directory))
    return VlmJudge(rules.taxonomy, options, prompts, rules.thresholds, extra.rationale)
