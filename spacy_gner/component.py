"""The `gner` pipeline component: Doc → chunks → generator requests → scored entities.

The component does the Doc-level work only: it cuts Docs into chunks that fit the generator
(sentences, or overlapping windows), asks the generator for every chunk's tags, turns them
into entity candidates with confidence scores, merges the chunks' candidates, and writes
them to `doc.spans[spans_key]` (all candidates, with their scores, nested ones included where
the output format nests) and `doc.ents` (a flat selection of those scoring at least
`threshold`). The generator (see `spacy_gner.generators`) owns the model.
"""
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.pipeline.span_ruler import prioritize_existing_ents_filter, prioritize_new_ents_filter
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from spacy.util import SimpleFrozenList, minibatch

from .calibration import Calibration
from .chunking import Chunk, Entity, merge_chunk_entities, plan_chunks
from .formats import entity_score
from .generators import Generator, Loadable, Request, Result, Serializable
from .output import bio_to_spans
from .prompt import build_target

Labels = Union[List[str], Dict[str, str]]
RAW_OUTPUT_KEY = "gner_raw"
MODEL_SCORES = "model_scores"  # span group attr: the uncalibrated scores, where calibrated
DOC_LABELS = "gner_labels"  # Doc extension: the entity types offered for this Doc, in order
SET_ENTS_MODES = ("replace", "keep", "overwrite", "condition")

DEFAULT_CONFIG: Dict[str, Any] = {
    "generator": {"@gner_generators": "spacy-gner.HFGenerator.v1"},
    "labels": [],
    "descriptions": {},
    "window_overlap": 32,
    "set_ents_mode": "replace",
    "threshold": 0.0,
    "spans_key": "gner",
    "store_raw": False,
    "scorer": {"@scorers": "spacy.ner_scorer.v1"},
}

if not Doc.has_extension(DOC_LABELS):
    Doc.set_extension(DOC_LABELS, default=None)


