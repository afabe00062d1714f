"""The gner component with a scripted generator: alignment, labels, modes, chunking, bad input."""
import math
import subprocess
import sys

import pytest
import spacy
from support import LABELS, scripted_config, sentence_of
from spacy.tokens import Doc, Span
from spacy.training import Example
from thinc.api import ConfigValidationError

from spacy_gner.calibration import Calibration
from spacy_gner.component import GNER, RAW_OUTPUT_KEY


def _ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def _nlp(labels=LABELS, responses=None, pipeline=None, max_length=640, prob=0.9,
         generator_format="word_tag", **config):
    nlp = pipeline or spacy.blank("en")
    generator = scripted_config(responses, max_length, prob, output_format=generator_format, John="person",
                                Mary="person", Tokyo="location", New_York="location", Rome="location")
    nlp.add_pipe("gner", config={"labels": labels, "generator": generator, **config})
    return nlp


def test_factory_is_an_entry_point_and_loads_nothing_heavy():
    code = (
        "import sys, spacy\n"
        "import spacy_gner.component\n"
        "nlp = spacy.blank('en')\n"  # spacy-transformers' entry points may import torch here
        "before = set(sys.modules)\n"
        "pipe = nlp.add_pipe('gner', config={'labels': ['person']})\n"
        "heavy = {'transformers', 'spacy_gner.decoding', 'spacy_gner.compat'}\n"
        "assert not heavy & (set(sys.modules) - before), 'transformers imported'\n"
        "assert not pipe.generator.loaded\n"
        "print(type(pipe).__name__, pipe.labels)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "GNER ('person',)"


@pytest.mark.parametrize(
    "config, key",
    [({"generator": {"batch_size": "many"}}, "batch_size"), ({"set_ents_mode": "merge"}, "set_ents_mode"),
     ({"labels": "person"}, "labels"), ({"generator": {"prompt_format": "alpaca"}}, "prompt_format"),
     ({"threshold": "high"}, "threshold"), ({"generator": {"dtype": "int4"}}, "dtype")],
)
def test_typed_config_errors_name_the_key(config, key):
    nlp = spacy.blank("en")
    with pytest.raises(ConfigValidationError, match=key):
        nlp.add_pipe("gner", config=config)


def test_entities_on_a_blank_pipeline(scripted_nlp):
    doc = scripted_nlp("John explored Tokyo and flew back to New York.")
    assert _ents(doc) == [("John", "person"), ("Tokyo", "location"), ("New York", "location")]


def test_whitespace_tokens_are_not_sent_and_alignment_stays_exact():
    nlp = _nlp(store_raw=True)
    doc = nlp("John  explored\n\nTokyo \t and New   York")
    generator = nlp.get_pipe("gner").generator
    assert sentence_of(generator.prompts[-1]) == "John explored Tokyo and New York"
    assert _ents(doc) == [("John", "person"), ("Tokyo", "location"), ("New   York", "location")]
    assert [(e.start, e.end) for e in doc.ents] == [(0, 1), (4, 5), (7, 10)]
    assert doc[8].is_space and not doc[9].is_space
    assert doc.user_data[RAW_OUTPUT_KEY][0]["output"].startswith("John(B-person) explored(O)")


def test_raw_store_keeps_the_matched_tags_before_bio_repair():
    output = "New(B-location) York(I-person) Times(I-person) met(O) Mary(I-person)"
    nlp = _nlp(store_raw=True, responses={"New York Times met Mary": output})
    doc = nlp("New York Times met  Mary")
    [raw] = doc.user_data[RAW_OUTPUT_KEY]
    assert (raw["start"], raw["end"]) == (0, 6)  # token 4 is whitespace, not sent
    assert raw["tags"] == ["B-location", "I-person", "I-person", "O", "I-person"]
    assert _ents(doc) == [("New", "location"), ("York Times", "person"), ("Mary", "person")]


MESSY = {
    # omission, substitution and addition at once
    "John explored Tokyo and flew back to New York .":
        "John(B-person) explored(O) Tokio(B-location) and(O) back(O) home(O) to(O) "
        "New(B-location) York(I-location) .(O)",
    # no tags at all
    "Mary saw Rome .": "Mary saw Rome.",
    # an unknown type, an I- with no B-, a broken bracket
    "Mary met John in Rome .":
        "Mary(B-people) met(O) John(I-person) in(O) Rome(B-location .(O)",
    # garbage
    "John and Mary .": ")))((( (O)(O) \x00 ( B-person",
}


@pytest.mark.parametrize("text", list(MESSY))
def test_messy_model_output_aligns_onto_tokens(text):
    nlp = _nlp(responses=MESSY)
    doc = nlp(text)
    for ent in doc.ents:
        assert ent.label_ in LABELS
        assert doc[ent.start : ent.end].text == ent.text
    expected = {
        "John explored Tokyo and flew back to New York .":
            [("John", "person"), ("Tokyo", "location"), ("New York", "location")],
        "Mary saw Rome .": [],
        "Mary met John in Rome .": [("John", "person")],
        "John and Mary .": [],
    }
    assert _ents(doc) == expected[text]


def test_label_mapping_sets_doc_labels_and_prompts_with_names():
    nlp = _nlp(labels={"PERSON": "person", "GPE": "location"})
    doc = nlp("Mary visited Rome .")
    assert _ents(doc) == [("Mary", "PERSON"), ("Rome", "GPE")]
    prompt = nlp.get_pipe("gner").generator.prompts[-1]
    assert "Use the specific entity tags: person, location and O." in prompt
    assert nlp.get_pipe("gner").labels == ("PERSON", "GPE")


def test_labels_with_parentheses_and_spaces():
    generator = scripted_config(Mary="person (fictional)", New_York="big city")
    nlp = spacy.blank("en")
    nlp.add_pipe("gner", config={"labels": ["person (fictional)", "big city"], "generator": generator})
    assert _ents(nlp("Mary loves New York")) == [("Mary", "person (fictional)"), ("New York", "big city")]


def test_duplicate_labels_warn_and_duplicate_names_fail():
    with pytest.warns(UserWarning, match="duplicate label 'person'"):
        nlp = _nlp(labels=["person", "location", "person"])
    assert nlp.get_pipe("gner").labels == ("person", "location")
    with pytest.raises(ValueError, match="both use the prompt name 'person'"):
        _nlp(labels={"PER": "person", "PERSON": "person"})


def test_no_labels_is_a_clear_error():
    nlp = _nlp(labels=[])
    with pytest.raises(ValueError, match="has no labels"):
        nlp("John went home")


def test_add_label():
    nlp = _nlp(labels=["person"])
    pipe = nlp.get_pipe("gner")
    assert pipe.add_label("GPE", "location") == 1
    assert pipe.add_label("GPE") == 0
    assert _ents(nlp("Mary visited Rome")) == [("Mary", "person"), ("Rome", "GPE")]


def _examples(nlp):
    doc = nlp.make_doc("Mary visited Rome")
    reference = Doc(doc.vocab, words=[t.text for t in doc], ents=["B-PERSON", "O", "B-LOCATION"])
    return [Example(doc, reference)]


def test_initialize_infers_labels_from_gold_entities():
    nlp = _nlp(labels=[])
    nlp.initialize(lambda: _examples(nlp))
    pipe = nlp.get_pipe("gner")
    assert pipe.label_names == {"LOCATION": "location", "PERSON": "person"}
    assert _ents(nlp("Mary visited Rome")) == [("Mary", "PERSON"), ("Rome", "LOCATION")]


def test_initialize_with_labels_argument():
    nlp = _nlp(labels=["person"])
    nlp.get_pipe("gner").initialize(lambda: [], nlp=nlp, labels=["location"])
    assert _ents(nlp("Mary visited Rome")) == [("Rome", "location")]


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("replace", [("John", "person"), ("Tokyo", "location")]),
        ("keep", [("John explored", "EVENT"), ("Tokyo", "location"), ("May", "DATE")]),
        ("overwrite", [("John", "person"), ("Tokyo", "location"), ("May", "DATE")]),
    ],
)
def test_set_ents_mode(mode, expected):
    nlp = _nlp(set_ents_mode=mode)
    doc = nlp.make_doc("John explored Tokyo in May")
    doc.ents = [Span(doc, 0, 2, "EVENT"), Span(doc, 4, 5, "DATE")]
    assert _ents(nlp.get_pipe("gner")(doc)) == expected


