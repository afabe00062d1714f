"""Copy-aware decoding for every output format: lattices, the constraint, and exactness
against constrained greedy search."""
import random
from collections import deque

import pytest
import torch
from support import LABELS, random_model, train_tokenizer

from spacy_gner.copy_state import Branch, CopyState, complete, copy_constraint
from spacy_gner.decoding import (
    _Batch,
    _decoding_mode,
    copy_decode,
    encode_prefix,
    follow_outputs,
    pad,
    _InPlaceRows,
    _Packing,
)
from spacy_gner.formats import InlineBracket, InlineXML, WordTag
from spacy_gner.generators import Request
from spacy_gner.lattices import InlineLattice
from spacy_gner.output import bio_to_spans
from spacy_gner.prompt import build_prompt, encode_prompt_start, encode_prompts, format_prompt

SENTENCES = [
    "John explored Tokyo and flew back to New York .".split(),
    ["(", "KDD-95", ")", "was", "held", "in", "Montréal", ",", "Québec", "!"],
    ["Mary"],
    "the wet wet wet song by Wet Wet Wet".split(),
]
FORMATS = [WordTag(), InlineBracket(), InlineXML()]
FORMAT_IDS = ["word_tag", "bracket", "xml"]


def _random_spans(length, labels, rng, nests):
    """Random entities over `length` words: flat, or nested at most two deep."""
    spans = []
    k = 0
    while k < length:
        end = min(length, k + rng.choice([1, 1, 2, 3]))
        if rng.random() < 0.4:
            spans.append((k, end, rng.choice(labels)))
            if nests and end - k > 1 and rng.random() < 0.5:
                inner = rng.randrange(k, end)
                spans.append((inner, inner + 1, rng.choice(labels)))
        k = end
    return sorted(set(spans))


def _prompt(fmt, request):
    return build_prompt(request.words, request.labels, None, fmt)


def _lattices(fmt, tokenizer, requests):
    return [fmt.lattice(tokenizer, request) for request in requests]


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("words", SENTENCES)
def test_lattice_paths_are_the_tokenization_of_any_output(tokenizer, fmt, words):
    labels = ("person", "location (city)", "band")
    lattice = fmt.lattice(tokenizer, Request(tuple(words), labels))
    assert lattice is not None
    rng = random.Random(0)
    for _ in range(20):
        spans = _random_spans(len(words), labels, rng, fmt.nests)
        expected = tokenizer(fmt.target(words, spans), add_special_tokens=False)["input_ids"]
        assert complete(lattice, expected) == expected
        state = CopyState(lattice)
        for token in expected:
            state.step(token)
        assert state.done
        found = [span[:3] for span in fmt.spans(state.actions, state.probs)]
        assert sorted(found) == sorted(spans if fmt.nests else bio_to_spans(
            [tag for tag in state.actions]))


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_no_lattice_for_slow_tokenizers_or_empty_requests(tokenizer, fmt):
    assert fmt.lattice(tokenizer, Request((), ("x",))) is None

    class Slow:
        is_fast = False

    assert fmt.lattice(Slow(), Request(("a",), ("x",))) is None


def test_inline_lattice_opens_closes_and_nests_no_deeper_than_its_depth():
    # words 1, 2; opening 10; closings 20 (type a) and 21 (type b), named on closing
    lattice = InlineLattice([(1,), (2,)], {None: (10,)}, {"a": (20,), "b": (21,)}, depth=1)
    state = CopyState(lattice)
    assert state.allowed() == [1, 10]
    state.step(10)
    assert state.allowed() == [1]  # no empty entity, no second level
    state.step(1)
    assert state.allowed() == [2, 20, 21]
    state.step(2)
    assert state.allowed() == [20, 21]  # the output may not end with an entity open
    state.step(21)
    assert state.done and [s[:3] for s in lattice_spans(state)] == [(0, 2, "b")]


def lattice_spans(state):
    return InlineBracket().spans(state.actions, state.probs)


def test_inline_lattice_forces_fixed_entities_and_keeps_fixed_o_words_outside():
    opens = {"a": (10,), "b": (11,)}
    closes = {"a": (20,), "b": (21,)}
    lattice = InlineLattice([(1,), (2,), (3,)], opens, closes, depth=2, fixed=("B-b", "I-b", "O"))
    state = CopyState(lattice)
    assert state.allowed() == [11]  # the fixed entity opens, as its type, nothing around it
    state.step(11)
    assert state.allowed() == [1]
    state.step(1)
    assert state.allowed() == [2]  # no closing inside it, no entity inside it
    state.step(2)
    assert state.allowed() == [21]
    state.step(21)
    assert state.allowed() == [3]  # an O word is in no entity
    state.step(3)
    assert state.done


