"""Prompt construction for image-text-to-text models through their own chat template.

Each question is split into a PREFIX (the template up to the question: turn markers and, for image
prompts, the image placeholder) and a SUFFIX (the question, the end of the user turn, the start of
the assistant turn, and any prefill). The prefix depends on the sample; the suffix is the same for
every sample, so one prefix forward can serve every question (KV-cache reuse) and the suffix
tokens are computed once.

Family differences handled here: LLaVA-1.5 ("USER: <image>\\n... ASSISTANT:"), LLaVA-NeXT /
OneVision and Qwen2-VL (ChatML-style turns, image placeholders the processor expands), Gemma 3
(<bos> inside the template, so the tokenizer must not add another).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmaudit.errors import ModelError, RulesError

MARKER = "\u2063VLMAUDITQ\u2063"


@dataclass(frozen=True)
class ChatLayout:
    image_head: str  # template text before the question, with the image placeholder
    text_head: str  # the same without an image
    tail: str  # template text after the question, up to where the assistant's answer begins
    add_special_tokens: bool  # False when the template already writes the BOS token


def chat_layout(processor, model_ref: str) -> ChatLayout:
    if not getattr(processor, "chat_template", None) and not getattr(processor.tokenizer, "chat_template", None):
        raise ModelError(f"model {model_ref!r} has no chat template; the vlm backend needs a chat model")
    image_head, tail = _split(processor, [{"type": "image"}], model_ref)
    text_head, _ = _split(processor, [], model_ref)
    bos = getattr(processor.tokenizer, "bos_token", None)
    return ChatLayout(image_head, text_head, tail, not (bos and image_head.startswith(bos)))


def _split(processor, before: list, model_ref: str) -> tuple[str, str]:
    messages = [{"role": "user", "content": before + [{"type": "text", "text": MARKER}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    head, found, tail = rendered.partition(MARKER)
    if not found:
        raise ModelError(f"model {model_ref!r}: its chat template drops the question text")
    return head, tail


def suffix_ids(tokenizer, layout: ChatLayout, head: str, question: str, prefill: str = "") -> list[int]:
    """Token ids of question + tail + prefill as they come after HEAD. Tokenized together with
    the head when the head's tokens are a prefix of the joint tokenization (the usual case), so the
    boundary is tokenized exactly as in the natural prompt; otherwise tokenized on its own."""
    text = question + layout.tail + prefill
    head_ids = _ids(tokenizer, head, layout.add_special_tokens)
    joint = _ids(tokenizer, head + text, layout.add_special_tokens)
    if joint[:len(head_ids)] == head_ids and len(joint) > len(head_ids):
        return joint[len(head_ids):]
    return _ids(tokenizer, text, False)


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def answer_ids(tokenizer, words: tuple[str, ...] | list[str], context: str = "") -> list[int]:
    """Ids of the single tokens a reply starting with WORD would begin with: WORD and ' WORD', on
    its own and right after CONTEXT (the end of the prompt). Multi-token spellings are skipped."""
    found: list[int] = []
    for word in words:
        for spelled in (word, " " + word):
            candidates = [_ids(tokenizer, spelled, False)]
            if context:
                base = _ids(tokenizer, context, False)
                joint = _ids(tokenizer, context + spelled, False)
                if joint[:len(base)] == base:
                    candidates.append(joint[len(base):])
            for ids in candidates:
                if len(ids) == 1 and ids[0] not in found:
                    found.append(ids[0])
    return found


def checked_answer_ids(tokenizer, words, context: str, what: str, prompts_path, model_ref: str) -> list[int]:
    ids = answer_ids(tokenizer, words, context)
    if not ids:
        raise RulesError(prompts_path, what, f"none of {list(words)} is a single token for the tokenizer of "
                                             f"{model_ref!r}; list answer words the model starts its reply with")
    return ids
