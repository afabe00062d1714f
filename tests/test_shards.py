"""Shards and their manifest: a fixed plan, JSON records with scores, DocBin output, a store
that refuses to mix runs and cleans up after a killed one."""
import json
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from spacy_gner.corpus import FIELDS_KEY, Location, Record
from spacy_gner.shards import ShardOutput, ShardStore, doc_record, plan_shards, shard_data

nlp = spacy.blank("en")


def records(n, bad=()):
    return [Record(Location(Path("in.txt"), i + 1), error="broken" if i in bad else None,
                   text=None if i in bad else f"text {i}") for i in range(n)]


def test_shards_hold_a_fixed_number_of_records_bad_lines_included():
    shards = list(plan_shards(records(7, bad={2}), 3))
    assert [(s.index, s.records, len(s.bad)) for s in shards] == [(0, 3, 1), (1, 3, 0), (2, 1, 0)]
    assert [text for text, _, _ in shards[0].items] == ["text 0", "text 1"]
    assert shards[0].bad == [{"file": "in.txt", "line": 3, "error": "broken"}]
    assert (shards[1].first, shards[1].last) == ("in.txt, line 4", "in.txt, line 6")
    assert [s.index for s in plan_shards(records(7), 3, skip={0, 2})] == [1]
    with pytest.raises(ValueError):
        list(plan_shards(records(1), 0))


def test_docs_from_docbins_travel_as_bytes_with_their_annotations():
    doc = nlp("Mary visited Paris")
    doc.ents = [Span(doc, 2, 3, label="LOC")]
    [shard] = plan_shards([Record(Location(Path("a.spacy"), item=1), doc=doc, fields={"id": 1})], 10)
    [(text, data, fields)] = shard.items
    restored = Doc(nlp.vocab).from_bytes(data)
    assert (text, fields, [(e.text, e.label_) for e in restored.ents]) == (None, {"id": 1}, [("Paris", "LOC")])


def annotated():
    doc = nlp("John met Mary in New York")
    doc.ents = [Span(doc, 0, 1, label="person"), Span(doc, 2, 3, label="person"),
                Span(doc, 4, 6, label="location")]
    return doc


def test_json_records_have_text_fields_and_entities_with_character_offsets():
    record = doc_record(annotated(), {"id": 3}, text_field="body")
    assert record == {"body": "John met Mary in New York", "id": 3, "ents": [
        {"start": 0, "end": 4, "label": "person", "text": "John"},
        {"start": 9, "end": 13, "label": "person", "text": "Mary"},
        {"start": 17, "end": 25, "label": "location", "text": "New York"}]}


def test_entities_get_the_scores_of_the_scored_span_group():
    doc = annotated()  # candidates in doc.spans["gner"], scores aligned (spancat's convention)
    doc.spans["gner"] = [*doc.ents, Span(doc, 3, 4, label="location")]
    doc.spans["gner"].attrs["scores"] = [0.9, 0.4, 0.75, 0.2]
    ents = doc_record(doc, spans_key="gner")["ents"]
    assert [(e["text"], e["score"]) for e in ents] == [("John", 0.9), ("Mary", 0.4), ("New York", 0.75)]
    doc.spans["gner"] = [Span(doc, 0, 1, label="location")]  # another label: not this entity's
    doc.spans["gner"].attrs["scores"] = [0.9]
    assert all("score" not in e for e in doc_record(doc, spans_key="gner")["ents"])
    assert all("score" not in e for e in doc_record(annotated(), spans_key="gner")["ents"])


def test_nested_candidates_are_all_in_the_json_record():
    doc = nlp("the Bush administration met")
    doc.ents = [Span(doc, 0, 3, label="organization")]
    doc.spans["gner"] = [Span(doc, 0, 3, label="organization"), Span(doc, 1, 2, label="person")]
    doc.spans["gner"].attrs["scores"] = [0.8, 0.6]
    record = doc_record(doc, spans_key="gner")
    assert record["ents"] == [{"start": 0, "end": 23, "label": "organization",
                               "text": "the Bush administration", "score": 0.8}]
    assert [(s["text"], s["label"], s["score"]) for s in record["spans"]] == [
        ("the Bush administration", "organization", 0.8), ("Bush", "person", 0.6)]
    assert "spans" not in doc_record(annotated(), spans_key="gner")  # flat: the ents say it all


def test_shard_data_as_json_lines_and_as_a_docbin_keeping_the_fields():
    pairs = [(annotated(), {"id": 1}), (nlp("Nothing"), {})]
    data, count = shard_data(pairs, "jsonl")
    assert count == 2 and [json.loads(line)["text"] for line in data.decode().splitlines()] == [
        "John met Mary in New York", "Nothing"]
    data, count = shard_data(pairs, "spacy")
    docs = list(DocBin().from_bytes(data).get_docs(nlp.vocab))
    assert count == 2 and [d.user_data.get(FIELDS_KEY) for d in docs] == [{"id": 1}, None]
    assert [e.text for e in docs[0].ents] == ["John", "Mary", "New York"]


def test_the_store_resumes_only_runs_with_the_same_settings(tmp_path):
    out = tmp_path / "out"
    store = ShardStore(out, {"model": "m", "labels": ("a", "b")}, "jsonl")
    [shard] = plan_shards(records(2, bad={1}), 2)
    store.write(shard, ShardOutput(0, b'{"text": "text 0"}\n', 1))
    (out / "shard-000001.jsonl.partial").write_text("half a shard")  # as a killed run leaves it
    resumed = ShardStore(out, {"model": "m", "labels": ["a", "b"]}, "jsonl")
    assert resumed.done == {0} and resumed.records_done == 2
    assert not (out / "shard-000001.jsonl.partial").exists()
    assert (out / "bad-lines" / "shard-000000.jsonl").read_text() == (
        '{"file": "in.txt", "line": 2, "error": "broken"}\n')
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"] == [{"index": 0, "file": "shard-000000.jsonl", "documents": 1, "bad": 1,
                                   "first": "in.txt, line 1", "last": "in.txt, line 2"}]
    with pytest.raises(ValueError, match=r"other settings \(labels\): run the same command"):
        ShardStore(out, {"model": "m", "labels": ["a"]}, "jsonl")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and has no manifest.json"):
        ShardStore(tmp_path / "other", {}, "jsonl")
