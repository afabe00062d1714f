"""What the `gner` component asks of a model: the generator contract and its registry.

A generator takes Requests (a chunk's words, the entity types, tags already fixed) and gives
one Result per request: a tag per word, and, where the model gives them, the probability of
each tag; where its output format nests, every entity with its score; the raw text when it
generated freely. It owns its model, its tokenizer and its
token budget (`costs`). Generators are registered, versioned functions in the
`gner_generators` registry (other packages add theirs through the `spacy_gner_generators`
entry point group), named in a pipeline config as

    [components.gner.generator]
    @gner_generators = "spacy-gner.HFGenerator.v1"
    model = "dyyyyyyyy/GNER-T5-base"

Registering them imports neither torch nor transformers.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Literal, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

from spacy.util import registry

from .prompt import build_prompt

DEFAULT_MODEL = "dyyyyyyyy/GNER-T5-base"

if not hasattr(registry, "gner_generators"):
    registry.create("gner_generators", entry_points=True)


@dataclass(frozen=True)
class Request:
    """One chunk for the model: its words, the entity types in prompt order, per word a tag
    the output must keep (None: the model's choice; no tuple: none fixed), and (type,
    description) pairs that the prompt explains the types by (see `build_prompt`)."""

    words: Tuple[str, ...]
    labels: Tuple[str, ...]
    fixed: Tuple[Optional[str], ...] = ()
    descriptions: Tuple[Tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.fixed and len(self.fixed) != len(self.words):
            raise ValueError(f"{len(self.words)} words but {len(self.fixed)} fixed tags")

    @property
    def prompt(self) -> str:
        """The prompt in GNER's word(tag) format (generators build their format's)."""
        return build_prompt(self.words, self.labels, dict(self.descriptions))

    @property
    def types(self) -> Tuple[Tuple[str, ...], Tuple[Tuple[str, str], ...]]:
        """What the prompt says about the types: the labels and their descriptions."""
        return self.labels, self.descriptions

    @property
    def tags(self) -> Tuple[str, ...]:
        """Every valid tag: O, then B- and I- of each type."""
        return ("O",) + tuple(f"{p}-{label}" for label in self.labels for p in "BI")

    def allowed(self, word: int) -> Tuple[str, ...]:
        """The tags a word may take: its fixed tag, else any valid tag but one that would
        extend a fixed entity ending just before it."""
        if self.fixed and self.fixed[word] is not None:
            return (self.fixed[word],)
        before = self.fixed[word - 1] if self.fixed and word else None
        if before is None or before == "O":
            return self.tags
        return tuple(tag for tag in self.tags if tag != f"I-{before[2:]}")

    def enforce(self, tags: Sequence[str]) -> Tuple[str, ...]:
        """`tags` made valid for this request, for generators that cannot force tags while
        decoding: the fixed ones kept, O for the others it does not allow (a type not offered,
        or one that would extend a fixed entity)."""
        valid = set(self.tags)
        return tuple(
            (self.fixed[k] if self.fixed else None)
            or (tag if tag in valid and tag in self.allowed(k) else "O")
            for k, tag in enumerate(tags)
        )


    def enforce_spans(self, spans: Sequence[Sequence[Any]]) -> List[Tuple[int, int, str]]:
        """Entities made valid for this request: of offered types, none on or around a word
        with a fixed tag unless it is the entity that word's fixed tag names, and those
        entities all there."""
        valid = set(self.labels)
        fixed = self.fixed or (None,) * len(self.words)
        forced = {(start, end, label) for start, end, label in _bio_runs(fixed)}
        kept = {(start, end, label) for start, end, label, *_ in spans
                if label in valid and all(tag is None for tag in fixed[start:end])}
        return sorted(kept | forced, key=lambda s: (s[0], -s[1], s[2]))


def _bio_runs(tags: Sequence[Optional[str]]) -> List[Tuple[int, int, str]]:
    """The entities that fixed B-/I- tags spell."""
    runs: List[Tuple[int, int, str]] = []
    for k, tag in enumerate(tags):
        if tag and tag.startswith("B-"):
            runs.append((k, k + 1, tag[2:]))
        elif tag and tag.startswith("I-") and runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1, runs[-1][2])
    return runs


@dataclass(frozen=True)
class Result:
    """A generator's answer to one Request: a tag per word (the outermost entities where they
    nest); per word the model's probability of its tag (None where the generator has no
    scores, or gives `spans`); the output text where the generator has it (freely generated
    text; formats other than word(tag)), else None; and, from formats that nest, every
    entity as (start word, end word exclusive, type, score or None)."""

    tags: Tuple[str, ...]
    probs: Optional[Tuple[float, ...]] = None
    text: Optional[str] = None
    spans: Optional[Tuple[Tuple[int, int, str, Optional[float]], ...]] = None


def parse_output(request: Request, text: str, tokenizer: Any = None, output_format: Any = None) -> Result:
    """The Result of a freely generated output in `output_format` (default: word(tag)): its
    entities matched onto the request's words (`hierarchical_match`, back-tokenizing with
    `tokenizer`), fixed tags kept, and no entity that would extend a fixed one."""
    from .formats import WordTag, spans_to_bio

    fmt = output_format or WordTag()
    if not fmt.nests:
        tags = fmt.parse_tags(request.words, text, request.labels, tokenizer)
        return Result(request.enforce(tags), None, text)
    spans = request.enforce_spans(fmt.parse(request.words, text, request.labels, tokenizer))
    return Result(tuple(spans_to_bio(len(request.words), spans)), None, text,
                  tuple((start, end, label, None) for start, end, label in spans))


@runtime_checkable
class Generator(Protocol):
    """The contract of a generator: results for requests, and its token budget."""

    def __call__(self, requests: Sequence[Request]) -> List[Result]:
        """One Result per Request, in order."""

    def costs(self, words: Sequence[str], labels: Sequence[str]) -> Tuple[List[int], int]:
        """Each word's share of an output (its tokens with the widest tag) and the most
        tokens one request's output may take: the component cuts chunks to fit."""


@runtime_checkable
class Loadable(Protocol):
    """A generator whose model loads on demand: `load` loads it now (at `nlp.initialize`)."""

    def load(self) -> None: ...


@runtime_checkable
class Serializable(Protocol):
    """A generator saved with the pipeline: its model files go in a directory."""

    def to_disk(self, path: Union[str, Path]) -> None: ...

    def from_disk(self, path: Union[str, Path]) -> "Serializable": ...


@registry.gner_generators("spacy-gner.HFGenerator.v1")
def make_hf_generator(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    batch_size: int = 16,
    max_batch_tokens: int = 16384,
    num_beams: int = 1,
    copy_aware: bool = True,
    max_length: int = 640,
    prompt_format: Literal["inst", "chat_template", "plain"] = "inst",
    trust_remote_code: bool = False,
    output_format: Optional[Any] = None,
) -> Generator:
    """A Hugging Face seq2seq or causal model (Hub name, local directory, a saved pipeline's
    directory, or "smollm2"), loaded on first use, writing `output_format` (a `gner_formats`
    block; default `spacy-gner.WordTag.v1`); see `spacy_gner.generation.HFGenerator`."""
    from .generation import HFGenerator

    return HFGenerator(
        model, device=device, dtype=dtype, batch_size=batch_size,
        max_batch_tokens=max_batch_tokens, num_beams=num_beams, copy_aware=copy_aware,
        max_length=max_length, prompt_format=prompt_format, trust_remote_code=trust_remote_code,
        output_format=output_format,
    )
