"""Readers that turn NER corpora of several formats into Records.

Malformed input raises DataError naming the file and the 1-based line; nothing is dropped
silently. Span-annotated formats (Pile-NER, open-type, GENIA) report in a SpanStats what could
not be kept; tags repaired from IOB1 style are counted in a warning per file. Text files are
read as UTF-8, with a byte order mark (BOM) at the start read as if absent. Nested entities
(GENIA) are kept in `Record.entities`, their outermost as the tags.
"""
import itertools
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Container,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Token
from spacy.vocab import Vocab

from spacy_gner.corpus import Location
from spacy_gner.formats import spans_to_bio
from spacy_gner.output import repair_bio

from .records import GOLD_SPANS, Record, Span

PathLike = Union[str, Path]
FORMATS = ("bio", "gner", "pile-ner", "open-type", "genia", "docbin")
# BIOES prefixes map onto BIO: a single-word entity begins, an entity's end is inside it.
_BIO_PREFIX = {"B": "B", "I": "I", "S": "B", "E": "I"}
_QUESTION = re.compile(r"What describes (.+) in the text\?")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_MAX_EXAMPLES = 10
ENCODING = "utf-8-sig"  # UTF-8; a byte order mark at the start is not part of the text
# GENIA's entity types -> the names its prompts offer, in prompt order.
GENIA_TYPES = {"protein": "protein", "DNA": "DNA", "RNA": "RNA", "cell_type": "cell type",
               "cell_line": "cell line"}


class DataError(ValueError):
    """Malformed input, with the Location (file and line) where it was found."""

    def __init__(self, location: Location, message: str) -> None:
        self.location = location
        super().__init__(f"{location}: {message}")


@dataclass
class SpanStats:
    """What became of the mentions of span-annotated data.

    tagged: mentions kept (as BIO tags, or as nested entities); missing: span texts found
    nowhere among the words; overlapping: mentions left out because a longer (or earlier,
    equally long) one overlaps them (flat formats) or crosses them (GENIA: neither holds the
    other).
    """

    tagged: int = 0
    missing: int = 0
    overlapping: int = 0
    examples: List[str] = field(default_factory=list)

    def note(self, kind: str, detail: str) -> None:
        """Count one mention of `kind` ("missing" or "overlapping"); keep the first few."""
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"{kind}: {detail}")


class _Checker:
    """Validates the records of one input file (raising DataError) and repairs IOB1-style
    tags: an I- that begins an entity (after O, or after another type) becomes B-. Once the
    file is read, `warn` reports how many tags were repaired."""

    def __init__(self, path: PathLike) -> None:
        self.path = path
        self.repaired = 0

    def __call__(self, record: Record, where: Location) -> Record:
        try:
            record.validate()
        except ValueError as error:
            raise DataError(where, f"{record.dataset} {record.id}: {error}") from None
        tags = repair_bio(record.tags)
        self.repaired += sum(old != new for old, new in zip(record.tags, tags))
        record.tags = tags
        return record

    def warn(self) -> None:
        if self.repaired:
            warnings.warn(f"{self.path}: {self.repaired} I- tags begin an entity (IOB1 style, "
                          "or a change of type) and were read as B-", stacklevel=2)


# --- BIO directories ----------------------------------------------------------------------


def read_labels(path: PathLike) -> List[str]:
    """Entity types of a label.txt, one per line, in file order."""
    with open(path, encoding=ENCODING) as file:
        return [line.strip() for line in file if line.strip()]


def dataset_dirs(path: PathLike) -> List[Path]:
    """The dataset directories (those holding a label.txt) at `path`: itself or its children."""
    path = Path(path)
    if (path / "label.txt").is_file():
        return [path]
    found = sorted(child for child in path.iterdir() if (child / "label.txt").is_file())
    if not found:
        raise DataError(Location(path), "no label.txt here nor in any of its directories")
    return found


def read_bio_dir(path: PathLike, split: str, dataset: Optional[str] = None) -> Iterator[Record]:
    """Sentences of `<path>/<split>.txt` in the GNER layout, offered the types of label.txt."""
    directory = Path(path)
    labels = read_labels(directory / "label.txt")
    yield from read_bio_file(directory / f"{split}.txt", labels, dataset or directory.name, split)


