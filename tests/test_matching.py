import gzip
import json
import random
from pathlib import Path

import pytest

from spacy_gner import back_tokenize, extract, hierarchical_match
from spacy_gner.matching import match_lcs, match_subsequence, pair_gaps, respelling

FIXTURE = Path(__file__).with_name("fixtures") / "crossner-reference-prompts.jsonl.gz"

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
    words = "Anne Brontë wrote in colour".split()
    tags = _match(words, "Anne(B-person) Bronte(I-person) wrote(O) in(O) color(O) !(O)")
    assert tags == ["B-person", "I-person", "O", "O", "O"]


def _unpaired(words, output):
    """The tags of the longest common subsequence alone, without gap pairing."""
    pred_words, pred_tags = extract(output, LABELS)
    match = match_lcs([(w.lower(),) for w in words], [w.lower() for w in pred_words])
    return [pred_tags[j] if j >= 0 else "O" for j in match]


@pytest.mark.parametrize("words, output", [
    # a different word in place of the input's: not a respelling
    ("I flew to Boston today".split(), "I(O) flew(O) to(O) Paris(B-location) today(O) .(O)"),
    # a loop until the output was cut, as long as the input
    ("Paris is big and New York is bigger".split(), "Paris(B-location) " * 8),
    # garbage words of the input's length
    ("John met Mary in Rome".split(),
     "Xq(B-person) zzz(I-person) blorp(B-location) fnord(I-location) wibble(B-band)"),
])
def test_gaps_of_unrelated_words_stay_unmatched(words, output):
    assert _match(words, output) == _unpaired(words, output)
    assert _match(words, output).count("O") >= len(words) - 1


def test_garbage_outputs_invent_no_entities_by_pairing():
    """Outputs as long as their sentence, of words drawn from another sentence: pairing
    leaves them as the longest common subsequence alone does, but for the rare word pair
    that looks like a respelling ("1962" and "1967", "his" and "this")."""
    with gzip.open(FIXTURE, "rt", encoding="utf8") as file:
        sentences = [json.loads(line)["instance"]["words"] for line in file][:300]
    rng = random.Random(1)
    differ = 0
    for k, words in enumerate(sentences):
        other = sentences[(k + 7) % len(sentences)]
        output = " ".join(f"{rng.choice(other)}({rng.choice(['O', 'B-x', 'I-x'])})" for _ in words)
        differ += _match(words, output) != _unpaired(words, output)
    assert differ <= 3  # of 300; pairing every equal gap, as before, changes nearly all


def test_respelling_is_one_edit_in_four_letters_or_two_in_eight():
    assert respelling(("rome",), "roma") and respelling(("manattan",), "manhattan")
    assert respelling(("brontë", "bront"), "bront") and respelling(("algorithm",), "algoritmh")
    assert not respelling(("zoë",), "zoe")  # one edit in three letters
    assert not any(respelling((a,), b) for a, b in [
        ("a", "as"), ("on", "john"), ("the", "her"), ("boston", "paris"), ("modern", "model")])


def test_level3_merged_words_get_o_without_crashing():
    words = ["a", "(", "p", "e", "t", ")", "scan"]
    tags = _match(words, "a(O) (p e t)(B-x) scan(O) extra(O)")
    assert tags == ["O"] * 7


def test_gap_pairing_only_for_equal_gaps_of_respelled_words():
    forms = [(w,) for w in "a bee cee d".split()]
    assert pair_gaps([0, -1, -1, 3], forms, "a be ce d".split()) == [0, 1, 2, 3]
    assert pair_gaps([0, -1, -1, 3], forms, "a be xyz d".split()) == [0, 1, -1, 3]
    assert pair_gaps([0, -1, -1, 2], forms, "a bee d".split()) == [0, -1, -1, 2]
    assert pair_gaps([-1, -1], forms[1:3], ["bees", "cees"]) == [0, 1]
    assert pair_gaps([], [], []) == []


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
