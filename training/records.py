"""The unit of training data: one sentence, its BIO tags and the entity types offered."""
from dataclasses import dataclass
from typing import List


@dataclass
class Record:
    """One sentence. `labels` are the entity types offered in the prompt, in prompt order;
    types with no mention in the sentence (negative types) are allowed."""

    words: List[str]
    tags: List[str]
    labels: List[str]
    dataset: str
    id: str
    split: str = ""

    def validate(self) -> None:
        """Raise ValueError unless words and tags align and every tag is O or B-/I- of a label."""
        if len(self.words) != len(self.tags):
            raise ValueError(f"{len(self.words)} words but {len(self.tags)} tags")
        if not all(isinstance(word, str) for word in self.words):
            raise ValueError(f"words must be strings: {self.words!r}")
        allowed = set(self.labels)
        for i, tag in enumerate(self.tags):
            valid = isinstance(tag, str) and tag[:2] in ("B-", "I-") and tag[2:] in allowed
            if tag != "O" and not valid:
                raise ValueError(f"tag {tag!r} of word {i} is not O or B-/I- of {self.labels}")
