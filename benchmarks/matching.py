"""Hierarchical matching against a plain O(N²) LCS table, by sentence length.

    python benchmarks/matching.py [--repeats 5]

Sentences are CrossNER test words (the shipped test fixture), joined to reach each length
bucket; the "model output" is the sentence with 10% of its words perturbed (a third dropped,
a third respelled, a third followed by an added word), or exactly copied. Prints the mean
time per sentence of each method and their ratio (LCS table / hierarchical).
"""
import argparse
import gzip
import json
import random
import time
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

from spacy_gner import hierarchical_match

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "crossner-reference-prompts.jsonl.gz"
BUCKETS = [(1, 60), (60, 100), (100, 200), (1000, 1001)]


def lcs_table_match(words: Sequence[str], pred_words: Sequence[str], pred_tags: Sequence[str]) -> List[str]:
    """The baseline: a full dynamic-programming LCS table and its traceback."""
    a = [w.lower() for w in words]
    b = [w.lower() for w in pred_words]
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        row, above = table[i], table[i - 1]
        for j in range(1, len(b) + 1):
            row[j] = above[j - 1] + 1 if a[i - 1] == b[j - 1] else max(above[j], row[j - 1])
    tags = ["O"] * len(a)
    i, j = len(a), len(b)
    while i and j:
        if a[i - 1] == b[j - 1]:
            tags[i - 1] = pred_tags[j - 1]
            i, j = i - 1, j - 1
        elif table[i - 1][j] >= table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return tags


def sentences(low: int, high: int, count: int, rng: random.Random) -> List[Tuple[List[str], List[str]]]:
    """`count` (words, tags) sentences with low <= length < high, from the fixture."""
    records = []
    with gzip.open(FIXTURE, "rt", encoding="utf8") as file:
        for line in file:
            instance = json.loads(line)["instance"]
            records.append((instance["words"], instance["labels"]))
    result = []
    while len(result) < count:
        target = rng.randrange(low, high)
        words: List[str] = []
        tags: List[str] = []
        while len(words) < target:
            w, t = rng.choice(records)
            words += w
            tags += t
        result.append((words[:target], tags[:target]))
    return result


def perturb(words: List[str], tags: List[str], rate: float, rng: random.Random) -> Tuple[List[str], List[str]]:
    out_words, out_tags = [], []
    for word, tag in zip(words, tags):
        roll = rng.random()
        if roll < rate / 3:
            continue
        out_words.append(word + "x" if roll < 2 * rate / 3 else word)
        out_tags.append(tag)
        if 2 * rate / 3 <= roll < rate:
            out_words.append("added")
            out_tags.append("O")
    return out_words, out_tags


def mean_ms(method: Callable, cases, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for words, pred_words, pred_tags in cases:
            method(words, pred_words, pred_tags)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timing runs; the best is kept")
    parser.add_argument("--per-bucket", type=int, default=100, help="sentences per length bucket")
    args = parser.parse_args()
    rng = random.Random(0)
    print("| words | output | sentences | LCS table ms | hierarchical ms | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for low, high in BUCKETS:
        count = args.per_bucket if high < 1000 else 10
        sample = sentences(low, high, count, rng)
        for name, rate in (("exact", 0.0), ("10% perturbed", 0.1)):
            cases = [(w, *perturb(w, t, rate, rng)) for w, t in sample]
            table = mean_ms(lcs_table_match, cases, args.repeats)
            fast = mean_ms(hierarchical_match, cases, args.repeats)
            label = f"{low}-{high - 1}" if high < 1000 else str(low)
            print(f"| {label} | {name} | {count} | {table:.3f} | {fast:.3f} | {table / fast:.1f}x |")


if __name__ == "__main__":
    main()
