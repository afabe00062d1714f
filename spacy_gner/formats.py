"""Output formats: how a model writes a sentence's entities, as registered, versioned blocks.

A format owns its instruction in the prompt, the target string a model is trained on, the
parsing of freely generated text (matched onto the input words as tolerantly as
`hierarchical_match`), and the copy constraint (`lattice`: between the forced input words,
only the markup it allows). Named in the generator's config and saved with a pipeline:

    [components.gner.generator.output_format]
    @gner_formats = "spacy-gner.InlineBracket.v1"

- `spacy-gner.WordTag.v1` (default): GNER's `John(B-person) explored(O) Tokyo(B-location)`,
  byte-identical to the released checkpoints' training data; flat.
- `spacy-gner.InlineBracket.v1`: `[ John | person ] explored [ Tokyo | location ]`; nests.
- `spacy-gner.InlineXML.v1`: `<person> John </person> explored <location> Tokyo </location>`;
  nests.

Markup is written as separate, space-delimited pieces, so that every piece tokenizes on its
own with any fast tokenizer (see `lattices`); the parsers also read unspaced markup. Entity
spans are (start word, end word exclusive, type).
"""
import math
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.util import registry

from .generators import Request
from .lattices import InlineLattice, Lattice, TagLattice, inline_spans, piece_tokens
from .matching import align, hierarchical_match
from .output import bio_to_spans, extract
from .prompt import INSTRUCTION, build_target

Span = Tuple[int, int, str]
ScoredSpan = Tuple[int, int, str, Optional[float]]

if not hasattr(registry, "gner_formats"):
    registry.create("gner_formats", entry_points=True)


def entity_score(probs: Sequence[float]) -> float:
    """A `word(tag)` entity's confidence from its words' tag probabilities: their product, the
    model's probability of the entity's whole tag sequence given the words before it."""
    return math.prod(probs)


def outermost(spans: Iterable[Sequence[Any]]) -> List[Span]:
    """The entities no other entity contains, longest first where two overlap: the flat
    selection of nested entities (`doc.ents`, BIO targets)."""
    chosen: List[Span] = []
    for start, end, label, *_ in sorted(spans, key=lambda s: (s[0], -s[1])):
        if not chosen or start >= chosen[-1][1]:
            chosen.append((start, end, label))
    return chosen


def spans_to_bio(length: int, spans: Iterable[Sequence[Any]]) -> List[str]:
    """BIO tags of `length` words for the outermost of `spans`."""
    tags = ["O"] * length
    for start, end, label in outermost(spans):
        tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
    return tags


class OutputFormat:
    """The base of output formats: see the module docstring."""

    name = ""
    nests = False
    instruction = ""

    def types_line(self, labels: Sequence[str]) -> str:
        return f"Use the specific entity types: {', '.join(labels)}.\n"

    def target(self, words: Sequence[str], spans: Iterable[Sequence[Any]]) -> str:
        """The output a model is trained to write for these words and entities."""
        raise NotImplementedError

    def parse(self, words: Sequence[str], text: str, labels: Sequence[str],
              tokenizer: Any = None) -> List[Span]:
        """The entities of freely generated text over the input `words` (types not in
        `labels` dropped): its words matched onto them (`matching.align`)."""
        raise NotImplementedError

    def lattice(self, tokenizer: Any, request: Request) -> Optional[Lattice]:
        """The outputs the copy constraint allows, as token ids; None where the tokenizer
        cannot cut them into pieces."""
        raise NotImplementedError

    def spans(self, actions: Sequence[Any], probs: Sequence[float]) -> List[ScoredSpan]:
        """The scored entities of a lattice path (its options' actions and probabilities)."""
        raise NotImplementedError

    def cost_text(self, word: str) -> str:
        """A word as an output with no entity writes it (the component's token budget)."""
        return word

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class WordTag(OutputFormat):
    """GNER's `word(tag)`: every word followed by its BIO tag."""

    name = "spacy-gner.WordTag.v1"
    instruction = INSTRUCTION

    def types_line(self, labels: Sequence[str]) -> str:
        return f"Use the specific entity tags: {', '.join(labels)} and O.\n"

    def target(self, words: Sequence[str], spans: Iterable[Sequence[Any]]) -> str:
        return build_target(words, spans_to_bio(len(words), spans))

    def parse(self, words: Sequence[str], text: str, labels: Sequence[str],
              tokenizer: Any = None) -> List[Span]:
        return bio_to_spans(self.parse_tags(words, text, labels, tokenizer))

    def parse_tags(self, words: Sequence[str], text: str, labels: Sequence[str],
                   tokenizer: Any = None) -> List[str]:
        """One tag per input word (`extract`, then `hierarchical_match`)."""
        return hierarchical_match(words, *extract(text, labels), tokenizer)

    def lattice(self, tokenizer: Any, request: Request) -> Optional[Lattice]:
        words = request.words
        tags = [request.allowed(k) for k in range(len(words))]
        units = [[f"{word}({tag})" for tag in word_tags] for word, word_tags in zip(words, tags)]
        cut = piece_tokens(tokenizer, units[0], [u for unit in units[1:] for u in unit]) if words else None
        if cut is None:
            return None
        first, later = cut
        return TagLattice([{tag: (later if k else first)[unit] for tag, unit in zip(word_tags, unit_texts)}
                           for k, (word_tags, unit_texts) in enumerate(zip(tags, units))])

    def spans(self, actions: Sequence[Any], probs: Sequence[float]) -> List[ScoredSpan]:
        return [(start, end, label, entity_score(probs[start:end]))
                for start, end, label in bio_to_spans(list(actions))]

    def cost_text(self, word: str) -> str:
        return f"{word}(O)"


