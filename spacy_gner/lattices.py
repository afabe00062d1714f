"""What an output may be under the copy constraint, as token ids: a lattice of options.

Every output format writes a sentence's words in order, with markup between or around them,
as whitespace-separated pieces (`word(tag)`; `[`, `|`, `]`; `<type>`). Fast tokenizers split
text at spaces before merging, so each piece tokenizes on its own and an output's tokens are
its pieces' tokens one after another (`piece_tokens` checks this per request). A lattice
gives, at each node (where an output stands between two decisions), the options that may
come next: their tokens, what they mean (`action`) and the node after them. No options:
the output is complete. Pure Python, no torch: `decoding` walks lattices.
"""
from bisect import bisect_right
from typing import Any, Dict, Hashable, List, NamedTuple, Optional, Sequence, Set, Tuple

Ids = Tuple[int, ...]


class Option(NamedTuple):
    """One way to go on from a node: its tokens, its meaning, the node after it."""

    tokens: Ids
    action: Hashable
    next: Hashable


def piece_tokens(
    tokenizer: Any, first: Sequence[str], later: Sequence[str]
) -> Optional[Tuple[Dict[str, Ids], Dict[str, Ids]]]:
    """The token ids of whitespace-free pieces at the start of an output (`first`) and after
    a space (`later`), cut from tokenizations of outputs holding them, so each is spelled as in
    context. None when the tokenizer has no offsets, a token spans two pieces or a piece gets
    no token."""
    if not first or not getattr(tokenizer, "is_fast", False):
        return None
    first, later = list(dict.fromkeys(first)), list(dict.fromkeys(later))
    outputs = [[first[0], *later]] + [[piece] for piece in first[1:]]
    texts = [" ".join(pieces) for pieces in outputs]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    cut: List[List[Ids]] = []
    for text, pieces, ids, spans in zip(texts, outputs, encoded["input_ids"], encoded["offset_mapping"]):
        starts, offset = [], 0
        for piece in pieces:
            starts.append(offset)
            offset += len(piece) + 1
        parts: List[List[int]] = [[] for _ in pieces]
        for token, (begin, end) in zip(ids, spans):
            last = max(begin, end - 1)
            if text[last : last + 1] == " ":  # a token of the space before a piece is the piece's
                last += 1
            k = bisect_right(starts, last) - 1
            if k < 0 or (k > 0 and begin < starts[k] - 1):
                return None  # the token reaches back into the piece before
            parts[k].append(token)
        if any(not part for part in parts):
            return None
        cut.append([tuple(part) for part in parts])
    starts_map = {first[0]: cut[0][0], **{piece: parts[0] for piece, parts in zip(first[1:], cut[1:])}}
    return starts_map, dict(zip(later, cut[0][1:]))


class Lattice:
    """Options per node, computed on first use (`_options`) and kept; `bound(node)` is at
    least the tokens any output takes from the node on."""

    start: Hashable = 0

    def __init__(self) -> None:
        self._cache: Dict[Hashable, List[Option]] = {}

    def options(self, node: Hashable) -> List[Option]:
        found = self._cache.get(node)
        if found is None:
            found = self._cache[node] = self._options(node)
        return found

    def _options(self, node: Hashable) -> List[Option]:
        raise NotImplementedError

    def bound(self, node: Hashable) -> int:
        raise NotImplementedError

    def inside(self, node: Hashable) -> bool:
        """Whether an entity is open at the node (where an output leaves a draft soonest: at
        the entity's end). Lattices that do not know say no."""
        return False

    @property
    def vocabulary(self) -> Set[int]:
        """Every token an output may hold."""
        raise NotImplementedError


class TagLattice(Lattice):
    """`word(tag)` outputs: node k is word k, its options are its units, one per tag it may
    take, O first (`units[k]`: {tag: token ids}). The action of an option is its tag."""

    def __init__(self, units: Sequence[Dict[str, Ids]]) -> None:
        super().__init__()
        self.units = list(units)
        self._longest = [0] * (len(units) + 1)
        for k in range(len(units) - 1, -1, -1):
            self._longest[k] = self._longest[k + 1] + max(map(len, units[k].values()))

    def _options(self, node: Hashable) -> List[Option]:
        k = int(node)  # type: ignore[call-overload]
        if k >= len(self.units):
            return []
        return [Option(ids, tag, k + 1) for tag, ids in self.units[k].items()]

    def bound(self, node: Hashable) -> int:
        return self._longest[int(node)]  # type: ignore[call-overload]

    @property
    def vocabulary(self) -> Set[int]:
        return {t for unit in self.units for ids in unit.values() for t in ids}


class Open(NamedTuple):
    """An entity opened at word `start` (type None: named when it closes), `fixed` when the
    request forces it."""

    start: int
    type: Optional[str]
    fixed: bool


