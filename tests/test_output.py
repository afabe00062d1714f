import pytest

from spacy_gner import bio_to_spans, extract, repair_bio

LABELS = ["person", "location", "person (fictional)", "programming language"]


def test_extract_plain_output():
    words, tags = extract("John(B-person) explored(O) Tokyo(B-location) .(O)", LABELS)
    assert words == ["John", "explored", "Tokyo", "."]
    assert tags == ["B-person", "O", "B-location", "O"]


def test_extract_parentheses_in_words_and_labels():
    text = "((O) KDD-95(B-conference) )(O) f(x)(O) Holmes(B-person (fictional)) C++(B-programming language)"
    words, tags = extract(text, LABELS)
    assert words == ["(", "KDD-95", ")", "f(x)", "Holmes", "C++"]
    assert tags == ["O", "O", "O", "O", "B-person (fictional)", "B-programming language"]
    # without the label list every well-formed tag is kept
    assert extract(text)[1][1] == "B-conference"
    assert extract(text)[1][4] == "B-person (fictional)"


def test_extract_invalid_and_unknown_tags_become_o():
    words, tags = extract("Ann(B-PER) met(X) Bob(I-person) at(B-) Rome(B-location)", LABELS)
    assert words == ["Ann", "met(X) Bob", "at", "Rome"]
    assert tags == ["O", "I-person", "O", "B-location"]


@pytest.mark.parametrize("text", ["", "   ", "no tags at all", "((((", ")(O", "(O)(O)(O)"])
def test_extract_garbage_gives_no_crash(text):
    words, tags = extract(text, LABELS)
    assert len(words) == len(tags)
    assert all(word.strip() for word in words)


def test_extract_truncated_output_keeps_complete_pairs():
    words, tags = extract("John(B-person) explored(O) Tok", LABELS)
    assert words == ["John", "explored"]
    words, tags = extract("John(B-person) explored(B-loc", LABELS)
    assert words == ["John"]


def test_extract_no_space_between_pairs_and_repeated_words():
    words, tags = extract("wet(B-person)wet(I-person) wet(I-person).(O)", LABELS)
    assert words == ["wet", "wet", "wet", "."]
    assert tags == ["B-person", "I-person", "I-person", "O"]


def test_repair_bio():
    assert repair_bio(["I-a", "I-a", "O", "I-b", "B-a", "I-b", "I-b", "X", "B-"]) == [
        "B-a", "I-a", "O", "B-b", "B-a", "B-b", "I-b", "O", "O"
    ]


def test_bio_to_spans():
    assert bio_to_spans(["B-a", "I-a", "O", "I-b", "B-b", "I-a"]) == [
        (0, 2, "a"), (3, 4, "b"), (4, 5, "b"), (5, 6, "a")
    ]
    assert bio_to_spans([]) == []