def test_nlp_pipe_batches_documents_into_one_generator_call():
    nlp = _nlp()
    texts = ["John went to Tokyo", "Mary went to Rome", "Nobody went anywhere"] * 4
    docs = list(nlp.pipe(texts, batch_size=6))
    assert nlp.get_pipe("gner").generator.calls == 2
    assert [_ents(doc) for doc in docs[:3]] == [
        [("John", "person"), ("Tokyo", "location")], [("Mary", "person"), ("Rome", "location")], []
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", "😀🎉", "東京に行きました。", "Ünïcödé (test) [x] {y}"])
def test_odd_text_never_crashes(text):
    nlp = _nlp()
    doc = nlp(text)
    assert doc.text == text
    assert list(doc.ents) == []


def test_mixed_scripts_keep_entities():
    nlp = _nlp()
    doc = nlp("😀 John 東京 Tokyo ✈️ Mary")
    assert _ents(doc) == [("John", "person"), ("Tokyo", "location"), ("Mary", "person")]


def _long_text(n_sentences):
    names = ["John", "Mary", "Tokyo", "New York", "Rome"]
    return " ".join(f"On day {i} , {names[i % 5]} waited near the old gate ." for i in range(n_sentences))


@pytest.mark.parametrize("with_sentences", [False, True])
def test_5000_token_document_is_chunked_and_merged(with_sentences):
    nlp = spacy.blank("en")
    if with_sentences:
        nlp.add_pipe("sentencizer")
    _nlp(pipeline=nlp, max_length=100, window_overlap=10)
    text = _long_text(500)
    doc = nlp(text)
    assert len(doc) > 5000
    generator = nlp.get_pipe("gner").generator
    assert len(generator.prompts) > 50
    expected = nlp.get_pipe("gner").generator.label(text.split())
    gold = [(t.idx, tag) for t, tag in zip(doc, expected) if tag != "O"]
    found = [(doc[e.start].idx, "B-" + e.label_) for e in doc.ents]
    found += [(t.idx, "I-" + e.label_) for e in doc.ents for t in e[1:]]
    assert sorted(found) == sorted(gold)


def test_entity_straddling_a_window_split_is_not_cut():
    nlp = _nlp(max_length=20, window_overlap=4)
    words = ["w"] * 8 + ["New", "York"] + ["w"] * 20 + ["John"] + ["w"] * 9
    doc = nlp(" ".join(words))
    chunk_sizes = {len(sentence_of(p).split()) for p in nlp.get_pipe("gner").generator.prompts}
    assert max(chunk_sizes) == 10  # cost 2 per word (no tokenizer): 10 words a window
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(8, 10, "location"), (30, 31, "person")]


