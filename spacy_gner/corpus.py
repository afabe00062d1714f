"""Corpora to annotate: .txt (a document a line), .jsonl (a JSON object a line, its text in a
named field, its other fields kept) and .spacy (DocBin) files, or directories of them.

Records stream one at a time in file order (a directory's files sorted by path), so memory
does not grow with the corpus; a .spacy file is read whole, as DocBin stores it. A line that
cannot be a document is a Record with an error, never dropped.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

PathLike = Union[str, Path]
SUFFIXES = (".txt", ".jsonl", ".spacy")
FIELDS_KEY = "gner_fields"  # doc.user_data key of the input's other fields in DocBin output


@dataclass(frozen=True)
class Location:
    """A place in an input file: its 1-based line and, in JSON arrays and DocBins, item."""

    path: Path
    line: Optional[int] = None
    item: Optional[int] = None

    def __str__(self) -> str:
        parts = [str(self.path)]
        parts += [f"line {self.line}"] if self.line is not None else []
        parts += [f"item {self.item}"] if self.item is not None else []
        return ", ".join(parts)


@dataclass
class Record:
    """One input document, as a text or a Doc (from a DocBin), with the input's other fields;
    or, with `error` set, an input line that is not a document."""

    location: Location
    text: Optional[str] = None
    doc: Optional[Doc] = None
    fields: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None


def input_files(paths: Iterable[PathLike]) -> List[Path]:
    """The files to read: files as given, directories as their .txt, .jsonl and .spacy files
    (recursively, sorted). ValueError for a missing path, a file of another type or a
    directory without any such file."""
    files: List[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not found:
                raise ValueError(f"{path}: no {', '.join(SUFFIXES)} files in this directory")
            files.extend(found)
        elif not path.exists():
            raise ValueError(f"{path}: no such file or directory")
        elif path.suffix not in SUFFIXES:
            raise ValueError(f"{path}: cannot read this type of file: expected {', '.join(SUFFIXES)}")
        else:
            files.append(path)
    return files


def read_records(files: Iterable[PathLike], text_field: str = "text") -> Iterator[Record]:
    """The records of each file in turn."""
    for path in map(Path, files):
        if path.suffix == ".spacy":
            yield from read_docbin(path)
        else:
            yield from read_lines(path, text_field if path.suffix == ".jsonl" else None)


def read_lines(path: PathLike, text_field: Optional[str] = None) -> Iterator[Record]:
    """A record per line of a UTF-8 text file (the line is the text) or, given `text_field`, of
    a JSON-lines file (each line an object whose `text_field` is the text)."""
    path = Path(path)
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            where = Location(path, number)
            try:  # a byte order mark at the start is not part of the text
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                yield Record(where, error=f"not UTF-8 text ({error.reason} at byte {error.start})")
                continue
            yield _json_record(where, line, text_field) if text_field else Record(where, text=line)


def _json_record(where: Location, line: str, text_field: str) -> Record:
    if not line.strip():
        return Record(where, error="an empty line, not a JSON object")
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        return Record(where, error=f"invalid JSON: {error.msg} (column {error.colno})")
    if not isinstance(value, dict):
        return Record(where, error=f"expected a JSON object, got {type(value).__name__}")
    if text_field not in value:
        return Record(where, error=f"no {text_field!r} field (the text field; see --text-field)")
    text = value.pop(text_field)
    if not isinstance(text, str):
        return Record(where, error=f"the {text_field!r} field is {type(text).__name__}, not a string")
    if "\\u" in line:  # an escape may be a lone surrogate ("\ud800"), which no output can hold
        try:
            json.dumps([text, value], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return Record(where, error="not valid Unicode: a lone surrogate (such as \\ud800)")
    return Record(where, text=text, fields=value)


def read_docbin(path: PathLike) -> Iterator[Record]:
    """A record per Doc of a .spacy file, with its annotations; fields kept by an earlier
    annotate run (doc.user_data) come back as the record's fields."""
    path = Path(path)
    try:
        docs = DocBin(store_user_data=True).from_disk(path).get_docs(Vocab())
        for number, doc in enumerate(docs, 1):
            yield Record(Location(path, item=number), doc=doc, fields=doc.user_data.pop(FIELDS_KEY, {}))
    except ValueError as error:  # not a DocBin, or a damaged one
        yield Record(Location(path), error=f"cannot read this DocBin: {error}")


def count_records(path: PathLike) -> int:
    """How many records `read_records` finds in a file (for progress): its lines, or Docs."""
    path = Path(path)
    if path.suffix == ".spacy":
        return sum(1 for _ in read_docbin(path))
    lines = newline = 0
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            lines += block.count(b"\n")
            newline = block.endswith(b"\n")
    return lines + (0 if newline or path.stat().st_size == 0 else 1)
