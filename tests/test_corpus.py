"""Reading corpora to annotate: files and directories, .txt / .jsonl / .spacy, bad lines kept
as errors with file and line."""
import json

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_gner.corpus import FIELDS_KEY, count_records, input_files, read_records


def write_lines(path, lines, end="\n"):
    path.write_bytes(end.join(lines).encode("utf-8") if isinstance(lines[0], str) else end.encode().join(lines))
    return path


def test_input_files_expand_directories_in_order_and_refuse_other_types(tmp_path):
    (tmp_path / "corpus" / "b").mkdir(parents=True)
    for name in ("corpus/b/2.jsonl", "corpus/1.txt", "corpus/b/0.spacy", "corpus/notes.md", "single.txt"):
        (tmp_path / name).write_text("x\n")
    found = input_files([tmp_path / "single.txt", tmp_path / "corpus"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "single.txt", "corpus/1.txt", "corpus/b/0.spacy", "corpus/b/2.jsonl"]
    with pytest.raises(ValueError, match=r"notes.md: cannot read this type of file: expected .txt, .jsonl, .spacy"):
        input_files([tmp_path / "corpus" / "notes.md"])
    with pytest.raises(ValueError, match="missing.txt: no such file or directory"):
        input_files([tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no .txt, .jsonl, .spacy files in this directory"):
        input_files([tmp_path / "empty"])


def test_text_lines_are_documents_even_empty_and_bad_bytes_are_errors(tmp_path):
    path = write_lines(tmp_path / "a.txt", [b"John went home.\r", b"", b"caf\xe9 latin-1", "Zoë 🙂".encode()], end="\n")
    records = list(read_records([path]))
    assert [(r.location.line, r.text, r.error) for r in records] == [
        (1, "John went home.", None), (2, "", None),
        (3, None, "not UTF-8 text (invalid continuation byte at byte 3)"), (4, "Zoë 🙂", None)]
    assert count_records(path) == 4
    assert str(records[2].location) == f"{path}, line 3"


def test_json_lines_keep_their_other_fields_and_every_bad_line_says_why(tmp_path):
    lines = [json.dumps({"id": 1, "body": "Mary left.", "meta": {"a": [1]}}), "", "{oops",
             "[1, 2]", json.dumps({"id": 2}), json.dumps({"body": 3}), '{"body": "caf\\ud800"}',
             json.dumps({"body": "Ok 🙂", "a": "é"}), json.dumps({"body": "x", "note": "\ud800"})]
    path = write_lines(tmp_path / "a.jsonl", lines)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a byte order mark: not the text's
    records = list(read_records([path], text_field="body"))
    assert (records[0].text, records[0].fields) == ("Mary left.", {"id": 1, "meta": {"a": [1]}})
    assert [r.error for r in records[1:7]] == [
        "an empty line, not a JSON object",
        "invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        "expected a JSON object, got list",
        "no 'body' field (the text field; see --text-field)",
        "the 'body' field is int, not a string",
        "not valid Unicode: a lone surrogate (such as \\ud800)"]
    assert [r.location.line for r in records] == list(range(1, 10))
    assert [(r.text, r.fields) for r in records[7:]] == [("Ok 🙂", {"a": "é"}), (None, {})]
    assert records[8].error == "not valid Unicode: a lone surrogate (such as \\ud800)"  # in a field
    assert count_records(path) == len(records)


def test_docbins_give_their_docs_with_annotations_and_kept_fields(tmp_path):
    nlp = spacy.blank("en")
    first, second = nlp("Mary visited Paris"), nlp("Nothing here")
    first.ents = [first.char_span(13, 18, label="LOC")]
    second.user_data[FIELDS_KEY] = {"id": 7}
    DocBin(docs=[first, second], store_user_data=True).to_disk(tmp_path / "a.spacy")
    (tmp_path / "broken.spacy").write_bytes(b"not a docbin")
    records = list(read_records([tmp_path / "a.spacy", tmp_path / "broken.spacy"]))
    assert [(r.location.item, r.doc.text, r.fields) for r in records[:2]] == [
        (1, "Mary visited Paris", {}), (2, "Nothing here", {"id": 7})]
    assert [(e.text, e.label_) for e in records[0].doc.ents] == [("Paris", "LOC")]
    assert records[2].error.startswith("cannot read this DocBin: ")
    assert str(records[2].location) == str(tmp_path / "broken.spacy")
    assert count_records(tmp_path / "a.spacy") == 2 and count_records(tmp_path / "broken.spacy") == 1
