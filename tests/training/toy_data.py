"""Tiny NER datasets in the GNER BIO layout, written by the tests."""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

Sentence = Tuple[List[str], List[str]]

PEOPLE_AND_PLACES: List[Sentence] = [
    ("Mary visited Paris".split(), ["B-person", "O", "B-location"]),
    ("John flew to New York".split(), ["B-person", "O", "O", "B-location", "I-location"]),
    ("Paris is in France .".split(), ["B-location", "O", "O", "B-location", "O"]),
    ("York met Mary".split(), ["B-person", "O", "B-person"]),
]
COMPANIES: List[Sentence] = [
    ("Mary works at Acme".split(), ["B-person", "O", "O", "B-organization"]),
    ("Acme hired John".split(), ["B-organization", "O", "B-person"]),
]


def write_bio_dataset(
    directory: Path, labels: Sequence[str], splits: Dict[str, Sequence[Sentence]]
) -> Path:
    """`<split>.txt` (word<TAB>tag, blank lines between sentences) for each split, and
    `label.txt`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "label.txt").write_text("".join(f"{label}\n" for label in labels))
    for split, sentences in splits.items():
        lines = ["".join(f"{w}\t{t}\n" for w, t in zip(words, tags)) for words, tags in sentences]
        (directory / f"{split}.txt").write_text("\n".join(lines))
    return directory