def _random_model(directory, kind):
    tokenizer = train_tokenizer(directory, kind)
    tokenizer.padding_side = "right" if kind == "t5" else "left"
    return random_model(tokenizer, kind, width=32, seed=1), tokenizer


def _constrained_greedy(model, tokenizer, prompt_ids, lattice):
    """The reference: step-by-step greedy `generate`, masked to the allowed tokens."""
    seq2seq = model.config.is_encoder_decoder
    constraint = copy_constraint([lattice], 1 if seq2seq else len(prompt_ids), tokenizer.eos_token_id)
    output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=lattice.bound(lattice.start) + 2,
                            do_sample=False, prefix_allowed_tokens_fn=constraint,
                            pad_token_id=tokenizer.pad_token_id)
    state = CopyState(lattice)
    for token in output[0, 1 if seq2seq else len(prompt_ids):].tolist():
        if state.done:
            break
        state.step(token)
    return state.actions


def _marked(fmt, actions):
    """Whether an output marks an entity."""
    return any(action != "O" for action in actions) if not fmt.nests else any(
        action[0] == "open" for action in actions)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("kind", ["t5", "llama"])
@pytest.mark.parametrize("draft_tokens", [3, 32])
def test_draft_and_verify_equals_constrained_greedy_search(fmt, kind, draft_tokens, tmp_path):
    model, tokenizer = _random_model(tmp_path, kind)
    requests = [Request(tuple(words), tuple(LABELS) + ("band",)) for words in SENTENCES]
    prompts = [tokenizer(_prompt(fmt, r))["input_ids"] for r in requests]
    lattices = _lattices(fmt, tokenizer, requests)
    expected = [_constrained_greedy(model, tokenizer, p, l) for p, l in zip(prompts, lattices)]
    assert any(_marked(fmt, actions) for actions in expected)  # a random model marks things
    batched = [s.actions for s in copy_decode(model, prompts, lattices, tokenizer.pad_token_id, draft_tokens)]
    assert batched == expected
    alone = [copy_decode(model, [p], [l], tokenizer.pad_token_id, draft_tokens)[0].actions
             for p, l in zip(prompts, lattices)]
    assert alone == expected


def test_branches_are_scored_as_if_they_replaced_their_draft_token(tmp_path):
    model, tokenizer = _random_model(tmp_path, "llama")
    prompts = [tokenizer(" ".join(words))["input_ids"] for words in SENTENCES[:2]]
    drafts = [[5, 6, 7, 8], [9, 10]]
    branches = [[Branch(1, 11, None, 0), Branch(3, 12, None, 0)], [Branch(0, 13, None, 0)]]
    vocabulary = list(range(model.config.vocab_size))
    with _decoding_mode(model, vocabulary):
        batch = _Batch(model, prompts, tokenizer.pad_token_id, (), 2, 64)
        batch.admit(deque([0, 1]))
        assert batch.in_place
        logits = batch.forward([len(p) for p in batch.pending], drafts, branches)
    span = max(map(len, drafts)) + 1
    for row, (prompt, draft) in enumerate(zip(prompts, drafts)):
        for k in range(len(draft) + 1):
            direct = model(torch.tensor([prompt + draft[:k]])).logits[0, -1]
            assert torch.allclose(logits[row, k], direct, atol=1e-4)
        for j, branch in enumerate(branches[row]):
            direct = model(torch.tensor([prompt + draft[: branch.at] + [branch.token]])).logits[0, -1]
            assert torch.allclose(logits[row, span + j], direct, atol=1e-4)


def test_packed_rows_are_scored_as_if_each_ran_alone(tmp_path):
    """Rows fed as one packed sequence, one of them reading a long prompt (its attention
    runs apart from the others'), score what each row's tokens alone would."""
    model, tokenizer = _random_model(tmp_path, "llama")
    prompts = [tokenizer(" ".join(words))["input_ids"] for words in SENTENCES[:3]]
    prompts.insert(1, tokenizer(" ".join(SENTENCES[0] * 10))["input_ids"])
    drafts = [[5, 6, 7], [8], [9, 10, 11, 12], []]
    with _decoding_mode(model, list(range(model.config.vocab_size))):
        batch = _Batch(model, prompts, tokenizer.pad_token_id, (), len(prompts), 256)
        batch.admit(deque(range(len(prompts))))
        fed = [len(p) + len(d) for p, d in zip(prompts, drafts)]
        assert len(_Packing(fed, [0] * len(fed), "cpu").runs) == 3  # rows 0, row 1 (long), rows 2-3
        logits = batch.forward([len(p) for p in batch.pending], drafts)
    for row, (prompt, draft) in enumerate(zip(prompts, drafts)):
        for k in range(len(draft) + 1):
            direct = model(torch.tensor([prompt + draft[:k]])).logits[0, -1]
            assert torch.allclose(logits[row, k], direct, atol=1e-4)


