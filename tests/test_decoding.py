"""Copy-aware decoding: units, the constraint, and exactness against constrained greedy search."""
import random

import pytest
import torch
from support import LABELS, random_model, train_tokenizer

from spacy_gner.decoding import (
    CopyState,
    Scores,
    copy_constraint,
    copy_decode,
    encode_prefix,
    pad,
    score_tags,
    word_units,
    _InPlaceRows,
)
from spacy_gner.generators import Request
from spacy_gner.prompt import build_target, encode_prompt_start, encode_prompts, format_prompt

SENTENCES = [
    "John explored Tokyo and flew back to New York .".split(),
    ["(", "KDD-95", ")", "was", "held", "in", "Montréal", ",", "Québec", "!"],
    ["Mary"],
    "the wet wet wet song by Wet Wet Wet".split(),
]


def _random_tags(request, rng):
    return [rng.choice(request.tags) for _ in request.words]


@pytest.mark.parametrize("words", SENTENCES)
def test_units_concatenate_to_the_tokenization_of_any_output(tokenizer, words):
    request = Request(tuple(words), ("person", "location (city)", "band"))
    units = word_units(tokenizer, request)
    assert units is not None and len(units) == len(words)
    rng = random.Random(0)
    for _ in range(20):
        tags = _random_tags(request, rng)
        expected = tokenizer(build_target(words, tags), add_special_tokens=False)["input_ids"]
        assert [t for unit, tag in zip(units, tags) for t in unit[tag]] == expected


def test_no_units_for_slow_tokenizers_or_empty_requests(tokenizer):
    assert word_units(tokenizer, Request((), ("x",))) is None

    class Slow:
        is_fast = False

    assert word_units(Slow(), Request(("a",), ("x",))) is None


def test_copy_state_walks_the_units():
    units = [{"O": (1, 2), "B-x": (1, 3, 4), "I-x": (1, 3, 5)}, {"O": (6,), "B-x": (7,), "I-x": (8,)}]
    state = CopyState(units)
    assert state.allowed() == [1] and state.draft(10) == [1, 2, 6]
    state.step(1)
    assert state.allowed() == [2, 3]
    state.step(3)
    assert state.allowed() == [4, 5] and state.draft(10) == [4, 6]
    state.step(5)
    assert state.tags == ["I-x"] and state.allowed() == [6, 7, 8]
    state.step(7)
    assert state.done and state.tags == ["I-x", "B-x"] and state.allowed() == []
    with pytest.raises(ValueError):
        CopyState(units).step(9)


def _random_model(directory, kind):
    tokenizer = train_tokenizer(directory, kind)
    tokenizer.padding_side = "right" if kind == "t5" else "left"
    return random_model(tokenizer, kind, width=32, seed=1), tokenizer


def _constrained_greedy(model, tokenizer, prompt_ids, units):
    """The reference: step-by-step greedy `generate`, masked to the allowed tokens."""
    seq2seq = model.config.is_encoder_decoder
    constraint = copy_constraint([units], 1 if seq2seq else len(prompt_ids), tokenizer.eos_token_id)
    n_tokens = sum(max(map(len, unit.values())) for unit in units)
    output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n_tokens * 3 + 2, do_sample=False,
                            prefix_allowed_tokens_fn=constraint, pad_token_id=tokenizer.pad_token_id)
    state = CopyState(units)
    for token in output[0, 1 if seq2seq else len(prompt_ids):].tolist():
        if state.done:
            break
        state.step(token)
    return state.tags


@pytest.mark.parametrize("kind", ["t5", "llama"])
@pytest.mark.parametrize("draft_tokens", [3, 32])
def test_draft_and_verify_equals_constrained_greedy_search(kind, draft_tokens, tmp_path):
    model, tokenizer = _random_model(tmp_path, kind)
    requests = [Request(tuple(words), tuple(LABELS) + ("band",)) for words in SENTENCES]
    prompts = [tokenizer(r.prompt)["input_ids"] for r in requests]
    units = [word_units(tokenizer, r) for r in requests]
    expected = [_constrained_greedy(model, tokenizer, p, u) for p, u in zip(prompts, units)]
    assert any(tag != "O" for tags in expected for tag in tags)  # a random model tags things
    batched = [s.tags for s in copy_decode(model, prompts, units, tokenizer.pad_token_id, draft_tokens)]
    assert batched == expected
    alone = [copy_decode(model, [p], [u], tokenizer.pad_token_id, draft_tokens)[0].tags for p, u in zip(prompts, units)]
    assert alone == expected
    assert all(len(tags) == len(r.words) for tags, r in zip(batched, requests))


