import spacy
from spacy.tokens import Doc

from spacy_gner import Entity, merge_chunk_entities, plan_chunks


def _doc(words, sent_starts=None, spaces=None):
    return Doc(spacy.blank("en").vocab, words=words, spaces=spaces, sent_starts=sent_starts)


def test_whitespace_tokens_are_not_sent():
    doc = spacy.blank("en")("Hello  \n world .")
    assert [t.is_space for t in doc] == [False, True, False, False]
    (chunk,) = plan_chunks(doc, [1] * len(doc), budget=100, overlap=2)
    assert chunk.tokens == (0, 2, 3)


def test_sentences_make_chunks():
    doc = _doc("A b . C d .".split(), sent_starts=[True, False, False, True, False, False])
    chunks = plan_chunks(doc, [1] * len(doc), budget=100, overlap=2)
    assert [c.tokens for c in chunks] == [(0, 1, 2), (3, 4, 5)]
    assert [(c.core_start, c.core_end) for c in chunks] == [(0, 3), (3, 6)]


def test_windows_cover_every_token_and_cores_partition():
    doc = _doc([f"w{i}" for i in range(100)])
    costs = [3] * 100
    chunks = plan_chunks(doc, costs, budget=30, overlap=4)
    assert all(sum(costs[i] for i in c.tokens) <= 30 for c in chunks)
    assert chunks[0].core_start == 0 and chunks[-1].core_end == 100
    for left, right in zip(chunks, chunks[1:]):
        assert left.core_end == right.core_start
        assert left.tokens[-1] >= right.tokens[0]  # windows overlap
        assert left.cut_right
    assert not chunks[-1].cut_right
    assert sorted({i for c in chunks for i in c.tokens}) == list(range(100))


def test_a_word_over_budget_still_gets_a_window():
    doc = _doc(["big", "a", "b"])
    chunks = plan_chunks(doc, [50, 1, 1], budget=10, overlap=2)
    assert [c.tokens for c in chunks] == [(0,), (1, 2)]


def test_merge_takes_each_entity_once_from_the_window_that_owns_it():
    doc = _doc([f"w{i}" for i in range(20)])
    chunks = plan_chunks(doc, [1] * 20, budget=10, overlap=4)
    assert [c.tokens[0] for c in chunks] == [0, 6, 12]
    # entity on tokens 7-9, seen by windows 0 and 1
    spans = [[Entity(7, 10, "x", 0.5)], [Entity(1, 4, "x", 0.7)], []]
    assert merge_chunk_entities(chunks, spans) == [Entity(7, 10, "x", 0.7)]  # window 1 sees it whole


def test_merge_prefers_the_next_window_for_an_entity_cut_at_a_split():
    doc = _doc([f"w{i}" for i in range(20)])
    chunks = plan_chunks(doc, [1] * 20, budget=10, overlap=4)
    # window 0 (tokens 0-9) sees tokens 7-9 of an entity 7-11; window 1 (6-15) sees all of it
    spans = [[Entity(7, 10, "x", 0.9)], [Entity(1, 6, "x", 0.6)], []]
    assert merge_chunk_entities(chunks, spans) == [Entity(7, 12, "x", 0.6)]


def test_merge_resolves_overlaps_longest_first():
    doc = _doc([f"w{i}" for i in range(20)])
    chunks = plan_chunks(doc, [1] * 20, budget=10, overlap=4)
    assert (chunks[1].core_start, chunks[1].core_end) == (8, 14)
    spans = [[Entity(2, 4, "x"), Entity(3, 6, "y")], [Entity(0, 3, "outside core"), Entity(2, 5, "z")], []]
    assert merge_chunk_entities(chunks, spans) == [Entity(3, 6, "y"), Entity(8, 11, "z")]


def test_merge_keeps_nested_entities_and_drops_crossing_ones_longest_first():
    doc = _doc([f"w{i}" for i in range(8)])
    chunks = plan_chunks(doc, [1] * 8, budget=100, overlap=4)
    spans = [[Entity(0, 4, "org"), Entity(1, 2, "person"), Entity(1, 2, "person", 0.3),
              Entity(3, 6, "crossing"), Entity(5, 7, "loc"), Entity(5, 7, "gpe")]]
    assert merge_chunk_entities(chunks, spans, nested=True) == [
        Entity(0, 4, "org"), Entity(1, 2, "person"), Entity(5, 7, "loc"), Entity(5, 7, "gpe")]
    # flat: of two entities on the same words, the one found first, whatever the process
    assert merge_chunk_entities(chunks, spans) == [Entity(0, 4, "org"), Entity(5, 7, "loc")]
