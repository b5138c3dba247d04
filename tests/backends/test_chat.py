"""Prompt construction through a model's own chat template: the prefix/suffix split, where the BOS
token comes from, token boundaries between prefix and question, answer-token variants, and the
errors for templates and answer words that cannot work."""

from types import SimpleNamespace

import pytest

from vlmaudit.backends import chat
from vlmaudit.errors import ModelError, RulesError


@pytest.fixture(scope="module")
def processor(tiny_vlms):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlms("llava"))


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class Templated:
    """A processor whose chat template is a Python function of the messages."""

    def __init__(self, render, bos=None, on_processor=True, on_tokenizer=False):
        self.render = render
        self.chat_template = "template" if on_processor else None
        self.tokenizer = SimpleNamespace(chat_template="template" if on_tokenizer else None, bos_token=bos)

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and not tokenize
        (message,) = messages
        assert message["role"] == "user"
        return self.render(message["content"])


def simple(content):
    image = "<img>" if any(part["type"] == "image" for part in content) else ""
    text = "".join(part["text"] for part in content if part["type"] == "text")
    return f"<s>[U] {image}{text} [A]"


def test_the_layout_splits_the_template_around_the_question():
    layout = chat.chat_layout(Templated(simple), "m")
    assert (layout.image_head, layout.text_head, layout.tail) == ("<s>[U] <img>", "<s>[U] ", " [A]")
    assert layout.add_special_tokens  # the tokenizer has no BOS token of its own


def test_no_second_bos_when_the_template_writes_it():
    assert not chat.chat_layout(Templated(simple, bos="<s>"), "m").add_special_tokens
    assert chat.chat_layout(Templated(simple, bos="<bos>"), "m").add_special_tokens


def test_a_template_on_the_tokenizer_only_is_enough():
    layout = chat.chat_layout(Templated(simple, on_processor=False, on_tokenizer=True), "m")
    assert layout.tail == " [A]"


def test_a_model_without_a_chat_template_is_refused():
    with pytest.raises(ModelError) as err:
        chat.chat_layout(Templated(simple, on_processor=False), "org/base-model")
    assert str(err.value) == "model 'org/base-model' has no chat template; the vlm backend needs a chat model"


def test_a_template_that_drops_the_question_is_refused():
    with pytest.raises(ModelError) as err:
        chat.chat_layout(Templated(lambda content: "<s>[U] fixed [A]"), "org/odd")
    assert str(err.value) == "model 'org/odd': its chat template drops the question text"


def test_suffix_ids_continue_the_heads_tokens(processor):
    tok = processor.tokenizer
    layout = chat.ChatLayout("USER: <image>\n", "USER: ", " ASSISTANT:", True)
    suffix = chat.suffix_ids(tok, layout, "USER: ", "Is it safe?", "Yes")
    assert suffix == ids(tok, "USER: Is it safe? ASSISTANT:Yes")[len(ids(tok, "USER: ")):]
    assert tok.decode(suffix) == "Is it safe? ASSISTANT:Yes"


def test_suffix_ids_where_the_boundary_merges_are_tokenized_alone(processor):
    tok = processor.tokenizer
    layout = chat.ChatLayout("", "", " ASSISTANT:", False)
    assert ids(tok, "Ye") == [tok.convert_tokens_to_ids("Ye")] and len(ids(tok, "Yes")) == 1  # "Ye" + "s" merge
    assert chat.suffix_ids(tok, layout, "Ye", "s it") == ids(tok, "s it ASSISTANT:")


def test_answer_ids_are_the_single_token_spellings_in_order_without_repeats(processor):
    tok = processor.tokenizer
    one = tok.convert_tokens_to_ids
    assert chat.answer_ids(tok, ["Yes", "yes", "Yes"]) == [one("Yes"), one("ĠYes"), one("yes"), one("Ġyes")]
    assert chat.answer_ids(tok, ["Absolutely"]) == []  # several tokens: a reply cannot begin with it in one
    assert chat.answer_ids(tok, ["Yes"], context=" ASSISTANT:") == [one("Yes"), one("ĠYes")]


def test_answer_ids_after_the_context_add_the_joint_spelling(processor):
    tok = processor.tokenizer
    one = tok.convert_tokens_to_ids
    # "s" alone is one token; after "Ye" it only exists inside "Yes", which is not "Ye" + something
    assert chat.answer_ids(tok, ["s"], context="Ye") == [one("s")]
    assert chat.answer_ids(tok, ["es"], context="Y") == []  # "Y"+"es" tokenizes as "Yes": nothing after "Y"
    assert chat.answer_ids(tok, ["A"], context="x") == [one("A")]


def test_unusable_answer_words_name_the_file_and_the_field(processor, tmp_path):
    path = tmp_path / "prompts.yaml"
    with pytest.raises(RulesError) as err:
        chat.checked_answer_ids(processor.tokenizer, ["Absolutely", "Certainly"], "", "answers.safe", path, "org/m")
    assert str(err.value) == (f"{path}: answers.safe: none of ['Absolutely', 'Certainly'] is a single token for the "
                              "tokenizer of 'org/m'; list answer words the model starts its reply with")
    assert chat.checked_answer_ids(processor.tokenizer, ["No"], "", "answers.unsafe", path, "org/m") == [
        processor.tokenizer.convert_tokens_to_ids("No"), processor.tokenizer.convert_tokens_to_ids("ĠNo")]


def test_a_suffix_tokenized_alone_gets_no_bos(tiny_vlms):
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(tiny_vlms("gemma3")).tokenizer
    tok.add_bos_token = True  # as the real Gemma tokenizer does
    layout = chat.ChatLayout("", "", "<end_of_turn>", False)
    assert len(ids(tok, "Ye")) == 1 and len(ids(tok, "Yes")) == 1  # the boundary merges: tokenized alone
    assert chat.suffix_ids(tok, layout, "Ye", "s it") == ids(tok, "s it<end_of_turn>")
