"""Evaluate `gner` pipelines (or Hugging Face model directories) on NER test sets.

    python -m training.evaluate training/pipelines/gner-default --data assets/crossner
    python -m training.evaluate smollm2 MODEL_DIR --name base --name fine-tuned \\
        --data assets/crossner/crossner_ai test.jsonl --limit 50 --output metrics.json

Data: BIO dataset directories in the GNER layout (`<split>.txt` + `label.txt`), directories of
them, GNER .jsonl files, or files of the other formats of `training.readers` (GENIA's nested
.jsonl, ...). Every sentence goes through the whole pipeline, its gner component offered the
sentence's types in the sentence's order: as the reference evaluates, shuffled per sentence
with `--seed` (`--label-order fixed`: label.txt's or the file's order), but a GNER record's own
`label_list` order (`doc._.gner_labels`, so sentences of every order share batches). Scores per
dataset and as the unweighted average over datasets: the GNER paper's F1
(`spacy_gner.metrics.paper_f1`, with a bootstrap 95% interval) on the tags the component
matched to each word, as they are (no BIO repair); spaCy's exact-span P/R/F, with per-type
scores, on `doc.ents`; and, from the entity candidates' confidence scores
(`doc.spans[spans_key]`), exact-span P/R/F at thresholds 0.1 ... 0.9 and the expected
calibration error (of a calibrated pipeline's model scores too). Where the data has nested
entities (`Record.entities`), exact-span P/R/F over all of them and over the inner ones alone
(`nested_scores`). Written: a metrics JSON, markdown tables laid out as the paper's Table 2 (a
row per model, a column per dataset, then the average) with a threshold table (and, for
nested data, a nested table) per model, and a PNG plot of precision against recall by
threshold and a reliability diagram per model.
"""
import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import Example

from spacy_gner import GNER
from spacy_gner.component import DOC_LABELS, MODEL_SCORES, RAW_OUTPUT_KEY
from spacy_gner.metrics import bootstrap_interval, calibration, paper_counts, prf, threshold_scores
from spacy_gner.pipeline import gner_pipes, load_pipeline
from spacy_gner.prompt import PROMPT_FORMATS

from .prepare import cap_per_dataset, format_name, parse_cap, read_descriptions, record_doc
from .prepare import shuffle_labels
from .readers import bio_tags, detect_format, read_bio_dirs, read_records
from .records import GOLD_SPANS, Record, Span

METRICS = {"paper": "GNER paper F1", "spacy": "spaCy exact-span F1"}
LABEL_ORDERS = ("shuffled", "fixed")
Dataset = Tuple[str, List[Record]]  # (name, sentences)
Scores = Dict[str, Any]


def load_datasets(
    paths: Sequence[Path],
    split: str = "test",
    limit: Optional[int] = None,
    seed: int = 0,
    label_order: str = "shuffled",
    report: Callable[[str], None] = print,
    limits: Mapping[str, Optional[int]] = {},
) -> List[Dataset]:
    """The datasets of BIO directories (or directories of them), GNER .jsonl files and files
    of the other formats `training.readers.detect_format` tells (GENIA, ...), each cut to a
    seeded sample of `limit` sentences (`limits[name]` where given; None: all).

    Sentences offer their data's types (label.txt's for BIO directories), in an order
    shuffled per sentence with `seed` (`label_order` "shuffled", the reference's protocol) or
    in file order ("fixed"); GNER records offer their own `label_list`, in its order. Split
    files with no sentence are reported through `report`.
    """
    if label_order not in LABEL_ORDERS:
        raise ValueError(f"Unknown label_order {label_order!r}: expected one of {LABEL_ORDERS}")
    records: List[Record] = []
    for path in map(Path, paths):
        fmt = detect_format(path)
        read = (read_bio_dirs(path, [split], report=report) if fmt == "bio"
                else list(read_records(path, fmt, split)))
        if label_order == "shuffled" and fmt != "gner":
            read = [shuffle_labels(record, seed) for record in read]
        records.extend(read)
    unknown = set(limits) - {record.dataset for record in records}
    if unknown:
        raise ValueError(f"limits name datasets that are not in the data: {sorted(unknown)}")
    records = cap_per_dataset(records, limit, seed, limits)
    return [(name, [r for r in records if r.dataset == name])
            for name in dict.fromkeys(r.dataset for r in records)]


