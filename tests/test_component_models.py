"""The gner component end to end with tiny seq2seq and causal models built in the tests."""
import subprocess
import sys

import pytest
import spacy
from support import LABELS, TRAIN_WORDS

from spacy_gner import Request, bio_to_spans
from spacy_gner.generation import HFGenerator
from spacy.tokens import Doc, DocBin

TEXT = " ".join(TRAIN_WORDS)
EXPECTED = [("John", "person"), ("Tokyo", "location"), ("New York", "location"),
            ("Mary", "person"), ("Paris", "location")]


def _ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


@pytest.fixture(params=["tiny_t5", "tiny_llama"])
def model_dir(request):
    return request.getfixturevalue(request.param)


def _nlp(model_dir, generator=None, **config):
    nlp = spacy.blank("en")
    generator = {"model": str(model_dir), "device": "cpu", **(generator or {})}
    nlp.add_pipe("gner", config={"generator": generator, "labels": LABELS, **config})
    return nlp


def test_end_to_end(model_dir):
    nlp = _nlp(model_dir)
    assert _ents(nlp(TEXT)) == EXPECTED


def test_weights_load_on_initialize_not_before(model_dir):
    nlp = _nlp(model_dir)
    pipe = nlp.get_pipe("gner")
    assert not pipe.generator.loaded
    nlp.initialize()
    assert pipe.generator.loaded


def test_pipe_batches_give_the_same_entities(model_dir):
    nlp = _nlp(model_dir, {"batch_size": 4})
    texts = [TEXT, "Mary visited Paris", "John explored Tokyo", TEXT]
    batched = [_ents(doc) for doc in nlp.pipe(texts, batch_size=4)]
    assert batched == [_ents(nlp(text)) for text in texts]
    assert batched[0] == EXPECTED


def test_to_disk_and_spacy_load_give_identical_entities(model_dir, tmp_path):
    nlp = _nlp(model_dir, labels={"PER": "person", "LOC": "location"})
    expected = _ents(nlp(TEXT))
    nlp.to_disk(tmp_path / "pipeline")
    files = {p.name for p in (tmp_path / "pipeline" / "gner" / "model").iterdir()}
    assert "model.safetensors" in files and "config.json" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("gner").generator.loaded
    assert _ents(loaded(TEXT)) == expected == [(t, l.upper()[:3]) for t, l in EXPECTED]


def test_saved_pipeline_loads_offline_in_a_fresh_process(tiny_t5, tmp_path):
    _nlp(tiny_t5).to_disk(tmp_path / "pipeline")
    code = (
        "import spacy\n"
        f"nlp = spacy.load({str(tmp_path / 'pipeline')!r})\n"
        f"print([(e.text, e.label_) for e in nlp({TEXT!r}).ents])\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(EXPECTED)


def test_to_bytes_and_from_bytes(model_dir):
    nlp = _nlp(model_dir)
    data = nlp.to_bytes()
    other = spacy.blank("en")
    other.add_pipe("gner", config={"generator": {"model": "never/loaded", "device": "cpu"}, "labels": ["other"]})
    other.from_bytes(data)
    assert other.get_pipe("gner").labels == tuple(LABELS)
    assert _ents(other(TEXT)) == EXPECTED


def _gold_docbin(nlp, path):
    doc = nlp.make_doc(TEXT)
    tags = ["B-person", "O", "B-location", "O", "O", "O", "O", "B-location", "I-location", "O",
            "B-person", "O", "O"]  # Paris left out of the gold on purpose
    DocBin(docs=[Doc(doc.vocab, words=[t.text for t in doc], ents=tags)]).to_disk(path)


def test_score_and_spacy_evaluate_cli(tiny_t5, tmp_path):
    nlp = _nlp(tiny_t5)
    _gold_docbin(nlp, tmp_path / "gold.spacy")
    from spacy.training import Corpus

    scores = nlp.evaluate(Corpus(tmp_path / "gold.spacy")(nlp))
    assert scores["ents_p"] == pytest.approx(4 / 5)
    assert scores["ents_r"] == pytest.approx(1.0)
    assert set(scores["ents_per_type"]) == {"person", "location"}
    nlp.to_disk(tmp_path / "pipeline")
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "evaluate", str(tmp_path / "pipeline"),
         str(tmp_path / "gold.spacy"), "--output", str(tmp_path / "metrics.json")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    metrics = __import__("json").loads((tmp_path / "metrics.json").read_text())
    assert metrics["ents_p"] == pytest.approx(0.8) and metrics["ents_r"] == pytest.approx(1.0)
    assert "ents_per_type" in metrics


def test_random_model_output_never_breaks_alignment(tmp_path):
    """A model that never learned the format: garbage in, no crash, tokens respected."""
    from support import train_tokenizer
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = train_tokenizer(tmp_path, "t5")
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1,
                      num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    nlp = _nlp(tmp_path, store_raw=True)
    texts = ["", "  ", "😀 emoji", "John (B-person) said O(O) )( ((", "x " * 300]
    for doc in nlp.pipe(texts):
        for ent in doc.ents:
            assert ent.label_ in LABELS and not doc[ent.start].is_space
        assert all(raw["output"] is not None for raw in doc.user_data.get("gner_raw", []))


def test_an_entity_ruler_conditions_the_model(model_dir):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "location", "pattern": "John"}])
    nlp.add_pipe("gner", config={"generator": {"model": str(model_dir), "device": "cpu"},
                                 "labels": LABELS, "set_ents_mode": "condition"})
    doc = nlp(TEXT)
    assert _ents(doc)[0] == ("John", "location")  # the ruler's, never overridden
    group = doc.spans["gner"]
    assert group[0].text == "John" and group.attrs["scores"][0] == 1.0
    # the other words are tagged as the model decodes them with John's tag forced
    fixed = ("B-location",) + (None,) * (len(TRAIN_WORDS) - 1)
    (result,) = HFGenerator(model_dir, device="cpu")([Request(tuple(TRAIN_WORDS), tuple(LABELS), fixed)])
    assert [(s.start, s.end, s.label_) for s in group] == bio_to_spans(result.tags)


def test_scores_are_probabilities_and_the_threshold_only_removes(model_dir):
    doc = _nlp(model_dir)(TEXT)
    scores = doc.spans["gner"].attrs["scores"]
    assert len(scores) == len(doc.spans["gner"]) == len(EXPECTED)
    assert all(0 < s <= 1 for s in scores)
    cut = sorted(scores)[len(scores) // 2]
    strict = _nlp(model_dir, threshold=cut)(TEXT)
    assert _ents(strict) == [e for e, s in zip(_ents(doc), scores) if s >= cut]
