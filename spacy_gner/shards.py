"""Output in shards with a manifest, so that a run can stop at any moment and resume.

The records of the input are cut, in order, into shards of `shard_size` records (documents
and bad lines alike), so shard k always holds the same records. A shard's output is written
whole to `shard-<k>.jsonl` (or `.spacy`) through a temporary file, then listed in
`manifest.json`; a run again with the same settings skips the shards listed there. Bad lines
go to `bad-lines/shard-<k>.jsonl` with their file, line and error.
"""
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from spacy.tokens import Doc, DocBin

from .corpus import FIELDS_KEY, Record

FORMATS = ("jsonl", "spacy")
MANIFEST = "manifest.json"
BAD_LINES = "bad-lines"
PARTIAL = ".partial"

Item = Tuple[Optional[str], Optional[bytes], Dict[str, Any]]  # (text, Doc bytes, fields)


@dataclass
class Shard:
    """Shard `index`: its documents (text or Doc bytes, with the input's other fields), its
    bad lines, and where in the input it starts and ends."""

    index: int
    items: List[Item] = field(default_factory=list)
    bad: List[Dict[str, Any]] = field(default_factory=list)
    first: str = ""
    last: str = ""

    @property
    def records(self) -> int:
        return len(self.items) + len(self.bad)


@dataclass
class ShardOutput:
    """What annotating a shard gave: the bytes of its output file and its document count."""

    index: int
    data: bytes
    documents: int


def plan_shards(records: Iterable[Record], shard_size: int, skip: Set[int] = frozenset()) -> Iterator[Shard]:
    """The shards of a stream of records, in order, except those in `skip` (read past without
    serialising their documents)."""
    if shard_size < 1:
        raise ValueError("shard_size must be positive")
    shard: Optional[Shard] = None
    for number, record in enumerate(records):
        index = number // shard_size
        if index in skip:
            continue
        if shard is None or shard.index != index:
            if shard is not None:
                yield shard
            shard = Shard(index, first=str(record.location))
        shard.last = str(record.location)
        if record.error is not None:
            where = {"file": str(record.location.path), "line": record.location.line,
                     "item": record.location.item}
            shard.bad.append({**{k: v for k, v in where.items() if v is not None},
                              "error": record.error})
        else:
            doc = record.doc.to_bytes() if record.doc is not None else None
            shard.items.append((record.text, doc, record.fields))
    if shard is not None:
        yield shard


def doc_record(doc: Doc, fields: Optional[Dict[str, Any]] = None, text_field: str = "text",
               spans_key: Optional[str] = None) -> Dict[str, Any]:
    """The JSON form of an annotated Doc: its text (under `text_field`), the input's other
    `fields`, and `ents` with character offsets, label and text, and each entity's `score`
    where the Doc has scored spans in `doc.spans[spans_key]` (attrs["scores"]; None: unscored).
    Where those spans nest (an output format that nests), all of them go in `spans` too."""
    group = doc.spans[spans_key] if spans_key and spans_key in doc.spans else []
    values = getattr(group, "attrs", {}).get("scores") or [None] * len(group)
    scores = {(s.start, s.end, s.label_): float(v) for s, v in zip(group, values) if v is not None}
    record = {text_field: doc.text, **(fields or {}),
              "ents": [_entity(ent, scores) for ent in doc.ents]}
    if _overlap(group):
        record["spans"] = [_entity(span, scores) for span in group]
    return record


def _overlap(spans: Any) -> bool:
    """Whether two of the spans share a token."""
    end = -1
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if span.start < end:
            return True
        end = max(end, span.end)
    return False


def _entity(span: Any, scores: Dict[Tuple[int, int, str], float]) -> Dict[str, Any]:
    entity = {"start": span.start_char, "end": span.end_char, "label": span.label_, "text": span.text}
    score = scores.get((span.start, span.end, span.label_))
    if score is not None:
        entity["score"] = score
    return entity