@Language.factory(
    "gner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config=DEFAULT_CONFIG,
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_gner(
    nlp: Language,
    name: str,
    generator: Generator,
    labels: Labels,
    descriptions: Dict[str, str],
    window_overlap: int,
    set_ents_mode: Literal["replace", "keep", "overwrite", "condition"],
    threshold: float,
    spans_key: str,
    store_raw: bool,
    scorer: Optional[Callable],
) -> "GNER":
    """Create a `gner` component. Nothing is loaded until first use or `initialize`."""
    return GNER(
        nlp.vocab, generator, name=name, labels=labels, descriptions=descriptions,
        window_overlap=window_overlap,
        set_ents_mode=set_ents_mode, threshold=threshold, spans_key=spans_key,
        store_raw=store_raw, scorer=scorer,
    )


def normalize_labels(labels: Labels) -> Dict[str, str]:
    """Map entity labels set on the Doc to the type names used in the prompt.

    A list names both at once; a mapping gives {doc label: prompt name}. Duplicates in a list
    are dropped with a warning; two Doc labels for one prompt name are an error.
    """
    pairs = list(labels.items()) if isinstance(labels, dict) else [(l, l) for l in labels]
    mapping: Dict[str, str] = {}
    names: Dict[str, str] = {}
    for label, name in pairs:
        if not isinstance(label, str) or not isinstance(name, str):
            raise ValueError(f"gner labels must be strings, got {label!r}: {name!r}")
        label, name = label.strip(), " ".join(name.split())
        if not label or not name:
            raise ValueError(f"gner labels must not be empty, got {label!r}: {name!r}")
        if label in mapping:
            warnings.warn(f"gner: duplicate label {label!r} ignored")
            continue
        if name in names:
            raise ValueError(
                f"gner labels {names[name]!r} and {label!r} both use the prompt name {name!r}"
            )
        mapping[label] = name
        names[name] = label
    return mapping


def normalize_descriptions(descriptions: Dict[str, str]) -> Dict[str, str]:
    """{prompt name: description}, whitespace collapsed; empty descriptions are an error."""
    normal = {}
    for name, text in descriptions.items():
        if not isinstance(name, str) or not isinstance(text, str) or not " ".join(text.split()):
            raise ValueError(f"gner descriptions map type names to text, got {name!r}: {text!r}")
        normal[" ".join(name.split())] = " ".join(text.split())
    return normal


class GNER(Pipe):
    """Generative NER with a GNER model (Ding et al., 2024): every word of a sentence is
    rewritten with its BIO tag, and the tags become entities with confidence scores."""

    def __init__(
        self,
        vocab: Any,
        generator: Generator,
        name: str = "gner",
        *,
        labels: Optional[Labels] = None,
        descriptions: Optional[Dict[str, str]] = None,
        window_overlap: int = DEFAULT_CONFIG["window_overlap"],
        set_ents_mode: str = DEFAULT_CONFIG["set_ents_mode"],
        threshold: float = DEFAULT_CONFIG["threshold"],
        spans_key: str = DEFAULT_CONFIG["spans_key"],
        store_raw: bool = False,
        scorer: Optional[Callable] = None,
    ) -> None:
        if set_ents_mode not in SET_ENTS_MODES:
            raise ValueError(f"Unknown set_ents_mode {set_ents_mode!r}: expected one of {SET_ENTS_MODES}")
        if window_overlap < 0:
            raise ValueError(f"window_overlap must not be negative, got {window_overlap}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a probability between 0 and 1, got {threshold}")
        if not isinstance(generator, Generator):
            raise TypeError(f"gner's generator must be a spacy_gner.Generator, got {generator!r}")
        self.vocab = vocab
        self.generator = generator
        self.name = name
        self._labels = normalize_labels(labels or [])
        self.descriptions = normalize_descriptions(descriptions or {})
        self.window_overlap = window_overlap
        self.set_ents_mode = set_ents_mode
        self.threshold = threshold
        self.spans_key = spans_key
        self.store_raw = store_raw
        self.scorer = scorer
        self.calibration: Optional[Calibration] = None

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self._labels)

    @property
    def label_names(self) -> Dict[str, str]:
        """{Doc label: prompt name} for every label."""
        return dict(self._labels)

    def add_label(self, label: str, name: Optional[str] = None) -> int:
        """Add an entity label, named `name` in the prompt (default: the label itself)."""
        if label in self._labels:
            return 0
        self._labels = normalize_labels({**self._labels, label: name or label})
        return 1

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Labels] = None,
    ) -> None:
        """Set the labels (given, else configured, else the gold entity labels, named in
        lower case in the prompt) and load the model."""
        if labels is not None:
            self._labels = normalize_labels(labels)
        elif not self._labels:
            gold = sorted({ent.label_ for eg in get_examples() for ent in eg.reference.ents})
            self._labels = normalize_labels({l: l.lower().replace("_", " ") for l in gold})
        if isinstance(self.generator, Loadable):
            self.generator.load()

    def __call__(self, doc: Doc) -> Doc:
        return next(self.pipe([doc]))

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size):
            try:
                self.set_annotations(docs, self.predict(docs))
            except Exception as error:
                error_handler(self.name, self, docs, error)
            yield from docs

    def _names(self, doc: Doc) -> List[str]:
        """The type names offered for a Doc: its own (`doc._.gner_labels`), else the labels."""
        own = doc._.get(DOC_LABELS)
        if own:
            return [" ".join(str(name).split()) for name in own]
        if not self._labels:
            raise ValueError(
                f"The '{self.name}' component has no labels. Set them in its config "
                '(labels = ["person", "location"], or a mapping {"PERSON": "person"}), '
                "with add_label, by nlp.initialize on examples with gold entities, or per Doc "
                f"in doc._.{DOC_LABELS}."
            )
        return list(self._labels.values())

    def _fixed(self, doc: Doc, names: Sequence[str]) -> Optional[List[Optional[str]]]:
        """In "condition" mode: per token, the tag the Doc's entities force (None: the model's
        choice). An entity of an offered type is forced as its tags; one of another type
        as O, so its words are left as they are."""
        if self.set_ents_mode != "condition" or not doc.ents:
            return None
        fixed: List[Optional[str]] = [None] * len(doc)
        for ent in doc.ents:
            name = self._labels.get(ent.label_, ent.label_)
            if name in names:
                fixed[ent.start : ent.end] = [f"B-{name}"] + [f"I-{name}"] * (len(ent) - 1)
            else:
                fixed[ent.start : ent.end] = ["O"] * len(ent)
        return fixed

    def _requests(self, doc: Doc) -> Tuple[List[Chunk], List[Request]]:
        """The Doc's chunks (fitting the generator's budget) and a request for each."""
        names = self._names(doc)
        content = [t.i for t in doc if not t.is_space]
        costs = [0] * len(doc)
        word_costs, budget = self.generator.costs([doc[i].text for i in content], names)
        for i, cost in zip(content, word_costs):
            costs[i] = cost
        chunks = plan_chunks(doc, costs, budget, self.window_overlap)
        fixed = self._fixed(doc, names)
        described = tuple((name, self.descriptions[name]) for name in names if name in self.descriptions)
        requests = [
            Request(
                tuple(doc[i].text for i in chunk.tokens), tuple(names),
                tuple(fixed[i] for i in chunk.tokens) if fixed else (), described,
            )
            for chunk in chunks
        ]
        return chunks, requests

    def predict(self, docs: Iterable[Doc]) -> List[Dict[str, Any]]:
        """Entity candidates `Entity(start, end, prompt name, score)` and the raw results of
        each Doc's chunks."""
        docs = list(docs)
        plans = [self._requests(doc) for doc in docs]
        requests = [request for _, doc_requests in plans for request in doc_requests]
        results = iter(self.generator(requests) if requests else [])
        predictions = []
        for chunks, doc_requests in plans:
            raw, chunk_entities, nested = [], [], False
            for chunk, request in zip(chunks, doc_requests):
                result = self._checked(next(results), request)
                nested = nested or result.spans is not None
                chunk_entities.append(_entities(result))
                raw.append({
                    "start": chunk.tokens[0], "end": chunk.tokens[-1] + 1,
                    "output": result.text if result.text is not None
                    else build_target(request.words, result.tags),
                    "tags": list(result.tags),
                    "probs": None if result.probs is None else list(result.probs),
                    **({} if result.spans is None else {"spans": [list(span) for span in result.spans]}),
                })
            predictions.append({"entities": merge_chunk_entities(chunks, chunk_entities, nested),
                                "raw": raw})
        return predictions

    def _checked(self, result: Result, request: Request) -> Result:
        """The generator's result, if it keeps the contract: a tag allowed for every word."""
        if len(result.tags) != len(request.words) or (
            result.probs is not None and len(result.probs) != len(request.words)
        ):
            raise ValueError(f"{self.name}: the generator gave {len(result.tags)} tags for "
                             f"{len(request.words)} words: {request.words!r}")
        bad = [tag for k, tag in enumerate(result.tags) if tag not in request.allowed(k)]
        bad += [span for span in result.spans or ()
                if span[2] not in request.labels or not 0 <= span[0] < span[1] <= len(request.words)]
        if bad:
            raise ValueError(f"{self.name}: the generator gave tags or entities {bad!r}, which the "
                             f"request does not allow (types {request.labels!r})")
        return result

    def set_annotations(self, docs: Iterable[Doc], predictions: List[Dict[str, Any]]) -> None:
        """Every candidate, with its score (calibrated where the component has a
        `calibration`; the model's own then in attrs["model_scores"]), in
        `doc.spans[spans_key]`; those scoring at least `threshold` (or unscored) in
        `doc.ents`, by `set_ents_mode`. Where candidates nest, `doc.ents` takes the
        outermost (`spacy.util.filter_spans`: the longest of overlapping spans)."""
        labels = {name: label for label, name in self._labels.items()}
        calibrate = self.calibration
        for doc, prediction in zip(docs, predictions):
            entities = prediction["entities"]
            candidates = [Span(doc, e.start, e.end, label=labels.get(e.label, e.label)) for e in entities]
            scores = [e.score for e in entities]
            attrs: Dict[str, Any] = {"scores": scores}
            if calibrate is not None:
                attrs = {"scores": calibrate.scores(scores), MODEL_SCORES: scores}
                scores = attrs["scores"]
            doc.spans[self.spans_key] = SpanGroup(
                doc, name=self.spans_key, spans=candidates, attrs=attrs
            )
            spans = util.filter_spans([span for span, score in zip(candidates, scores)
                                       if score is None or score >= self.threshold])
            if self.set_ents_mode in ("keep", "condition"):
                spans = prioritize_existing_ents_filter(doc.ents, spans)
            elif self.set_ents_mode == "overwrite":
                spans = prioritize_new_ents_filter(doc.ents, spans)
            doc.set_ents(spans, default="outside")
            if self.store_raw:
                doc.user_data[RAW_OUTPUT_KEY] = prediction["raw"]

    # Serialisation: the labels and calibration as "cfg", the generator's files under "model".

    def _cfg(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"labels": [[label, name] for label, name in self._labels.items()]}
        if self.calibration is not None:
            cfg["calibration"] = self.calibration.to_list()
        return cfg

    def _set_cfg(self, cfg: Dict[str, Any]) -> None:
        self._labels = normalize_labels({label: name for label, name in cfg["labels"]})
        calibration = cfg.get("calibration")
        self.calibration = None if calibration is None else Calibration.from_list(calibration)

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        serializers: Dict[str, Callable[[Path], None]] = {
            "cfg": lambda p: srsly.write_json(p, self._cfg()),
        }
        if isinstance(self.generator, Serializable):
            serializers["model"] = self.generator.to_disk
        util.to_disk(path, serializers, exclude)

    def from_disk(
        self, path: Union[str, Path], *, exclude: Iterable[str] = SimpleFrozenList()
    ) -> "GNER":
        deserializers: Dict[str, Callable[[Path], Any]] = {
            "cfg": lambda p: self._set_cfg(srsly.read_json(p)),
        }
        if isinstance(self.generator, Serializable):
            deserializers["model"] = lambda p: self.generator.from_disk(p) if p.is_dir() else None
        util.from_disk(path, deserializers, exclude)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = SimpleFrozenList()) -> bytes:
        serializers: Dict[str, Callable[[], bytes]] = {
            "cfg": lambda: srsly.json_dumps(self._cfg()),
        }
        if isinstance(self.generator, Serializable):
            serializers["model"] = lambda: _directory_bytes(self.generator.to_disk)
        return util.to_bytes(serializers, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = SimpleFrozenList()) -> "GNER":
        deserializers: Dict[str, Callable[[bytes], Any]] = {
            "cfg": lambda b: self._set_cfg(srsly.json_loads(b)),
        }
        if isinstance(self.generator, Serializable):
            deserializers["model"] = lambda b: _from_directory_bytes(b, self.generator.from_disk)
        util.from_bytes(bytes_data, deserializers, exclude)
        return self


def _entities(result: Result) -> List[Entity]:
    """A chunk's entity candidates: a nesting format's scored entities, else the entities of
    the tags, each scored by its words' tag probabilities (`entity_score`)."""
    if result.spans is not None:
        return [Entity(start, end, name, score) for start, end, name, score in result.spans]
    return [Entity(start, end, name, None if result.probs is None else entity_score(result.probs[start:end]))
            for start, end, name in bio_to_spans(result.tags)]


def _directory_bytes(write: Callable[[Path], None]) -> bytes:
    """The files `write` puts in a directory, as bytes ({relative path: content})."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        return srsly.msgpack_dumps({str(f.relative_to(tmp)): f.read_bytes()
                                    for f in Path(tmp).rglob("*") if f.is_file()})


def _from_directory_bytes(data: bytes, read: Callable[[Path], Any]) -> None:
    """Write the files of `_directory_bytes` to a directory and `read` it."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in srsly.msgpack_loads(data).items():
            target = Path(tmp, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        read(Path(tmp))
