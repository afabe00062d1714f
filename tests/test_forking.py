"""nlp.pipe(n_process=2) forks its workers: they must not hang in torch's OpenMP pool, whether
or not the model ran in the parent first, and must find what one process finds."""
import json
import sys

from support import LABELS, TRAIN_WORDS, run_process

SCRIPT = """
import json, sys
import spacy
nlp = spacy.blank("en")
nlp.add_pipe("sentencizer")
nlp.add_pipe("gner", config={"generator": {"model": sys.argv[1], "device": "cpu"}, "labels": %r})
texts = %r
ents = lambda docs: [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]
cold = ents(nlp.pipe(texts, n_process=2, batch_size=2))  # the model never ran in this process
single = ents(nlp.pipe(texts, n_process=1, batch_size=2))  # runs it here: torch's pool starts
warm = ents(nlp.pipe(texts, n_process=2, batch_size=2))
print(json.dumps({"cold": cold, "single": single, "warm": warm}))
"""


def test_pipe_with_two_processes_before_and_after_the_model_ran_in_the_parent(tiny_t5):
    sentence = " ".join(TRAIN_WORDS)
    texts = [sentence, "Item 1: Paris and Acme Corp.", "Mary visited Paris", sentence] * 2
    # a hang fails after the timeout instead of blocking the test run
    result = run_process([sys.executable, "-c", SCRIPT % (LABELS, texts), str(tiny_t5)], timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["single"][0][:2] == [[0, 4, "person"], [14, 19, "location"]]
    assert found["cold"] == found["single"] == found["warm"]
