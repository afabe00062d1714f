"""The command line: texts in, one JSON line of entities per text out."""
import io
import json

import pytest
import spacy
from support import LABELS, TRAIN_WORDS

from spacy_gner.__main__ import main

TEXT = " ".join(TRAIN_WORDS)


@pytest.fixture
def base(tmp_path):
    """A blank pipeline without a sentencizer, so the text goes to the model whole."""
    spacy.blank("en").to_disk(tmp_path / "base")
    return str(tmp_path / "base")


def _records(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_texts_from_the_arguments(tiny_t5, base, capsys):
    main([TEXT, "--model", str(tiny_t5), "--labels", *LABELS, "--base", base, "--device", "cpu", "--raw"])
    [record] = _records(capsys)
    assert record["text"] == TEXT
    assert [(e["text"], e["label"]) for e in record["ents"]][:3] == [
        ("John", "person"), ("Tokyo", "location"), ("New York", "location")]
    john = record["ents"][0]
    assert {k: v for k, v in john.items() if k != "score"} == {"start": 0, "end": 4, "label": "person", "text": "John"}
    assert 0 < john["score"] <= 1
    assert record["raw"][0].startswith("John(B-person) explored(O)")


def test_texts_from_standard_input(tiny_t5, base, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{TEXT}\nMary visited Paris\n"))
    main(["--model", str(tiny_t5), "--labels", *LABELS, "--base", base, "--device", "cpu"])
    assert [r["text"] for r in _records(capsys)] == [TEXT, "Mary visited Paris"]


def test_no_texts_at_a_terminal_is_an_error(capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal())
    with pytest.raises(SystemExit):
        main(["--labels", "person", "John explored Tokyo."])  # the text went to --labels
    assert "no texts: give them before the options" in capsys.readouterr().err


def test_a_saved_pipeline_runs_as_it_is_with_the_labels_given(tiny_t5_pipeline, capsys):
    main([TEXT, "--model", str(tiny_t5_pipeline)])
    [record] = _records(capsys)
    expected = spacy.load(tiny_t5_pipeline)(TEXT)
    assert [(e["start"], e["end"], e["label"]) for e in record["ents"]] == [
        (e.start_char, e.end_char, e.label_) for e in expected.ents]
    main([TEXT, "--model", str(tiny_t5_pipeline), "--labels", "person"])
    [record] = _records(capsys)
    assert {e["label"] for e in record["ents"]} == {"person"}


def test_a_directory_with_no_model_is_a_short_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([TEXT, "--model", str(tmp_path), "--labels", "person"])
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("python -m spacy_gner: error: ") and "config.cfg" in error
    assert len(error) < 300
