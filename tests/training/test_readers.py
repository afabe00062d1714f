"""The readers: each format into Records, and malformed input located by file and line."""
import json
from pathlib import Path

import pytest
from spacy.tokens import Doc, DocBin, Span
from spacy.vocab import Vocab

from training.readers import (
    DataError,
    SpanStats,
    dataset_dirs,
    detect_format,
    json_items,
    read_bio_dir,
    read_bio_dirs,
    read_docbin,
    read_genia,
    read_gner_jsonl,
    read_open_type,
    read_pile_ner,
    read_records,
)
from training.records import Record, rename_types


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def bio_dataset(root: Path, train: str, labels: str = "person\nlocation\n") -> Path:
    write(root / "label.txt", labels)
    write(root / "train.txt", train)
    return root


# --- records ------------------------------------------------------------------------------


def test_record_validate():
    Record(["Ada", "wrote"], ["B-person", "O"], ["person", "city"], "d", "0").validate()
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        Record(["Ada", "wrote"], ["O"], ["person"], "d", "0").validate()
    with pytest.raises(ValueError, match="'B-city'"):
        Record(["Ada"], ["B-city"], ["person"], "d", "0").validate()
    with pytest.raises(ValueError, match="'X-person'"):
        Record(["Ada"], ["X-person"], ["person"], "d", "0").validate()


def nested_record(**changes) -> Record:
    """"IL-2 gene expression": the DNA "IL-2 gene" holds the protein "IL-2"."""
    fields = dict(words=["IL-2", "gene", "expression"], tags=["B-DNA", "I-DNA", "O"],
                  labels=["protein", "DNA"], dataset="d", id="0",
                  entities=[(0, 2, "DNA"), (0, 1, "protein")])
    return Record(**{**fields, **changes})


def test_record_with_nested_entities():
    record = nested_record()
    record.validate()
    assert record.spans() == [(0, 2, "DNA"), (0, 1, "protein")]
    assert nested_record(entities=None).spans() == [(0, 2, "DNA")]  # the tags' entities
    with pytest.raises(ValueError, match="not those of the outermost"):
        nested_record(tags=["B-protein", "O", "O"]).validate()
    with pytest.raises(ValueError, match=r"\(1, 4, 'DNA'\) is not a span of the 3 words"):
        nested_record(entities=[(0, 2, "DNA"), (1, 4, "DNA")]).validate()
    with pytest.raises(ValueError, match=r"\(1, 1, 'DNA'\) is not a span"):
        nested_record(entities=[(0, 2, "DNA"), (1, 1, "DNA")]).validate()
    with pytest.raises(ValueError, match="'RNA'\\) is not of a type"):
        nested_record(entities=[(0, 2, "DNA"), (0, 1, "RNA")]).validate()


def test_renaming_types_keeps_nesting_and_retags_the_outermost():
    renamed = rename_types(nested_record(), {"DNA": "gene"}.get)  # protein -> None: dropped
    assert (renamed.entities, renamed.tags) == ([(0, 2, "gene")], ["B-gene", "I-gene", "O"])
    inner = rename_types(nested_record(), {"protein": "protein"}.get)  # the outer one dropped
    assert (inner.entities, inner.tags) == ([(0, 1, "protein")], ["B-protein", "O", "O"])
    flat = rename_types(nested_record(entities=None), {"DNA": "gene"}.get)
    assert (flat.entities, flat.tags) == (None, ["B-gene", "I-gene", "O"])


# --- BIO directories ----------------------------------------------------------------------


def test_bio_dir(fixtures):
    records = list(read_bio_dir(fixtures / "bio" / "tweets", "train"))
    assert [r.id for r in records] == ["0", "1", "2"]
    assert {(r.dataset, r.split) for r in records} == {("tweets", "train")}
    assert all(r.labels == ["person", "location", "event"] for r in records)
    # -DOCSTART- lines are skipped and end the sentence before them
    assert records[0].words == ["Mary", "flew", "to", "New", "York"]
    assert records[0].tags == ["B-person", "O", "O", "B-location", "I-location"]


def test_bio_whitespace_and_empty_words_and_iob1(fixtures):
    path = fixtures / "bio" / "tweets" / "train.txt"
    with pytest.warns(UserWarning, match=f"{path}: 2 I- tags begin an entity") as warned:
        record = list(read_bio_dir(fixtures / "bio" / "tweets", "train"))[1]
    assert len(warned) == 1  # one warning per file, with the count
    assert record.words == ["Floods", "in", "Puerto", "Rico", " ", "", "John"]
    # IOB1-style leading I- tags start entities
    assert record.tags == ["O", "O", "B-location", "I-location", "O", "O", "B-person"]


