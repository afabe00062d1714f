"""training.calibrate: a calibration fitted on held-out sentences, stored by training.package."""
import json

import pytest
import spacy
from support import LABELS, scripted_config
from toy_data import PEOPLE_AND_PLACES

from spacy_gner.calibration import Calibration
from training.calibrate import main, read_calibration
from training.package import main as package
from training.prepare import write_gner_jsonl
from training.records import Record


def overconfident_pipeline(path):
    """A pipeline sure (0.95 a word) of every gazetteer entity, though 2 of its 8 entities on
    PEOPLE_AND_PLACES are wrong: "York" is a person there, and "New York" one location."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    generator = scripted_config(prob=0.95, Mary="person", John="person", Paris="location",
                                France="location", York="location")
    nlp.add_pipe("gner", config={"generator": generator, "labels": ["person", "location"]})
    nlp.get_pipe("gner").calibration = Calibration(3.0, 1.0)  # ignored: the model's scores are fitted
    nlp.to_disk(path)
    return path


def test_calibration_is_fitted_to_the_accuracy_on_held_out_sentences(tmp_path, capsys):
    data = tmp_path / "held-out.jsonl"
    write_gner_jsonl([Record(words, tags, ["person", "location"], "places", str(i))
                      for i, (words, tags) in enumerate(PEOPLE_AND_PLACES)], data)
    output, plot = tmp_path / "metrics" / "calibration.json", tmp_path / "calibration.png"
    main([str(overconfident_pipeline(tmp_path / "pipeline")), "--data", str(data),
          "--output", str(output), "--plot", str(plot)])
    result = json.loads(output.read_text())
    assert result["candidates"] == 8
    assert result["ece_before"] == pytest.approx(0.95 - 6 / 8)
    assert result["ece_after"] < 0.02
    calibration = read_calibration(output)
    assert calibration(0.95) == pytest.approx(0.75, abs=0.02)
    after = result["results"]["calibrated"]["datasets"]["places"]
    assert after["model_calibration"]["ece"] == pytest.approx(result["ece_before"])
    assert "expected calibration error 0.200 before" in capsys.readouterr().out
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_package_stores_the_calibration_in_the_pipeline(tiny_llama, tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"slope": 0.5, "intercept": -0.2}))
    package([str(tiny_llama), str(tmp_path / "pipeline"), "--labels", *LABELS,
             "--calibration", str(tmp_path / "calibration.json")])
    assert spacy.load(tmp_path / "pipeline").get_pipe("gner").calibration == Calibration(0.5, -0.2)


def test_a_file_that_is_no_calibration_is_named(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"slope": 0.5}))
    with pytest.raises(ValueError, match=r"bad.json: not a calibration"):
        read_calibration(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps({"slope": -1, "intercept": 0}))
    with pytest.raises(ValueError, match=r"bad.json: not a calibration.*positive slope"):
        read_calibration(tmp_path / "bad.json")
