"""Regularise Records for GNER training and write them as GNER JSON lines or spaCy DocBins.

The targets are written in an output format (`spacy_gner.formats`, `--output-format`: GNER's
`word(tag)` by default, or an inline format that nests). DocBins hold each sentence's
outermost entities in `doc.ents` and, where the data has nested entities (GENIA), all of them
in `doc.spans[GOLD_SPANS]`.

Run `python -m training.prepare --help` for the command line.
"""
import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc, DocBin, Span
from spacy.vocab import Vocab

from spacy_gner.component import normalize_descriptions
from spacy_gner.formats import FORMATS as OUTPUT_FORMATS
from spacy_gner.formats import OutputFormat, WordTag, get_format, outermost
from spacy_gner.prompt import build_prompt

from .readers import ENCODING, FORMATS, DataError, Location, PathLike, SpanStats
from .readers import detect_format, read_bio_dirs, read_labels, read_records
from .records import GOLD_SPANS, Record, rename_types
from .variants import Variants, add_head_type, common_heads, load_variants, vary_labels

LabelMap = Mapping[str, Optional[str]]

# CrossNER's raw type names (and UniversalNER's spellings) -> the names GNER prompts with.
# None drops a type: GNER leaves CrossNER's "misc" out.
CROSSNER_LABEL_MAP: Dict[str, Optional[str]] = {
    "academicjournal": "academic journal",
    "astronomicalobject": "astronomical object",
    "chemicalcompound": "chemical compound",
    "chemicalelement": "chemical element",
    "literarygenre": "literary genre",
    "metrics": "metric",
    "misc": None,
    "musicalartist": "musical artist",
    "musicalinstrument": "musical instrument",
    "musicgenre": "music genre",
    "organisation": "organization",
    "politicalparty": "political party",
    "program language": "programming language",
    "programlang": "programming language",
}
PAPER_CAP = 10_000  # sentences per dataset in the GNER paper's training mix
TRAINING_POOL = "training"  # draw external types from all types of the training data


def _rng(seed: int, purpose: str, record: Record) -> random.Random:
    """A random generator for one record, independent of the order records come in."""
    return random.Random(f"{seed}/{purpose}/{record.dataset}/{record.split}/{record.id}")


def normalise_labels(record: Record, label_map: LabelMap) -> Record:
    """Rename entity types by `label_map`; a type mapped to None is dropped (its words become O)."""

    def name(label: str) -> Optional[str]:
        return label_map.get(label, label)

    labels = [new for new in dict.fromkeys(map(name, record.labels)) if new is not None]
    return replace(rename_types(record, name), labels=labels)


def shuffle_labels(record: Record, seed: int) -> Record:
    """The record with its types in a random order, fixed by `seed` and the record's id."""
    labels = list(record.labels)
    _rng(seed, "shuffle", record).shuffle(labels)
    return replace(record, labels=labels)


def present_types(record: Record) -> Record:
    """The record offered only the types of its entities, in order of first mention (an
    entity before those inside it)."""
    spans = sorted(record.spans(), key=lambda span: (span[0], -span[1]))
    labels = dict.fromkeys(label for _, _, label in spans)
    return replace(record, labels=list(labels))


def clashes(label: str, own: Collection[str]) -> bool:
    """Whether `label`, not a type of a dataset whose types are `own`, shares a word with one
    of them ("person" beside "other person", "group" beside "musical group"): the dataset may
    tag such mentions with its own type, so `label` is no safe negative there."""
    words = set(label.split())
    return label not in own and any(words & set(name.split()) for name in own)


def add_external_types(
    record: Record, pool: Sequence[str], count: int, seed: int, own: Collection[str] = ()
) -> Record:
    """The record offered up to `count` more types from `pool`, drawn (by `seed` and the
    record's id) from those it does not offer yet, so absent from the sentence, leaving out
    those that clash with its dataset's types `own` (see `clashes`)."""
    candidates = [label for label in dict.fromkeys(pool)
                  if label not in record.labels and not clashes(label, own)]
    extra = _rng(seed, "external", record).sample(candidates, min(count, len(candidates)))
    return replace(record, labels=record.labels + extra)


