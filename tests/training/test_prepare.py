"""Regularisation, the writers and the command line of training.prepare."""
import argparse
import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import spacy

from spacy_gner.formats import get_format
from spacy_gner.prompt import build_prompt, build_target
from training.evaluate import inner
from training.prepare import (
    CROSSNER_LABEL_MAP,
    GOLD_SPANS,
    TRAINING_POOL,
    add_external_types,
    cap_per_dataset,
    clashes,
    exclusion_map,
    held_out,
    main,
    normalise_labels,
    parse_cap,
    prepare_records,
    present_types,
    record_doc,
    shuffle_labels,
    write_docbin,
    write_gner_jsonl,
)
from training.readers import read_bio_dir, read_docbin, read_genia, read_gner_jsonl
from training.records import Record
from toy_data import COMPANIES, PEOPLE_AND_PLACES, write_bio_dataset

TYPES = ["person", "location", "organization", "date", "event", "product", "award", "work"]


def record(id_: str, dataset: str = "toy", labels=("person", "location")) -> Record:
    return Record(["Ada", "left", "Rome"], ["B-person", "O", "B-location"], list(labels),
                  dataset, id_, "train")


# --- writers ------------------------------------------------------------------------------


def test_writer_reproduces_reference_prompts(shared_data, tmp_path):
    reference_path = shared_data("reference-prompts/zero-shot-test-200.jsonl")
    with open(reference_path, encoding="utf-8") as file:
        reference = [json.loads(line) for line in file]
    records = list(read_gner_jsonl(reference_path))
    assert write_gner_jsonl(records, tmp_path / "out.jsonl") == len(reference) == 1400
    with open(tmp_path / "out.jsonl", encoding="utf-8") as file:
        written = [json.loads(line) for line in file]
    assert written == reference
    crossner = [item for item in written if item["dataset"].startswith("crossner_")]
    assert len(crossner) == 1000


def test_bio_reader_and_writer_reproduce_reference_prompts(shared_data):
    """From the raw BIO files, with the reference's type order, the strings come out exact."""
    reference_path = shared_data("reference-prompts/zero-shot-test-200.jsonl")
    with open(reference_path, encoding="utf-8") as file:
        reference = [json.loads(line) for line in file]
    for dataset in sorted({item["dataset"] for item in reference}):
        sentences = {r.id: r for r in read_bio_dir(shared_data(f"ner/{dataset}"), "test")}
        for item in (item for item in reference if item["dataset"] == dataset):
            instance = item["instance"]
            sentence = sentences[item["id"]]
            prompt = build_prompt(sentence.words, item["label_list"])
            assert prompt == instance["instruction_inputs"]
            assert build_target(sentence.words, sentence.tags) == instance["prompt_labels"]


def test_gner_jsonl_round_trip(fixtures, tmp_path):
    records = list(read_bio_dir(fixtures / "bio" / "tweets", "train"))
    write_gner_jsonl(records, tmp_path / "out" / "train.jsonl")
    assert list(read_gner_jsonl(tmp_path / "out" / "train.jsonl")) == records


def test_writers_refuse_invalid_records(tmp_path):
    bad = Record(["Ada"], ["B-city"], ["person"], "toy", "9")
    with pytest.raises(ValueError, match="toy 9: tag 'B-city'"):
        write_gner_jsonl([bad], tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match="toy 9: tag 'B-city'"):
        write_docbin([bad], tmp_path / "out.spacy")


def test_docbin_round_trip(fixtures, tmp_path):
    records = list(read_bio_dir(fixtures / "bio" / "tweets", "train"))
    assert write_docbin(records, tmp_path / "train.spacy") == 3
    nlp = spacy.blank("en")
    back = list(read_docbin(tmp_path / "train.spacy", nlp, labels=records[0].labels))
    for before, after in zip(records, back):
        # spaCy holds empty and whitespace words as whitespace tokens, which read back as no words
        kept = [i for i, word in enumerate(before.words) if word.strip()]
        assert after.words == [before.words[i] for i in kept]
        assert after.tags == [before.tags[i] for i in kept]
        assert after.labels == before.labels
    docs = list(spacy.tokens.DocBin().from_disk(tmp_path / "train.spacy").get_docs(nlp.vocab))
    assert docs[0].text == "Mary flew to New York"
    entities = [(e.text, e.label_) for e in docs[0].ents]
    assert entities == [("Mary", "person"), ("New York", "location")]


