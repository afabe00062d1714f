"""training.evaluate: datasets, type orders, predictions through the pipeline, both metrics
(the paper's as the reference computes it), averages and the Table 2 layout, with a scripted
model."""
import json
import re

import pytest
import spacy
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from support import scripted_config
from toy_data import COMPANIES, PEOPLE_AND_PLACES, write_bio_dataset

from spacy_gner.component import RAW_OUTPUT_KEY
from training.evaluate import (
    average,
    inner,
    load_datasets,
    main,
    markdown_report,
    markdown_table,
    model_names,
    nested_scores,
    predict,
    raw_tags,
    score,
)
from training.prepare import record_doc, write_gner_jsonl
from training.records import Record

PLACES_LABELS = ["person", "location"]
COMPANY_LABELS = ["organization", "person"]


@pytest.fixture
def data(tmp_path):
    """Two BIO datasets: places (4 test sentences) and companies (2)."""
    root = tmp_path / "data"
    write_bio_dataset(root / "places", PLACES_LABELS, {"test": PEOPLE_AND_PLACES})
    write_bio_dataset(root / "companies", COMPANY_LABELS, {"test": COMPANIES})
    return root


def scripted_pipeline(responses=None):
    """Sentencizer + gner knowing Mary and John (person), Paris (location), not the rest."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    generator = scripted_config(responses, Mary="person", John="person", Paris="location")
    nlp.add_pipe("gner", config={"generator": generator})
    return nlp


def test_load_datasets_reads_bio_directories_and_gner_jsonl_with_a_limit(data, tmp_path):
    datasets = load_datasets([data], label_order="fixed")
    assert [(name, len(records)) for name, records in datasets] == [("companies", 2), ("places", 4)]
    assert all(r.labels == COMPANY_LABELS for r in datasets[0][1])
    assert [len(records) for _, records in load_datasets([data], limit=3)] == [2, 3]
    write_gner_jsonl(datasets[1][1], tmp_path / "places.jsonl")
    [(name, records)] = load_datasets([tmp_path / "places.jsonl"])
    assert (name, [r.words for r in records]) == ("places", [w for w, _ in PEOPLE_AND_PLACES])
    with pytest.raises(ValueError, match="'random'"):
        load_datasets([data], label_order="random")


def test_limits_per_dataset_override_the_limit(data):
    datasets = load_datasets([data], limit=1, limits={"places": None})
    assert [(name, len(records)) for name, records in datasets] == [("companies", 1), ("places", 4)]
    datasets = load_datasets([data], limits={"places": 2})
    assert [(name, len(records)) for name, records in datasets] == [("companies", 2), ("places", 2)]
    with pytest.raises(ValueError, match=r"not in the data: \['plaices'\]"):
        load_datasets([data], limits={"plaices": 2})


def test_datasets_without_test_sentences_are_reported(data, capsys):
    write_bio_dataset(data / "empty", PLACES_LABELS, {"test": []})
    write_bio_dataset(data / "no-test", PLACES_LABELS, {"dev": PEOPLE_AND_PLACES})
    assert [name for name, _ in load_datasets([data])] == ["companies", "places"]
    out = capsys.readouterr().out
    assert f"skipped {data / 'empty' / 'test.txt'}: no sentences in it" in out
    assert f"skipped {data / 'no-test'}: no test.txt" in out


def test_types_are_shuffled_per_sentence_with_the_seed_by_default(tmp_path):
    labels = [f"type{i}" for i in range(6)]
    sentences = [(["w"], ["O"])] * 20
    write_bio_dataset(tmp_path / "many", labels, {"test": sentences})
    [(_, records)] = load_datasets([tmp_path / "many"], seed=3)
    orders = [tuple(r.labels) for r in records]
    assert all(sorted(order) == labels for order in orders)
    assert len(set(orders)) > 10  # one order per sentence, not one per dataset
    assert orders == [tuple(r.labels) for _, rs in load_datasets([tmp_path / "many"], seed=3)
                      for r in rs]
    assert orders != [tuple(r.labels) for _, rs in load_datasets([tmp_path / "many"], seed=4)
                      for r in rs]
    [(_, fixed)] = load_datasets([tmp_path / "many"], label_order="fixed")
    assert all(r.labels == labels for r in fixed)


def test_gner_records_keep_their_own_type_order_in_one_batch(tmp_path):
    words = "Mary visited Paris".split()
    tags = ["B-person", "O", "B-location"]
    orders = [["person", "location"], ["location", "person", "event"], ["person", "location"]]
    records = [Record(words, tags, order, "places", str(i), "test")
               for i, order in enumerate(orders)]
    write_gner_jsonl(records, tmp_path / "places.jsonl")
    for label_order in ("shuffled", "fixed"):
        [(_, read)] = load_datasets([tmp_path / "places.jsonl"], label_order=label_order)
        assert [r.labels for r in read] == orders
    nlp = scripted_pipeline()
    examples = predict(nlp, read)
    generator = nlp.get_pipe("gner").generator
    assert generator.calls == 1  # every order in one batch, each Doc offering its own
    assert [re.search(r"entity tags: (.*) and O", prompt).group(1)
            for prompt in generator.prompts] == [
        "person, location", "location, person, event", "person, location"]
    assert [[e.text for e in eg.predicted.ents] for eg in examples] == [["Mary", "Paris"]] * 3


def test_predict_offers_each_sentence_its_labels_and_scores_both_metrics(data):
    nlp = scripted_pipeline()
    (_, companies), (_, places) = load_datasets([data], label_order="fixed")
    scores = score(predict(nlp, places))
    assert "entity tags: person, location and O" in nlp.get_pipe("gner").generator.prompts[0]
    # Gold: 8 entities; predicted: Mary, Paris, John, Paris, Mary, all right.
    for metric in ("paper", "spacy"):
        assert scores[metric]["precision"] == 1.0
        assert scores[metric]["recall"] == pytest.approx(5 / 8)
        assert scores[metric]["f1"] == pytest.approx(2 * 5 / 8 / (1 + 5 / 8))
    assert scores["sentences"] == 4
    assert scores["spacy"]["per_type"]["person"]["recall"] == pytest.approx(3 / 4)
    assert scores["spacy"]["per_type"]["location"]["recall"] == pytest.approx(2 / 4)
    score(predict(nlp, companies))
    assert f"entity tags: {', '.join(COMPANY_LABELS)} and O" in nlp.get_pipe("gner").generator.prompts[-1]


def test_paper_metric_counts_distinct_normalised_pairs_unlike_spans():
    record = Record("Paris and paris".split(), ["B-location", "O", "B-location"], PLACES_LABELS,
                    "toy", "0")
    scores = score(predict(scripted_pipeline(), [record]))
    assert scores["paper"]["recall"] == 1.0  # "paris" once, found
    assert scores["spacy"]["recall"] == 0.5  # the second span is missed


TYPES = ["person", "location", "organization"]
TYPE_SWITCHES = [
    # (words, gold tags, model output): entities whose type changes inside them
    ("The New York Times reported from Paris .".split(),
     ["O", "B-organization", "I-organization", "I-organization", "O", "O", "B-location", "O"],
     "The(O) New(B-location) York(I-organization) Times(I-organization) reported(O) from(O) "
     "Paris(B-location) .(O)"),
    ("John Smith met Mary".split(), ["B-person", "I-person", "O", "B-person"],
     "John(B-person) Smith(I-location) met(O) Mary(I-person)"),
    # two sentences, so two chunks; the second output respells a word
    ("Mary flew . Acme Corp hired John".split(),
     ["B-person", "O", "O", "B-organization", "I-organization", "O", "B-person"], None),
]
CHUNK_OUTPUTS = {"Mary flew .": "Mary(B-person) flew(O) .(O)",
                 "Acme Corp hired John": "Acme(B-location) Corp(I-organization) hird(O) John(O)"}


def test_both_metrics_equal_the_references_on_type_switches():
    """Expected numbers worked out by hand, as the GNER reference evaluation computes them
    (its `extract_predictions` + `parser` + `NEREvaluator`): the matched tags are read as
    they are, a B- or an O closes an entity, any other tag extends it and renames its type,
    and each sentence's distinct normalised (text, type) pairs are counted."""
    records = [Record(words, tags, TYPES, "news", str(i), "test")
               for i, (words, tags, _) in enumerate(TYPE_SWITCHES)]
    responses = {" ".join(words): output for words, _, output in TYPE_SWITCHES if output}
    examples = predict(scripted_pipeline({**responses, **CHUNK_OUTPUTS}), records)
    assert [raw_tags(eg.predicted) for eg in examples] == [
        ["O", "B-location", "I-organization", "I-organization", "O", "O", "B-location", "O"],
        ["B-person", "I-location", "O", "I-person"],
        ["B-person", "O", "O", "B-location", "I-organization", "O", "O"],
    ]
    scores = score(examples)
    # Reference, sentence by sentence (gold | predicted):
    # 1. {new york times/organization, paris/location} | the same two: 2 right
    # 2. {john smith/person, mary/person} | {john smith/location, mary/person}: 1 right
    # 3. {mary/person, acme corp/organization, john/person} | {mary/person,
    #    acme corp/organization}: 2 right
    # 5 right of 6 predicted and 7 gold: P 5/6, R 5/7, F1 2 * 5 / (6 + 7) = 10/13.
    assert scores["paper"]["precision"] == pytest.approx(5 / 6)
    assert scores["paper"]["recall"] == pytest.approx(5 / 7)
    assert scores["paper"]["f1"] == pytest.approx(10 / 13)
    # spaCy on doc.ents, after BIO repair (an I- after another type begins an entity):
    # 1. New/location, York Times/organization, Paris/location: Paris right
    # 2. John/person, Smith/location, Mary/person: Mary right
    # 3. Mary/person, Acme/location, Corp/organization: Mary right
    # 3 right of 9 predicted and 7 gold spans: P 1/3, R 3/7, F1 2 * 3 / (9 + 7) = 3/8.
    assert scores["spacy"]["precision"] == pytest.approx(1 / 3)
    assert scores["spacy"]["recall"] == pytest.approx(3 / 7)
    assert scores["spacy"]["f1"] == pytest.approx(3 / 8)


