"""Type-name variation of training.variants, on its own and through training.prepare."""
import json
import random
from dataclasses import replace

import pytest

from training.prepare import CROSSNER_LABEL_MAP, main, prepare_records
from training.readers import read_gner_jsonl
from training.records import Record
from training.variants import (
    CROSSNER_VARIANTS,
    add_head_type,
    common_heads,
    head_word,
    load_variants,
    vary_labels,
)

SENTENCE = Record(["Ada", "Lovelace", "wrote", "in", "London"],
                  ["B-writer", "I-writer", "O", "O", "B-location"],
                  ["writer", "person", "location"], "toy", "0", "train")


def test_vary_labels_renames_a_type_and_its_tags_together():
    varied = vary_labels(SENTENCE, {"writer": ["author"]}, 1.0, random.Random(0))
    assert varied.labels == ["author", "person", "location"]
    assert varied.tags == ["B-author", "I-author", "O", "O", "B-location"]
    assert varied.words == SENTENCE.words
    varied.validate()


def test_vary_labels_at_rate_zero_changes_nothing():
    assert vary_labels(SENTENCE, CROSSNER_VARIANTS, 0.0, random.Random(0)) == SENTENCE


def test_vary_labels_never_gives_two_types_one_name():
    variants = {"writer": ["person", "author"], "person": ["author", "individual"]}
    for seed in range(50):
        varied = vary_labels(SENTENCE, variants, 1.0, random.Random(seed))
        assert len(set(varied.labels)) == len(varied.labels) == 3
        assert varied.tags[0] == "B-" + varied.labels[0]


def test_vary_labels_renames_at_about_its_rate():
    rng = random.Random(0)
    renamed = sum(vary_labels(SENTENCE, {"location": ["place"]}, 0.3, rng).labels[2] == "place"
                  for _ in range(2000))
    assert 500 < renamed < 700


def test_crossner_variants_cover_the_training_types_with_new_names():
    types = {"person", "writer", "musical artist", "scientist", "researcher", "organization",
             "band", "university", "location", "country", "event", "award"}
    assert types <= set(CROSSNER_VARIANTS)
    for label, names in CROSSNER_VARIANTS.items():
        assert names and label not in names and len(set(names)) == len(names)
        assert label not in CROSSNER_LABEL_MAP  # keys are the normalised names


def test_prepare_records_varies_names_seeded_per_sentence():
    records = [Record(SENTENCE.words, SENTENCE.tags, SENTENCE.labels, "toy", str(i), "train")
               for i in range(40)]
    options = dict(variants={"writer": ["author", "novelist"]}, variant_rate=0.5, seed=7)
    prepared = prepare_records(records, **options)
    assert prepared == prepare_records(records, **options)
    assert prepare_records(records[::-1], **options) == prepared[::-1]
    names = [r.labels[0] for r in prepared]
    assert {"writer", "author", "novelist"} == set(names)
    assert all(r.tags[0] == "B-" + r.labels[0] for r in prepared)


def test_cli_variants_file_and_its_errors(fixtures, tmp_path):
    (tmp_path / "variants.json").write_text(json.dumps({"person": ["human"]}))
    main([str(fixtures / "bio" / "tweets"), "--variants", str(tmp_path / "variants.json"),
          "--variant-rate", "1", "--jsonl", str(tmp_path / "out.jsonl")])
    records = read_gner_jsonl(tmp_path / "out.jsonl")
    assert {tuple(r.labels) for r in records} == {("human", "location", "event")}
    assert "B-person" not in {tag for r in records for tag in r.tags}
    (tmp_path / "bad.json").write_text(json.dumps({"person": "human"}))
    with pytest.raises(SystemExit, match=r"bad.json.*\{type: \[name, \.\.\.\]\}"):
        main([str(fixtures / "bio" / "tweets"), "--variants", str(tmp_path / "bad.json")])


def test_load_variants_names_the_builtin_map():
    assert load_variants("crossner") is CROSSNER_VARIANTS


def _record(words, tags, labels, id_="0"):
    return Record(words.split(), tags.split(), labels, "toy", id_, "train")


SOCIETIES = [
    _record("the Royal Society met", "O B-org I-org O", ["org"], "0"),
    _record("a society of friends", "O O O O", ["org"], "1"),
    _record("Flat Earth Society and Linnean Society of London", "B-org I-org I-org O B-org I-org "
            "I-org I-org", ["org"], "2"),
    _record("Mike Society sang", "B-person I-person O", ["person"], "3"),  # a name, alike
    _record("Opera Society and Acme Ltd", "B-org I-org O B-org I-org", ["org", "person"], "4"),
]


def test_head_word_is_the_capitalised_noun_before_any_preposition():
    assert head_word("Royal Society of London".split()) == "society"
    assert head_word("Academy Award for Best Actress".split()) == "award"
    assert head_word("Society".split()) is None  # one word: no head of its own
    assert head_word("University of Groningen".split()) == "university"
    assert head_word("of Groningen".split()) is None
    assert head_word("the big party".split()) is None  # not capitalised
    assert head_word("Mr X".split()) is None  # too short to be a noun


def test_common_heads_are_nouns_that_end_several_names():
    assert common_heads(SOCIETIES) == {"society"}
    assert common_heads(SOCIETIES, min_names=6) == set()
    assert common_heads(SOCIETIES[2:]) == set()  # "society" never follows a determiner


def test_add_head_type_retags_the_entities_of_one_type_with_that_head():
    record = SOCIETIES[4]
    narrowed = add_head_type(record, {"society"}, 1.0, random.Random(0))
    assert narrowed.labels == ["org", "person", "society"]
    assert narrowed.tags == ["B-society", "I-society", "O", "B-org", "I-org"]
    narrowed.validate()
    assert add_head_type(record, {"society"}, 0.0, random.Random(0)) == record
    assert add_head_type(record, {"museum"}, 1.0, random.Random(0)) == record
    offered = replace(record, labels=["org", "society"])
    assert add_head_type(offered, {"society"}, 1.0, random.Random(0)) == offered


def test_prepare_records_offers_head_types_seeded():
    records = [replace(r, id=str(i)) for i in range(10) for r in SOCIETIES]
    prepared = prepare_records(records, head_rate=0.5, seed=1)
    assert prepared == prepare_records(records, head_rate=0.5, seed=1)
    narrowed = [r for r in prepared if "society" in r.labels]
    assert 0 < len(narrowed) < 40  # 40 records have a name headed by "Society"
    assert all("B-society" in r.tags for r in narrowed)