def read_bio_dirs(
    path: PathLike,
    splits: Sequence[str],
    dataset: Optional[str] = None,
    report: Callable[[str], None] = print,
) -> List[Record]:
    """Sentences of each split of the dataset directories at `path` (see `dataset_dirs`).

    A split file with no sentence is reported through `report`, and so is a dataset, inside a
    folder of datasets, without the split file (a single dataset directory must have it).
    """
    records: List[Record] = []
    for directory in dataset_dirs(path):
        for split in splits:
            file = directory / f"{split}.txt"
            if directory != Path(path) and not file.is_file():
                report(f"skipped {directory}: no {split}.txt")
                continue
            found = list(read_bio_dir(directory, split, dataset))
            if not found:
                report(f"skipped {file}: no sentences in it")
            records.extend(found)
    return records


def read_bio_file(
    path: PathLike, labels: Sequence[str], dataset: str, split: str = ""
) -> Iterator[Record]:
    """Sentences of a `word<TAB>tag` file with blank lines between sentences.

    `-DOCSTART-` lines end a sentence and are skipped. Words may be empty or whitespace.
    BIOES tags become BIO, and IOB1-style leading I- tags become B-. Ids count sentences from 0.
    """
    checked = _Checker(path)
    for index, (line, words, tags) in enumerate(_bio_sentences(path, labels)):
        record = Record(words, tags, list(labels), dataset, str(index), split)
        yield checked(record, Location(Path(path), line))
    checked.warn()


