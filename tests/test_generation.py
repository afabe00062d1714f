import pytest
from support import LABELS, TRAIN_WORDS

from spacy_gner.generation import HFGenerator, plan_batches
from spacy_gner.prompt import Request


def test_plan_batches_sorts_and_respects_both_limits():
    costs = [5, 50, 10, 40, 45, 200]
    batches = plan_batches(costs, batch_size=2, max_batch_tokens=100)
    assert batches == [[5], [1, 4], [3, 2], [0]]
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches[1:]:
        assert len(batch) <= 2 and max(costs[i] for i in batch) * len(batch) <= 100
    assert plan_batches([], 4, 100) == []


REQUEST = Request(tuple(TRAIN_WORDS), tuple(LABELS), 80)
PROMPT = REQUEST.prompt
TARGET_START = "John(B-person) explored(O) Tokyo(B-location)"


@pytest.mark.parametrize("copy_aware", [True, False])
@pytest.mark.parametrize("model", ["tiny_t5", "tiny_llama"])
def test_generation_batched_equals_one_at_a_time(model, copy_aware, request):
    path = request.getfixturevalue(model)
    other = Request(("Mary", "visited", "Paris"), tuple(LABELS), 80)
    requests = [REQUEST, other, REQUEST]
    batched = HFGenerator(path, batch_size=3, copy_aware=copy_aware)(requests)
    single = HFGenerator(path, batch_size=1, copy_aware=copy_aware)
    assert batched == [single([r])[0] for r in requests]
    assert batched[0].startswith(TARGET_START)


def test_llama_prompt_format(tiny_llama):
    generator = HFGenerator(tiny_llama, device="cpu")
    tokenizer = generator.tokenizer
    assert generator.encode(["P"]) == tokenizer(["[INST] P [/INST]"])["input_ids"]
    assert generator.encode(["P"])[0][0] == tokenizer.bos_token_id
    assert HFGenerator(tiny_llama, prompt_format="plain").encode(["P"]) == tokenizer(["P"])["input_ids"]
    with pytest.raises(ValueError, match="chat template"):
        HFGenerator(tiny_llama, prompt_format="chat_template")([REQUEST])


def test_seq2seq_models_get_the_bare_prompt(tiny_t5):
    generator = HFGenerator(tiny_t5, prompt_format="inst")
    assert generator.encode(["P"]) == generator.tokenizer(["P"])["input_ids"]


@pytest.mark.parametrize("copy_aware", [True, False])
def test_beam_search(tiny_t5, copy_aware):
    (text,) = HFGenerator(tiny_t5, num_beams=3, copy_aware=copy_aware)([REQUEST])
    assert text.startswith(TARGET_START)


def test_an_output_cut_by_max_new_tokens_is_reported(tiny_t5, caplog):
    generator = HFGenerator(tiny_t5, copy_aware=False)
    (full,) = generator([REQUEST])
    (text,) = generator([Request(REQUEST.words, REQUEST.labels, 5)])
    assert full.startswith(text) and len(text) < len(full)
    assert "max_new_tokens=5" in caplog.text


def test_invalid_settings():
    with pytest.raises(ValueError, match="positive"):
        HFGenerator("x", batch_size=0)


def test_a_label_set_prefix_is_computed_once_and_kept_across_calls(tiny_llama, monkeypatch):
    import spacy_gner.generation as generation

    computed = []
    encode = generation.encode_prefix
    monkeypatch.setattr(generation, "encode_prefix", lambda model, ids: computed.append(ids) or encode(model, ids))
    generator = HFGenerator(tiny_llama, device="cpu")
    other = Request(("Mary", "visited", "Paris"), tuple(LABELS), 80)
    first = generator([REQUEST, other])
    assert len(computed) == 2  # the label-free part, then this label set's
    assert generator([other, REQUEST]) == first[::-1] and len(computed) == 2
    assert generator([other]) == first[1:] and len(computed) == 2
    # one sentence of a new label set: only the label-free part serves it, until it comes again
    swapped = Request(other.words, tuple(reversed(LABELS)), 80)
    generator([swapped])
    assert len(computed) == 2
    generator([swapped])
    assert len(computed) == 3
    assert first[0].startswith(TARGET_START)
