"""Parsing generated `word(tag)` text, and BIO tags into entity spans."""
import re
from functools import lru_cache
from typing import Iterable, List, Optional, Sequence, Tuple

# A tag in parentheses: O, or B-/I- with a type that may hold one level of balanced brackets.
_ANY_TAG = r"O|[BI]-[^()]*(?:\([^()]*\)[^()]*)*"


@lru_cache(maxsize=64)
def _tag_pattern(labels: Optional[Tuple[str, ...]]) -> "re.Pattern[str]":
    alternatives = []
    if labels:
        # Known types first, longest first, so "person (fictional)" wins over "person".
        names = "|".join(re.escape(label) for label in sorted(set(labels), key=len, reverse=True))
        alternatives.append(f"[BI]-(?:{names})")
    alternatives.append(_ANY_TAG)
    return re.compile(r"\((" + "|".join(alternatives) + r")\)")


def extract(text: str, labels: Optional[Iterable[str]] = None) -> Tuple[List[str], List[str]]:
    """Split generated text into words and their tags.

    Text before each `(tag)` is a word; text with no tag after it (a truncated output) is
    dropped, and so are empty words. Given `labels`, tags of other types become "O".
    """
    label_tuple = tuple(labels) if labels is not None else None
    words: List[str] = []
    tags: List[str] = []
    start = 0
    for match in _tag_pattern(label_tuple).finditer(text):
        word = text[start : match.start()].strip()
        start = match.end()
        if word:
            words.append(word)
            tags.append(match.group(1).strip())
    if label_tuple is not None:
        valid = set(label_tuple)
        tags = [tag if tag == "O" or tag[2:] in valid else "O" for tag in tags]
    return words, tags


def repair_bio(tags: Sequence[str]) -> List[str]:
    """Make a tag sequence valid BIO: an I- after O or after another type starts an entity."""
    repaired: List[str] = []
    previous = "O"
    for tag in tags:
        if len(tag) < 3 or not tag.startswith(("B-", "I-")):
            tag = "O"
        elif tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        repaired.append(tag)
        previous = tag
    return repaired


def bio_to_spans(tags: Sequence[str]) -> List[Tuple[int, int, str]]:
    """Entity spans `(start, end, type)` (end exclusive) of a tag sequence, repaired first."""
    spans: List[Tuple[int, int, str]] = []
    for i, tag in enumerate(repair_bio(tags)):
        if tag.startswith("B-"):
            spans.append((i, i + 1, tag[2:]))
        elif tag.startswith("I-"):
            start, _, label = spans[-1]
            spans[-1] = (start, i + 1, label)
    return spans