def cap_per_dataset(
    records: Sequence[Record],
    cap: Optional[int],
    seed: int,
    caps: Mapping[str, Optional[int]] = {},
) -> List[Record]:
    """At most `cap` records of each dataset (`caps[dataset]` where given; None: all), a sample
    fixed by `seed`, in their input order."""
    indices: Dict[str, List[int]] = {}
    for index, record in enumerate(records):
        indices.setdefault(record.dataset, []).append(index)
    keep = set()
    for dataset, own in indices.items():
        most = caps.get(dataset, cap)
        rng = random.Random(f"{seed}/cap/{dataset}")
        keep.update(own if most is None or len(own) <= most else rng.sample(own, most))
    return [record for index, record in enumerate(records) if index in keep]


def dataset_types(records: Iterable[Record]) -> Dict[str, List[str]]:
    """The types each dataset offers, in order of first appearance."""
    types: Dict[str, Dict[str, None]] = {}
    for record in records:
        types.setdefault(record.dataset, {}).update(dict.fromkeys(record.labels))
    return {dataset: list(labels) for dataset, labels in types.items()}


def exclusion_map(types: Iterable[str]) -> Dict[str, None]:
    """A label map that drops `types`: their words become O, and they are never offered."""
    return {" ".join(name.split()): None for name in types}


def prepare_records(
    records: Iterable[Record],
    *,
    label_map: Optional[LabelMap] = None,
    cap: Optional[int] = None,
    caps: Mapping[str, Optional[int]] = {},
    present_only: Collection[str] = (),
    external: int = 0,
    pool: Union[None, str, Sequence[str]] = None,
    head_rate: float = 0.0,
    variants: Optional[Variants] = None,
    variant_rate: float = 0.0,
    shuffle: bool = False,
    seed: int = 0,
) -> List[Record]:
    """Normalise type names, offer the sentences of the `present_only` datasets only the types
    tagged in them (those with none are left out), cap each dataset (`caps[dataset]`, else
    `cap`), add `external` types absent from each sentence (from `pool`; `TRAINING_POOL`: all
    types of the data; None: its dataset's types), never one that `clashes` with its
    dataset's types, offer a head noun of the sentence's entities as a narrower type at
    `head_rate` (`variants.add_head_type`), rename types to one of their `variants` at
    `variant_rate` and shuffle the type order, in that order."""
    records = [normalise_labels(r, label_map) for r in records] if label_map else list(records)
    own = dataset_types(records)
    if pool == TRAINING_POOL:
        pool = list(dict.fromkeys(label for types in own.values() for label in types))
    heads = common_heads(records) if head_rate > 0 else set()
    if present_only:
        records = [present_types(r) if r.dataset in present_only else r for r in records
                   if r.dataset not in present_only or any(tag != "O" for tag in r.tags)]
    if cap is not None or caps:
        records = cap_per_dataset(records, cap, seed, caps)
    if external:
        records = [
            add_external_types(r, own[r.dataset] if pool is None else pool, external, seed,
                               own[r.dataset])
            for r in records
        ]
    if heads:
        records = [add_head_type(r, heads, head_rate, _rng(seed, "heads", r)) for r in records]
    if variants and variant_rate > 0:
        records = [
            vary_labels(r, variants, variant_rate, _rng(seed, "variants", r)) for r in records
        ]
    if shuffle:
        records = [shuffle_labels(record, seed) for record in records]
    return records


def held_out(records: Iterable[Record], chosen: Iterable[Record]) -> List[Record]:
    """The records that are not among the `chosen` ones (by dataset, split and id): data held
    out from training, e.g. to calibrate on."""
    taken = {(r.dataset, r.split, r.id) for r in chosen}
    return [r for r in records if (r.dataset, r.split, r.id) not in taken]