def test_iob1_repairs_of_every_format_are_counted(tmp_path):
    path = write(tmp_path / "toy.jsonl", gner_line(["Ada", "in", "Rome"], ["I-person", "O", "I-city"],
                                                   ["city", "person"]) + "\n")
    with pytest.warns(UserWarning, match="toy.jsonl: 2 I- tags"):
        list(read_gner_jsonl(path))
    bio = bio_dataset(tmp_path / "d", "Ada\tB-person\nLovelace\tI-location\n")
    with pytest.warns(UserWarning, match="1 I- tags begin an entity .IOB1 style, or a change"):
        list(read_bio_dir(bio, "train"))


def test_byte_order_marks_are_read_as_if_absent(tmp_path):
    root = tmp_path / "d"
    write(root / "label.txt", "\ufeffperson\nlocation\n")
    write(root / "train.txt", "\ufeffJohn\tB-person\nwent\tO\n")
    (record,) = read_bio_dir(root, "train")
    assert (record.words, record.labels) == (["John", "went"], ["person", "location"])
    line = gner_line(["Ada"], ["B-person"], ["person"])
    jsonl = write(tmp_path / "g.jsonl", "\ufeff" + line + "\n")
    assert detect_format(jsonl) == "gner"
    assert [r.words for r in read_gner_jsonl(jsonl)] == [["Ada"]]
    array = write(tmp_path / "o.json", '\ufeff[{"tokenized_text": ["Ada"], "ner": [[0, 0, "x"]]}]')
    assert [r.tags for r in read_open_type(array)] == [["B-x"]]


def test_bio_dirs_report_missing_and_empty_splits(tmp_path):
    bio_dataset(tmp_path / "a", "Ada\tB-person\n")
    bio_dataset(tmp_path / "b", "")
    write(tmp_path / "c" / "label.txt", "person\n")
    reported = []
    records = read_bio_dirs(tmp_path, ["train"], report=reported.append)
    assert [(r.dataset, r.words) for r in records] == [("a", ["Ada"])]
    assert reported == [f"skipped {tmp_path / 'b' / 'train.txt'}: no sentences in it",
                        f"skipped {tmp_path / 'c'}: no train.txt"]
    # a single dataset directory must have the split
    with pytest.raises(FileNotFoundError):
        read_bio_dirs(tmp_path / "c", ["train"], report=reported.append)


def test_bio_bioes_becomes_bio(fixtures):
    record = list(read_bio_dir(fixtures / "bio" / "tweets", "train"))[2]
    assert record.words == ["Messi", "at", "the", "World", "Cup"]
    assert record.tags == ["B-person", "O", "O", "B-event", "I-event"]


def test_bio_last_sentence_without_blank_line(fixtures):
    (record,) = read_bio_dir(fixtures / "bio" / "tweets", "dev")
    assert (record.words, record.tags, record.split) == (
        ["Paris", "is", "nice"], ["B-location", "O", "O"], "dev")


def test_bio_crlf_and_repeated_blank_lines(tmp_path):
    root = bio_dataset(tmp_path / "d", "Ada\tB-person\r\n\r\n\r\nRome\tB-location\r\n")
    records = list(read_bio_dir(root, "train"))
    assert [(r.words, r.tags) for r in records] == [
        (["Ada"], ["B-person"]), (["Rome"], ["B-location"])]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("Ada B-person", "expected 'word<TAB>tag'"),
        ("Ada\tB-person\tX", "expected 'word<TAB>tag'"),
        ("Ada\tB-city", "'B-city' is not O or B-/I-/E-/S- of"),
        ("Ada\tX-person", "'X-person'"),
        ("Ada\tperson", "'person'"),
    ],
)
def test_bio_malformed_line(tmp_path, line, problem):
    root = bio_dataset(tmp_path / "d", f"Rome\tB-location\n\nAda\tO\n{line}\nwrote\tO\n")
    with pytest.raises(DataError, match=problem) as caught:
        list(read_bio_dir(root, "train"))
    assert caught.value.location.line == 4
    assert f"{root / 'train.txt'}, line 4:" in str(caught.value)


def test_dataset_dirs(fixtures, tmp_path):
    assert dataset_dirs(fixtures / "bio") == [fixtures / "bio" / "tweets"]
    assert dataset_dirs(fixtures / "bio" / "tweets") == [fixtures / "bio" / "tweets"]
    with pytest.raises(DataError, match="no label.txt"):
        dataset_dirs(tmp_path)