def test_nested_entities_go_to_a_span_group_of_the_docbin_and_come_back(fixtures, tmp_path):
    records = list(read_genia(fixtures / "genia-sample.jsonl", "dev"))
    doc = record_doc(records[1], spacy.blank("en").vocab)
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("phytohemagglutinin ( PHA ) activated peripheral blood lymphocytes", "cell line"),
        ("PBL", "cell type")]
    assert [(s.text, s.label_) for s in doc.spans[GOLD_SPANS]] == [
        ("phytohemagglutinin ( PHA ) activated peripheral blood lymphocytes", "cell line"),
        ("phytohemagglutinin", "protein"), ("PHA", "protein"), ("PBL", "cell type")]
    assert GOLD_SPANS not in record_doc(record("0"), doc.vocab).spans  # flat data: no group
    write_docbin(records, tmp_path / "genia.spacy")
    back = list(read_docbin(tmp_path / "genia.spacy", labels=records[0].labels))
    assert [(r.words, r.tags, r.entities) for r in back] == [(r.words, r.tags, r.entities) for r in records]
    write_gner_jsonl(records, tmp_path / "genia.jsonl")
    assert list(read_gner_jsonl(tmp_path / "genia.jsonl")) == records


# --- output formats -----------------------------------------------------------------------


def test_word_tag_output_is_byte_identical_to_the_reference(tmp_path):
    """The reference's prompts and targets, by default as with --output-format word_tag."""
    with gzip.open(Path(__file__).parents[1] / "fixtures" / "crossner-reference-prompts.jsonl.gz",
                   "rt", encoding="utf-8") as file:
        reference = [json.loads(line) for line in file][:200]
    (tmp_path / "reference.jsonl").write_text(
        "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in reference), encoding="utf-8")
    main([str(tmp_path / "reference.jsonl"), "--jsonl", str(tmp_path / "default.jsonl")])
    main([str(tmp_path / "reference.jsonl"), "--output-format", "word_tag",
          "--jsonl", str(tmp_path / "word_tag.jsonl")])
    written = (tmp_path / "word_tag.jsonl").read_bytes()
    assert written == (tmp_path / "default.jsonl").read_bytes()
    for line, item in zip(written.decode("utf-8").splitlines(), reference, strict=True):
        instance, expected = json.loads(line)["instance"], item["instance"]
        assert instance["instruction_inputs"] == expected["instruction_inputs"]
        assert instance["prompt_labels"] == expected["prompt_labels"]


def test_word_tag_targets_of_nested_data_tag_the_outermost(fixtures, tmp_path):
    main([str(fixtures / "genia-sample.jsonl"), "--jsonl", str(tmp_path / "out.jsonl")])
    for line, record in zip((tmp_path / "out.jsonl").read_text().splitlines(),
                            read_genia(fixtures / "genia-sample.jsonl", "train"), strict=True):
        instance = json.loads(line)["instance"]
        assert instance["prompt_labels"] == build_target(record.words, record.tags)
        assert instance["instruction_inputs"] == build_prompt(record.words, record.labels)
        assert [tuple(span) for span in instance["entities"]] == record.entities


BRACKET_NESTING = ("[ [ [ NF kappa B | protein ] | DNA ] and [ [ NFAT-1 | protein ] deletion "
                   "| DNA ] | DNA ]")
XML_NESTING = ("<DNA> <DNA> <protein> NF kappa B </protein> </DNA> and <DNA> <protein> NFAT-1 "
               "</protein> deletion </DNA> </DNA>")


@pytest.mark.parametrize("name, nesting", [("bracket", BRACKET_NESTING), ("xml", XML_NESTING),
                                           ("spacy-gner.InlineXML.v1", XML_NESTING)])
def test_inline_targets_parse_back_to_every_nested_entity(fixtures, tmp_path, name, nesting):
    main([str(fixtures / "genia-sample.jsonl"), "--output-format", name,
          "--jsonl", str(tmp_path / "out.jsonl")])
    output_format = get_format(name)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    records = list(read_genia(fixtures / "genia-sample.jsonl", "train"))
    assert len(lines) == len(records) == 30
    for line, record in zip(lines, records):
        instance = line["instance"]
        assert instance["instruction_inputs"] == build_prompt(record.words, record.labels, None,
                                                              output_format)
        parsed = output_format.parse(instance["words"], instance["prompt_labels"], line["label_list"])
        assert sorted(parsed) == sorted(record.entities)
    assert sum(len(inner(set(r.entities))) for r in records) == 17  # inner ones among them
    # two deep, and one span with two types
    assert nesting in lines[-1]["instance"]["prompt_labels"]


def test_an_unknown_output_format_is_refused(fixtures, capsys):
    with pytest.raises(SystemExit):
        main([str(fixtures / "genia-sample.jsonl"), "--output-format", "json"])
    assert "Unknown output format 'json'" in capsys.readouterr().err


# --- regularisation -----------------------------------------------------------------------


def test_shuffle_labels_is_seeded_per_instance():
    records = [record(str(i), labels=TYPES) for i in range(20)]
    shuffled = [shuffle_labels(r, seed=1) for r in records]
    assert all(sorted(s.labels) == sorted(TYPES) and s.tags == r.tags
               for s, r in zip(shuffled, records))
    assert len({tuple(s.labels) for s in shuffled}) > 10  # each instance its own order
    assert [shuffle_labels(r, seed=1) for r in reversed(records)] == shuffled[::-1]
    assert [shuffle_labels(r, seed=2).labels for r in records] != [s.labels for s in shuffled]


def test_cap_per_dataset():
    records = [record(str(i), "big") for i in range(50)]
    records += [record(str(i), "small") for i in range(3)]
    capped = cap_per_dataset(records, 10, seed=0)
    assert Counter(r.dataset for r in capped) == {"big": 10, "small": 3}
    assert capped == [r for r in records if r in capped]  # input order kept
    assert cap_per_dataset(records, 10, seed=0) == capped
    assert cap_per_dataset(records, 10, seed=1) != capped


def test_add_external_types():
    base = record("0", labels=["person", "location"])
    extended = add_external_types(base, TYPES, 3, seed=0)
    assert extended.labels[:2] == ["person", "location"] and len(extended.labels) == 5
    assert set(extended.labels[2:]) <= set(TYPES) - {"person", "location"}
    assert extended.tags == base.tags
    assert add_external_types(base, TYPES, 3, seed=0) == extended
    assert add_external_types(base, ["person", "date"], 3, seed=0).labels == [
        "person", "location", "date"]


def test_prepare_records_draws_external_types_from_the_dataset():
    records = [record("0", labels=["person", "location"]),
               record("1", labels=["person", "location", "award"]),
               record("2", "other", labels=["person", "location", "product"])]
    prepared = prepare_records(records, external=5)
    assert [r.labels for r in prepared] == [
        ["person", "location", "award"], ["person", "location", "award"],
        ["person", "location", "product"]]
    pooled = prepare_records(records, external=1, pool=["date"])
    assert all(r.labels[-1] == "date" for r in pooled)


def test_normalise_labels():
    raw = Record(["Python", "and", "misc", "stuff"], ["B-programlang", "O", "B-misc", "I-misc"],
                 ["programlang", "misc", "program language", "organisation"], "crossner_ai", "0")
    normal = normalise_labels(raw, CROSSNER_LABEL_MAP)
    assert normal.labels == ["programming language", "organization"]
    assert normal.tags == ["B-programming language", "O", "O", "O"]
    normal.validate()
    renamed = normalise_labels(record("0"), {"person": "human"})
    assert (renamed.labels, renamed.tags) == (["human", "location"], ["B-human", "O", "B-location"])


def test_prepare_records_all_steps_are_deterministic():
    records = [record(str(i), labels=["person", "location"]) for i in range(30)]
    options = dict(label_map={"person": "human"}, cap=20, external=2, pool=TYPES, shuffle=True,
                   seed=3)
    prepared = prepare_records(records, **options)
    assert prepared == prepare_records(records, **options)
    assert len(prepared) == 20
    assert all(len(r.labels) == 4 and {"human", "location"} <= set(r.labels) for r in prepared)


def test_present_types_offers_only_the_types_tagged_in_order_of_mention():
    sentence = Record(["Rome", "and", "Ada", "in", "Rome"], ["B-city", "O", "B-person", "O", "B-city"],
                      ["person", "animal", "city"], "toy", "0")
    assert present_types(sentence).labels == ["city", "person"]
    assert present_types(record("1", labels=TYPES)).tags == record("1").tags
    nested = Record(["IL-2", "gene", "and", "Ada"], ["B-DNA", "I-DNA", "O", "B-person"],
                    ["person", "RNA", "protein", "DNA"], "toy", "2",
                    entities=[(0, 2, "DNA"), (0, 1, "protein"), (3, 4, "person")])
    assert present_types(nested).labels == ["DNA", "protein", "person"]  # inner types too


def test_dropping_an_outer_type_makes_the_inner_entities_outermost():
    nested = Record(["IL-2", "gene"], ["B-DNA", "I-DNA"], ["protein", "DNA"], "genia", "0",
                    entities=[(0, 2, "DNA"), (0, 1, "protein")])
    [prepared] = prepare_records([nested], label_map=exclusion_map(["DNA"]))
    assert (prepared.labels, prepared.tags, prepared.entities) == (
        ["protein"], ["B-protein", "O"], [(0, 1, "protein")])
    prepared.validate()


def test_clashing_types_are_no_negatives():
    own = ["other person", "musical group", "politician"]
    assert clashes("person", own) and clashes("group", own)
    assert not clashes("politician", own)  # its own type, absent from a sentence: a true negative
    assert not clashes("disease", own)
    base = record("0", dataset="fine", labels=["other person"])
    for seed in range(20):
        drawn = add_external_types(base, ["person", "disease", "date"], 2, seed, own).labels[1:]
        assert sorted(drawn) == ["date", "disease"]


def test_mixed_datasets_offer_their_own_types_plus_negatives_from_all_training_types():
    crossner = [record(str(i), "crossner", labels=["person", "location", "award"]) for i in range(4)]
    diverse = [Record(["Ada", "sang"], ["B-artist", "O"], ["artist", "other person", "food"],
                      "diverse", str(i)) for i in range(5)]
    diverse.append(Record(["nothing", "here"], ["O", "O"], ["artist", "other person", "food"], "diverse", "5"))
    prepared = prepare_records(crossner + diverse, present_only={"diverse"}, external=2,
                               pool=TRAINING_POOL, caps={"diverse": 3}, seed=1)
    mixed = [r for r in prepared if r.dataset == "diverse"]
    assert len(mixed) == 3 and "5" not in {r.id for r in mixed}  # sentences without entities left out
    pool = {"person", "location", "award", "artist", "other person", "food"}
    for r in mixed:
        assert r.labels[0] == "artist" and len(r.labels) == 3
        assert set(r.labels[1:]) <= pool - {"artist", "person"}  # "person" clashes with "other person"
    assert any(set(r.labels[1:]) & {"location", "award"} for r in mixed)  # other datasets' types too
    assert all(len(r.labels) == 5 for r in prepared if r.dataset == "crossner")


def test_excluded_types_are_never_trained_on_nor_offered():
    sentence = Record(["Labour", "won", "the", "election"],
                      ["B-political party", "O", "O", "B-election"],
                      ["political party", "election", "organization"], "politics", "0")
    other = record("1", labels=["person", "location", "election"])
    prepared = prepare_records([sentence, other], label_map=exclusion_map(["political  party", "election"]),
                               external=3, pool=TRAINING_POOL)
    assert prepared[0].tags == ["O"] * 4
    assert all({"political party", "election"}.isdisjoint(r.labels) for r in prepared)


def test_held_out_sentences_are_those_the_caps_left_out():
    records = [record(str(i), "big", labels=["person", "location", "date"]) for i in range(30)]
    chosen = prepare_records(records, cap=10, seed=4)
    rest = held_out(records, chosen)
    assert len(rest) == 20 and not {r.id for r in rest} & {r.id for r in chosen}
    assert held_out(records, []) == records


def test_caps_and_limits_on_the_command_line():
    assert parse_cap("200") == (None, 200)
    assert parse_cap("all") == (None, None)
    assert parse_cap("crossner_politics=all") == ("crossner_politics", None)
    assert parse_cap("assets/crossner/crossner_politics/=7") == ("crossner_politics", 7)
    assert parse_cap("a=b=5") == ("a=b", 5)
    with pytest.raises(argparse.ArgumentTypeError, match="'ten'"):
        parse_cap("ten")


# --- command line -------------------------------------------------------------------------


def test_cli(fixtures, tmp_path, capsys):
    main([str(fixtures / "bio"), str(fixtures / "pile_ner.json"), str(fixtures / "open_type.json"),
          "--jsonl", str(tmp_path / "train.jsonl"), "--spacy", str(tmp_path / "train.spacy"),
          "--cap", "1", "--external", "1", "--shuffle-labels", "--seed", "5"])
    out = capsys.readouterr().out
    assert "wrote 3 records" in out and "wrote 3 docs" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert rows["tweets"] == ["3", "1"]
    assert rows["pile_ner"] == rows["open_type"] == ["2", "1"]
    assert rows["total"] == ["7", "3"]
    assert "11 tagged, 1 not found in the words, 3 left out" in out
    written = list(read_gner_jsonl(tmp_path / "train.jsonl"))
    assert [r.dataset for r in written] == ["tweets", "pile_ner", "open_type"]
    assert len(list(read_docbin(tmp_path / "train.spacy"))) == 3


def test_cli_skips_bio_datasets_without_the_split(fixtures, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "label.txt").write_text("person\n")
    main([str(tmp_path), str(fixtures / "bio"), "--split", "dev"])
    out = capsys.readouterr().out
    assert f"skipped {tmp_path / 'empty'}: no dev.txt" in out
    assert "nothing written" in out
    assert out.splitlines()[-1].split() == ["total", "1", "0"]


def test_cli_reports_bio_datasets_whose_split_is_empty(fixtures, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "label.txt").write_text("person\n")
    (tmp_path / "empty" / "dev.txt").write_text("\n\n")
    main([str(tmp_path), "--split", "dev"])
    out = capsys.readouterr().out
    assert f"skipped {tmp_path / 'empty' / 'dev.txt'}: no sentences in it" in out


def test_cli_reads_label_maps_and_pools_with_a_byte_order_mark(fixtures, tmp_path):
    (tmp_path / "map.json").write_text("\ufeff" + json.dumps({"person": "human"}), encoding="utf-8")
    (tmp_path / "pool.txt").write_text("\ufeffanimal\n", encoding="utf-8")
    main([str(fixtures / "bio" / "tweets"), "--label-map", str(tmp_path / "map.json"),
          "--external", "1", "--external-pool", str(tmp_path / "pool.txt"),
          "--jsonl", str(tmp_path / "out.jsonl")])
    labels = {tuple(r.labels) for r in read_gner_jsonl(tmp_path / "out.jsonl")}
    assert labels == {("human", "location", "event", "animal")}


def test_cli_reads_several_splits_into_one_sample(fixtures, capsys, tmp_path):
    main([str(fixtures / "bio"), "--split", "train", "--split", "dev", "--jsonl", str(tmp_path / "out.jsonl")])
    assert capsys.readouterr().out.splitlines()[-1].split() == ["total", "4", "4"]
    assert {r.split for r in read_gner_jsonl(tmp_path / "out.jsonl")} == {"train", "dev"}
    with pytest.raises(SystemExit, match="pile_ner.json.*several splits"):
        main([str(fixtures / "pile_ner.json"), "--split", "train", "--split", "dev"])


def test_cli_label_map_file(fixtures, tmp_path):
    (tmp_path / "map.json").write_text(json.dumps({"person": "human", "event": None}))
    main([str(fixtures / "bio" / "tweets"), "--label-map", str(tmp_path / "map.json"),
          "--jsonl", str(tmp_path / "out.jsonl")])
    labels = {tuple(r.labels) for r in read_gner_jsonl(tmp_path / "out.jsonl")}
    assert labels == {("human", "location")}


def test_cli_reports_malformed_input(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "label.txt").write_text("person\n")
    (tmp_path / "d" / "train.txt").write_text("Ada\tB-person\nwrote\n")
    with pytest.raises(SystemExit, match=r"train.txt, line 2: expected 'word<TAB>tag'"):
        main([str(tmp_path / "d")])


def test_cli_module_help():
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "training.prepare", "--help"], cwd=root,
                            capture_output=True, text=True, check=True)
    assert "--external-pool" in result.stdout and "--shuffle-labels" in result.stdout


