"""Regularisation, the writers and the command line of training.prepare."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import spacy

from spacy_gner.prompt import build_prompt, build_target
from training.prepare import (
    CROSSNER_LABEL_MAP,
    add_external_types,
    cap_per_dataset,
    main,
    normalise_labels,
    prepare_records,
    shuffle_labels,
    write_docbin,
    write_gner_jsonl,
)
from training.readers import read_bio_dir, read_docbin, read_gner_jsonl
from training.records import Record

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
