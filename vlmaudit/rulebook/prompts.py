"""Alignment questions for the VLM judge, loaded from rules/prompts/NAME.yaml and validated.

A prompt file says which questions to ask (image and caption variants), which answer words mean
safe and unsafe, what the assistant turn starts with (JSON judges), and how to ask for a category.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmaudit.errors import RulesError
from vlmaudit.rulebook.yamlfile import check_list, check_mapping, check_str, read_yaml

TOP_KEYS = {"version", "answers", "assistant_prefill", "image_questions", "caption", "category_question",
            "rationale_question"}
CAPTION_KEYS = {"image", "context", "questions"}
CATEGORY_KEYS = {"image", "caption", "none_option"}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class PromptSet:
    path: Path
    safe_answers: tuple[str, ...]
    unsafe_answers: tuple[str, ...]
    prefill: str
    image_questions: tuple[str, ...]
    caption_context: str
    caption_questions: tuple[str, ...]
    caption_image: str  # "none" or "blank"
    category_image: str
    category_caption: str
    none_option: str
    rationale_question: str


def load_prompts(path: Path) -> PromptSet:
    data = check_mapping(path, "(top)", read_yaml(path), TOP_KEYS,
                         {"answers", "image_questions", "caption", "category_question"})
    answers = check_mapping(path, "answers", data["answers"], {"safe", "unsafe"}, {"safe", "unsafe"})
    caption = check_mapping(path, "caption", data["caption"], CAPTION_KEYS, {"context", "questions"})
    category = check_mapping(path, "category_question", data["category_question"], CATEGORY_KEYS, CATEGORY_KEYS)
    return PromptSet(
        path=Path(path),
        safe_answers=_strings(path, "answers.safe", answers["safe"]),
        unsafe_answers=_strings(path, "answers.unsafe", answers["unsafe"]),
        prefill=str(data.get("assistant_prefill") or ""),
        image_questions=_strings(path, "image_questions", data["image_questions"]),
        caption_context=_with_field(path, "caption.context", caption["context"], "{caption}"),
        caption_questions=_strings(path, "caption.questions", caption["questions"]),
        caption_image=_choice(path, "caption.image", caption.get("image", "none"), ("none", "blank")),
        category_image=_with_field(path, "category_question.image", category["image"], "{options}"),
        category_caption=_with_field(path, "category_question.caption", category["caption"], "{options}"),
        none_option=check_str(path, "category_question.none_option", category["none_option"]),
        rationale_question=check_str(path, "rationale_question",
                                     data.get("rationale_question", "Explain briefly what in this image could be unsafe.")),
    )


def _strings(path, field: str, value) -> tuple[str, ...]:
    items = check_list(path, field, value, str, non_empty=True)
    for i, item in enumerate(items):
        check_str(path, f"{field}[{i}]", item)
    return tuple(items)


def _with_field(path, field: str, value, placeholder: str) -> str:
    text = check_str(path, field, value)
    if placeholder not in text:
        raise RulesError(path, field, f"must contain {placeholder}")
    return text


def _choice(path, field: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise RulesError(path, field, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def category_options(category_names: list[str], none_option: str) -> tuple[str, list[str]]:
    """('A. Hate\\nB. Harassment\\n...\\nJ. None...', ['A', ..., 'J']): the categories in taxonomy
    order, then the none option last."""
    names = list(category_names) + [none_option]
    letters = list(LETTERS[:len(names)])
    return "\n".join(f"{letter}. {name}" for letter, name in zip(letters, names)), letters