def _bio_sentences(
    path: PathLike, labels: Sequence[str]
) -> Iterator[Tuple[int, List[str], List[str]]]:
    """(first line, words, BIO tags) of each sentence of a `word<TAB>tag` file."""
    path = Path(path)
    allowed = set(labels)
    start, words, tags = 0, [], []
    with open(path, encoding=ENCODING, newline="\n") as file:
        for number, line in enumerate(file, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    yield start, words, tags
                start, words, tags = 0, [], []
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise DataError(Location(path, number), f"expected 'word<TAB>tag', got {line!r}")
            tag = _bio_tag(parts[1].strip(), allowed)
            if tag is None:
                message = f"tag {parts[1]!r} is not O or B-/I-/E-/S- of {list(labels)}"
                raise DataError(Location(path, number), message)
            start = start or number
            words.append(parts[0])
            tags.append(tag)
    if words:
        yield start, words, tags


def _bio_tag(tag: str, labels: Container[str]) -> Optional[str]:
    """The BIO form of an IOB/BIOES tag whose type is in `labels`, else None."""
    if tag == "O":
        return tag
    prefix, dash, label = tag.partition("-")
    if dash and prefix in _BIO_PREFIX and label in labels:
        return f"{_BIO_PREFIX[prefix]}-{label}"
    return None


# --- JSON formats -------------------------------------------------------------------------


def json_items(path: PathLike) -> Iterator[Tuple[Location, Any]]:
    """(location, item) for each item of a JSON array file or each line of a JSON-lines file."""
    path = Path(path)
    text = path.read_text(encoding=ENCODING)
    start = _JSON_SPACE.match(text).end()
    if text.startswith("[", start):
        yield from _array_items(path, text, start)
        return
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                yield Location(path, number), json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(Location(path, number), f"invalid JSON: {error.msg}") from None


def _array_items(path: Path, text: str, start: int) -> Iterator[Tuple[Location, Any]]:
    """The items of the JSON array at text[start], each located by line and item number."""
    decoder = json.JSONDecoder()
    line, counted = 1, 0
    pos = _JSON_SPACE.match(text, start + 1).end()
    for number in itertools.count(1):
        if number == 1 and text.startswith("]", pos):
            break
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as error:
            raise DataError(Location(path, error.lineno), f"invalid JSON: {error.msg}") from None
        line += text.count("\n", counted, pos)
        counted = pos
        yield Location(path, line, number), item
        pos = _JSON_SPACE.match(text, end).end()
        if text.startswith("]", pos):
            break
        if not text.startswith(",", pos):
            where = Location(path, line + text.count("\n", counted, pos))
            raise DataError(where, "invalid JSON: expected ',' or ']'")
        pos = _JSON_SPACE.match(text, pos + 1).end()
    if _JSON_SPACE.match(text, pos + 1).end() != len(text):
        raise DataError(Location(path), "invalid JSON: extra data after the array")


def read_gner_jsonl(path: PathLike) -> Iterator[Record]:
    """Records of the GNER schema: {id, dataset, split, label_list, instance: {id, words, labels}}.

    A JSON-lines file or a JSON array; ids are the instances' ids. Nested entities, where
    `training.prepare` wrote them (`instance.entities`, [[start, end, type], ...]), are kept.
    """
    checked = _Checker(path)
    for where, item in json_items(path):
        try:
            instance = item["instance"]
            record = Record(
                words=list(instance["words"]),
                tags=list(instance["labels"]),
                labels=list(item["label_list"]),
                dataset=str(item.get("dataset", "")),
                id=str(instance.get("id", item.get("id", ""))),
                split=str(item.get("split", "")),
                entities=_entity_list(instance.get("entities")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(where, f"not a GNER record: missing or bad {error}") from None
        yield checked(record, where)
    checked.warn()


def _entity_list(value: Any) -> Optional[List[Span]]:
    """[(start, end, type)] of a JSON list [[start, end, type], ...]; None stays None."""
    if value is None:
        return None
    return [(int(start), int(end), str(label)) for start, end, label in value]


def _longest_first(spans: Iterable[Span]) -> List[Span]:
    """The distinct spans, longer ones first, then in input order."""
    return sorted(dict.fromkeys(spans), key=lambda span: span[0] - span[1])


def _spans_to_tags(
    length: int, spans: Iterable[Tuple[int, int, str]], stats: SpanStats, where: Location
) -> List[str]:
    """BIO tags for spans `(start, end_exclusive, type)`; longer spans win where they overlap,
    then earlier ones. Each span left out counts as overlapping in `stats`."""
    tags = ["O"] * length
    for start, end, label in _longest_first(spans):
        if any(tag != "O" for tag in tags[start:end]):
            stats.note("overlapping", f"{where}: {label!r} at words {start}-{end - 1}")
            continue
        tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
        stats.tagged += 1
    return tags


def read_pile_ner(
    path: PathLike,
    dataset: Optional[str] = None,
    split: str = "",
    stats: Optional[SpanStats] = None,
) -> Iterator[Record]:
    """Sentences of UniversalNER / Pile-NER conversation data.

    The words are the text after "Text: " split on whitespace. Each "What describes <type> in the
    text?" is answered by a JSON list of mention texts, tagged at every occurrence of their words;
    types answered [] stay among the labels as negative types. Consecutive conversations about
    the same text make one sentence, until one asks about a type again. Mentions not found
    count as missing in `stats`. Ids are those of each sentence's first conversation.
    """
    stats = stats if stats is not None else SpanStats()
    dataset = dataset or Path(path).stem
    checked = _Checker(path)
    pending: Optional[_Passage] = None
    for index, (where, item) in enumerate(json_items(path)):
        passage = _passage(where, item, str(index))
        if pending and pending.text == passage.text and not pending.types() & passage.types():
            pending.answers.extend(passage.answers)
            continue
        if pending:
            yield checked(_pile_ner_record(pending, dataset, split, stats), pending.where)
        pending = passage
    if pending:
        yield checked(_pile_ner_record(pending, dataset, split, stats), pending.where)
    checked.warn()


@dataclass
class _Passage:
    """A text with its questions' answers, (type, mention texts) in question order."""

    where: Location
    id: str
    text: str
    answers: List[Tuple[str, List[str]]]

    def types(self) -> Set[str]:
        return {label for label, _ in self.answers}


def _passage(where: Location, item: Any, default_id: str) -> _Passage:
    try:
        turns = [turn["value"] for turn in item["conversations"]]
    except (KeyError, TypeError) as error:
        raise DataError(where, f"not a conversation: missing or bad {error}") from None
    if not turns or not isinstance(turns[0], str) or not turns[0].startswith("Text: "):
        raise DataError(where, "a conversation must start with 'Text: ...'")
    if len(turns) % 2:
        raise DataError(where, "a conversation must alternate questions and answers")
    answers = []
    for question, answer in zip(turns[2::2], turns[3::2]):
        match = _QUESTION.fullmatch(question) if isinstance(question, str) else None
        mentions = _string_list(answer)
        if match is None or mentions is None:
            raise DataError(
                where, "expected 'What describes <type> in the text?' answered by a JSON list "
                f"of strings, got {question!r}: {answer!r}"
            )
        answers.append((match.group(1), mentions))
    return _Passage(where, str(item.get("id", default_id)), turns[0][len("Text: ") :], answers)


def _string_list(text: Any) -> Optional[List[str]]:
    """The list of strings that `text` holds as JSON, else None."""
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _pile_ner_record(passage: _Passage, dataset: str, split: str, stats: SpanStats) -> Record:
    words = passage.text.split()
    spans = []
    for label, mentions in passage.answers:
        for mention in mentions:
            target = mention.split()
            starts = _occurrences(words, target)
            if not starts:
                stats.note("missing", f"{passage.where}: {label!r} {mention!r}")
            spans.extend((start, start + len(target), label) for start in starts)
    tags = _spans_to_tags(len(words), spans, stats, passage.where)
    labels = list(dict.fromkeys(label for label, _ in passage.answers))
    return Record(words, tags, labels, dataset, passage.id, split)


def _occurrences(words: List[str], target: List[str]) -> List[int]:
    """Where the word sequence `target` starts in `words`, at every occurrence."""
    size = len(target)
    if not size:
        return []
    return [i for i in range(len(words) - size + 1) if words[i : i + size] == target]


def read_open_type(
    path: PathLike,
    dataset: Optional[str] = None,
    split: str = "",
    stats: Optional[SpanStats] = None,
) -> Iterator[Record]:
    """Sentences `{tokenized_text: [...], ner: [[start, end_inclusive, type], ...]}`, offered
    the types mentioned in each; overlapping mentions count in `stats`. Ids count from 0."""
    stats = stats if stats is not None else SpanStats()
    dataset = dataset or Path(path).stem
    checked = _Checker(path)
    for index, (where, item) in enumerate(json_items(path)):
        try:
            words = list(item["tokenized_text"])
            entities = [(int(start), int(end), str(label)) for start, end, label in item["ner"]]
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(where, f"not an open-type record: bad {error}") from None
        for start, end, label in entities:
            if not 0 <= start <= end < len(words):
                message = f"entity {[start, end, label]} is outside the {len(words)} words"
                raise DataError(where, message)
        spans = [(start, end + 1, label) for start, end, label in entities]
        tags = _spans_to_tags(len(words), spans, stats, where)
        labels = list(dict.fromkeys(label for _, _, label in entities))
        record = Record(words, tags, labels, dataset, str(item.get("id", index)), split)
        yield checked(record, where)
    checked.warn()


def _nested_spans(spans: Iterable[Span], stats: SpanStats, where: Location) -> List[Span]:
    """The distinct spans that nest, by start and longer first: a span crossing a longer (or
    earlier, equally long) one, neither holding the other, is left out and counts as
    overlapping in `stats`."""
    kept: List[Span] = []
    for start, end, label in _longest_first(spans):
        if any(start < other_end and other_start < end and not other_start <= start < end <= other_end
               for other_start, other_end, _ in kept):
            stats.note("overlapping", f"{where}: {label!r} at words {start}-{end - 1} crosses a "
                       "longer mention")
            continue
        kept.append((start, end, label))
        stats.tagged += 1
    return sorted(kept, key=lambda span: (span[0], -span[1]))


def read_genia(
    path: PathLike,
    split: str = "",
    dataset: str = "genia",
    stats: Optional[SpanStats] = None,
) -> Iterator[Record]:
    """Sentences of GENIA as JSON lines `{tokens: [...], entity_mentions: [{start, end
    (exclusive), entity_type}, ...]}`, offered GENIA's five types (`GENIA_TYPES`: cell_type
    and cell_line as "cell type" and "cell line"). All mentions are kept as the records'
    `entities`, nested ones too, and their outermost as the tags; a mention crossing a longer
    one counts as overlapping in `stats`, exact duplicates are dropped. Ids are the sentences'
    `sent_id`, else count from 0."""
    stats = stats if stats is not None else SpanStats()
    checked = _Checker(path)
    for index, (where, item) in enumerate(json_items(path)):
        try:
            words, mentions = item["tokens"], item["entity_mentions"]
            for key, value in (("tokens", words), ("entity_mentions", mentions)):
                if not isinstance(value, list):
                    raise TypeError(f"{key!r}: not a list")
            mentions = [(int(m["start"]), int(m["end"]), str(m["entity_type"])) for m in mentions]
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(where, f"not a GENIA record: missing or bad {error}") from None
        for start, end, kind in mentions:
            if not 0 <= start < end <= len(words):
                raise DataError(where, f"mention {[start, end, kind]} is not a span of the "
                                f"{len(words)} words")
            if kind not in GENIA_TYPES:
                raise DataError(where, f"mention type {kind!r} is not one of {list(GENIA_TYPES)}")
        entities = _nested_spans([(s, e, GENIA_TYPES[k]) for s, e, k in mentions], stats, where)
        record = Record(words, spans_to_bio(len(words), entities), list(GENIA_TYPES.values()),
                        dataset, str(item.get("sent_id", index)), split, entities)
        yield checked(record, where)
    checked.warn()


# --- spaCy DocBin -------------------------------------------------------------------------


def bio_tags(tokens: Iterable[Token]) -> List[str]:
    """The BIO tags of the tokens' entities."""
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in tokens]


def read_docbin(
    path: PathLike,
    nlp_or_vocab: Union[Language, Vocab, None] = None,
    labels: Optional[Sequence[str]] = None,
    dataset: Optional[str] = None,
    split: str = "",
) -> Iterator[Record]:
    """Docs of a .spacy file with their entities, and their nested entities where
    `doc.spans[GOLD_SPANS]` holds them (as `training.prepare` writes them). Whitespace tokens
    are left out of the words; the labels are the file's entity types, sorted, unless given.
    Ids count docs from 0."""
    vocab = nlp_or_vocab.vocab if isinstance(nlp_or_vocab, Language) else nlp_or_vocab
    docs = list(DocBin().from_disk(path).get_docs(vocab if vocab is not None else Vocab()))
    if labels is None:
        labels = sorted({span.label_ for doc in docs
                         for span in [*doc.ents, *doc.spans.get(GOLD_SPANS, [])]})
    checked = _Checker(path)
    for index, doc in enumerate(docs):
        tokens = [token for token in doc if not token.text.isspace()]
        tags = bio_tags(tokens)
        words = [token.text for token in tokens]
        record = Record(words, tags, list(labels), dataset or Path(path).stem, str(index), split,
                        _gold_spans(doc))
        yield checked(record, Location(Path(path), item=index + 1))
    checked.warn()


def _gold_spans(doc: Doc) -> Optional[List[Span]]:
    """The spans of `doc.spans[GOLD_SPANS]` over the words (the Doc's tokens but whitespace),
    None where the Doc has no such group."""
    if GOLD_SPANS not in doc.spans:
        return None
    word = {i: k for k, i in enumerate(i for i, token in enumerate(doc) if not token.text.isspace())}
    spans = []
    for span in doc.spans[GOLD_SPANS]:
        inside = [word[i] for i in range(span.start, span.end) if i in word]
        if inside:
            spans.append((inside[0], inside[-1] + 1, span.label_))
    return spans


# --- any format ---------------------------------------------------------------------------


def detect_format(path: PathLike) -> str:
    """The format of `path`, one of FORMATS: from its type, extension, or its first keys."""
    path = Path(path)
    if path.is_dir():
        return "bio"
    if path.suffix == ".spacy":
        return "docbin"
    with open(path, encoding=ENCODING) as file:
        head = file.read(1 << 16)
    for key, fmt in (("conversations", "pile-ner"), ("tokenized_text", "open-type"),
                     ("instance", "gner"), ("entity_mentions", "genia")):
        if f'"{key}"' in head:
            return fmt
    raise DataError(Location(path), f"cannot tell the format: name one of {FORMATS}")


def read_records(
    path: PathLike,
    fmt: str = "auto",
    split: str = "train",
    dataset: Optional[str] = None,
    stats: Optional[SpanStats] = None,
) -> Iterator[Record]:
    """Records of one input in format `fmt` ("auto" detects it). `split` picks the file of a
    BIO directory and names the split of formats that have none; `dataset` renames a BIO
    directory's dataset and names that of formats that have none (default: the file name;
    GENIA's: "genia")."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "bio":
        return read_bio_dir(path, split, dataset)
    if fmt == "gner":
        return read_gner_jsonl(path)
    if fmt == "pile-ner":
        return read_pile_ner(path, dataset, split, stats)
    if fmt == "open-type":
        return read_open_type(path, dataset, split, stats)
    if fmt == "genia":
        return read_genia(path, split, dataset or "genia", stats)
    if fmt == "docbin":
        return read_docbin(path, dataset=dataset, split=split)
    raise ValueError(f"Unknown format {fmt!r}: expected 'auto' or one of {FORMATS}")