def test_every_candidate_goes_to_the_spans_group_with_its_score():
    nlp = _nlp(prob=0.8)
    doc = nlp("John explored New York with Mary")
    group = doc.spans["gner"]
    assert [(s.text, s.label_) for s in group] == [("John", "person"), ("New York", "location"), ("Mary", "person")]
    assert group.attrs["scores"] == pytest.approx([0.8, 0.64, 0.8])  # the product of the words'
    assert _ents(doc) == [(s.text, s.label_) for s in group]


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.7, 0.75, 0.9, 1.0])
def test_the_threshold_only_removes_entities(threshold):
    text = "John explored New York with Mary"
    kept = _ents(_nlp(prob=0.8, threshold=threshold)(text))
    everything = _ents(_nlp(prob=0.8)(text))
    assert set(kept) <= set(everything)
    expected = {0.0: 3, 0.5: 3, 0.7: 2, 0.75: 2, 0.9: 0, 1.0: 0}[threshold]
    assert len(kept) == expected
    doc = _nlp(prob=0.8, threshold=threshold)(text)
    assert len(doc.spans["gner"]) == 3  # candidates stay whatever the threshold


def test_unscored_generators_keep_every_entity():
    doc = _nlp(prob=None, threshold=0.99)("John explored New York")
    assert _ents(doc) == [("John", "person"), ("New York", "location")]
    assert doc.spans["gner"].attrs["scores"] == [None, None]


