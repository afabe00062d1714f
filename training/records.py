"""The unit of training data: one sentence, its BIO tags, its entities where they nest, and
the entity types offered."""
from dataclasses import dataclass, replace
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from spacy_gner.formats import spans_to_bio
from spacy_gner.output import bio_to_spans

Span = Tuple[int, int, str]  # start word, end word (exclusive), type
# The span group of a Doc (`prepare.record_doc`, `readers.read_docbin`) that holds all its
# entities, nested ones included; `doc.ents` holds the outermost.
GOLD_SPANS = "gold"


@dataclass
class Record:
    """One sentence. `labels` are the entity types offered in the prompt, in prompt order;
    types with no mention in the sentence (negative types) are allowed. `entities`, where
    the data has nested entities, holds all of them; `tags` then tag the outermost
    (`spans_to_bio`)."""

    words: List[str]
    tags: List[str]
    labels: List[str]
    dataset: str
    id: str
    split: str = ""
    entities: Optional[List[Span]] = None

    def spans(self) -> List[Span]:
        """Every entity: `entities` where the record has them, else those of its tags."""
        return list(self.entities) if self.entities is not None else bio_to_spans(self.tags)

    def with_spans(self, spans: Iterable[Sequence]) -> "Record":
        """The record with these entities instead (duplicates dropped): its tags their
        outermost, and all of them in `entities` where the record keeps nested entities."""
        spans = list(dict.fromkeys((start, end, label) for start, end, label in spans))
        entities = spans if self.entities is not None else None
        return replace(self, tags=spans_to_bio(len(self.words), spans), entities=entities)

    def validate(self) -> None:
        """Raise ValueError unless words and tags align, every tag is O or B-/I- of a label,
        and any `entities` lie within the words, have offered types and give the tags."""
        if len(self.words) != len(self.tags):
            raise ValueError(f"{len(self.words)} words but {len(self.tags)} tags")
        if not all(isinstance(word, str) for word in self.words):
            raise ValueError(f"words must be strings: {self.words!r}")
        allowed = set(self.labels)
        for i, tag in enumerate(self.tags):
            valid = isinstance(tag, str) and tag[:2] in ("B-", "I-") and tag[2:] in allowed
            if tag != "O" and not valid:
                raise ValueError(f"tag {tag!r} of word {i} is not O or B-/I- of {self.labels}")
        if self.entities is not None:
            self._validate_entities(allowed)

    def _validate_entities(self, allowed: set) -> None:
        for start, end, label in self.entities:
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(self.words)):
                raise ValueError(f"entity {(start, end, label)!r} is not a span of the "
                                 f"{len(self.words)} words")
            if label not in allowed:
                raise ValueError(f"entity {(start, end, label)!r} is not of a type of {self.labels}")
        if self.tags != spans_to_bio(len(self.words), self.entities):
            raise ValueError("the tags are not those of the outermost entities")


def rename_types(record: Record, name: Callable[[str], Optional[str]]) -> Record:
    """The record with each entity's type renamed by `name`; an entity renamed None is
    dropped (its words become O, or its inner entities' where it holds some). The offered
    labels are left as they are."""
    return record.with_spans((start, end, new) for start, end, label in record.spans()
                             if (new := name(label)) is not None)