class InlineFormat(OutputFormat):
    """Inline formats: the sentence with each entity marked where it stands, nesting allowed
    up to `depth` entities deep (in the lattice; parsing reads any depth)."""

    nests = True
    named_on_open = True  # XML names the type when opening, brackets when closing

    def __init__(self, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"the nesting depth of an inline format must be at least 1, got {depth}")
        self.depth = depth

    def open_text(self, label: Optional[str]) -> str:
        raise NotImplementedError

    def close_text(self, label: str) -> str:
        raise NotImplementedError

    # matches of markup: group "open" (with "label" where named on opening), or "close" ("label")
    markup: "re.Pattern[str]"

    @property
    def instruction(self) -> str:  # type: ignore[override]
        """The task and the format, shown by the format's own writing of examples."""
        example = self.target("Barack Obama visited Paris .".split(), [(0, 2, "person"), (3, 4, "location")])
        nested = self.target("the Bush administration".split(), [(0, 3, "organization"), (1, 2, "person")])
        return ("Please analyze the sentence provided and mark every entity in it.\n"
                "Output format: the sentence word by word, each entity written as "
                f"{self.target(['words'], [(0, 1, 'type')])}, for example: {example}\n"
                f"An entity may hold other entities: {nested}.\n")

    def target(self, words: Sequence[str], spans: Iterable[Sequence[Any]]) -> str:
        opening: Dict[int, List[Tuple[int, str]]] = {}
        for start, end, label, *_ in spans:
            opening.setdefault(start, []).append((end, label))
        pieces: List[str] = []
        open_ends: List[Tuple[int, str]] = []
        for k, word in enumerate(words):
            for end, label in sorted(opening.get(k, ()), key=lambda e: -e[0]):
                if open_ends and end > open_ends[-1][0]:
                    raise ValueError(f"entities cross, they do not nest: {list(spans)!r}")
                pieces.append(self.open_text(label))
                open_ends.append((end, label))
            pieces.append(word)
            while open_ends and open_ends[-1][0] == k + 1:
                pieces.append(self.close_text(open_ends.pop()[1]))
        return " ".join(pieces)

    def parse(self, words: Sequence[str], text: str, labels: Sequence[str],
              tokenizer: Any = None) -> List[Span]:
        """Markup is read wherever it stands; a closing without an opening, an entity left
        open, an empty one or one of a type not in `labels` is dropped."""
        valid = set(labels)
        predicted: List[str] = []
        found: List[Span] = []
        stack: List[Tuple[int, Optional[str]]] = []
        position = 0
        for match in self.markup.finditer(text):
            predicted += text[position : match.start()].split()
            position = match.end()
            label = " ".join((match.group("label") or "").split()) or None
            if match.group("open") is not None:
                stack.append((len(predicted), label))
            elif stack:
                start, opened = stack.pop()
                if opened is not None and opened != label:
                    continue  # an XML closing of another type: both dropped
                if label in valid and start < len(predicted):
                    found.append((start, len(predicted), label))
        predicted += text[position:].split()
        match = align(words, predicted, tokenizer)
        spans = []
        for start, end, label in found:
            inside = [i for i, j in enumerate(match) if start <= j < end]
            if inside:
                spans.append((inside[0], inside[-1] + 1, label))
        return sorted(set(spans), key=lambda s: (s[0], -s[1], s[2]))

    def lattice(self, tokenizer: Any, request: Request) -> Optional[Lattice]:
        words, labels = request.words, request.labels
        if not words or not labels:
            return None
        opens = {label: self.open_text(label).split() for label in
                 (labels if self.named_on_open else [None])}
        closes = {label: self.close_text(label).split() for label in labels}
        first = [words[0]] + [pieces[0] for pieces in opens.values()]
        later = [*words, *(p for pieces in opens.values() for p in pieces),
                 *(p for pieces in closes.values() for p in pieces)]
        cut = piece_tokens(tokenizer, first, later)
        if cut is None:
            return None
        start, after = cut

        def ids(pieces: List[str], first_piece: bool) -> Tuple[int, ...]:
            spelled = [start[pieces[0]] if first_piece else after[pieces[0]]]
            return tuple(t for part in spelled + [after[p] for p in pieces[1:]] for t in part)

        return InlineLattice(
            [ids([word], False) for word in words],
            {label: ids(pieces, False) for label, pieces in opens.items()},
            {label: ids(pieces, False) for label, pieces in closes.items()},
            self.depth, request.fixed,
            first=(ids([words[0]], True), {label: ids(pieces, True) for label, pieces in opens.items()}),
        )

    def spans(self, actions: Sequence[Any], probs: Sequence[float]) -> List[ScoredSpan]:
        return inline_spans(actions, probs)  # type: ignore[return-value]