def test_draft_continues_an_entity_with_its_type():
    unit = {"O": (1, 2), "B-x": (1, 3, 4), "I-x": (1, 3, 5), "B-y": (1, 3, 6), "I-y": (1, 3, 7)}
    state = CopyState([unit, unit])
    for token in (1, 3, 6, 1):
        state.step(token)
    assert state.tags == ["B-y"] and state.guess() == "O"
    state.step(3)
    assert state.guess() == "I-y" and state.draft(10) == [7]


def _favouring(*tokens, vocabulary=8):
    """Scores whose position k favours tokens[k]."""
    logits = torch.zeros(len(tokens), vocabulary)
    for position, token in enumerate(tokens):
        logits[position, token] = 1.0
    return Scores(logits, None)


def test_a_rejected_draft_leaves_hints_for_the_words_after_it():
    units = [{"O": (w, 2), "B-x": (w, 3, 4), "I-x": (w, 3, 5)} for w in (1, 6, 7)]
    state = CopyState(units)
    draft = state.draft(10)
    assert draft == [1, 2, 6, 2, 7, 2]
    # the model starts an entity at the first word and, further on, at the third
    accepted = state.verify(draft, _favouring(1, 3, 6, 2, 7, 3, 0))
    assert accepted == 1 and state.tokens == [1, 3]
    assert state.hints == {1: ["O"], 2: ["B-x", "I-x"]}
    assert state.draft(10) == [4, 6, 2, 7, 3, 4]
    assert state.draft(3) == [4, 6, 2]


def test_a_draft_that_holds_is_taken_whole_with_one_more_token():
    units = [{"O": (w, 2), "B-x": (w, 3, 4), "I-x": (w, 3, 5)} for w in (1, 6)]
    state = CopyState(units)
    draft = state.draft(3)
    assert state.verify(draft, _favouring(1, 2, 6, 3)) == 3
    assert state.tokens == [1, 2, 6, 3] and state.tags == ["O"] and state.hints == {}


def test_copy_decode_gives_the_output_layer_back(tmp_path):
    model, tokenizer = _random_model(tmp_path, "llama")
    head = model.get_output_embeddings()
    request = Request(tuple(SENTENCES[0]), tuple(LABELS))
    prompt = tokenizer(request.prompt)["input_ids"]
    copy_decode(model, [prompt], [word_units(tokenizer, request)], tokenizer.pad_token_id)
    assert model.get_output_embeddings() is head
    assert model(torch.tensor([prompt])).logits.shape[-1] == head.out_features


