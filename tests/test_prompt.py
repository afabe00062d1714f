import gzip
import json
from pathlib import Path

import pytest

from spacy_gner import INSTRUCTION, build_prompt, build_target, format_prompt

FIXTURE = Path(__file__).parent / "fixtures" / "crossner-reference-prompts.jsonl.gz"
SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "reference-prompts"


def _records(lines):
    return [json.loads(line) for line in lines if line.strip()]


def _check(records):
    for record in records:
        instance = record["instance"]
        assert build_prompt(instance["words"], record["label_list"]) == instance["instruction_inputs"]
        assert build_target(instance["words"], instance["labels"]) == instance["prompt_labels"]


def test_reference_prompts_crossner_byte_for_byte():
    with gzip.open(FIXTURE, "rt", encoding="utf8") as file:
        records = _records(file)
    assert len(records) == 1000
    _check(records)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside this checkout")
@pytest.mark.parametrize("split", ["dev", "test"])
def test_reference_prompts_all_seven_datasets(split):
    """All 1,400 records of a split, MIT Movie / Restaurant included (not shippable)."""
    records = _records((SHARED / f"zero-shot-{split}-200.jsonl").read_text("utf8").splitlines())
    assert len(records) == 1400
    _check(records)


def test_build_prompt_shape():
    prompt = build_prompt(["John", "lives", "in", "Rome"], ["person", "city (capital)"])
    assert prompt.startswith(INSTRUCTION + "\n")
    assert "Use the specific entity tags: person, city (capital) and O.\n" in prompt
    assert prompt.endswith("Sentence: John lives in Rome")


def test_descriptions_explain_the_offered_types_and_change_nothing_without_them():
    words, labels = ["Labour", "won"], ["political party", "person", "election"]
    assert build_prompt(words, labels, {}) == build_prompt(words, labels, None) == build_prompt(words, labels)
    assert build_prompt(words, labels, {"band": "a group of musicians"}) == build_prompt(words, labels)
    prompt = build_prompt(words, labels, {"election": "a vote to choose officials",
                                          "political party": "an organisation that contests elections",
                                          "band": "a group of musicians"})
    assert prompt.endswith(
        "Use the specific entity tags: political party, person, election and O.\n"
        "The tags mean:\n- political party: an organisation that contests elections\n"
        "- election: a vote to choose officials\nSentence: Labour won")


def test_build_target_requires_one_tag_per_word():
    assert build_target(["(", "a", ")"], ["O", "B-x", "O"]) == "((O) a(B-x) )(O)"
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        build_target(["a", "b"], ["O"])


def test_format_prompt_llama_wrapping_and_chat_template(tokenizer):
    assert format_prompt("P", "inst") == "[INST] P [/INST]"
    assert format_prompt("P", "plain") == "P"
    with pytest.raises(ValueError, match="chat template"):
        format_prompt("P", "chat_template", tokenizer)
    with pytest.raises(ValueError, match="prompt_format"):
        format_prompt("P", "alpaca")


class _ChatTokenizer:
    chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"


def test_format_prompt_uses_the_tokenizer_chat_template():
    assert format_prompt("P", "chat_template", _ChatTokenizer()) == "<|user|>P<|assistant|>"
