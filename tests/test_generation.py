import pytest
from support import LABELS, TRAIN_TAGS, TRAIN_WORDS, random_model, train_tokenizer

from spacy_gner.generation import PREFIXES_KEPT, HFGenerator, plan_batches
from spacy_gner.generators import Request


def test_plan_batches_sorts_and_respects_both_limits():
    costs = [5, 50, 10, 40, 45, 200]
    batches = plan_batches(costs, batch_size=2, max_batch_tokens=100)
    assert batches == [[5], [1, 4], [3, 2], [0]]
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches[1:]:
        assert len(batch) <= 2 and max(costs[i] for i in batch) * len(batch) <= 100
    assert plan_batches([], 4, 100) == []


REQUEST = Request(tuple(TRAIN_WORDS), tuple(LABELS))
OTHER = Request(("Mary", "visited", "Paris"), tuple(LABELS))
TARGET_START = "John(B-person) explored(O) Tokyo(B-location)"


# Tests that compare outputs across batch shapes run in float32: in bfloat16 (the default on
# CPUs that compute it natively) another batch shape rounds differently.
EXACT = {"dtype": "float32"}


def _same(results, expected):
    """Equal tags and texts, and probabilities equal but for float rounding."""
    assert [(r.tags, r.text) for r in results] == [(e.tags, e.text) for e in expected]
    for result, other in zip(results, expected):
        assert result.probs == pytest.approx(other.probs, abs=1e-4)


@pytest.mark.parametrize("copy_aware", [True, False])
@pytest.mark.parametrize("model", ["tiny_t5", "tiny_llama"])
def test_generation_batched_equals_one_at_a_time(model, copy_aware, request):
    path = request.getfixturevalue(model)
    requests = [REQUEST, OTHER, REQUEST]
    batched = HFGenerator(path, batch_size=3, copy_aware=copy_aware, **EXACT)(requests)
    single = HFGenerator(path, batch_size=1, copy_aware=copy_aware, **EXACT)
    _same(batched, [single([r])[0] for r in requests])
    assert batched[0].tags == tuple(TRAIN_TAGS)
    assert all(0 < p <= 1 for result in batched for p in result.probs)
    if copy_aware:
        assert batched[0].text is None
    else:
        assert batched[0].text.startswith(TARGET_START)


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
    (result,) = HFGenerator(tiny_t5, num_beams=3, copy_aware=copy_aware)([REQUEST])
    assert result.tags == tuple(TRAIN_TAGS) and len(result.probs) == len(TRAIN_TAGS)


def test_an_output_that_never_ends_is_cut_and_reported(tmp_path, caplog):
    tokenizer = train_tokenizer(tmp_path, "t5")
    random_model(tokenizer, "t5", width=16).save_pretrained(tmp_path)  # never says </s>
    (result,) = HFGenerator(tmp_path, copy_aware=False)([OTHER])
    assert "without ending" in caplog.text
    assert len(result.tags) == 3 and result.text is not None


def test_invalid_settings():
    with pytest.raises(ValueError, match="positive"):
        HFGenerator("x", batch_size=0)


def test_a_label_set_prefix_is_computed_once_and_kept_across_calls(tiny_llama, monkeypatch):
    import spacy_gner.decoding as decoding

    computed = []
    encode = decoding.encode_prefix
    monkeypatch.setattr(decoding, "encode_prefix", lambda model, ids: computed.append(ids) or encode(model, ids))
    generator = HFGenerator(tiny_llama, device="cpu", **EXACT)
    other = OTHER
    first = generator([REQUEST, other])
    assert len(computed) == 2  # the label-free part, then this label set's
    _same(generator([other, REQUEST]), first[::-1])
    _same(generator([other]), first[1:])
    assert len(computed) == 2
    # one sentence of a new label set: only the label-free part serves it, until it comes again
    swapped = Request(other.words, tuple(reversed(LABELS)))
    generator([swapped])
    assert len(computed) == 2
    generator([swapped])
    assert len(computed) == 3
    assert first[0].tags == tuple(TRAIN_TAGS)


def test_described_types_get_their_own_prefix_and_the_same_tags_as_read_whole(tiny_llama):
    described = Request(REQUEST.words, REQUEST.labels, (), ((LABELS[0], "a human being"),))
    shared = HFGenerator(tiny_llama, device="cpu", **EXACT)
    twice = shared([described, described])
    assert ((REQUEST.labels, described.descriptions) in shared._prefixes and
            (REQUEST.labels, ()) not in shared._prefixes)
    whole = HFGenerator(tiny_llama, device="cpu", **EXACT)
    whole.shared_prefixes = lambda requests: []  # every prompt read whole
    _same(twice, whole([described, described]))


def test_a_call_may_use_more_label_sets_than_the_cache_keeps(tiny_llama):
    # every label order comes twice, so each gets its prefix: more than the cache keeps
    labels = LABELS + ["band", "date", "event"]
    orders = [tuple(labels[i:] + labels[:i]) for i in range(len(labels))]
    orders += [order[::-1] for order in orders]
    assert len(set(orders)) > PREFIXES_KEPT
    requests = [Request(REQUEST.words, order) for order in orders for _ in range(2)]
    generator = HFGenerator(tiny_llama, device="cpu", batch_size=4, **EXACT)
    results = generator(requests)
    _same(results, [HFGenerator(tiny_llama, device="cpu", **EXACT)([r])[0] for r in requests])
    _same(generator(requests[::-1]), results[::-1])


@pytest.mark.parametrize("name", ["bracket", "xml"])
@pytest.mark.parametrize("options", [{"copy_aware": True}, {"copy_aware": True, "num_beams": 2},
                                     {"copy_aware": False}])
def test_inline_formats_batched_equal_one_at_a_time_with_valid_nested_entities(name, options, tiny_llama):
    from spacy_gner.formats import get_format, spans_to_bio

    fixed = ("B-person",) + (None,) * (len(TRAIN_WORDS) - 1)
    requests = [REQUEST, OTHER, Request(REQUEST.words, REQUEST.labels, fixed)]
    make = lambda size: HFGenerator(tiny_llama, batch_size=size, output_format=get_format(name),
                                    **options, **EXACT)
    batched = make(3)(requests)
    single = make(1)
    for result, request in zip(batched, requests):
        alone = single([request])[0]
        assert (result.tags, result.text) == (alone.tags, alone.text)
        assert [s[:3] for s in result.spans] == [s[:3] for s in alone.spans]
        assert result.tags == tuple(spans_to_bio(len(request.words), result.spans))
        for start, end, label, score in result.spans:
            assert 0 <= start < end <= len(request.words) and label in request.labels
            assert score is None or 0 < score <= 1
        if options["copy_aware"]:  # the output is the format's writing of its entities
            assert result.text == get_format(name).target(request.words, result.spans)
    assert (0, 1, "person") in [s[:3] for s in batched[2].spans]  # fixed, in every mode
