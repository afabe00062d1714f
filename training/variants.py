"""Type-name variation: offer entity types under other names, and narrower types.

A model trained on a few dozen type names learns those names, not how to read a type list:
offered an unseen type next to a familiar broader one ("politician" beside "person",
"political party" beside "organization"), it picks the familiar one. Two augmentations make
the tag depend on the names the prompt offers:
- variants: a type renamed at random to another name of the same meaning (a writer is tagged
  "author" when the prompt offers "author");
- head types: the head noun of some entities offered as a type of its own, narrower than
  theirs ("Royal Society" and "Flat Earth Society" tagged "society" when the prompt offers it
  beside "organization", the other organizations still "organization").
"""
import json
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set

from .readers import ENCODING, DataError, Location
from .records import Record, rename_types

Variants = Mapping[str, Sequence[str]]

# Other names of the CrossNER training domains' types (after the crossner label map). They
# are generic English names of the same class or of a subclass, drawn from no test set.
CROSSNER_VARIANTS: Dict[str, List[str]] = {
    "academic journal": ["scientific journal", "journal", "periodical"],
    "album": ["music album", "record", "studio album"],
    "algorithm": ["method", "technique", "model"],
    "astronomical object": ["celestial body", "space object", "star or planet"],
    "award": ["prize", "honour", "accolade"],
    "band": ["music group", "musical group", "ensemble"],
    "book": ["novel", "literary work", "publication"],
    "chemical compound": ["compound", "chemical", "molecule"],
    "chemical element": ["element", "element of the periodic table"],
    "conference": ["academic conference", "symposium", "scientific meeting"],
    "country": ["nation", "sovereign state", "country name"],
    "discipline": ["scientific discipline", "field of science", "academic field"],
    "enzyme": ["biological catalyst", "catalytic protein"],
    "event": ["occurrence", "historical event", "happening"],
    "field": ["research field", "area of study", "research area"],
    "literary genre": ["genre of literature", "writing genre", "genre"],
    "location": ["place", "geographical location", "location name"],
    "magazine": ["periodical", "literary magazine", "newspaper"],
    "metric": ["evaluation metric", "measure", "score"],
    "music genre": ["musical style", "genre of music", "genre"],
    "musical artist": ["musician", "singer", "composer", "performer"],
    "musical instrument": ["instrument", "music instrument"],
    "organization": ["organisation", "institution", "organization name"],
    "person": ["person name", "individual", "people"],
    "poem": ["poetry", "verse", "literary poem"],
    "product": ["software", "commercial product", "system"],
    "programming language": ["computer language", "coding language"],
    "protein": ["gene product", "polypeptide"],
    "researcher": ["computer scientist", "academic", "ai researcher"],
    "scientist": ["physicist", "chemist", "biologist", "mathematician"],
    "song": ["single", "track", "musical composition"],
    "task": ["research task", "problem", "ai task"],
    "theory": ["scientific theory", "hypothesis", "law of nature"],
    "university": ["college", "academic institution", "school"],
    "writer": ["author", "novelist", "poet", "playwright"],
}


def vary_labels(record: Record, variants: Variants, rate: float, rng) -> Record:
    """The record with each type that has variants renamed, with probability `rate`, to one
    of them (its tags follow). A variant the record offers already is never chosen, so two
    types never share a name."""
    taken = set(record.labels)
    names: Dict[str, str] = {}
    for label in record.labels:
        choices = [name for name in variants.get(label, ()) if name not in taken]
        if choices and rng.random() < rate:
            names[label] = rng.choice(choices)
            taken.add(names[label])
    if not names:
        return record
    renamed = rename_types(record, lambda label: names.get(label, label))
    return replace(renamed, labels=[names.get(label, label) for label in record.labels])


def load_variants(value: str) -> Variants:
    """The variants named on the command line: "crossner" or a JSON file {type: [names]}."""
    if value == "crossner":
        return CROSSNER_VARIANTS
    path = Path(value)
    variants = json.loads(path.read_text(encoding=ENCODING))
    valid = isinstance(variants, dict) and all(
        isinstance(names, list) and all(isinstance(name, str) and name for name in names)
        for names in variants.values()
    )
    if not valid:
        raise DataError(Location(path), "type variants are a JSON object {type: [name, ...]}")
    return variants


PREPOSITIONS = {"of", "for", "in", "on", "at", "de"}
DETERMINERS = {"a", "an", "the", "this", "that", "its", "his", "her", "their", "our"}


def head_word(words: Sequence[str]) -> Optional[str]:
    """The capitalised head noun of a multi-word name, in lower case: its last word, or the
    last before a preposition ("Society" of "Royal Society of London"); None if there is none."""
    end = next((i for i, word in enumerate(words) if word in PREPOSITIONS), len(words))
    if len(words) < 2 or end < 1 or not (words[end - 1].isalpha() and words[end - 1][:1].isupper()):
        return None
    return words[end - 1].lower() if len(words[end - 1]) >= 4 else None


def common_heads(records: Iterable[Record], min_names: int = 3) -> Set[str]:
    """Head nouns that can name a type: the `head_word`s of at least `min_names` different
    entity names that are common nouns (they follow a determiner in lower case somewhere)."""
    records = list(records)
    lower = {word for record in records for before, word in zip(record.words, record.words[1:])
             if before.lower() in DETERMINERS and word.isalpha() and word.islower()}
    names: Dict[str, Set[str]] = defaultdict(set)
    for record in records:
        for start, end, _ in record.spans():
            head = head_word(record.words[start:end])
            if head in lower:
                names[head].add(" ".join(record.words[start:end]))
    return {head for head, found in names.items() if len(found) >= min_names}


def add_head_type(record: Record, heads: Set[str], rate: float, rng: random.Random) -> Record:
    """With probability `rate`, one head noun (of `heads`) of the record's entities offered as
    a type of its own: the entities of one type with that head are retagged with it, the
    other entities keep their types. A head that is already a type is not offered."""
    spans = [(start, end, label, head_word(record.words[start:end]))
             for start, end, label in record.spans()]
    candidates = sorted({(head, label) for _, _, label, head in spans
                         if head in heads and head not in record.labels})
    if not candidates or rng.random() >= rate:
        return record
    chosen = rng.choice(candidates)
    retagged = record.with_spans((start, end, head if (head, label) == chosen else label)
                                 for start, end, label, head in spans)
    return replace(retagged, labels=record.labels + [chosen[0]])
