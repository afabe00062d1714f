"""The annotate command and API end to end: every input kind, both output formats, scores,
bad lines, progress, worker processes, and a killed run resumed to the uninterrupted output."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin, Span
from support import SENTENCES, SUPPORT, files, run_process, save_pipeline

from spacy_gner.__main__ import main
from spacy_gner.batch import annotate

def read_jsonl(directory):
    return [json.loads(line) for shard in sorted(Path(directory).glob("shard-*.jsonl"))
            for line in shard.read_text(encoding="utf-8").splitlines()]


def ents(record):
    return [(e["text"], e["label"]) for e in record["ents"]]


@pytest.fixture
def corpus(tmp_path):
    """A .txt file (with an empty line), a .jsonl file (fields, a bad line) and a DocBin."""
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_text("\n".join([SENTENCES[0], "", SENTENCES[1]]) + "\n")
    lines = [json.dumps({"id": 1, "text": SENTENCES[2]}), "{not json",
             json.dumps({"id": 2, "text": SENTENCES[3], "source": "x"})]
    (root / "b.jsonl").write_text("\n".join(lines) + "\n")
    nlp = spacy.blank("en")
    doc = nlp("Mary saw Acme in Paris.")
    doc.ents = [Span(doc, 2, 3, label="ORG"), Span(doc, 4, 5, label="GPE")]
    DocBin(docs=[doc]).to_disk(root / "c.spacy")
    return root


def test_every_input_kind_in_order_with_fields_and_bad_lines_counted(corpus, tmp_path, capsys):
    pipeline = save_pipeline(tmp_path / "pipeline")
    summary = annotate([corpus], tmp_path / "out", pipeline, shard_size=2)
    assert (summary.read, summary.written, summary.bad, summary.shards) == (7, 6, 1, 4)
    records = read_jsonl(tmp_path / "out")
    assert [r["text"] for r in records] == [SENTENCES[0], "", SENTENCES[1], SENTENCES[2],
                                            SENTENCES[3], "Mary saw Acme in Paris."]
    assert ents(records[0]) == [("John", "person"), ("Tokyo", "location")]
    assert records[1] == {"text": "", "ents": []}
    assert records[2]["ents"][1] == {"start": 13, "end": 18, "label": "location", "text": "Paris",
                                     "score": pytest.approx(0.9)}
    assert records[3] == {"text": SENTENCES[2], "id": 1, "ents": []}
    assert (records[4]["id"], records[4]["source"]) == (2, "x")
    assert ents(records[5]) == [("Mary", "person"), ("Paris", "location")]  # replace: gner's only
    bad = corpus / "b.jsonl"
    assert f"bad line: {bad}, line 2: invalid JSON" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "bad-lines" / "shard-000002.jsonl").read_text()) == {
        "file": str(bad), "line": 2,
        "error": "invalid JSON: Expecting property name enclosed in double quotes (column 2)"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and [s["documents"] for s in manifest["shards"]] == [2, 2, 1, 1]


def test_docbin_output_keeps_existing_entities_as_set_ents_mode_says(corpus, tmp_path):
    pipeline = save_pipeline(tmp_path / "pipeline")
    for mode in ("keep", "replace"):
        annotate([corpus / "c.spacy", corpus / "b.jsonl"], tmp_path / mode, pipeline,
                 output_format="spacy", set_ents_mode=mode, shard_size=2)
    docbins = sorted((tmp_path / "keep").glob("shard-*.spacy"))
    vocab = spacy.blank("en").vocab
    docs = [doc for path in docbins for doc in DocBin().from_disk(path).get_docs(vocab)]
    assert [(e.text, e.label_) for e in docs[0].ents] == [
        ("Mary", "person"), ("Acme", "ORG"), ("Paris", "GPE")]  # keep: the Doc's own win
    assert docs[1].user_data["gner_fields"] == {"id": 1}  # a .jsonl record's other fields
    replaced, _ = DocBin().from_disk(tmp_path / "replace" / "shard-000000.spacy").get_docs(vocab)
    assert [(e.text, e.label_) for e in replaced.ents] == [("Mary", "person"), ("Paris", "location")]


def test_condition_mode_tells_the_model_the_entities_a_docbin_has(corpus, tmp_path):
    pipeline = save_pipeline(tmp_path / "pipeline")
    for mode in ("keep", "condition"):
        main(["annotate", str(corpus / "c.spacy"), "--output", str(tmp_path / mode), "--model",
              str(pipeline), "--format", "spacy", "--set-ents-mode", mode, "--quiet"])
    vocab = spacy.blank("en").vocab
    kept, conditioned = (next(DocBin().from_disk(tmp_path / mode / "shard-000000.spacy")
                              .get_docs(vocab)) for mode in ("keep", "condition"))
    for doc in (kept, conditioned):  # the Doc's own entities stay, gner adds Mary
        assert [(e.text, e.label_) for e in doc.ents] == [
            ("Mary", "person"), ("Acme", "ORG"), ("Paris", "GPE")]
    # keep: the model tagged Paris as a location, and lost to the Doc's GPE; condition: the
    # model was told Paris is an entity of a type it was not offered, and left it alone
    assert [(s.text, s.label_) for s in kept.spans["gner"]] == [("Mary", "person"), ("Paris", "location")]
    assert [(s.text, s.label_) for s in conditioned.spans["gner"]] == [("Mary", "person")]


def test_entities_carry_their_confidence_scores(tmp_path):
    (tmp_path / "in.txt").write_text(SENTENCES[1] + "\n")
    annotate([tmp_path / "in.txt"], tmp_path / "out", save_pipeline(tmp_path / "p"))
    [record] = read_jsonl(tmp_path / "out")  # the scripted words' probabilities are 0.9
    assert [(e["text"], e["score"]) for e in record["ents"]] == [
        ("Mary", pytest.approx(0.9)), ("Paris", pytest.approx(0.9)), ("New York", pytest.approx(0.81))]


def test_a_saved_pipeline_annotates_as_it_does_itself(tiny_t5_pipeline, tmp_path):
    texts = [" ".join(SENTENCES), "Mary visited Paris", SENTENCES[0]]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    annotate([tmp_path / "in.txt"], tmp_path / "out", tiny_t5_pipeline, shard_size=2)
    expected = [[(e.text, e.label_) for e in doc.ents] for doc in spacy.load(tiny_t5_pipeline).pipe(texts)]
    assert [ents(r) for r in read_jsonl(tmp_path / "out")] == expected


def test_one_worker_process_per_device_writes_what_one_process_does(tiny_t5_pipeline, tmp_path):
    sentence = "John explored Tokyo and flew back to New York . Mary visited Paris"
    (tmp_path / "in.txt").write_text("\n".join([sentence, "Mary visited Paris", SENTENCES[0]] * 3))
    annotate([tmp_path / "in.txt"], tmp_path / "one", tiny_t5_pipeline, shard_size=2)
    result = run_process([sys.executable, "-m", "spacy_gner", "annotate", str(tmp_path / "in.txt"),
                          "--output", str(tmp_path / "two"), "--model", str(tiny_t5_pipeline),
                          "--shard-size", "2", "--devices", "cpu", "cpu", "--quiet"], timeout=300)
    assert result.returncode == 0, result.stderr  # spawned processes, one torch thread each
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert ents(read_jsonl(tmp_path / "one")[0])[:2] == [("John", "person"), ("Tokyo", "location")]


def test_command_line_shows_progress_and_a_summary(corpus, tmp_path, capsys):
    pipeline = save_pipeline(tmp_path / "pipeline")
    main(["annotate", str(corpus / "a.txt"), "--output", str(tmp_path / "out"), "--model",
          str(pipeline), "--labels", "person"])
    err = capsys.readouterr().err
    assert "3/3" in err and "doc/s" in err  # the bar: done/total, rate (and ETA while running)
    assert err.strip().splitlines()[-1].startswith(
        f"read 3 records: wrote 3 documents, 0 bad lines in 1 shards to {tmp_path / 'out'}")
    assert {e["label"] for r in read_jsonl(tmp_path / "out") for e in r["ents"]} == {"person"}
    with pytest.raises(SystemExit):  # the same output directory with other labels
        main(["annotate", str(corpus / "a.txt"), "--output", str(tmp_path / "out"), "--model",
              str(pipeline), "--labels", "location"])
    assert "other settings (labels)" in capsys.readouterr().err
    main(["annotate", str(corpus / "a.txt"), "--output", str(tmp_path / "out"), "--model",
          str(pipeline), "--labels", "person", "--quiet"])
    assert "3 records were done by an earlier run" in capsys.readouterr().err


def test_a_killed_run_resumes_to_exactly_the_output_of_an_uninterrupted_one(tmp_path):
    pipeline = save_pipeline(tmp_path / "pipeline", delay=0.3)
    lines = [f"{SENTENCES[i % 4]} Line {i}." for i in range(30)]
    (tmp_path / "in.txt").write_text("\n".join(lines[:15]) + "\n")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"n": i, "text": line}) + "\n"
                                               for i, line in enumerate(lines[15:])) + "oops\n")
    inputs = [str(tmp_path / "in.txt"), str(tmp_path / "in.jsonl")]
    command = [sys.executable, "-m", "spacy_gner", "annotate", *inputs, "--output",
               str(tmp_path / "out"), "--model", str(pipeline), "--shard-size", "2",
               "--workers", "2", "--code", SUPPORT, "--quiet"]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    try:
        manifest = tmp_path / "out" / "manifest.json"
        deadline = time.monotonic() + 120
        while not (manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 3):
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read().decode()
            time.sleep(0.05)
        os.kill(run.pid, signal.SIGKILL)  # the main process only: its workers must notice
        run.wait()
        assert not json.loads(manifest.read_text())["complete"]
        deadline = time.monotonic() + 30
        while _group_alive(run.pid):  # the workers end themselves once their parent is gone
            assert time.monotonic() < deadline, "worker processes outlived the killed run"
            time.sleep(0.2)
    finally:
        if _group_alive(run.pid):
            os.killpg(run.pid, signal.SIGKILL)
    resumed = run_process(command, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "were done by an earlier run" in resumed.stderr

    annotate(inputs, tmp_path / "uninterrupted", pipeline, shard_size=2)  # one worker, here
    assert files(tmp_path / "out") == files(tmp_path / "uninterrupted")
    assert len(read_jsonl(tmp_path / "out")) == 30


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