def shard_data(docs: Iterable[Tuple[Doc, Dict[str, Any]]], fmt: str, text_field: str = "text",
               spans_key: Optional[str] = None) -> Tuple[bytes, int]:
    """The bytes of a shard's output file for annotated (Doc, fields) pairs, and their count:
    JSON lines (`doc_record`), or a DocBin keeping user data (the fields under
    doc.user_data["gner_fields"])."""
    if fmt == "jsonl":
        lines = [json.dumps(doc_record(doc, fields, text_field, spans_key), ensure_ascii=False)
                 for doc, fields in docs]
        return "".join(line + "\n" for line in lines).encode("utf-8"), len(lines)
    if fmt == "spacy":
        docbin = DocBin(store_user_data=True)
        for doc, fields in docs:
            if fields:
                doc.user_data[FIELDS_KEY] = fields
            docbin.add(doc)
        return docbin.to_bytes(), len(docbin)
    raise ValueError(f"Unknown output format {fmt!r}: expected one of {FORMATS}")


@dataclass
class ShardEntry:
    """A finished shard in the manifest: its file, documents, bad lines, first and last
    input record."""

    index: int
    file: str
    documents: int
    bad: int
    first: str
    last: str


def _write(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: to a temporary file, synced, then renamed."""
    partial = path.with_name(path.name + PARTIAL)
    with open(partial, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


class ShardStore:
    """An output directory of shards and its manifest.

    `settings` (what decides the output: inputs, model, labels, format, shard size, ...) are
    kept in the manifest; a directory holding a run with other settings is an error, so a
    resumed run cannot mix outputs.
    """

    def __init__(self, directory: Path, settings: Dict[str, Any], fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"Unknown output format {fmt!r}: expected one of {FORMATS}")
        self.directory = Path(directory)
        self.format = fmt
        settings = json.loads(json.dumps(settings))  # as the manifest will hold them
        self.manifest: Dict[str, Any] = {"settings": settings, "shards": [], "complete": False}
        path = self.directory / MANIFEST
        if path.exists():
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
            changed = [key for key in sorted({*settings, *self.manifest["settings"]})
                       if settings.get(key) != self.manifest["settings"].get(key)]
            if changed:
                raise ValueError(
                    f"{self.directory} holds the output of a run with other settings "
                    f"({', '.join(changed)}): run the same command to resume it, or give "
                    f"another --output")
        elif self.directory.exists() and any(self.directory.iterdir()):
            raise ValueError(f"{self.directory} is not empty and has no {MANIFEST}: give a new "
                             f"or empty --output directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        for partial in self.directory.rglob("*" + PARTIAL):  # left by a killed run
            partial.unlink()

    @property
    def done(self) -> Set[int]:
        return {shard["index"] for shard in self.manifest["shards"]}

    @property
    def records_done(self) -> int:
        return sum(shard["documents"] + shard["bad"] for shard in self.manifest["shards"])

    def shard_path(self, index: int) -> Path:
        return self.directory / f"shard-{index:06d}.{self.format}"

    def write(self, shard: Shard, output: ShardOutput) -> None:
        """Write a shard's output and bad lines, then list it in the manifest."""
        if shard.bad:
            (self.directory / BAD_LINES).mkdir(exist_ok=True)
            lines = "".join(json.dumps(bad, ensure_ascii=False) + "\n" for bad in shard.bad)
            _write(self.directory / BAD_LINES / f"shard-{shard.index:06d}.jsonl", lines.encode("utf-8"))
        _write(self.shard_path(shard.index), output.data)
        entry = ShardEntry(shard.index, self.shard_path(shard.index).name, output.documents,
                           len(shard.bad), shard.first, shard.last)
        self.manifest["shards"] = sorted([*self.manifest["shards"], asdict(entry)],
                                         key=lambda s: s["index"])
        self._save()

    def finish(self) -> None:
        """Mark the output complete: every shard of the input is written."""
        self.manifest["complete"] = True
        self._save()

    def _save(self) -> None:
        data = json.dumps(self.manifest, indent=1, ensure_ascii=False) + "\n"
        _write(self.directory / MANIFEST, data.encode("utf-8"))
