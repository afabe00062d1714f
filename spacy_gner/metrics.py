"""Metrics: the GNER paper's F1 (with a bootstrap interval), and how well confidence scores
rank and match correctness (precision / recall / F1 by threshold, calibration).

The paper's metric is entity-level micro F1 over normalised (text, type) pairs. Entities are
read from BIO tags the way the reference evaluation reads them (a B- or an O closes an entity,
any other tag extends it and names its type), their text and type are normalised (lower case,
no punctuation, no articles, single spaces), and each sentence counts each distinct pair once.
"""
import random
import re
import string
from typing import Any, Collection, Dict, Iterable, List, Sequence, Tuple

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
Counts = Tuple[int, int, int]  # correct, predicted, gold
Span = Tuple[int, int, str]  # start, end (exclusive), label
THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))


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


def paper_counts(words: Sequence[str], gold_tags: Sequence[str], pred_tags: Sequence[str]) -> Counts:
    """One sentence's (correct, predicted, gold) entity counts under the paper's metric."""
    gold_entities = paper_entities(words, gold_tags)
    pred_entities = paper_entities(words, pred_tags)
    return sum(e in gold_entities for e in pred_entities), len(pred_entities), len(gold_entities)


def prf(counts: Iterable[Counts]) -> Dict[str, float]:
    """Micro precision, recall and F1 of summed (correct, predicted, gold) counts."""
    correct = predicted = gold = 0
    for c, p, g in counts:
        correct, predicted, gold = correct + c, predicted + p, gold + g
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def paper_f1(sentences: Iterable[Tuple[Sequence[str], Sequence[str], Sequence[str]]]) -> Dict[str, float]:
    """Micro precision, recall and F1 over (words, gold tags, predicted tags) triples."""
    return prf(paper_counts(*sentence) for sentence in sentences)


def bootstrap_interval(
    counts: Sequence[Counts], samples: int = 1000, level: float = 0.95, seed: int = 0
) -> Tuple[float, float]:
    """A percentile bootstrap interval of micro F1: sentences drawn with replacement."""
    if not counts:
        return (0.0, 0.0)
    rng = random.Random(seed)
    f1s = sorted(prf(rng.choices(counts, k=len(counts)))["f1"] for _ in range(samples))
    tail = (1 - level) / 2
    return f1s[int(tail * (samples - 1))], f1s[int(round((1 - tail) * (samples - 1)))]


def threshold_scores(
    examples: Iterable[Tuple[Collection[Span], Sequence[Tuple[Span, float]]]],
    thresholds: Sequence[float] = THRESHOLDS,
) -> Dict[float, Dict[str, float]]:
    """Exact-span micro precision, recall and F1 of the candidates scoring at least each
    threshold, over (gold spans, [(candidate span, score)]) pairs."""
    examples = list(examples)
    return {
        threshold: prf(
            (sum(span in gold for span, score in candidates if score >= threshold),
             sum(score >= threshold for _, score in candidates), len(gold))
            for gold, candidates in examples
        )
        for threshold in thresholds
    }


def calibration(pairs: Iterable[Tuple[float, bool]], bins: int = 10) -> Dict[str, Any]:
    """How well confidences match accuracy, over (confidence, correct) pairs: the expected
    calibration error (the mean |accuracy - confidence| over equal-width confidence bins,
    weighted by their sizes) and each bin's count, mean confidence and accuracy."""
    pairs = list(pairs)
    table, error = [], 0.0
    for k in range(bins):
        lower, upper = k / bins, (k + 1) / bins
        inside = [(p, c) for p, c in pairs if lower < p <= upper or (k == 0 and p == 0.0)]
        confidence = accuracy = None
        if inside:
            confidence = sum(p for p, _ in inside) / len(inside)
            accuracy = sum(c for _, c in inside) / len(inside)
            error += len(inside) / len(pairs) * abs(accuracy - confidence)
        table.append({"lower": lower, "upper": upper, "count": len(inside),
                      "confidence": confidence, "accuracy": accuracy})
    return {"ece": error if pairs else None, "count": len(pairs), "bins": table}
