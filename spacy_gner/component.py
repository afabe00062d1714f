"""The `gner` pipeline component: Doc → GNER prompts → generation → matching → doc.ents."""
import tempfile
import warnings
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import srsly
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.pipeline.span_ruler import (
    prioritize_existing_ents_filter,
    prioritize_new_ents_filter,
)
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import SimpleFrozenList, ensure_path, minibatch

from .chunking import Chunk, merge_chunk_entities, plan_chunks
from .matching import hierarchical_match
from .output import bio_to_spans, extract
from .prompt import Request

Labels = Union[List[str], Dict[str, str]]
Generator = Callable[[List[Request]], List[str]]
RAW_OUTPUT_KEY = "gner_raw"

DEFAULT_CONFIG: Dict[str, Any] = {
    "model": "dyyyyyyyy/GNER-T5-base",
    "labels": [],
    "generator": None,
    "device": "auto",
    "dtype": "auto",
    "batch_size": 16,
    "max_batch_tokens": 16384,
    "num_beams": 1,
    "copy_aware": True,
    "max_length": 640,
    "window_overlap": 32,
    "prompt_format": "inst",
    "trust_remote_code": False,
    "set_ents_mode": "replace",
    "store_raw": False,
    "scorer": {"@scorers": "spacy.ner_scorer.v1"},
}


