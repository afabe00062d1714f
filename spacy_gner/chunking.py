"""Splitting Docs into chunks the model can take, and merging chunk entities back.

Whitespace tokens are never sent to the model. A chunk is a sentence (when the Doc has
sentence boundaries) or the whole Doc, split further into overlapping windows when its cost
(tokens of the words and their tags) is over budget. Each window owns the entities that start
in its core, the part of it nearest its middle, so an entity near a split is taken from the
window that sees it whole.
"""
from dataclasses import dataclass
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from spacy.tokens import Doc


class Entity(NamedTuple):
    """An entity candidate: token offsets (end exclusive), type, confidence (None: unscored)."""

    start: int
    end: int
    label: str
    score: Optional[float] = None


@dataclass(frozen=True)
class Chunk:
    """Doc token indices of the words sent together, and the range of token indices whose
    entities this chunk owns (core_start <= entity start < core_end)."""

    tokens: Tuple[int, ...]
    core_start: int
    core_end: int
    cut_right: bool


def _groups(doc: Doc) -> Iterable[List[int]]:
    if doc.has_annotation("SENT_START"):
        sentences = [[t.i for t in sent if not t.is_space] for sent in doc.sents]
    else:
        sentences = [[t.i for t in doc if not t.is_space]]
    return (sentence for sentence in sentences if sentence)


def _windows(indices: List[int], costs: Sequence[int], budget: int, overlap: int) -> List[Chunk]:
    """Split one group of token indices into windows of at most `budget` cost."""
    bounds: List[Tuple[int, int]] = []
    start = 0
    while True:
        end, total = start, 0
        while end < len(indices) and (end == start or total + costs[indices[end]] <= budget):
            total += costs[indices[end]]
            end += 1
        bounds.append((start, end))
        if end == len(indices):
            break
        start = max(start + 1, end - min(overlap, (end - start) // 2))
    chunks = []
    for k, (start, end) in enumerate(bounds):
        first = start if k == 0 else (bounds[k - 1][1] + start) // 2
        last = end if k == len(bounds) - 1 else (end + bounds[k + 1][0]) // 2
        core_end = indices[last] if last < len(indices) else indices[-1] + 1
        chunks.append(
            Chunk(tuple(indices[start:end]), indices[first], core_end, k < len(bounds) - 1)
        )
    return chunks


def plan_chunks(doc: Doc, costs: Sequence[int], budget: int, overlap: int) -> List[Chunk]:
    """The chunks of a Doc, given each token's cost and the most a chunk may cost."""
    if budget < 1:
        raise ValueError(f"chunk budget must be positive, got {budget}")
    chunks: List[Chunk] = []
    for indices in _groups(doc):
        chunks.extend(_windows(indices, costs, budget, overlap))
    return chunks


def merge_chunk_entities(
    chunks: Sequence[Chunk], entities: Sequence[Sequence[Entity]], nested: bool = False
) -> List[Entity]:
    """Doc-level entities from each chunk's entities (offsets are the chunk's word positions).

    A chunk keeps the entities that start in its core. One that runs into the cut end of its
    window yields to the next window's entity starting on the same token, which sees more of
    it. Whatever still overlaps (`nested`: crosses, one inside the other is kept) is resolved
    longest first.
    """
    doc_entities: List[List[Entity]] = [
        [Entity(chunk.tokens[e.start], chunk.tokens[e.end - 1] + 1, e.label, e.score) for e in spans]
        for chunk, spans in zip(chunks, entities)
    ]
    kept: List[Entity] = []
    for k, (chunk, spans) in enumerate(zip(chunks, doc_entities)):
        for entity in spans:
            if not chunk.core_start <= entity.start < chunk.core_end:
                continue
            if chunk.cut_right and entity.end == chunk.tokens[-1] + 1 and k + 1 < len(chunks):
                longer = [other for other in doc_entities[k + 1] if other.start == entity.start]
                if longer:
                    kept.append(longer[0])
                    continue
            kept.append(entity)
    return _without_overlaps(kept, nested)


def _without_overlaps(entities: Iterable[Entity], nested: bool) -> List[Entity]:
    result: List[Entity] = []
    for entity in sorted(dict.fromkeys(entities), key=lambda e: (e.start - e.end, e.start)):
        if not any(_clash(entity, other, nested) for other in result):
            result.append(entity)
    return sorted(result, key=lambda e: (e.start, -e.end))


def _clash(a: Entity, b: Entity, nested: bool) -> bool:
    """Whether two entities overlap (`nested`: cross, or are one span with one type twice)."""
    if a.end <= b.start or b.end <= a.start:
        return False
    if not nested:
        return True
    inside = b.start <= a.start and a.end <= b.end or a.start <= b.start and b.end <= a.end
    return not inside or (a.start, a.end, a.label) == (b.start, b.end, b.label)