def test_raw_tags_place_chunk_tags_on_the_tokens_sent():
    doc = Doc(spacy.blank("en").vocab, words=["a", " ", "b", "c", "d", "e", "f", "g"])
    doc.user_data[RAW_OUTPUT_KEY] = [
        # two overlapping windows of one long sentence: tokens 3-5 are in both
        {"start": 0, "end": 6, "output": "", "tags": ["B-x", "I-x", "I-x", "I-x", "I-x"]},
        {"start": 3, "end": 8, "output": "", "tags": ["B-y", "I-y", "I-y", "I-y", "I-y"]},
    ]
    # the whitespace token is O; of the overlap (c d e), c keeps the first window's tag
    assert raw_tags(doc) == ["B-x", "O", "I-x", "I-x", "I-y", "I-y", "I-y", "I-y"]
    doc.user_data[RAW_OUTPUT_KEY][1]["tags"].pop()
    with pytest.raises(ValueError, match="4 raw tags for the 5 words"):
        raw_tags(doc)
    with pytest.raises(ValueError, match="store_raw"):
        raw_tags(Doc(doc.vocab, words=["a"]))


def scores(f1: float) -> dict:
    return {"precision": f1, "recall": f1, "f1": f1}


def test_average_is_unweighted_and_the_table_has_a_row_per_model_and_average_last():
    per_dataset = {"ai": {"paper": scores(0.5), "spacy": scores(0.2), "sentences": 10},
                   "music": {"paper": scores(0.75), "spacy": scores(0.4), "sentences": 1000}}
    assert average(per_dataset) == {"paper": scores(0.625), "spacy": scores(pytest.approx(0.3))}
    assert average({}) == {}
    results = {"before": {"datasets": per_dataset, "average": average(per_dataset)},
               "after": {"datasets": {"ai": per_dataset["ai"]},
                         "average": average({"ai": per_dataset["ai"]})}}
    assert markdown_table(results, "paper").splitlines() == [
        "| Model | ai | music | Average |",
        "| --- | ---: | ---: | ---: |",
        "| before | 50.0 | 75.0 | 62.5 |",
        "| after | 50.0 | - | 50.0 |",
    ]
    assert markdown_table(results, "spacy").splitlines()[2] == "| before | 20.0 | 40.0 | 30.0 |"


