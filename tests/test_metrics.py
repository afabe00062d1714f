import pytest

from spacy_gner.metrics import normalize, paper_entities, paper_f1


def test_normalize():
    assert normalize("The  U.S. Army's") == "us armys"


def test_entities_follow_the_reference_reading_of_bio():
    words = "the New York Times and AAAI in New York".split()
    tags = ["B-org", "I-org", "I-org", "I-org", "O", "I-conf", "O", "B-loc", "I-loc"]
    assert paper_entities(words, tags) == [("new york times", "org"), ("aaai", "conf"), ("new york", "loc")]
    # I- after another type extends the entity and renames it; repeated entities count once
    assert paper_entities(["u", "v", "x", "x"], ["B-p", "I-q", "B-r", "B-r"]) == [("u v", "q"), ("x", "r")]


def test_paper_f1():
    words = "John met Mary in Paris".split()
    gold = ["B-person", "O", "B-person", "O", "B-location"]
    pred = ["B-person", "O", "O", "O", "B-person"]
    scores = paper_f1([(words, gold, pred)])
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.4)
    assert paper_f1([])["f1"] == 0.0
