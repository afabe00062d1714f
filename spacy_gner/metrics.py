"""The GNER paper's metric: entity-level micro F1 over normalised (text, type) pairs.

Entities are read from BIO tags the way the reference evaluation reads them (a B- or an O
closes an entity, any other tag extends it and names its type), their text and type are
normalised (lower case, no punctuation, no articles, single spaces), and each sentence counts
each distinct pair once.
"""
import re
import string
from typing import Dict, Iterable, List, Sequence, Tuple

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def paper_entities(words: Sequence[str], tags: Sequence[str]) -> List[Tuple[str, str]]:
    """The distinct normalised (text, type) entities of a tagged sentence."""
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags")
    spans: List[Tuple[str, str]] = []
    current: List[str] = []
    label = ""
    for word, tag in zip(words, tags):
        if current and tag[:1] in ("B", "O"):
            spans.append((" ".join(current), label))
            current = []
        if tag != "O":
            current.append(word)
            label = tag[2:]
    if current:
        spans.append((" ".join(current), label))
    entities: List[Tuple[str, str]] = []
    for text, kind in spans:
        entity = (normalize(text), normalize(kind))
        if entity not in entities:
            entities.append(entity)
    return entities


def paper_f1(sentences: Iterable[Tuple[Sequence[str], Sequence[str], Sequence[str]]]) -> Dict[str, float]:
    """Micro precision, recall and F1 over (words, gold tags, predicted tags) triples."""
    correct = predicted = gold = 0
    for words, gold_tags, pred_tags in sentences:
        gold_entities = paper_entities(words, gold_tags)
        pred_entities = paper_entities(words, pred_tags)
        correct += sum(entity in gold_entities for entity in pred_entities)
        predicted += len(pred_entities)
        gold += len(gold_entities)
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