def test_copy_decode_gives_the_output_layer_back(tmp_path):
    model, tokenizer = _random_model(tmp_path, "llama")
    head = model.get_output_embeddings()
    request = Request(tuple(SENTENCES[0]), tuple(LABELS))
    prompt = tokenizer(request.prompt)["input_ids"]
    copy_decode(model, [prompt], [WordTag().lattice(tokenizer, request)], tokenizer.pad_token_id)
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


@pytest.mark.parametrize("fmt,prompt_format", [(WordTag(), "inst"), (WordTag(), "plain"),
                                               (WordTag(), "chat_template"), (InlineBracket(), "inst"),
                                               (InlineXML(), "chat_template")])
def test_shared_prefixes_change_nothing(fmt, prompt_format, tmp_path):
    model, tokenizer = _random_model(tmp_path, "llama")
    tokenizer.chat_template = CHAT_TEMPLATE
    pad_id = tokenizer.pad_token_id
    requests = [Request(tuple(words), labels) for labels in LABEL_SETS for words in SENTENCES]
    prompts = encode_prompts(tokenizer, [_prompt(fmt, r) for r in requests], prompt_format)
    lattices = _lattices(fmt, tokenizer, requests)
    fed_alone = _fed_tokens(model)
    expected = [s.actions for s in copy_decode(model, prompts, lattices, pad_id)]
    assert any(_marked(fmt, actions) for actions in expected)

    label_free = encode_prefix(model, encode_prompt_start(tokenizer, prompt_format, None, None, fmt))
    own = {labels: encode_prefix(model, encode_prompt_start(tokenizer, prompt_format, labels, None, fmt))
           for labels in LABEL_SETS}
    for prompt, request in zip(prompts, requests):
        # every prompt starts with the label-free prefix and its own label set's, but perhaps
        # for their last token, and only its sentence is left to read
        prefix = own[request.labels]
        assert prefix.common_length(prompt) >= len(prefix.ids) - 1 > label_free.common_length(prompt)
        assert label_free.common_length(prompt) >= len(label_free.ids) - 1
        sentence = " " + " ".join(request.words)
        text = format_prompt(_prompt(fmt, request), prompt_format, tokenizer)
        rest = tokenizer(text[text.index(sentence):], add_special_tokens=False)["input_ids"]
        assert len(prompt) - prefix.common_length(prompt) <= len(rest) + 1
    first_pass = fed_alone[0]
    fed_alone.clear()
    prefixes = [label_free, *own.values()]
    assert [s.actions for s in copy_decode(model, prompts, lattices, pad_id, prefixes=prefixes)] == expected
    assert fed_alone[0] < first_pass / 2
    alone = [copy_decode(model, [p], [l], pad_id, prefixes=[own[r.labels]])[0].actions
             for p, l, r in zip(prompts, lattices, requests)]
    assert alone == expected
    label_free_only = [copy_decode(model, [p], [l], pad_id, prefixes=[label_free])[0].actions
                       for p, l in zip(prompts, lattices)]
    assert label_free_only == expected


