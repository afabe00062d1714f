"""gner after a spacy-transformers pipeline in one process: a `transformer` on a tiny random
BERT and a `ner` trained on it, then gner on a tiny Llama; keep and condition on the `ner`'s
entities, nlp.pipe with two processes, to_disk / spacy.load, and `spacy package`. This is the
environment where transformers stays on the 4.53 line (spacy-transformers 1.4 pins it)."""
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.training import Example
from support import run_process

pytest.importorskip("spacy_transformers", reason="spacy-transformers pins transformers 4.53")
pytestmark = pytest.mark.slow

TRAIN = [("Alice works at Acme in Berlin .", [(15, 19, "ORG")]),
         ("Bob left Acme for Globex .", [(9, 13, "ORG"), (18, 24, "ORG")]),
         ("Globex hired Carol in Paris .", [(0, 6, "ORG")])]
TEXTS = [text for text, _ in TRAIN] + ["John explored Tokyo and flew back to New York ."]
LABELS = {"ORG": "organization", "PERSON": "person", "LOC": "location"}


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A directory with a tiny random BERT and a WordPiece tokenizer made here."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({word for text in TEXTS for word in text.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_letters, *string.digits,
             *string.punctuation, *words]
    (directory / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf8")
    tokenizer = BertTokenizerFast(str(directory / "vocab.txt"))
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def trained(bert, tiny_llama, tmp_path_factory) -> Path:
    """A saved pipeline: sentencizer, transformer, a `ner` trained a little on the
    transformer's output, and gner (keep) after it."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy-transformers.TransformerModel.v3", "name": str(bert),
        "tokenizer_config": {"use_fast": True},
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 64, "stride": 48},
    }})
    nlp.add_pipe("ner", config={"model": {
        "@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner",
        "extra_state_tokens": False, "hidden_width": 32, "maxout_pieces": 2, "use_upper": False,
        "tok2vec": {"@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0,
                    "pooling": {"@layers": "reduce_mean.v1"}, "upstream": "*"},
    }})
    examples = [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in TRAIN]
    spacy.util.fix_random_seed(0)  # the ner's start must not hang on the tests run before
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(300):  # until it has learnt its training sentences
        nlp.update(examples, sgd=optimizer)
        if entities(nlp.pipe(text for text, _ in TRAIN)) == [ents for _, ents in TRAIN]:
            break
    assert entities([nlp(TRAIN[0][0])]) == [TRAIN[0][1]]  # it learnt: Acme is an ORG
    nlp.add_pipe("gner", after="ner", config={
        "labels": LABELS, "set_ents_mode": "keep",
        "generator": {"model": str(tiny_llama), "device": "cpu", "dtype": "float32"},
    })
    path = tmp_path_factory.mktemp("trf-gner")
    nlp.to_disk(path)
    return path


def entities(docs):
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]


def candidates(docs):
    return [[(s.start_char, s.end_char, s.label_) for s in doc.spans["gner"]] for doc in docs]


@pytest.mark.parametrize("mode", ["keep", "condition"])
def test_gner_keeps_or_is_conditioned_on_the_ner_entities(trained, mode):
    nlp = spacy.load(trained, config={"components.gner.set_ents_mode": mode})
    with nlp.select_pipes(disable=["gner"]):
        found = entities(nlp.pipe(TEXTS))
    assert found[0] == TRAIN[0][1]
    docs = list(nlp.pipe(TEXTS))
    for ents, doc in zip(found, entities(docs)):
        assert set(ents) <= set(doc)  # the ner's entities stay, as they were
    if mode == "condition":  # the model was told them: its output holds them as they are
        for ents, spans in zip(found, candidates(docs)):
            assert set(ents) <= set(spans)


def test_two_processes_and_a_reload_give_what_one_process_gives(trained, tmp_path):
    nlp = spacy.load(trained)
    docs = list(nlp.pipe(TEXTS))
    forked = list(nlp.pipe(TEXTS, n_process=2, batch_size=2))
    assert entities(forked) == entities(docs) and candidates(forked) == candidates(docs)
    nlp.to_disk(tmp_path / "again")
    reloaded = list(spacy.load(tmp_path / "again").pipe(TEXTS))
    assert entities(reloaded) == entities(docs) and candidates(reloaded) == candidates(docs)


def test_spacy_package_builds_an_installable_pipeline(trained, tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text('{"name": "trf_gner", "version": "0.0.1"}', encoding="utf8")
    (tmp_path / "dist").mkdir()
    subprocess.run([sys.executable, "-m", "spacy", "package", str(trained), str(tmp_path / "dist"),
                    "--meta-path", str(meta), "--build", "wheel", "--force"],
                   check=True, capture_output=True, text=True, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").rglob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, capture_output=True)
    requirements = (next((tmp_path / "site").glob("en_trf_gner-*.dist-info")) / "METADATA").read_text()
    assert "spacy-transformers" in requirements and "spacy-gner" in requirements
    loaded = run_process([sys.executable, "-c", "import spacy; nlp = spacy.load('en_trf_gner'); "
                          f"print([(e.text, e.label_) for e in nlp({TEXTS[0]!r}).ents])"],
                         timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert loaded.returncode == 0, loaded.stderr
    assert "('Acme', 'ORG')" in loaded.stdout