def test_model_names_default_to_directory_names_and_must_differ():
    assert model_names(["a/x", "b/y"], []) == {"x": "a/x", "y": "b/y"}
    assert model_names(["a/x", "b/x"], ["before", "after"]) == {"before": "a/x", "after": "b/x"}
    with pytest.raises(SystemExit):
        model_names(["a/x", "b/x"], [])
    with pytest.raises(SystemExit):
        model_names(["a/x"], ["one", "two"])


def test_command_line_writes_metrics_json_and_markdown(data, tmp_path, capsys):
    scripted_pipeline().to_disk(tmp_path / "pipeline")
    output, markdown = tmp_path / "out" / "metrics.json", tmp_path / "out" / "table.md"
    main([str(tmp_path / "pipeline"), "--data", str(data / "places"), str(data / "companies"),
          "--limit", "3", "--limit", "companies=1", "--output", str(output),
          "--markdown", str(markdown)])
    metrics = json.loads(output.read_text())
    assert list(metrics) == ["pipeline"]
    assert list(metrics["pipeline"]["datasets"]) == ["places", "companies"]
    assert metrics["pipeline"]["datasets"]["places"]["sentences"] == 3
    assert metrics["pipeline"]["datasets"]["companies"]["sentences"] == 1
    assert set(metrics["pipeline"]["average"]) == {"paper", "spacy"}
    table = markdown.read_text()
    assert "| Model | places | companies | Average |" in table
    out = capsys.readouterr().out
    assert table.count("| pipeline |") == 2 and table in out + "\n"
    f1 = 100 * metrics["pipeline"]["datasets"]["places"]["paper"]["f1"]
    assert re.search(rf"pipeline on places: 3 sentences in \d+ s, F1 {f1:.1f}\n", out)  # progress


