import random

import pytest

from spacy_gner import back_tokenize, extract, hierarchical_match
from spacy_gner.matching import match_lcs, match_subsequence, pair_gaps

LABELS = ["band", "location", "person", "x"]


def _match(words, output, tokenizer=None):
    pred_words, pred_tags = extract(output, LABELS)
    tags = hierarchical_match(words, pred_words, pred_tags, tokenizer)
    assert len(tags) == len(words)
    return tags


def test_level1_identical_words_keep_tags_case_insensitively():
    assert _match(["John", "met", "Ann"], "john(B-person) MET(O) Ann(B-person)") == [
        "B-person", "O", "B-person"
    ]


def test_level2_omission_matches_in_order():
    words = "the wet wet wet song".split()
    tags = _match(words, "the(O) wet(B-band) wet(I-band) song(O)")
    assert tags == ["O", "B-band", "I-band", "O", "O"]
    assert match_subsequence([(w,) for w in "a b c".split()], ["a", "c"]) == [0, -1, 1]
    assert match_subsequence([(w,) for w in "a b c".split()], ["c", "a"]) is None


def test_level3_addition_of_words_not_in_the_input():
    words = "John lives in Rome".split()
    tags = _match(words, "John(B-person) really(O) lives(O) in(O) Rome(B-location)")
    assert tags == ["B-person", "O", "O", "B-location"]


def test_level3_substitution_keeps_the_label_of_a_respelled_word():
    words = "I flew to manattan today".split()
    tags = _match(words, "I(O) flew(O) to(O) manhattan(B-location) today(O) .(O)")
    assert tags == ["O", "O", "O", "B-location", "O"]


def test_level3_merged_words_get_o_without_crashing():
    words = ["a", "(", "p", "e", "t", ")", "scan"]
    tags = _match(words, "a(O) (p e t)(B-x) scan(O) extra(O)")
    assert tags == ["O"] * 7


def test_gap_pairing_only_for_equal_gaps():
    assert pair_gaps([0, -1, -1, 3], 4) == [0, 1, 2, 3]
    assert pair_gaps([0, -1, -1, 2], 3) == [0, -1, -1, 2]
    assert pair_gaps([-1, -1], 2) == [0, 1]
    assert pair_gaps([], 0) == []


def test_back_tokenization_matches_words_the_vocabulary_cannot_spell(tokenizer):
    assert back_tokenize(["Brontë", "Zoë", "Tokyo"], tokenizer) == ["Bront", "Zo", "Tokyo"]
    words = ["Emily", "Brontë", "and", "Zoë", "wrote", "."]
    output = "Emily(B-person) Bront(I-person) Zo(B-person) wrote(O)"
    assert _match(words, output, tokenizer) == ["B-person", "I-person", "O", "B-person", "O", "O"]
    # without the tokenizer the two respelled words are lost
    assert _match(words, output) == ["B-person", "O", "O", "O", "O", "O"]


def test_empty_inputs_and_outputs():
    assert hierarchical_match([], [], []) == []
    assert hierarchical_match(["a", "b"], [], []) == ["O", "O"]
    assert hierarchical_match([], ["a"], ["B-x"]) == []
    with pytest.raises(ValueError):
        hierarchical_match(["a"], ["a"], [])


def _lcs_length(a, b):
    """The O(N²) dynamic programme, as a reference."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


@pytest.mark.parametrize("seed", range(30))
def test_hunt_szymanski_finds_a_longest_common_subsequence(seed):
    rng = random.Random(seed)
    alphabet = "abcdefg"[: rng.randint(1, 7)]
    a = [rng.choice(alphabet) for _ in range(rng.randint(0, 40))]
    b = [rng.choice(alphabet) for _ in range(rng.randint(0, 40))]
    match = match_lcs([(w,) for w in a], b)
    pairs = [(i, j) for i, j in enumerate(match) if j >= 0]
    assert all(a[i] == b[j] for i, j in pairs)
    assert all(j1 < j2 for (_, j1), (_, j2) in zip(pairs, pairs[1:]))
    assert len(pairs) == _lcs_length(a, b)


def test_long_sentence_with_perturbations():
    rng = random.Random(0)
    words = [f"w{rng.randint(0, 300)}" for _ in range(1000)]
    gold = [rng.choice(["O", "O", "O", "B-x"]) for _ in words]
    pred_words, pred_tags = [], []
    for word, tag in zip(words, gold):
        roll = rng.random()
        if roll < 0.03:
            continue  # omission
        if roll < 0.06:
            pred_words.append(word + "z")  # substitution
        else:
            pred_words.append(word)
        pred_tags.append(tag)
        if roll > 0.97:
            pred_words.append("extra")  # addition
            pred_tags.append("O")
    tags = hierarchical_match(words, pred_words, pred_tags)
    agreement = sum(t == g for t, g in zip(tags, gold)) / len(gold)
    assert agreement > 0.95
