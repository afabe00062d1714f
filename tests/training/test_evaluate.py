"""training.evaluate: datasets, predictions through the pipeline, both metrics, averages and
the Table 2 layout, with a scripted model."""
import json
import re

import pytest
import spacy
from support import scripted_config
from toy_data import COMPANIES, PEOPLE_AND_PLACES, write_bio_dataset

from training.evaluate import (
    average,
    load_datasets,
    main,
    markdown_table,
    model_names,
    predict,
    score,
)
from training.prepare import write_gner_jsonl
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


def scripted_pipeline():
    """Sentencizer + gner knowing Mary and John (person), Paris (location), not the rest."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    generator = scripted_config(Mary="person", John="person", Paris="location")
    nlp.add_pipe("gner", config={"generator": generator})
    return nlp


def test_load_datasets_reads_bio_directories_and_gner_jsonl_with_a_limit(data, tmp_path):
    datasets = load_datasets([data])
    assert [(name, labels, len(records)) for name, labels, records in datasets] == [
        ("companies", COMPANY_LABELS, 2), ("places", PLACES_LABELS, 4)]
    assert [len(records) for _, _, records in load_datasets([data], limit=3)] == [2, 3]
    write_gner_jsonl(datasets[1][2], tmp_path / "places.jsonl")
    [(name, labels, records)] = load_datasets([tmp_path / "places.jsonl"])
    assert (name, labels, [r.words for r in records]) == (
        "places", PLACES_LABELS, [words for words, _ in PEOPLE_AND_PLACES])


def test_predict_offers_each_dataset_its_labels_and_scores_both_metrics(data):
    nlp = scripted_pipeline()
    (_, company_labels, companies), (_, place_labels, places) = load_datasets([data])
    scores = score(predict(nlp, place_labels, places))
    assert "entity tags: person, location and O" in nlp.get_pipe("gner").generator.prompts[0]
    # Gold: 8 entities; predicted: Mary, Paris, John, Paris, Mary, all right.
    for metric in ("paper", "spacy"):
        assert scores[metric]["precision"] == 1.0
        assert scores[metric]["recall"] == pytest.approx(5 / 8)
        assert scores[metric]["f1"] == pytest.approx(2 * 5 / 8 / (1 + 5 / 8))
    assert scores["sentences"] == 4
    assert scores["spacy"]["per_type"]["person"]["recall"] == pytest.approx(3 / 4)
    assert scores["spacy"]["per_type"]["location"]["recall"] == pytest.approx(2 / 4)
    score(predict(nlp, company_labels, companies))
    assert nlp.get_pipe("gner").labels == tuple(COMPANY_LABELS)


def test_paper_metric_counts_distinct_normalised_pairs_unlike_spans():
    record = Record("Paris and paris".split(), ["B-location", "O", "B-location"], PLACES_LABELS,
                    "toy", "0")
    scores = score(predict(scripted_pipeline(), PLACES_LABELS, [record]))
    assert scores["paper"]["recall"] == 1.0  # "paris" once, found
    assert scores["spacy"]["recall"] == 0.5  # the second span is missed


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
          "--limit", "3", "--output", str(output), "--markdown", str(markdown)])
    metrics = json.loads(output.read_text())
    assert list(metrics) == ["pipeline"]
    assert list(metrics["pipeline"]["datasets"]) == ["places", "companies"]
    assert metrics["pipeline"]["datasets"]["places"]["sentences"] == 3
    assert set(metrics["pipeline"]["average"]) == {"paper", "spacy"}
    table = markdown.read_text()
    assert "| Model | places | companies | Average |" in table
    out = capsys.readouterr().out
    assert table.count("| pipeline |") == 2 and table in out + "\n"
    f1 = 100 * metrics["pipeline"]["datasets"]["places"]["paper"]["f1"]
    assert re.search(rf"pipeline on places: 3 sentences in \d+ s, F1 {f1:.1f}\n", out)  # progress