def test_an_entity_ruler_conditions_gner_and_is_never_overridden():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "location", "pattern": "John Tokyo"},
                        {"label": "DATE", "pattern": "May"}])
    _nlp(pipeline=nlp, set_ents_mode="condition")
    doc = nlp("John Tokyo met Mary in May near Rome")
    assert _ents(doc) == [("John Tokyo", "location"), ("Mary", "person"), ("May", "DATE"), ("Rome", "location")]
    (request,) = nlp.get_pipe("gner").generator.requests[-1:]
    assert request.fixed == ("B-location", "I-location", None, None, None, "O", None, None)


def test_condition_keeps_a_fixed_entity_from_being_extended():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "location", "pattern": "New"}])
    _nlp(pipeline=nlp, set_ents_mode="condition")
    # the gazetteer would tag "New York" as one location: "York" may not continue "New"
    assert _ents(nlp("John saw New York")) == [("John", "person"), ("New", "location")]


def test_each_doc_may_offer_its_own_types_in_its_own_order():
    nlp = _nlp()
    docs = [nlp.make_doc("Mary visited Rome"), nlp.make_doc("Mary visited Rome")]
    docs[1]._.gner_labels = ["location", "person"]
    docs = list(nlp.get_pipe("gner").pipe(docs))
    prompts = nlp.get_pipe("gner").generator.prompts[-2:]
    assert "tags: person, location and O" in prompts[0] and "tags: location, person and O" in prompts[1]
    assert _ents(docs[0]) == _ents(docs[1]) == [("Mary", "person"), ("Rome", "location")]


def test_a_custom_generator_registered_and_named_in_a_config_file(tmp_path):
    config = tmp_path / "gner.cfg"
    config.write_text(
        '[nlp]\nlang = "en"\npipeline = ["gner"]\n\n[components]\n\n[components.gner]\n'
        'factory = "gner"\nlabels = ["person"]\nthreshold = 0.5\n\n[components.gner.generator]\n'
        '@gner_generators = "spacy-gner.test.ScriptedGenerator.v1"\nprob = 0.6\n\n'
        '[components.gner.generator.gazetteer]\nMary = "person"\n'
    )
    nlp = spacy.util.load_model_from_config(spacy.util.load_config(config), auto_fill=True)
    assert _ents(nlp("Mary left")) == [("Mary", "person")]
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("gner").threshold == 0.5
    assert _ents(loaded("Mary left")) == [("Mary", "person")]


def test_a_generator_that_breaks_the_contract_is_refused():
    with pytest.raises(TypeError, match="Generator"):
        GNER(spacy.blank("en").vocab, generator=lambda requests: [])


@pytest.mark.parametrize("exclude", [[], ["cfg"], ["model"]])
def test_to_disk_and_from_disk_honour_exclude(tmp_path, exclude):
    nlp = _nlp(labels={"PER": "person"})
    nlp.get_pipe("gner").to_disk(tmp_path / "gner", exclude=exclude)
    assert (tmp_path / "gner" / "cfg").exists() == ("cfg" not in exclude)
    other = _nlp(labels=["location"])
    if "cfg" not in exclude:
        other.get_pipe("gner").from_disk(tmp_path / "gner", exclude=exclude)
        assert other.get_pipe("gner").labels == ("PER",)
    data = nlp.get_pipe("gner").to_bytes(exclude=exclude)
    again = _nlp(labels=["location"]).get_pipe("gner").from_bytes(data, exclude=exclude)
    assert again.labels == (("location",) if "cfg" in exclude else ("PER",))