@pytest.mark.parametrize(
    "dataset, split, sentences, check",
    [
        ("HarveyNER", "dev", 1301, lambda r: not any("DOCSTART" in w for w in r.words)),
        ("broad_twitter_corpus", "dev", 2001, lambda r: True),
        ("WikiNeural", "dev", 11590, lambda r: r.tags[:1] != ["I-PER"]),
        ("FabNER", "dev", 2183, lambda r: all(t[:2] in ("O", "B-", "I-") for t in r.tags)),
    ],
)
def test_bio_shared_data(shared_data, dataset, split, sentences, check):
    records = list(read_bio_dir(shared_data(f"ner/{dataset}"), split))
    assert len(records) == sentences
    assert all(check(record) for record in records)


def test_bio_shared_whitespace_words(shared_data):
    records = read_bio_dir(shared_data("ner/broad_twitter_corpus"), "dev")
    words = [word for record in records for word in record.words]
    assert words.count(" ") == 4 and "ke s" in words


# --- JSON ---------------------------------------------------------------------------------


def test_json_items_locates_array_items(fixtures):
    located = [(where.line, where.item, item["id"]) for where, item in
               json_items(fixtures / "pile_ner.json")]
    assert located == [(2, 1, "pile_0"), (47, 2, "bench_0"), (68, 3, "bench_1"),
                       (89, 4, "bench_2")]


@pytest.mark.parametrize(
    "text, line",
    [
        ('[\n {"a": 1},\n {"a": 2}\n {"a": 3}\n]', 4),
        ('[\n {"a": 1},\n {"a": }\n]', 3),
        ('{"a": 1}\n{"a": 2\n', 2),
    ],
)
def test_json_items_invalid(tmp_path, text, line):
    path = write(tmp_path / "bad.json", text)
    with pytest.raises(DataError, match="invalid JSON") as caught:
        list(json_items(path))
    assert caught.value.location.line == line


def test_json_items_extra_data_after_array(tmp_path):
    with pytest.raises(DataError, match="extra data"):
        list(json_items(write(tmp_path / "bad.json", '[{"a": 1}] x')))


def gner_line(words, tags, labels, id_="7"):
    return json.dumps({"id": id_, "dataset": "toy", "split": "dev", "label_list": labels,
                       "instance": {"id": id_, "words": words, "labels": tags}})


def test_gner_jsonl(tmp_path):
    path = write(tmp_path / "toy.jsonl", gner_line(["Ada", "Lovelace"], ["I-person", "I-person"],
                                                   ["city", "person"]) + "\n")
    (record,) = read_gner_jsonl(path)
    assert record == Record(["Ada", "Lovelace"], ["B-person", "I-person"], ["city", "person"],
                            "toy", "7", "dev")


@pytest.mark.parametrize(
    "bad, problem",
    [
        ('{"id": "1", "label_list": []}', "missing or bad 'instance'"),
        (gner_line(["Ada"], ["B-city"], ["person"]), "'B-city'"),
        (gner_line(["Ada"], [], ["person"]), "1 words but 0 tags"),
        ('{"id": "1", ', "invalid JSON"),
    ],
)
def test_gner_jsonl_malformed(tmp_path, bad, problem):
    good = gner_line(["Ada"], ["B-person"], ["person"])
    path = write(tmp_path / "toy.jsonl", f"{good}\n\n{bad}\n{good}\n")
    with pytest.raises(DataError, match=problem) as caught:
        list(read_gner_jsonl(path))
    assert caught.value.location.line == 3
    assert str(path) in str(caught.value)


def test_pile_ner(fixtures):
    stats = SpanStats()
    first, second = read_pile_ner(fixtures / "pile_ner.json", stats=stats)
    assert (first.id, first.dataset) == ("pile_0", "pile_ner")
    text = "Ada Lovelace wrote about the Analytical Engine ; Lovelace lived in London ."
    assert first.words == text.split()
    # every occurrence is tagged, longer mentions win, "award" answered [] stays offered
    assert first.tags == ["B-person", "I-person", "O", "O", "O", "B-machine", "I-machine", "O",
                          "B-person", "O", "O", "B-city", "O"]
    assert first.labels == ["person", "machine", "city", "award"]
    # consecutive one-question conversations about one text make one sentence
    assert (second.id, second.labels) == ("bench_0", ["machine", "person", "country"])
    assert second.tags == ["O", "B-machine", "I-machine", "O", "O", "O", "B-person", "I-person",
                           "O"]
    assert (stats.tagged, stats.missing, stats.overlapping) == (6, 1, 2)
    assert any("missing" in e and "'Paris'" in e and "line 2" in e for e in stats.examples)


