"""Output formats: registered blocks, targets, tolerant parsing, nesting, and the flat selection."""
import pytest
import spacy
from spacy.util import registry

from spacy_gner.formats import (
    InlineBracket,
    InlineXML,
    WordTag,
    get_format,
    outermost,
    spans_to_bio,
)
from spacy_gner.generators import Request, parse_output
from spacy_gner.prompt import build_prompt, build_target

WORDS = "the Bush administration met in New York .".split()
NESTED = [(0, 3, "organization"), (1, 2, "person"), (5, 7, "location")]
LABELS = ["organization", "person", "location"]
INLINE = [InlineBracket(), InlineXML()]


@pytest.mark.parametrize("name,kind", [("spacy-gner.WordTag.v1", WordTag),
                                       ("spacy-gner.InlineBracket.v1", InlineBracket),
                                       ("spacy-gner.InlineXML.v1", InlineXML)])
def test_formats_are_registered_and_named_by_short_names(name, kind):
    assert isinstance(registry.gner_formats.get(name)(), kind)
    short = {WordTag: "word_tag", InlineBracket: "bracket", InlineXML: "xml"}[kind]
    assert isinstance(get_format(short), kind) and isinstance(get_format(name), kind)
    with pytest.raises(ValueError, match="Unknown output format 'brackets'"):
        get_format("brackets")


def test_inline_targets_write_every_entity_nested():
    assert InlineBracket().target(WORDS, NESTED) == (
        "[ the [ Bush | person ] administration | organization ] met in [ New York | location ] .")
    assert InlineXML().target(WORDS, NESTED) == (
        "<organization> the <person> Bush </person> administration </organization> met in "
        "<location> New York </location> .")
    with pytest.raises(ValueError, match="cross"):
        InlineBracket().target(WORDS, [(0, 2, "person"), (1, 3, "person")])


def test_word_tag_target_is_the_reference_and_flattens_to_the_outermost():
    tags = spans_to_bio(len(WORDS), NESTED)
    assert tags == ["B-organization", "I-organization", "I-organization", "O", "O",
                    "B-location", "I-location", "O"]
    assert WordTag().target(WORDS, NESTED) == build_target(WORDS, tags)
    assert outermost(NESTED) == [(0, 3, "organization"), (5, 7, "location")]


def test_word_tag_prompt_is_byte_identical_and_inline_prompts_name_their_markup():
    assert build_prompt(WORDS, LABELS, None, WordTag()) == build_prompt(WORDS, LABELS)
    prompt = build_prompt(WORDS, LABELS, {"person": "a human"}, InlineBracket())
    assert "[ words | type ]" in prompt and " and O." not in prompt
    assert prompt.endswith("Use the specific entity types: organization, person, location.\n"
                           "The tags mean:\n- person: a human\nSentence: " + " ".join(WORDS))


@pytest.mark.parametrize("fmt", INLINE, ids=["bracket", "xml"])
def test_inline_parsing_reads_back_every_target(fmt):
    assert fmt.parse(WORDS, fmt.target(WORDS, NESTED), LABELS) == sorted(NESTED, key=lambda s: (s[0], -s[1]))


@pytest.mark.parametrize("fmt,text", [
    (InlineBracket(), "[the [Bush|person] administration|organization] met [New Yrok | location] ."),
    (InlineXML(), "<organization>the <person>Bush</person> administration</organization> met "
                  "<location>New Yrok</location> ."),
])
def test_inline_parsing_survives_unspaced_markup_and_dropped_or_respelt_words(fmt, text):
    assert fmt.parse(WORDS, text, LABELS) == [(0, 3, "organization"), (1, 2, "person"), (5, 7, "location")]


@pytest.mark.parametrize("fmt,text", [
    (InlineBracket(), "[ the | ship ] [ Bush | person ] administration | organization ] [ met in"),
    (InlineXML(), "<ship> the </ship> <person> Bush </person> administration </organization> "
                  "<location> met </person> in"),
])
def test_inline_parsing_drops_unknown_types_and_broken_markup(fmt, text):
    assert fmt.parse(WORDS, text, LABELS) == [(1, 2, "person")]


def test_parse_output_of_a_nesting_format_keeps_fixed_entities():
    fixed = (None, None, None, None, None, "B-location", "I-location", "O")
    request = Request(tuple(WORDS), tuple(LABELS), fixed)
    # the model marked 'York .' instead of the fixed 'New York'
    result = parse_output(request, "[ the [ Bush | person ] administration | organization ] met in "
                                   "New [ York . | location ]", None, InlineBracket())
    assert [span[:3] for span in result.spans] == [(0, 3, "organization"), (1, 2, "person"),
                                                   (5, 7, "location")]
    assert result.tags == tuple(spans_to_bio(len(WORDS), result.spans))


def test_a_pipeline_names_its_format_in_the_generator_config(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("gner", config={"labels": LABELS, "generator": {
        "@gner_generators": "spacy-gner.HFGenerator.v1", "model": "unused",
        "output_format": {"@gner_formats": "spacy-gner.InlineXML.v1", "depth": 3}}})
    generator = nlp.get_pipe("gner").generator
    assert isinstance(generator.output_format, InlineXML) and generator.output_format.depth == 3
    nlp.to_disk(tmp_path, exclude=["gner"])  # the model is never loaded
    config = spacy.util.load_config(tmp_path / "config.cfg")
    assert config["components"]["gner"]["generator"]["output_format"] == {
        "@gner_formats": "spacy-gner.InlineXML.v1", "depth": 3}