# --- nested entities ----------------------------------------------------------------------

# "IL-2 gene expression in T cells": the DNA "IL-2 gene" holds the protein "IL-2".
NESTED = Record("IL-2 gene expression in T cells".split(),
                ["B-DNA", "I-DNA", "O", "O", "B-cell type", "I-cell type"],
                ["protein", "DNA", "cell type"], "genia", "0", "test",
                entities=[(0, 2, "DNA"), (0, 1, "protein"), (4, 6, "cell type")])


def nested_example(record: Record, candidates, key: str = "gner") -> Example:
    """An Example of the record's gold Doc and a prediction whose gner candidates are the
    (start, end, type, score) of `candidates`."""
    gold = record_doc(record, spacy.blank("en").vocab)
    predicted = Doc(gold.vocab, words=[t.text for t in gold])
    spans = [Span(predicted, start, end, label) for start, end, label, _ in candidates]
    confidences = [confidence for *_, confidence in candidates]
    predicted.spans[key] = SpanGroup(predicted, name=key, spans=spans, attrs={"scores": confidences})
    return Example(predicted, gold)


def test_nested_scores_count_all_entities_and_the_inner_ones_apart():
    # the outer DNA and the cell type found, the inner protein missed, a wrong T: 2 right of 3
    # predicted and 3 gold over all; no inner one predicted, so inner recall 0
    missed = nested_example(NESTED, [(0, 2, "DNA", 0.9), (4, 6, "cell type", 0.8), (4, 5, "protein", 0.7)])
    scores = nested_scores([missed])
    assert scores["all"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    assert scores["inner"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # the wrong "T" is inside the predicted cell type: a predicted inner entity, wrong
    assert nested_scores([missed], threshold=0.75)["all"] == {"precision": 1.0, "recall": 2 / 3,
                                                              "f1": pytest.approx(0.8)}
    found = nested_example(NESTED, [(0, 2, "DNA", 0.9), (0, 1, "protein", 0.6), (4, 6, "cell type", 0.8)])
    assert nested_scores([found])["inner"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert nested_scores([found], threshold=0.7)["inner"]["recall"] == 0.0  # below the threshold
    both = nested_scores([missed, found])
    assert both["inner"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2})
    flat = Record(NESTED.words, NESTED.tags, NESTED.labels, "flat", "1")
    assert nested_scores([nested_example(flat, [(0, 2, "DNA", 0.9)])]) is None  # no nesting


def test_nested_data_is_scored_nested_and_reported(fixtures, tmp_path):
    """A flat prediction of nested data, through the pipeline: the outer entities only."""
    [(name, records)] = load_datasets([fixtures / "genia-sample.jsonl"], label_order="fixed")
    assert name == "genia" and records[0].labels == ["protein", "DNA", "RNA", "cell type", "cell line"]
    assert sum(len(inner(set(r.entities))) for r in records) == 17  # nested entities kept
    nlp = scripted_pipeline(None)
    nlp.get_pipe("gner").generator.gazetteer = {("IL-2", "gene"): "DNA", ("T", "cells"): "cell type"}
    scores = score(predict(nlp, [NESTED]))
    assert scores["nested"]["all"] == {"precision": 1.0, "recall": 2 / 3, "f1": 0.8}
    assert scores["nested"]["inner"]["recall"] == 0.0
    assert scores["spacy"]["recall"] == 1.0  # doc.ents: the outermost, all found
    assert scores["thresholds"]["0.5"]["recall"] == pytest.approx(2 / 3)  # nested gold counts
    flat = Record(["Mary"], ["B-person"], ["person"], "d", "0")
    assert "nested" not in score(predict(scripted_pipeline(), [flat]))
    report = markdown_report({"after": {"datasets": {"genia": scores}, "average": {}}})
    assert "### after: nested entities" in report
    assert "| genia | 100.0 | 66.7 | 80.0 | 0.0 | 0.0 | 0.0 |" in report


def test_an_unknown_output_format_is_refused(data, capsys):
    with pytest.raises(SystemExit):
        main(["smollm2", "--data", str(data / "places"), "--output-format", "json"])
    assert "Unknown output format 'json'" in capsys.readouterr().err
