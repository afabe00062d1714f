"""Shared fixtures: the scripted generator pipeline, tiny models, a trained tokenizer."""
from pathlib import Path

import pytest
import spacy
from support import LABELS, scripted_config, tiny_model, train_tokenizer

from spacy_gner.pipeline import load_pipeline


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end checks with real weights (run in CI)")


@pytest.fixture
def scripted_nlp():
    """A blank pipeline whose gner knows John / Mary (person) and Tokyo / New York (location)."""
    nlp = spacy.blank("en")
    generator = scripted_config(John="person", Mary="person", Tokyo="location", New_York="location")
    nlp.add_pipe("gner", config={"labels": LABELS, "generator": generator})
    return nlp


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    """A directory with a tiny T5 that has memorised the John / Tokyo example."""
    return tiny_model(tmp_path_factory.mktemp("tiny-t5"), "t5")


@pytest.fixture(scope="session")
def tiny_t5_pipeline(tiny_t5, tmp_path_factory) -> Path:
    """A saved pipeline directory (sentencizer + gner on tiny_t5, model inside), as
    training.package writes one."""
    nlp = load_pipeline(tiny_t5, labels=LABELS, device="cpu")
    nlp.get_pipe("gner").initialize(lambda: [], nlp=nlp)
    path = tmp_path_factory.mktemp("tiny-t5-pipeline")
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A directory with a tiny Llama that has memorised the John / Tokyo example."""
    return tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """A real (trained here) BPE tokenizer whose vocabulary is ASCII only."""
    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(directory, "t5")
    return AutoTokenizer.from_pretrained(directory)