def test_pad_left_and_right():
    left = pad([[1, 2, 3], [4]], 0, left=True)
    assert left["input_ids"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    right = pad([[1, 2, 3], [4]], 0, left=False)
    assert right["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
LABEL_SETS = [("person", "location"), ("location", "person", "band"), ("band",)]


def _fed_tokens(model):
    """A counter of the token positions the model embeds, pass by pass."""
    fed = []
    model.get_input_embeddings().register_forward_hook(lambda _m, inputs, _o: fed.append(inputs[0].numel()))
    return fed


@pytest.mark.parametrize("prompt_format", ["inst", "plain", "chat_template"])
def test_shared_prefixes_change_no_tag(prompt_format, tmp_path):
    model, tokenizer = _random_model(tmp_path, "llama")
    tokenizer.chat_template = CHAT_TEMPLATE
    pad_id = tokenizer.pad_token_id
    requests = [Request(tuple(words), labels) for labels in LABEL_SETS for words in SENTENCES]
    prompts = encode_prompts(tokenizer, [r.prompt for r in requests], prompt_format)
    units = [word_units(tokenizer, r) for r in requests]
    fed_alone = _fed_tokens(model)
    expected = [s.tags for s in copy_decode(model, prompts, units, pad_id)]
    assert any(tag != "O" for tags in expected for tag in tags)

    label_free = encode_prefix(model, encode_prompt_start(tokenizer, prompt_format))
    own = {labels: encode_prefix(model, encode_prompt_start(tokenizer, prompt_format, labels))
           for labels in LABEL_SETS}
    for prompt, request in zip(prompts, requests):
        # every prompt starts with the label-free prefix and its own label set's, but perhaps
        # for their last token, and only its sentence is left to read
        prefix = own[request.labels]
        assert prefix.common_length(prompt) >= len(prefix.ids) - 1 > label_free.common_length(prompt)
        assert label_free.common_length(prompt) >= len(label_free.ids) - 1
        sentence = " " + " ".join(request.words)
        text = format_prompt(request.prompt, prompt_format, tokenizer)
        rest = tokenizer(text[text.index(sentence):], add_special_tokens=False)["input_ids"]
        assert len(prompt) - prefix.common_length(prompt) <= len(rest) + 1
    first_pass = fed_alone[0]
    fed_alone.clear()
    prefixes = [label_free, *own.values()]
    assert [s.tags for s in copy_decode(model, prompts, units, pad_id, prefixes=prefixes)] == expected
    assert fed_alone[0] < first_pass / 2
    alone = [copy_decode(model, [p], [u], pad_id, prefixes=[own[r.labels]])[0].tags
             for p, u, r in zip(prompts, units, requests)]
    assert alone == expected
    label_free_only = [copy_decode(model, [p], [u], pad_id, prefixes=[label_free])[0].tags
                       for p, u in zip(prompts, units)]
    assert label_free_only == expected


def _direct_probs(model, prompt, units, tags):
    """Each tag's probability by one plain forward pass of prompt + output, the full output
    layer, softmax over the allowed tokens at each position, multiplied over the unit."""
    output = [t for unit, tag in zip(units, tags) for t in unit[tag]]
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            decoder = [model.config.decoder_start_token_id] + output
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([decoder])).logits[0]
        else:
            logits = model(input_ids=torch.tensor([list(prompt) + output])).logits[0, len(prompt) - 1 :]
    state, probs, position = CopyState(units), [], 0
    for unit, tag in zip(units, tags):
        p = 1.0
        for token in unit[tag]:
            allowed = state.allowed()
            p *= float(torch.softmax(logits[position, allowed], 0)[allowed.index(token)])
            state.step(token)
            position += 1
        probs.append(p)
    return probs


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_tag_probabilities_are_the_models(kind, tmp_path):
    model, tokenizer = _random_model(tmp_path, kind)
    requests = [Request(tuple(words), tuple(LABELS) + ("band",)) for words in SENTENCES]
    prompts = [tokenizer(r.prompt)["input_ids"] for r in requests]
    units = [word_units(tokenizer, r) for r in requests]
    states = copy_decode(model, prompts, units, tokenizer.pad_token_id, 3)
    for state, prompt, row in zip(states, prompts, units):
        assert all(0 < p <= 1 for p in state.probs) and len(state.probs) == len(row)
        assert state.probs == pytest.approx(_direct_probs(model, prompt, row, state.tags), rel=1e-4)
    # any tags, scored by one teacher-forced pass
    rng = random.Random(0)
    tags = [_random_tags(r, rng) for r in requests]
    scored = score_tags(model, prompts, units, tags, tokenizer.pad_token_id)
    for probs, prompt, row, row_tags in zip(scored, prompts, units, tags):
        assert probs == pytest.approx(_direct_probs(model, prompt, row, row_tags), rel=1e-4)


def test_fixed_tags_are_forced_and_never_extended(tmp_path):
    model, tokenizer = _random_model(tmp_path, "llama")
    words = tuple(SENTENCES[0])  # John explored Tokyo and flew back to New York .
    free = Request(words, tuple(LABELS))
    fixed = ("B-person",) + (None,) * 6 + ("B-location", None, None)
    request = Request(words, tuple(LABELS), fixed)
    units = word_units(tokenizer, request)
    assert list(units[0]) == ["B-person"] and "I-location" not in units[8]
    assert set(units[1]) == set(free.tags) - {"I-person"}
    prompt = tokenizer(request.prompt)["input_ids"]
    (state,) = copy_decode(model, [prompt], [units], tokenizer.pad_token_id)
    assert state.tags[0] == "B-person" and state.tags[7] == "B-location"
    assert state.tags[1] != "I-person" and state.tags[8] != "I-location"
    assert state.probs[0] == state.probs[7] == 1.0
    # the rest equals step-by-step constrained greedy search with those units
    assert state.tags == _constrained_greedy(model, tokenizer, prompt, units)


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_rows_rolling_or_in_turn_change_no_tag(kind, tmp_path):
    """Two rows for eight prompts: causal rows are taken over by the next prompt as they
    finish, seq2seq prompts go two at a time; the tags are those of all at once."""
    model, tokenizer = _random_model(tmp_path, kind)
    assert _InPlaceRows.fits(model) == (kind == "llama")  # Llama's rows roll, on either line
    requests = [Request(tuple(words), labels) for labels in LABEL_SETS[:2] for words in SENTENCES]
    prompts = [tokenizer(r.prompt)["input_ids"] for r in requests]
    units = [word_units(tokenizer, r) for r in requests]
    together = [s.tags for s in copy_decode(model, prompts, units, tokenizer.pad_token_id, 3)]
    two = copy_decode(model, prompts, units, tokenizer.pad_token_id, 3, rows=2)
    assert [s.tags for s in two] == together
    assert [s.tags for s in copy_decode(model, prompts, units, tokenizer.pad_token_id, 3, rows=1)] == together