@Language.factory(
    "gner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config=DEFAULT_CONFIG,
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_gner(
    nlp: Language,
    name: str,
    model: str,
    labels: Labels,
    generator: Optional[Generator],
    device: str,
    dtype: str,
    batch_size: int,
    max_batch_tokens: int,
    num_beams: int,
    copy_aware: bool,
    max_length: int,
    window_overlap: int,
    prompt_format: Literal["inst", "chat_template", "plain"],
    trust_remote_code: bool,
    set_ents_mode: Literal["replace", "keep", "overwrite"],
    store_raw: bool,
    scorer: Optional[Callable],
) -> "GNER":
    """Create a `gner` component. Nothing is loaded until first use or `initialize`."""
    return GNER(
        nlp.vocab,
        name=name,
        model=model,
        labels=labels,
        generator=generator,
        generation={
            "device": device,
            "dtype": dtype,
            "batch_size": batch_size,
            "max_batch_tokens": max_batch_tokens,
            "num_beams": num_beams,
            "copy_aware": copy_aware,
            "prompt_format": prompt_format,
            "trust_remote_code": trust_remote_code,
        },
        max_length=max_length,
        window_overlap=window_overlap,
        set_ents_mode=set_ents_mode,
        store_raw=store_raw,
        scorer=scorer,
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


class GNER(Pipe):
    """Generative NER with a GNER model (Ding et al., 2024): every word of a sentence is
    rewritten with its BIO tag, and the tags are matched back onto the Doc's tokens."""

    def __init__(
        self,
        vocab: Any,
        name: str = "gner",
        *,
        model: str = DEFAULT_CONFIG["model"],
        labels: Optional[Labels] = None,
        generator: Optional[Generator] = None,
        generation: Optional[Dict[str, Any]] = None,
        max_length: int = DEFAULT_CONFIG["max_length"],
        window_overlap: int = DEFAULT_CONFIG["window_overlap"],
        set_ents_mode: str = DEFAULT_CONFIG["set_ents_mode"],
        store_raw: bool = False,
        scorer: Optional[Callable] = None,
    ) -> None:
        if set_ents_mode not in ("replace", "keep", "overwrite"):
            raise ValueError(f"Unknown set_ents_mode {set_ents_mode!r}")
        if max_length < 1 or window_overlap < 0:
            raise ValueError("max_length must be positive and window_overlap not negative")
        self.vocab = vocab
        self.name = name
        self.model_name = model
        self._labels = normalize_labels(labels or [])
        self._generator = generator
        self.generation = dict(generation or {})
        self.max_length = max_length
        self.window_overlap = window_overlap
        self.set_ents_mode = set_ents_mode
        self.store_raw = store_raw
        self.scorer = scorer

    @property
    def generator(self) -> Generator:
        """The text generator, a callable from Requests to output texts; by default a Hugging
        Face model named by `model`."""
        if self._generator is None:
            from .generation import HFGenerator

            self._generator = HFGenerator(self.model_name, **self.generation)
        return self._generator

    @property
    def tokenizer(self) -> Any:
        return getattr(self.generator, "tokenizer", None)

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
        load = getattr(self.generator, "load", None)
        if load is not None:
            load()

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

    def _require_labels(self) -> List[str]:
        if not self._labels:
            raise ValueError(
                f"The '{self.name}' component has no labels. Set them in its config "
                '(labels = ["person", "location"], or a mapping {"PERSON": "person"}), '
                "with add_label, or by nlp.initialize on examples with gold entities."
            )
        return list(self._labels.values())

    def _token_counts(self, texts: Sequence[str]) -> List[int]:
        tokenizer = self.tokenizer
        if tokenizer is None or not texts:
            return [1] * len(texts)
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [max(1, len(i)) for i in ids]

    def _plan(self, doc: Doc, names: List[str]) -> Tuple[List[Chunk], List[int]]:
        """The Doc's chunks and, per chunk, the new tokens its output may need."""
        costs = [0] * len(doc)
        content = [t.i for t in doc if not t.is_space]
        o_tag, widest_tag = self._token_counts(["(O)", max((f"(I-{n})" for n in names), key=len)])
        for i, count in zip(content, self._token_counts([doc[i].text for i in content])):
            costs[i] = count + o_tag
        chunks = plan_chunks(doc, costs, self.max_length, self.window_overlap)
        limits = [sum(costs[i] - o_tag + widest_tag for i in c.tokens) + 8 for c in chunks]
        return chunks, limits

    def predict(self, docs: Iterable[Doc]) -> List[Dict[str, Any]]:
        """Entities `(start, end, prompt name)` and, per chunk, the raw output and its
        matched tags (one per word sent, before BIO repair) for each Doc."""
        docs = list(docs)
        names = self._require_labels()
        plans = [self._plan(doc, names) for doc in docs]
        requests = [
            Request(tuple(doc[i].text for i in chunk.tokens), tuple(names), limit)
            for doc, (chunks, limits) in zip(docs, plans)
            for chunk, limit in zip(chunks, limits)
        ]
        outputs = iter(self.generator(requests) if requests else [])
        tokenizer = self.tokenizer
        predictions = []
        for doc, (chunks, _) in zip(docs, plans):
            raw, chunk_entities = [], []
            for chunk in chunks:
                text = next(outputs)
                words = [doc[i].text for i in chunk.tokens]
                pred_words, pred_tags = extract(text, names)
                tags = hierarchical_match(words, pred_words, pred_tags, tokenizer)
                chunk_entities.append(bio_to_spans(tags))
                raw.append({"start": chunk.tokens[0], "end": chunk.tokens[-1] + 1,
                            "output": text, "tags": tags})
            entities = merge_chunk_entities(chunks, chunk_entities)
            predictions.append({"entities": entities, "raw": raw})
        return predictions

    def set_annotations(self, docs: Iterable[Doc], predictions: List[Dict[str, Any]]) -> None:
        labels = {name: label for label, name in self._labels.items()}
        for doc, prediction in zip(docs, predictions):
            spans = [
                Span(doc, start, end, label=labels[name])
                for start, end, name in prediction["entities"]
            ]
            if self.set_ents_mode == "keep":
                spans = prioritize_existing_ents_filter(doc.ents, spans)
            elif self.set_ents_mode == "overwrite":
                spans = prioritize_new_ents_filter(doc.ents, spans)
            doc.set_ents(spans, default="outside")
            if self.store_raw:
                doc.user_data[RAW_OUTPUT_KEY] = prediction["raw"]

    # Serialisation: the labels as "cfg", the model and tokenizer under "model".

    def _cfg(self) -> Dict[str, Any]:
        return {"labels": [[label, name] for label, name in self._labels.items()]}

    def _set_cfg(self, cfg: Dict[str, Any]) -> None:
        self._labels = normalize_labels({label: name for label, name in cfg["labels"]})

    def _saves_model(self, exclude: Iterable[str]) -> bool:
        return "model" not in exclude and hasattr(self.generator, "to_disk")

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        path = ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "cfg", self._cfg())
        if self._saves_model(exclude):
            self.generator.to_disk(path / "model")

    def from_disk(
        self, path: Union[str, Path], *, exclude: Iterable[str] = SimpleFrozenList()
    ) -> "GNER":
        path = ensure_path(path)
        self._set_cfg(srsly.read_json(path / "cfg"))
        if (path / "model").is_dir() and "model" not in exclude and hasattr(self.generator, "from_disk"):
            self.generator.from_disk(path / "model")
        return self

    def to_bytes(self, *, exclude: Iterable[str] = SimpleFrozenList()) -> bytes:
        files: Dict[str, bytes] = {}
        if self._saves_model(exclude):
            with tempfile.TemporaryDirectory() as tmp:
                self.generator.to_disk(tmp)
                files = {
                    str(f.relative_to(tmp)): f.read_bytes() for f in Path(tmp).rglob("*") if f.is_file()
                }
        return srsly.msgpack_dumps({"cfg": self._cfg(), "model": files})

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = SimpleFrozenList()) -> "GNER":
        data = srsly.msgpack_loads(bytes_data)
        self._set_cfg(data["cfg"])
        if data["model"] and "model" not in exclude and hasattr(self.generator, "from_disk"):
            with tempfile.TemporaryDirectory() as tmp:
                for name, content in data["model"].items():
                    target = Path(tmp, name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                self.generator.from_disk(tmp)
        return self