class InlineLattice(Lattice):
    """Inline outputs (`[ words | type ]`, `<type> words </type>`): the words in order, entities
    opened before a word and closed after one, nested up to `depth` deep.

    A node is (next word, open entities, outermost first). Its options, in the order drafts
    guess them: the next word, closing the innermost entity (non-empty: after one of its
    words), opening one before the next word. `opens` maps a type (or None where the format
    names the type on closing) to its opening's tokens, `closes` maps a type to its closing's.
    Actions: ("word", k), ("open", k, type), ("close", start, end, type). `fixed` (per word,
    a BIO tag or None, see `Request.fixed`): a word with a tag is inside exactly the fixed
    entity it names, or, O, inside none. `first`: the first word's and the openings' tokens
    at the very start of the output, where no space comes before them (default: as later).
    """

    def __init__(self, words: Sequence[Ids], opens: Dict[Optional[str], Ids],
                 closes: Dict[str, Ids], depth: int, fixed: Sequence[Optional[str]] = (),
                 first: Optional[Tuple[Ids, Dict[Optional[str], Ids]]] = None) -> None:
        super().__init__()
        self.start = (0, ())
        self.words = list(words)
        self.opens, self.closes, self.depth = opens, closes, depth
        self.fixed = list(fixed) or [None] * len(words)
        self._first = first
        lengths = [len(ids) for ids in self.words]
        open_longest = max(map(len, opens.values()))
        if first is not None and words:
            lengths[0] = max(lengths[0], len(first[0]))
            open_longest = max(open_longest, *map(len, first[1].values()))
        self._close_longest = max(map(len, closes.values()))
        markup = depth * (open_longest + self._close_longest)
        self._suffix = [0] * (len(words) + 1)
        for k in range(len(words) - 1, -1, -1):
            self._suffix[k] = self._suffix[k + 1] + lengths[k] + markup

    def _option_ids(self, node: Hashable, kind: str, key: Any) -> Ids:
        if self._first is not None and node == self.start:
            return self._first[0] if kind == "word" else self._first[1][key]
        return self.words[key] if kind == "word" else self.opens[key]

    def _may_write(self, k: int, stack: Tuple[Open, ...]) -> bool:
        tag = self.fixed[k]
        if tag is None:
            return not any(entity.fixed for entity in stack)
        if tag == "O":
            return not stack
        return len(stack) == 1 and stack[0].fixed

    def _options(self, node: Hashable) -> List[Option]:
        k, stack = node  # type: ignore[misc]
        n, options = len(self.words), []
        if k < n and self._may_write(k, stack):
            options.append(Option(self._option_ids(node, "word", k), ("word", k), (k + 1, stack)))
        if stack and stack[-1].start < k:
            top = stack[-1]
            tag = self.fixed[k] if k < n else None
            if top.fixed:  # closes where its fixed words end, as its type
                types = [top.type] if not (tag and tag.startswith("I-")) else []
            else:
                types = [top.type] if top.type is not None else list(self.closes)
            options += [Option(self.closes[t], ("close", top.start, k, t), (k, stack[:-1]))
                        for t in types]
        if k < n and len(stack) < self.depth:
            tag = self.fixed[k]
            if tag is None and not any(entity.fixed for entity in stack):
                options += [Option(self._option_ids(node, "open", t), ("open", k, t),
                                   (k, stack + (Open(k, t, False),))) for t in self.opens]
            elif tag and tag.startswith("B-") and not stack:
                t = tag[2:] if None not in self.opens else None
                options.append(Option(self._option_ids(node, "open", t), ("open", k, t),
                                      (k, (Open(k, tag[2:], True),))))
        return options

    def bound(self, node: Hashable) -> int:
        k, stack = node  # type: ignore[misc]
        return self._suffix[k] + len(stack) * self._close_longest

    def inside(self, node: Hashable) -> bool:
        return bool(node[1])  # type: ignore[index]

    @property
    def vocabulary(self) -> Set[int]:
        pieces = [*self.words, *self.opens.values(), *self.closes.values()]
        if self._first is not None:
            pieces += [self._first[0], *self._first[1].values()]
        return {t for ids in pieces for t in ids}


def inline_spans(actions: Sequence[Hashable], probs: Sequence[float]
                 ) -> List[Tuple[int, int, str, float]]:
    """The entities of an inline output's actions, each scored by the probabilities of its
    opening, of going on with each of its words, and of its closing (as its type); an entity
    marked twice (nested in itself) once."""
    stack: List[List[Any]] = []  # per open entity: [start, score]
    spans = []
    for action, prob in zip(actions, probs):
        kind = action[0]  # type: ignore[index]
        if kind == "open":
            stack.append([action[1], prob])  # type: ignore[index]
        elif kind == "word":
            for entity in stack:
                entity[1] *= prob
        else:
            start, score = stack.pop()
            spans.append((start, action[2], action[3], score * prob))  # type: ignore[index]
    best: Dict[Tuple[int, int, str], float] = {}
    for start, end, label, score in spans:  # one entity marked twice: its likelier marking
        best[start, end, label] = max(score, best.get((start, end, label), 0.0))
    return sorted(((*span, score) for span, score in best.items()), key=lambda s: (s[0], -s[1], s[2]))