def parse_cap(value: str) -> Tuple[Optional[str], Optional[int]]:
    """A cap or limit: "N" -> (None, N), "NAME=N" -> (NAME, N); N may be "all" (None), NAME
    a dataset's name or its directory."""
    name, _, count = value.rpartition("=")
    if count != "all" and not count.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected N, all, NAME=N or NAME=all")
    return Path(name).name or None, None if count == "all" else int(count)


# --- writers ------------------------------------------------------------------------------


def _check(record: Record) -> None:
    """Validate a record about to be written, naming it in the error."""
    try:
        record.validate()
    except ValueError as error:
        raise ValueError(f"{record.dataset} {record.id}: {error}") from None


def gner_json(
    record: Record,
    descriptions: Optional[Mapping[str, str]] = None,
    output_format: Optional[OutputFormat] = None,
) -> Dict[str, Any]:
    """A record in the GNER reference schema, with its prompt (explaining the types by
    `descriptions`, where given) and target strings in `output_format` (default GNER's
    word(tag), as the reference writes them). A record with nested entities also holds them
    all as `instance.entities`, [[start, end (exclusive), type], ...]."""
    output_format = output_format or WordTag()
    instance = {
        "id": record.id,
        "words": record.words,
        "labels": record.tags,
        "instruction_inputs": build_prompt(record.words, record.labels, descriptions, output_format),
        "prompt_labels": output_format.target(record.words, record.spans()),
    }
    if record.entities is not None:
        instance["entities"] = [list(span) for span in record.entities]
    return {
        "id": record.id,
        "dataset": record.dataset,
        "split": record.split,
        "label_list": record.labels,
        "instance": instance,
    }