def test_pile_ner_same_text_asked_again_is_a_new_sentence(tmp_path):
    item = {"id": "x", "conversations": [
        {"from": "human", "value": "Text: Ada wrote"}, {"from": "gpt", "value": "ok"},
        {"from": "human", "value": "What describes person in the text?"},
        {"from": "gpt", "value": '["Ada"]'}]}
    records = list(read_pile_ner(write(tmp_path / "p.json", json.dumps([item, item]))))
    assert len(records) == 2


@pytest.mark.parametrize(
    "turns, problem",
    [
        (["Ada wrote", "ok"], "must start with 'Text: ...'"),
        (["Text: Ada wrote", "ok", "What describes person in the text?"], "alternate"),
        (["Text: Ada wrote", "ok", "Who is a person?", "[]"], "What describes <type>"),
        (["Text: Ada wrote", "ok", "What describes person in the text?", "Ada"], "JSON list"),
        (["Text: Ada wrote", "ok", "What describes person in the text?", "[1]"], "JSON list"),
    ],
)
def test_pile_ner_malformed(tmp_path, turns, problem):
    good = {"id": "a", "conversations": [{"from": "human", "value": "Text: fine"},
                                         {"from": "gpt", "value": "ok"}]}
    bad = {"id": "b", "conversations": [{"from": "?", "value": value} for value in turns]}
    text = json.dumps([good, bad], indent=1)
    second_item_line = [i for i, line in enumerate(text.split("\n"), 1) if line == " {"][1]
    with pytest.raises(DataError, match=problem) as caught:
        list(read_pile_ner(write(tmp_path / "p.json", text)))
    location = caught.value.location
    assert (location.line, location.item) == (second_item_line, 2)


def test_open_type(fixtures):
    stats = SpanStats()
    first, second = read_open_type(fixtures / "open_type.json", dataset="open", stats=stats)
    assert first.tags == ["B-person", "I-person", "O", "O", "B-organization", "I-organization",
                          "O", "B-year", "O"]
    assert first.labels == ["person", "organization", "country", "year"]
    assert (second.id, second.dataset, second.labels) == ("1", "open", ["dish", "restaurant"])
    assert (stats.tagged, stats.missing, stats.overlapping) == (5, 0, 1)


@pytest.mark.parametrize(
    "ner, problem",
    [([[1, 2, "person"]], "outside the 2 words"), ([[1, 0, "person"]], "outside"),
     ([[0, "person"]], "not an open-type record")],
)
def test_open_type_malformed(tmp_path, ner, problem):
    items = [{"tokenized_text": ["Ada", "wrote"], "ner": []},
             {"tokenized_text": ["Ada", "wrote"], "ner": ner}]
    path = write(tmp_path / "o.json", "[\n" + ",\n".join(map(json.dumps, items)) + "\n]")
    with pytest.raises(DataError, match=problem) as caught:
        list(read_open_type(path))
    assert caught.value.location.line == 3


# --- GENIA (nested) -----------------------------------------------------------------------


def genia_line(tokens, *mentions) -> str:
    return json.dumps({"tokens": tokens, "entity_mentions": [
        {"start": start, "end": end, "entity_type": kind} for start, end, kind in mentions]})


def test_genia_keeps_nested_entities_and_tags_the_outermost(fixtures):
    stats = SpanStats()
    records = list(read_genia(fixtures / "genia-sample.jsonl", "dev", stats=stats))
    assert len(records) == 30 and stats.tagged == 100 and stats.overlapping == 0
    assert {(r.dataset, r.split) for r in records} == {("genia", "dev")}
    assert records[1].id == "MEDLINE:93061407-1"
    assert all(r.labels == ["protein", "DNA", "RNA", "cell type", "cell line"] for r in records)
    # "phytohemagglutinin ( PHA ) activated peripheral blood lymphocytes" holds two proteins
    assert records[1].entities == [(13, 21, "cell line"), (13, 14, "protein"),
                                   (15, 16, "protein"), (22, 23, "cell type")]
    assert records[1].tags[12:24] == ["O", "B-cell line"] + ["I-cell line"] * 7 + ["O", "B-cell type", "O"]
    # two deep (NFAT-1 in "NFAT-1 deletion" in "NF kappa B and NFAT-1 deletion"), and one
    # span with two types: all kept
    last = records[-1]
    assert {(6, 12, "DNA"), (6, 9, "DNA"), (6, 9, "protein"), (10, 12, "DNA"),
            (10, 11, "protein")} <= set(last.entities)
    assert last.tags[6:12] == ["B-DNA"] + ["I-DNA"] * 5
    types = {label for r in records for _, _, label in r.entities}
    assert types == {"protein", "DNA", "RNA", "cell type", "cell line"}  # renamed from cell_type, ...