def gner_component(nlp: Language) -> GNER:
    found = gner_pipes(nlp)
    if len(found) != 1:
        raise ValueError(f"expected one gner component, found {len(found)}")
    return found[0]


def predict(nlp: Language, records: Sequence[Record]) -> List[Example]:
    """(predicted, gold) Examples of the records, in their order, predicted by the whole
    pipeline with its gner component offered each record's types in the record's order
    (`doc._.gner_labels`) and storing its raw matched tags."""
    gner_component(nlp).store_raw = True
    golds = [record_doc(record, nlp.vocab) for record in records]
    inputs = []
    for record, gold in zip(records, golds):
        doc = Doc(nlp.vocab, words=[t.text for t in gold], spaces=[bool(t.whitespace_) for t in gold])
        doc._.set(DOC_LABELS, list(record.labels))
        inputs.append(doc)
    return [Example(predicted, gold) for predicted, gold in zip(nlp.pipe(inputs), golds)]


def raw_tags(doc: Doc) -> List[str]:
    """One tag per token of a Doc annotated by a gner component with `store_raw`: the tags
    it matched to the words it sent, as they are (no BIO repair), O for the tokens it did not
    send (whitespace). Where two windows of a long sentence overlap, the first half of the
    overlap keeps the earlier window's tags, as the component splits their entities."""
    if RAW_OUTPUT_KEY not in doc.user_data:
        raise ValueError(f"no doc.user_data[{RAW_OUTPUT_KEY!r}]: the gner component stores its "
                         "matched tags there with store_raw = true")
    tags = ["O"] * len(doc)
    previous_end = 0
    for chunk in doc.user_data[RAW_OUTPUT_KEY]:
        sent = [i for i in range(chunk["start"], chunk["end"]) if not doc[i].is_space]
        if len(sent) != len(chunk["tags"]):
            raise ValueError(f"{len(chunk['tags'])} raw tags for the {len(sent)} words sent "
                             f"from tokens {chunk['start']} to {chunk['end']}")
        overlap = sum(i < previous_end for i in sent)
        for i, tag in list(zip(sent, chunk["tags"]))[overlap // 2:]:
            tags[i] = tag
        previous_end = chunk["end"]
    return tags


def score(examples: Sequence[Example], spans_key: str = "gner", threshold: float = 0.0) -> Scores:
    """The metrics of predicted Examples, as fractions: the paper's on the raw matched tags
    (`raw_tags`), with a bootstrap 95% interval of its F1; spaCy's on the predicted
    `doc.ents`; where the candidates in `doc.spans[spans_key]` have scores, exact-span
    P/R/F by threshold and calibration (a candidate is correct when a gold entity, nested
    ones included, has its span and label); and where the gold has nested entities,
    `nested_scores` of the candidates scoring at least `threshold` (the component's)."""
    counts = [paper_counts([t.text for t in eg.reference], bio_tags(eg.reference),
                           raw_tags(eg.predicted)) for eg in examples]
    paper = {**prf(counts), "f1_interval": list(bootstrap_interval(counts))}
    spans = Scorer.score_spans(examples, "ents")
    per_type = {label: {"precision": s["p"], "recall": s["r"], "f1": s["f"]}
                for label, s in (spans["ents_per_type"] or {}).items()}
    spacy_scores = {"precision": spans["ents_p"] or 0.0, "recall": spans["ents_r"] or 0.0,
                    "f1": spans["ents_f"] or 0.0, "per_type": per_type}
    scores: Scores = {"sentences": len(examples), "paper": paper, "spacy": spacy_scores}
    candidates = [scored_candidates(eg, spans_key) for eg in examples]
    if candidates and all(scored is not None for _, scored in candidates):
        thresholds = threshold_scores(candidates)
        scores["thresholds"] = {f"{t:.1f}": values for t, values in thresholds.items()}
        scores["calibration"] = calibration(correctness(candidates))
        model = [scored_candidates(eg, spans_key, MODEL_SCORES) for eg in examples]
        if any(scored for _, scored in model) and all(scored is not None for _, scored in model):
            scores["model_calibration"] = calibration(correctness(model))
    nested = nested_scores(examples, spans_key, threshold)
    if nested is not None:
        scores["nested"] = nested
    return scores


def gold_spans(doc: Doc) -> Set[Span]:
    """The gold entities of a reference Doc: all of them, nested ones included, where
    `doc.spans[GOLD_SPANS]` holds them, else `doc.ents`."""
    spans = doc.spans[GOLD_SPANS] if GOLD_SPANS in doc.spans else doc.ents
    return {(span.start, span.end, span.label_) for span in spans}


def predicted_spans(doc: Doc, spans_key: str, threshold: float = 0.0) -> Set[Span]:
    """The entities a gner component predicted, nested ones included: its candidates in
    `doc.spans[spans_key]` scoring at least `threshold` (or unscored), as it selects
    `doc.ents` from them; `doc.ents` where it wrote no candidates."""
    group = doc.spans.get(spans_key)
    if group is None:
        return {(span.start, span.end, span.label_) for span in doc.ents}
    scores = group.attrs.get("scores", [None] * len(group))
    return {(span.start, span.end, span.label_) for span, score in zip(group, scores)
            if score is None or score >= threshold}


def inner(spans: Set[Span]) -> Set[Span]:
    """The spans that lie inside another, longer span of the set."""
    return {(start, end, label) for start, end, label in spans
            if any(s <= start and end <= e and e - s > end - start for s, e, _ in spans)}


def nested_scores(
    examples: Sequence[Example], spans_key: str = "gner", threshold: float = 0.0
) -> Optional[Scores]:
    """Exact-span micro P/R/F over all entities, nested ones included ("all"), and over the
    inner ones alone ("inner": gold entities inside another gold entity against predicted
    ones inside another predicted one), of the `predicted_spans` against the `gold_spans`;
    None unless some reference Doc has nested gold entities (`doc.spans[GOLD_SPANS]`)."""
    if not any(GOLD_SPANS in eg.reference.spans for eg in examples):
        return None
    pairs = [(gold_spans(eg.reference), predicted_spans(eg.predicted, spans_key, threshold))
             for eg in examples]
    return {"all": prf(_span_counts(pairs)),
            "inner": prf(_span_counts((inner(gold), inner(pred)) for gold, pred in pairs))}


def _span_counts(pairs: Iterable[Tuple[Set[Span], Set[Span]]]) -> List[Tuple[int, int, int]]:
    """(correct, predicted, gold) of each (gold, predicted) pair of span sets."""
    return [(len(gold & pred), len(pred), len(gold)) for gold, pred in pairs]


def correctness(candidates: Sequence[Tuple[set, List[Tuple[Any, float]]]]) -> List[Tuple[float, bool]]:
    """(score, correct) of every candidate of `scored_candidates` results: correct when a
    gold entity has its span and label."""
    return [(score, span in gold) for gold, scored in candidates for span, score in scored]


def scored_candidates(
    example: Example, spans_key: str, attr: str = "scores"
) -> Tuple[set, Optional[List[Tuple[Any, float]]]]:
    """The gold spans of an Example (`gold_spans`) and its candidates scored by `attrs[attr]`
    of the span group (None if any is unscored)."""
    gold = gold_spans(example.reference)
    group = example.predicted.spans.get(spans_key)
    if group is None:
        return gold, []
    scores = group.attrs.get(attr, [None] * len(group))
    if any(score is None for score in scores):
        return gold, None
    return gold, [((s.start, s.end, s.label_), score) for s, score in zip(group, scores)]


def average(per_dataset: Dict[str, Scores]) -> Scores:
    """The unweighted mean over datasets of each metric's precision, recall and F1."""
    count = len(per_dataset)
    return {metric: {key: sum(s[metric][key] for s in per_dataset.values()) / count
                     for key in ("precision", "recall", "f1")}
            for metric in METRICS} if count else {}


def evaluate(
    models: Dict[str, str], datasets: Sequence[Dataset], device: Optional[str] = None,
    prompt_format: Optional[str] = None, descriptions: Optional[Dict[str, str]] = None,
    output_format: Optional[str] = None,
) -> Scores:
    """{model name: {"model", "datasets": {name: scores}, "average"}} for each named model: a
    saved pipeline directory as it is, or a model in a new pipeline (`load_pipeline`), with
    `device`, `prompt_format`, `output_format` (a format's short or registered name) and
    type `descriptions` where given."""
    results = {}
    for name, model in models.items():
        nlp = load_pipeline(model, device=device, prompt_format=prompt_format,
                            output_format=output_format)
        component = gner_component(nlp)
        if descriptions is not None:
            component.descriptions = descriptions
        spans_key = component.spans_key
        per_dataset = {}
        for dataset, records in datasets:
            start = time.perf_counter()
            examples = predict(nlp, records)
            per_dataset[dataset] = scores = score(examples, spans_key, component.threshold)
            print(f"{name} on {dataset}: {len(records)} sentences in "
                  f"{time.perf_counter() - start:.0f} s, F1 {100 * scores['paper']['f1']:.1f}",
                  flush=True)
        results[name] = {"model": model, "datasets": per_dataset, "average": average(per_dataset)}
    return results


def markdown_table(results: Scores, metric: str) -> str:
    """F1 (x 100) of `metric` per model and dataset, then the average, as Table 2 lays it out."""
    datasets = list(dict.fromkeys(d for r in results.values() for d in r["datasets"]))
    lines = ["| Model | " + " | ".join(datasets) + " | Average |",
             "| --- |" + " ---: |" * (len(datasets) + 1)]
    for name, result in results.items():
        cells = [result["datasets"].get(d, {}).get(metric) for d in datasets]
        cells.append(result["average"].get(metric))
        lines.append(f"| {name} | " + " | ".join(_f1_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _f1_cell(cell: Optional[Scores]) -> str:
    if cell is None:
        return "-"
    interval = cell.get("f1_interval")
    bounds = f" ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})" if interval else ""
    return f"{100 * cell['f1']:.1f}{bounds}"


def threshold_table(result: Scores) -> str:
    """Exact-span F1 (x 100) of the candidates scoring at least each threshold, and the
    expected calibration error, a row per dataset."""
    rows = {d: s for d, s in result["datasets"].items() if "thresholds" in s}
    if not rows:
        return ""
    thresholds = list(next(iter(rows.values()))["thresholds"])
    calibrated = any("model_calibration" in scores for scores in rows.values())
    eces = ["ECE", "ECE before calibration"] if calibrated else ["ECE"]
    lines = ["| Dataset | " + " | ".join([f"F1 at {t}" for t in thresholds] + eces) + " |",
             "| --- |" + " ---: |" * (len(thresholds) + len(eces))]
    for dataset, scores in rows.items():
        cells = [f"{100 * scores['thresholds'][t]['f1']:.1f}" for t in thresholds]
        for key in ("calibration", "model_calibration")[:len(eces)]:
            ece = scores.get(key, {}).get("ece")
            cells.append("-" if ece is None else f"{ece:.3f}")
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nested_table(result: Scores) -> str:
    """Exact-span P/R/F1 (x 100) over all entities and over the inner ones, a row per dataset
    with nested entities; empty if none has."""
    rows = {d: s["nested"] for d, s in result["datasets"].items() if "nested" in s}
    if not rows:
        return ""
    lines = ["| Dataset | P | R | F1 | inner P | inner R | inner F1 |", "| --- |" + " ---: |" * 6]
    for dataset, nested in rows.items():
        cells = [f"{100 * nested[part][key]:.1f}" for part in ("all", "inner")
                 for key in ("precision", "recall", "f1")]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: Scores) -> str:
    """A table per metric, each under its heading, then each model's threshold table and,
    where the data has nested entities, its nested table."""
    sections = [f"### {title}\n\n{markdown_table(results, metric)}"
                for metric, title in METRICS.items()]
    sections += [f"### {name}: spaCy exact-span F1 by confidence threshold\n\n{table}"
                 for name, result in results.items() if (table := threshold_table(result))]
    sections += [f"### {name}: nested entities, exact-span P/R/F1, all and inner\n\n{table}"
                 for name, result in results.items() if (table := nested_table(result))]
    return "\n\n".join(sections) + "\n"


def plot_confidence(results: Scores, path: Path) -> bool:
    """A PNG with, per model whose candidates have scores, precision against recall as the
    threshold rises (a line per dataset) and a reliability diagram (accuracy against mean
    confidence per confidence bin, all datasets together). False if no model has scores."""
    scored = {name: result for name, result in results.items()
              if any("thresholds" in s for s in result["datasets"].values())}
    if not scored:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(scored), 2, figsize=(10, 4.5 * len(scored)), squeeze=False)
    for (name, result), (curve, reliability) in zip(scored.items(), axes):
        pooled: Dict[int, List[float]] = {}
        for dataset, scores in result["datasets"].items():
            if "thresholds" not in scores:
                continue
            points = list(scores["thresholds"].values())
            curve.plot([p["recall"] for p in points], [p["precision"] for p in points],
                       marker="o", markersize=3, label=dataset)
            for k, b in enumerate(scores["calibration"]["bins"]):
                if b["count"]:
                    total = pooled.setdefault(k, [0, 0.0, 0.0])
                    total[0] += b["count"]
                    total[1] += b["count"] * b["confidence"]
                    total[2] += b["count"] * b["accuracy"]
        curve.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1),
                  title=f"{name}: precision and recall, thresholds 0.1 (right) to 0.9")
        curve.legend(fontsize=7)
        bins = sorted(pooled)
        reliability.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        reliability.plot([pooled[k][1] / pooled[k][0] for k in bins],
                         [pooled[k][2] / pooled[k][0] for k in bins], marker="o")
        for k in bins:
            reliability.annotate(str(pooled[k][0]), (pooled[k][1] / pooled[k][0], pooled[k][2] / pooled[k][0]),
                                 fontsize=7, xytext=(3, -9), textcoords="offset points")
        reliability.set(xlabel="mean confidence of the bin", ylabel="share correct", xlim=(0, 1),
                        ylim=(0, 1), title=f"{name}: reliability (entity candidates per bin)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def model_names(models: Sequence[str], names: Sequence[str]) -> Dict[str, str]:
    """{name: model}: the given names in order, else the directory (or model) names."""
    if names and len(names) != len(models):
        raise SystemExit(f"{len(names)} --name for {len(models)} models")
    names = names or [Path(model).name for model in models]
    if len(set(names)) != len(names):
        raise SystemExit(f"model names must differ: {names}; give each a --name")
    return dict(zip(names, models))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate",
                                     description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("models", nargs="+", help="pipeline directories, or model directories / Hub names / "
        "'smollm2' to package on the fly")
    add("--data", nargs="+", required=True, type=Path,
        help="BIO dataset directories (or directories of them), GNER .jsonl files, or files "
        "of another training.prepare input format (e.g. GENIA's nested .jsonl)")
    add("--name", action="append", default=[], help="a model's name in the tables, once per "
        "model in order (default: the directory names)")
    add("--split", default="test", help="the split file of BIO directories (default: test)")
    add("--limit", action="append", type=parse_cap, default=[], metavar="N|NAME=N",
        help="at most N sentences per dataset (a seeded sample); NAME=N sets it for one "
        "dataset (its name or directory); N may be 'all'; repeat for several")
    add("--seed", type=int, default=0,
        help="seed of the --limit sample and of the shuffled type orders (default: 0)")
    add("--label-order", choices=LABEL_ORDERS, default="shuffled",
        help="type order offered to each sentence: shuffled per sentence with --seed (the "
        "reference's protocol, default) or label.txt's (the file's); GNER .jsonl records keep "
        "their own order")
    add("--device", help="gner device: auto, cpu, cuda, cuda:1, ... (default: a pipeline's "
        "own, else auto)")
    add("--prompt-format", choices=PROMPT_FORMATS, help="the prompt wrapping of causal models "
        "(default: a pipeline's own, else inst)")
    add("--descriptions", type=Path, metavar="PATH", help="a JSON file {type: short "
        "description} that the prompts explain the types by (default: a pipeline's own)")
    add("--output-format", type=format_name, metavar="word_tag|bracket|xml", help="what the "
        "model writes: the format it was trained on (training.prepare --output-format), by short "
        "or registered name (default: a pipeline's own, else word_tag)")
    add("--output", type=Path, help="write the metrics JSON here")
    add("--markdown", type=Path, help="write the markdown tables here")
    add("--plot", type=Path, help="write the confidence plot (PNG) here")
    args = parser.parse_args(argv)

    models = model_names(args.models, args.name)
    limits = dict(args.limit)
    try:
        datasets = load_datasets(args.data, args.split, limits.pop(None, None), args.seed,
                                 args.label_order, limits=limits)
    except ValueError as error:
        parser.error(str(error))
    descriptions = read_descriptions(args.descriptions) if args.descriptions else None
    results = evaluate(models, datasets, args.device, args.prompt_format, descriptions,
                       args.output_format)
    report = markdown_report(results)
    print(report)
    for path, text in ((args.output, json.dumps(results, indent=2) + "\n"),
                       (args.markdown, report)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.plot and not plot_confidence(results, args.plot):
        print(f"no confidence scores: {args.plot} not written")


if __name__ == "__main__":
    main()