def write_gner_jsonl(
    records: Iterable[Record],
    path: PathLike,
    descriptions: Optional[Mapping[str, str]] = None,
    output_format: Optional[OutputFormat] = None,
) -> int:
    """Write records as GNER JSON lines (see `gner_json`); return how many."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as file:
        for record in records:
            _check(record)
            line = gner_json(record, descriptions, output_format)
            file.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    return count


def record_doc(record: Record, vocab: Vocab) -> Doc:
    """A Doc of the record's words joined by spaces, with its (outermost) entities in
    `doc.ents` and, where the record has nested entities, all of them in
    `doc.spans[GOLD_SPANS]`. spaCy has no empty tokens, so an empty word becomes a whitespace
    token."""
    words = [word or " " for word in record.words]
    doc = Doc(vocab, words=words, spaces=[i < len(words) - 1 for i in range(len(words))])
    doc.ents = [Span(doc, start, end, label) for start, end, label in outermost(record.spans())]
    if record.entities is not None:
        doc.spans[GOLD_SPANS] = [Span(doc, start, end, label) for start, end, label in record.entities]
    return doc


def write_docbin(records: Iterable[Record], path: PathLike) -> int:
    """Write records as a .spacy DocBin of `record_doc`s; return how many."""
    vocab = Vocab()
    doc_bin = DocBin()
    for record in records:
        _check(record)
        doc_bin.add(record_doc(record, vocab))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    doc_bin.to_disk(path)
    return len(doc_bin)


# --- command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.prepare",
        description="Read NER data, regularise it for GNER training, write GNER JSON lines "
        "and/or a spaCy DocBin, and print what was read and written per dataset.",
    )
    add = parser.add_argument
    add("inputs", nargs="+", type=Path, help="BIO dataset directories (or directories of "
        "them), GNER .jsonl, Pile-NER or open-type .json, .spacy files")
    add("--format", default="auto", choices=("auto",) + FORMATS,
        help="input format (default: from the path type, extension or keys)")
    add("--split", action="append", dest="splits", metavar="SPLIT", help="the split file of BIO "
        "directories (repeat to read several, e.g. --split train --split dev), and the split "
        "name of inputs without one (default: train)")
    add("--dataset", metavar="NAME", help="dataset name of BIO directories and of inputs "
        "whose format has none (default: the directory or file name)")
    add("--jsonl", type=Path, metavar="PATH", help="write GNER JSON lines here")
    add("--spacy", type=Path, metavar="PATH", help="write a spaCy DocBin here")
    add("--label-map", metavar="crossner|PATH", help="rename types: 'crossner' (CrossNER's "
        "raw names; misc dropped) or a JSON file {old: new, or null to drop}")
    add("--mix", nargs="+", type=Path, default=[], metavar="PATH", help="type-diverse data, "
        "each sentence offered only the types tagged in it (add negatives with --external): "
        "BIO dataset directories (or directories of them; their train split) or files in "
        "--format (e.g. Pile-NER's .json)")
    add("--cap", action="append", type=parse_cap, default=[], metavar="N|NAME=N", help="at "
        "most N sentences per dataset, a seeded sample (the GNER paper uses "
        f"{PAPER_CAP}); NAME=N for one dataset; repeat for several")
    add("--mix-cap", type=int, metavar="N", help="at most N sentences of each --mix dataset "
        "(default: --cap)")
    add("--external", type=int, default=0, metavar="N", help="offer N more types absent "
        "from each sentence (default: 0)")
    add("--external-pool", metavar=f"PATH|{TRAINING_POOL}", help="file of types, one per "
        f"line, to draw external types from, or '{TRAINING_POOL}': all types of the data "
        "read (default: each dataset's own types)")
    add("--exclude-types", action="append", default=[], metavar="TYPE[,TYPE...]",
        type=lambda value: [name for name in value.split(",") if name.strip()],
        help="types never to train on, comma-separated: their mentions become O and they are "
        "never offered (e.g. the unseen types of a zero-shot test); repeat for more")
    add("--held-out", type=Path, metavar="PATH", help="also write, as GNER JSON lines, "
        "sentences the caps left out (see --held-out-cap), offered types as the training "
        "sentences are (--mix, --external, shuffled): data for training.calibrate")
    add("--held-out-cap", type=int, metavar="N", help="at most N held-out sentences per "
        "dataset (default: all)")
    add("--head-types", type=float, default=0.0, metavar="P", help="with probability P, "
        "offer a head noun of a sentence's entities as a narrower type ('society' beside "
        "'organization' for 'Royal Society'; default: 0)")
    add("--variants", metavar="crossner|PATH", help="other names of types: 'crossner' (the "
        "CrossNER training types') or a JSON file {type: [name, ...]}; see --variant-rate")
    add("--variant-rate", type=float, default=0.0, metavar="P", help="rename each type of a "
        "sentence to one of its --variants with probability P (default: 0)")
    add("--descriptions", type=Path, metavar="PATH", help="a JSON file {type: short "
        "description}: the prompts explain the types that have one (see spacy_gner.build_prompt)")
    add("--output-format", type=format_name, default="word_tag", metavar="|".join(OUTPUT_FORMATS),
        help="what the targets of --jsonl and --held-out look like: GNER's word(tag) (word_tag, "
        "the default, the released checkpoints'), [ words | type ] (bracket) or <type> words "
        "</type> (xml), the two that nest; or a registered gner_formats name. A model trained on "
        "one is packaged with the same (training.package --output-format)")
    add("--shuffle-labels", action="store_true",
        help="shuffle the type order of each sentence (seeded)")
    add("--seed", type=int, default=0, help="seed of all sampling (default: 0)")
    return parser


def format_name(name: str) -> str:
    """An output format named on the command line: a short name (word_tag, bracket, xml) or
    a registered gner_formats name."""
    try:
        get_format(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


def _load_label_map(value: Optional[str]) -> Optional[LabelMap]:
    """The label map named on the command line: "crossner", a JSON file, or none."""
    if value is None:
        return None
    if value == "crossner":
        return CROSSNER_LABEL_MAP
    label_map = json.loads(Path(value).read_text(encoding=ENCODING))
    if not isinstance(label_map, dict) or not all(
        name is None or isinstance(name, str) for name in label_map.values()
    ):
        raise DataError(Location(Path(value)), "a label map is a JSON object {old: new or null}")
    return label_map


def read_descriptions(path: PathLike) -> Dict[str, str]:
    """Type descriptions from a JSON file {type: description}; anything else is a DataError."""
    data = json.loads(Path(path).read_text(encoding=ENCODING))
    try:
        if not isinstance(data, dict):
            raise ValueError("descriptions are a JSON object {type: text}")
        return normalize_descriptions(data)
    except ValueError as error:
        raise DataError(Location(Path(path)), str(error)) from None


def _read_inputs(args: argparse.Namespace, stats: SpanStats) -> Tuple[List[Record], List[str]]:
    """The records of the inputs and of the --mix inputs, and the names of the mixed datasets."""
    mixed = [record for path in args.mix for record in _read(path, args.format, ["train"], None, stats)]
    records = [record for path in args.inputs
               for record in _read(path, args.format, args.splits or ["train"], args.dataset, stats)]
    return mixed + records, list(dict.fromkeys(record.dataset for record in mixed))


def _read(
    path: Path, fmt: str, splits: Sequence[str], dataset: Optional[str], stats: SpanStats
) -> List[Record]:
    """The records of one input: BIO directories (each split), or one file of another format."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "bio":
        return read_bio_dirs(path, splits, dataset)
    if len(splits) > 1:
        raise DataError(Location(path), f"several splits ({', '.join(splits)}) apply "
                        "to BIO directories only; this input is one split")
    return list(read_records(path, fmt, splits[0], dataset, stats))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The command line: read, regularise, write, report counts per dataset."""
    args = _parser().parse_args(argv)
    stats = SpanStats()
    try:
        records, mixed = _read_inputs(args, stats)
        caps = dict(args.cap)
        cap = caps.pop(None, None)
        if args.mix_cap is not None:
            caps = {**dict.fromkeys(mixed, args.mix_cap), **caps}
        label_map = {**(_load_label_map(args.label_map) or {}),
                     **exclusion_map(sum(args.exclude_types, []))}
        pool = args.external_pool
        offers = dict(label_map=label_map, present_only=mixed, external=args.external,
                      pool=read_labels(pool) if pool and pool != TRAINING_POOL else pool,
                      seed=args.seed)
        prepared = prepare_records(
            records,
            cap=cap,
            caps=caps,
            head_rate=args.head_types,
            variants=load_variants(args.variants) if args.variants else None,
            variant_rate=args.variant_rate,
            shuffle=args.shuffle_labels,
            **offers,
        )
        if args.held_out:  # offered types as the training sentences are, with no augmentation
            rest = prepare_records(held_out(records, prepared), cap=args.held_out_cap,
                                   shuffle=True, **offers)
        descriptions = read_descriptions(args.descriptions) if args.descriptions else None
    except (DataError, json.JSONDecodeError, OSError) as error:
        sys.exit(f"error: {error}")
    output_format = get_format(args.output_format)
    if args.jsonl:
        count = write_gner_jsonl(prepared, args.jsonl, descriptions, output_format)
        print(f"wrote {count} records to {args.jsonl}")
    if args.held_out:
        count = write_gner_jsonl(rest, args.held_out, descriptions, output_format)
        print(f"wrote {count} held-out records to {args.held_out}")
    if args.spacy:
        print(f"wrote {write_docbin(prepared, args.spacy)} docs to {args.spacy}")
    if not (args.jsonl or args.spacy):
        print("nothing written: no --jsonl or --spacy given")
    _report(records, prepared if args.jsonl or args.spacy else [], stats)


def _report(records: List[Record], written: List[Record], stats: SpanStats) -> None:
    read = Counter(record.dataset for record in records)
    kept = Counter(record.dataset for record in written)
    width = max([len("dataset")] + [len(name) for name in read])
    print(f"{'dataset':<{width}}  {'read':>8}  {'written':>8}")
    for name in read:
        print(f"{name:<{width}}  {read[name]:>8}  {kept[name]:>8}")
    print(f"{'total':<{width}}  {len(records):>8}  {len(written):>8}")
    if stats.tagged or stats.missing or stats.overlapping:
        print(f"mentions: {stats.tagged} tagged, {stats.missing} not found in the words, "
              f"{stats.overlapping} left out for overlapping a longer one")
        for example in stats.examples:
            print(f"  {example}")


if __name__ == "__main__":
    main()