def _direct_probs(model, prompt, lattice, output):
    """Each option's probability by one plain forward pass of prompt + output, the full
    output layer, softmax over the allowed tokens at each position, multiplied over the option."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            decoder = [model.config.decoder_start_token_id] + output
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([decoder])).logits[0]
        else:
            logits = model(input_ids=torch.tensor([list(prompt) + output])).logits[0, len(prompt) - 1 :]
    state, probs, p = CopyState(lattice), [], 1.0
    for position, token in enumerate(output):
        allowed = state.allowed()
        p *= float(torch.softmax(logits[position, allowed], 0)[allowed.index(token)])
        taken = len(state.actions)
        state.step(token)
        if len(state.actions) > taken:
            probs.append(p)
            p = 1.0
    return probs


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_probabilities_are_the_models(fmt, kind, tmp_path):
    model, tokenizer = _random_model(tmp_path, kind)
    requests = [Request(tuple(words), tuple(LABELS) + ("band",)) for words in SENTENCES]
    prompts = [tokenizer(_prompt(fmt, r))["input_ids"] for r in requests]
    lattices = _lattices(fmt, tokenizer, requests)
    states = copy_decode(model, prompts, lattices, tokenizer.pad_token_id, 3)
    for state, prompt, lattice in zip(states, prompts, lattices):
        assert all(0 < p <= 1 for p in state.probs) and len(state.probs) == len(state.actions)
        assert state.probs == pytest.approx(_direct_probs(model, prompt, lattice, state.tokens), rel=1e-4)
    # any output, scored by one teacher-forced pass
    rng = random.Random(0)
    outputs = [tokenizer(fmt.target(r.words, _random_spans(len(r.words), r.labels, rng, fmt.nests)),
                         add_special_tokens=False)["input_ids"] for r in requests]
    followed = follow_outputs(model, prompts, lattices, outputs, tokenizer.pad_token_id)
    for state, prompt, lattice, output in zip(followed, prompts, lattices, outputs):
        assert state.done and state.tokens == output
        assert state.probs == pytest.approx(_direct_probs(model, prompt, lattice, output), rel=1e-4)


def test_fixed_tags_are_forced_and_never_extended(tmp_path):
    model, tokenizer = _random_model(tmp_path, "llama")
    words = tuple(SENTENCES[0])  # John explored Tokyo and flew back to New York .
    free = Request(words, tuple(LABELS))
    fixed = ("B-person",) + (None,) * 6 + ("B-location", None, None)
    request = Request(words, tuple(LABELS), fixed)
    lattice = WordTag().lattice(tokenizer, request)
    assert [o.action for o in lattice.options(0)] == ["B-person"]
    assert "I-location" not in [o.action for o in lattice.options(8)]
    assert {o.action for o in lattice.options(1)} == set(free.tags) - {"I-person"}
    prompt = tokenizer(request.prompt)["input_ids"]
    (state,) = copy_decode(model, [prompt], [lattice], tokenizer.pad_token_id)
    assert state.actions[0] == "B-person" and state.actions[7] == "B-location"
    assert state.actions[1] != "I-person" and state.actions[8] != "I-location"
    assert state.probs[0] == state.probs[7] == 1.0
    # the rest equals step-by-step constrained greedy search with that lattice
    assert state.actions == _constrained_greedy(model, tokenizer, prompt, lattice)


@pytest.mark.parametrize("fmt", FORMATS[1:], ids=FORMAT_IDS[1:])
def test_inline_outputs_keep_fixed_entities(fmt, tmp_path):
    model, tokenizer = _random_model(tmp_path, "llama")
    words = tuple(SENTENCES[0])
    fixed = ("B-person",) + (None,) * 6 + ("B-location", "I-location", "O")
    request = Request(words, tuple(LABELS), fixed)
    prompt = tokenizer(_prompt(fmt, request))["input_ids"]
    lattice = fmt.lattice(tokenizer, request)
    (state,) = copy_decode(model, [prompt], [lattice], tokenizer.pad_token_id)
    spans = [span[:3] for span in fmt.spans(state.actions, state.probs)]
    assert (0, 1, "person") in spans and (7, 9, "location") in spans
    assert not [s for s in spans if s[0] < 9 < s[1] or s[0] == 9 or (s[0] < 1 and s != (0, 1, "person"))]
    assert state.actions == _constrained_greedy(model, tokenizer, prompt, lattice)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_rows_rolling_or_in_turn_change_nothing(fmt, kind, tmp_path):
    """Two rows for eight prompts: causal rows are taken over by the next prompt as they
    finish, seq2seq prompts go two at a time; the outputs are those of all at once."""
    model, tokenizer = _random_model(tmp_path, kind)
    assert _InPlaceRows.fits(model) == (kind == "llama")  # Llama's rows roll, on either line
    requests = [Request(tuple(words), labels) for labels in LABEL_SETS[:2] for words in SENTENCES]
    prompts = [tokenizer(_prompt(fmt, r))["input_ids"] for r in requests]
    lattices = _lattices(fmt, tokenizer, requests)
    together = [s.actions for s in copy_decode(model, prompts, lattices, tokenizer.pad_token_id, 3)]
    two = copy_decode(model, prompts, lattices, tokenizer.pad_token_id, 3, rows=2)
    assert [s.actions for s in two] == together
    assert [s.actions for s in copy_decode(model, prompts, lattices, tokenizer.pad_token_id, 3, rows=1)] == together