def test_cli_mixes_type_diverse_sets_and_writes_held_out_sentences(tmp_path, capsys):
    write_bio_dataset(tmp_path / "main" / "places", ["person", "location"],
                      {"train": PEOPLE_AND_PLACES, "dev": PEOPLE_AND_PLACES[:2]})
    write_bio_dataset(tmp_path / "diverse" / "firms", ["organization", "person"], {"train": COMPANIES})
    main([str(tmp_path / "main" / "places"), "--split", "train", "--split", "dev", "--cap", "3",
          "--mix", str(tmp_path / "diverse"), "--mix-cap", "1", "--external", "1",
          "--external-pool", "training", "--exclude-types", "person,nothing", "--seed", "2",
          "--jsonl", str(tmp_path / "train.jsonl"), "--held-out", str(tmp_path / "held.jsonl")])
    out = capsys.readouterr().out
    train = list(read_gner_jsonl(tmp_path / "train.jsonl"))
    assert Counter(r.dataset for r in train) == {"places": 3, "firms": 1}
    assert all("person" not in r.labels and all("person" not in t for t in r.tags) for r in train)
    (firm,) = [r for r in train if r.dataset == "firms"]
    assert firm.labels == ["organization", "location"]  # its own type, then one from the pool
    rest = list(read_gner_jsonl(tmp_path / "held.jsonl"))
    assert {(r.dataset, r.split, r.id) for r in rest}.isdisjoint({(r.dataset, r.split, r.id) for r in train})
    assert Counter(r.dataset for r in rest) == {"places": 6 - 3, "firms": len(COMPANIES) - 1}
    (other_firm,) = [r for r in rest if r.dataset == "firms"]  # offered as training sentences are
    assert sorted(other_firm.labels) == ["location", "organization"]
    assert f"held-out records to {tmp_path / 'held.jsonl'}" in out


def test_cli_writes_prompts_with_type_descriptions(fixtures, tmp_path):
    (tmp_path / "descriptions.json").write_text(json.dumps({"location": "a  place", "band": "musicians"}))
    main([str(fixtures / "bio" / "tweets"), "--descriptions", str(tmp_path / "descriptions.json"),
          "--jsonl", str(tmp_path / "out.jsonl"), "--cap", "2", "--held-out", str(tmp_path / "held.jsonl")])
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    words, labels = first["instance"]["words"], first["label_list"]
    assert first["instance"]["instruction_inputs"] == build_prompt(words, labels, {"location": "a place"})
    assert "The tags mean:\n- location: a place\nSentence:" in first["instance"]["instruction_inputs"]
    held = json.loads((tmp_path / "held.jsonl").read_text().splitlines()[0])  # the same prompts
    assert "The tags mean:\n- location: a place\nSentence:" in held["instance"]["instruction_inputs"]
    (tmp_path / "descriptions.json").write_text(json.dumps({"location": ""}))
    with pytest.raises(SystemExit, match=r"descriptions.json: gner descriptions map type names to text"):
        main([str(fixtures / "bio" / "tweets"), "--descriptions", str(tmp_path / "descriptions.json")])