def test_genia_crossing_mentions_keep_the_longer_and_duplicates_are_dropped(tmp_path):
    path = write(tmp_path / "g.jsonl", genia_line(
        ["a", "b", "c", "d"], (0, 2, "protein"), (1, 4, "DNA"), (1, 4, "DNA"), (2, 3, "RNA")) + "\n")
    stats = SpanStats()
    [record] = read_genia(path, stats=stats)
    assert record.entities == [(1, 4, "DNA"), (2, 3, "RNA")]
    assert (record.tags, record.id) == (["O", "B-DNA", "I-DNA", "I-DNA"], "0")
    assert (stats.tagged, stats.overlapping) == (2, 1)  # the duplicate is not counted
    assert "'protein' at words 0-1 crosses" in stats.examples[0]


@pytest.mark.parametrize(
    "line, problem",
    [(genia_line(["a", "b"], (1, 3, "DNA")), r"mention \[1, 3, 'DNA'\] is not a span of the 2 words"),
     (genia_line(["a", "b"], (1, 1, "DNA")), "is not a span"),
     (genia_line(["a", "b"], (0, 1, "gene")), "mention type 'gene' is not one of"),
     (json.dumps({"tokens": ["a"], "entity_mentions": [{"start": 0, "end": 1}]}),
      "not a GENIA record: missing or bad 'entity_type'"),
     (json.dumps({"tokens": "a b", "entity_mentions": []}), "'tokens': not a list"),
     ("{\"tokens\": [", "invalid JSON")],
)
def test_genia_malformed_line_is_named_by_file_and_line(tmp_path, line, problem):
    path = write(tmp_path / "genia.jsonl", genia_line(["a"]) + "\n" + genia_line(["b"]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=problem) as caught:
        list(read_genia(path))
    assert caught.value.location.line == 3
    assert str(caught.value).startswith(f"{path}, line 3: ")


# --- DocBin -------------------------------------------------------------------------------


def toy_docbin(path: Path) -> Path:
    vocab = Vocab()
    words = ["Ada", " ", "visited", "New", "York"]
    doc = Doc(vocab, words=words, spaces=[True, False, True, True, False])
    doc.ents = [Span(doc, 0, 1, "PERSON"), Span(doc, 3, 5, "GPE")]
    other = Doc(vocab, words=["Hello"])
    DocBin(docs=[doc, other]).to_disk(path)
    return path


def test_docbin(tmp_path):
    first, second = read_docbin(toy_docbin(tmp_path / "toy.spacy"), Vocab())
    assert first.words == ["Ada", "visited", "New", "York"]
    assert first.tags == ["B-PERSON", "O", "B-GPE", "I-GPE"]
    assert first.labels == second.labels == ["GPE", "PERSON"]
    assert (second.words, second.tags, second.id, second.dataset) == (["Hello"], ["O"], "1", "toy")


def test_docbin_given_labels(tmp_path):
    path = toy_docbin(tmp_path / "toy.spacy")
    (first, _) = read_docbin(path, labels=["PERSON", "GPE", "DATE"])
    assert first.labels == ["PERSON", "GPE", "DATE"]
    with pytest.raises(DataError, match="item 1.*'B-GPE'"):
        list(read_docbin(path, labels=["PERSON"]))


# --- any format ---------------------------------------------------------------------------


def test_detect_format_and_read_records(fixtures, tmp_path):
    paths = {
        "bio": fixtures / "bio" / "tweets",
        "pile-ner": fixtures / "pile_ner.json",
        "open-type": fixtures / "open_type.json",
        "docbin": toy_docbin(tmp_path / "toy.spacy"),
        "gner": write(tmp_path / "g.jsonl", gner_line(["Ada"], ["B-person"], ["person"])),
        "genia": fixtures / "genia-sample.jsonl",
    }
    for fmt, path in paths.items():
        assert detect_format(path) == fmt
        assert list(read_records(path, split="dev", dataset="named"))
    assert {r.split for r in read_records(paths["open-type"], split="dev")} == {"dev"}
    assert {r.dataset for r in read_records(paths["genia"], split="test")} == {"genia"}
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(write(tmp_path / "x.json", "[]"))
    with pytest.raises(ValueError, match="Unknown format"):
        read_records(paths["bio"], fmt="conll")