class InlineBracket(InlineFormat):
    """`[ Barack Obama | person ] visited [ Paris | location ]`."""

    name = "spacy-gner.InlineBracket.v1"
    named_on_open = False
    markup = re.compile(r"(?P<open>\[)|(?P<close>\|(?P<label>[^\[\]|]*)\])")

    def open_text(self, label: Optional[str]) -> str:
        return "["

    def close_text(self, label: str) -> str:
        return f"| {label} ]"


class InlineXML(InlineFormat):
    """`<person> Barack Obama </person> visited <location> Paris </location>`."""

    name = "spacy-gner.InlineXML.v1"
    markup = re.compile(r"<(?:(?P<close>/)|(?P<open>))(?P<label>[^<>/]+)>")

    def open_text(self, label: Optional[str]) -> str:
        return f"<{label}>"

    def close_text(self, label: str) -> str:
        return f"</{label}>"


@registry.gner_formats("spacy-gner.WordTag.v1")
def make_word_tag() -> OutputFormat:
    """GNER's `word(tag)` output (the released checkpoints'); flat."""
    return WordTag()


@registry.gner_formats("spacy-gner.InlineBracket.v1")
def make_inline_bracket(depth: int = 2) -> OutputFormat:
    """`[ words | type ]`, nested up to `depth` entities deep under the copy constraint."""
    return InlineBracket(depth)


@registry.gner_formats("spacy-gner.InlineXML.v1")
def make_inline_xml(depth: int = 2) -> OutputFormat:
    """`<type> words </type>`, nested up to `depth` entities deep under the copy constraint."""
    return InlineXML(depth)


FORMATS = {"word_tag": make_word_tag, "bracket": make_inline_bracket, "xml": make_inline_xml}


def get_format(name: str) -> OutputFormat:
    """A format by its short name (word_tag, bracket, xml) or registered name."""
    if name in FORMATS:
        return FORMATS[name]()
    try:
        return registry.gner_formats.get(name)()
    except Exception:
        raise ValueError(f"Unknown output format {name!r}: expected one of {sorted(FORMATS)} "
                         "or a registered gner_formats name") from None