def test_a_calibration_maps_the_scores_the_threshold_and_the_spans_group_see(tmp_path):
    nlp = _nlp(prob=0.8, threshold=0.6)
    gner = nlp.get_pipe("gner")
    gner.calibration = Calibration(slope=0.5, intercept=-math.log(2))  # 0.8 -> 0.5, 0.64 -> 0.4
    doc = nlp("John explored New York with Mary")
    group = doc.spans["gner"]
    assert group.attrs["model_scores"] == pytest.approx([0.8, 0.64, 0.8])
    assert group.attrs["scores"] == pytest.approx([gner.calibration(p) for p in (0.8, 0.64, 0.8)])
    assert group.attrs["scores"][0] == pytest.approx(0.5)
    assert _ents(doc) == []  # every calibrated score is under the threshold of 0.6
    gner.threshold = 0.45
    assert _ents(nlp("John explored New York with Mary")) == [("John", "person"), ("Mary", "person")]


def test_the_calibration_is_saved_with_the_labels(tmp_path):
    nlp = _nlp(prob=0.8)
    nlp.get_pipe("gner").calibration = Calibration(0.5, -0.5)
    nlp.get_pipe("gner").to_disk(tmp_path / "gner", exclude=["model"])
    fresh = _nlp(prob=0.8).get_pipe("gner")
    assert fresh.calibration is None
    assert fresh.from_disk(tmp_path / "gner").calibration == Calibration(0.5, -0.5)
    data = nlp.get_pipe("gner").to_bytes()
    assert _nlp().get_pipe("gner").from_bytes(data).calibration == Calibration(0.5, -0.5)
    nlp.get_pipe("gner").calibration = None
    assert _nlp().get_pipe("gner").from_bytes(nlp.get_pipe("gner").to_bytes()).calibration is None
    assert "model_scores" not in nlp("John left").spans["gner"].attrs


def test_descriptions_reach_the_prompt_of_the_types_offered():
    nlp = _nlp(descriptions={"location": "a place on a map", "band": "a group of musicians"})
    nlp("Mary visited Rome")
    request = nlp.get_pipe("gner").generator.requests[-1]
    assert request.descriptions == (("location", "a place on a map"),)
    assert "The tags mean:\n- location: a place on a map\nSentence: Mary visited Rome" in request.prompt
    with pytest.raises(ValueError, match="descriptions map type names to text"):
        _nlp(descriptions={"location": "  "})


NESTED_TEXT = "the Bush administration met in New York"


def test_nested_candidates_all_go_to_the_spans_group_and_the_outermost_to_the_ents():
    response = "[ the [ Bush | person ] administration | organization ] met in [ New York | location ]"
    nlp = _nlp(labels=["organization", "person", "location"], responses={NESTED_TEXT: response},
               generator_format="bracket")
    doc = nlp(NESTED_TEXT)
    group = doc.spans["gner"]
    assert [(s.text, s.label_) for s in group] == [
        ("the Bush administration", "organization"), ("Bush", "person"), ("New York", "location")]
    assert group.attrs["scores"] == [None, None, None]  # parsed text: unscored
    assert _ents(doc) == [("the Bush administration", "organization"), ("New York", "location")]
    nlp.get_pipe("gner").store_raw = True
    raw = nlp(NESTED_TEXT).user_data["gner_raw"][0]
    assert raw["output"] == response and [s[:3] for s in raw["spans"]] == [
        [0, 3, "organization"], [1, 2, "person"], [5, 7, "location"]]


def test_an_entity_ruler_conditions_a_nesting_format():
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "location", "pattern": "York"}])
    response = "[ the [ Bush | person ] administration | organization ] met in [ New York | location ]"
    _nlp(pipeline=nlp, labels=["organization", "person", "location"], responses={NESTED_TEXT: response},
         generator_format="bracket", set_ents_mode="condition")
    doc = nlp(NESTED_TEXT)
    # the fixed 'York' stays as it is: 'New York', which holds it, is dropped
    assert _ents(doc) == [("the Bush administration", "organization"), ("York", "location")]
    assert ("New York", "location") not in [(s.text, s.label_) for s in doc.spans["gner"]]
