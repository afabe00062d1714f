"""Evaluate `gner` pipelines (or Hugging Face model directories) on NER test sets.

    python -m training.evaluate training/pipelines/gner-default --data assets/crossner
    python -m training.evaluate smollm2 MODEL_DIR --name base --name fine-tuned \\
        --data assets/crossner/crossner_ai test.jsonl --limit 50 --output metrics.json

Data: BIO dataset directories in the GNER layout (`<split>.txt` + `label.txt`), directories of
them, or GNER .jsonl files. Every sentence goes through the whole pipeline, its gner component
offered the sentence's types in the sentence's order: as the reference evaluates, shuffled per
sentence with `--seed` for BIO directories (`--label-order fixed`: label.txt order), and a GNER
record's own `label_list` order. Scores per dataset and as the unweighted average over
datasets: the GNER paper's F1 (`spacy_gner.metrics.paper_f1`) on the tags the component
matched to each word, as they are (no BIO repair), and spaCy's exact-span P/R/F, with
per-type scores, on `doc.ents`. Written: a metrics JSON and markdown tables laid out as the
paper's Table 2 (a row per model, a column per dataset, then the average).
"""
import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import Example

from spacy_gner import GNER
from spacy_gner.component import RAW_OUTPUT_KEY
from spacy_gner.metrics import paper_f1
from spacy_gner.pipeline import load_pipeline
from spacy_gner.prompt import PROMPT_FORMATS

from .prepare import cap_per_dataset, record_doc, shuffle_labels
from .readers import bio_tags, read_bio_dirs, read_gner_jsonl
from .records import Record

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
) -> List[Dataset]:
    """The datasets of BIO directories (or directories of them) and GNER .jsonl files, each
    cut to a seeded sample of `limit` sentences.

    Sentences of BIO directories offer label.txt's types, in an order shuffled per sentence
    with `seed` (`label_order` "shuffled", the reference's protocol) or in file order
    ("fixed"); GNER records offer their own `label_list`, in its order. Split files with no
    sentence are reported through `report`.
    """
    if label_order not in LABEL_ORDERS:
        raise ValueError(f"Unknown label_order {label_order!r}: expected one of {LABEL_ORDERS}")
    records: List[Record] = []
    for path in map(Path, paths):
        if path.is_dir():
            read = read_bio_dirs(path, [split], report=report)
            if label_order == "shuffled":
                read = [shuffle_labels(record, seed) for record in read]
            records.extend(read)
        else:
            records.extend(read_gner_jsonl(path))
    if limit is not None:
        records = cap_per_dataset(records, limit, seed)
    return [(name, [r for r in records if r.dataset == name])
            for name in dict.fromkeys(r.dataset for r in records)]


def gner_component(nlp: Language) -> GNER:
    found = [pipe for _, pipe in nlp.pipeline if isinstance(pipe, GNER)]
    if len(found) != 1:
        raise ValueError(f"expected one gner component, found {len(found)}")
    return found[0]


def predict(nlp: Language, records: Sequence[Record]) -> List[Example]:
    """(predicted, gold) Examples of the records, in their order, predicted by the whole
    pipeline with its gner component offered each record's types in the record's order (one
    `nlp.pipe` call per distinct order) and storing its raw matched tags."""
    component = gner_component(nlp)
    component.store_raw = True
    golds = [record_doc(record, nlp.vocab) for record in records]
    groups: Dict[Tuple[str, ...], List[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(tuple(record.labels), []).append(index)
    predicted: Dict[int, Doc] = {}
    for labels, indices in groups.items():
        component.initialize(lambda: [], nlp=nlp, labels=list(labels))
        inputs = [Doc(nlp.vocab, words=[t.text for t in golds[i]],
                      spaces=[bool(t.whitespace_) for t in golds[i]]) for i in indices]
        predicted.update(zip(indices, nlp.pipe(inputs)))
    return [Example(predicted[index], gold) for index, gold in enumerate(golds)]


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


def score(examples: Sequence[Example]) -> Scores:
    """Both metrics of predicted Examples, as fractions: the paper's on the raw matched tags
    (`raw_tags`), spaCy's on the predicted `doc.ents`."""
    paper = paper_f1(([t.text for t in eg.reference], bio_tags(eg.reference),
                      raw_tags(eg.predicted)) for eg in examples)
    spans = Scorer.score_spans(examples, "ents")
    per_type = {label: {"precision": s["p"], "recall": s["r"], "f1": s["f"]}
                for label, s in (spans["ents_per_type"] or {}).items()}
    spacy_scores = {"precision": spans["ents_p"] or 0.0, "recall": spans["ents_r"] or 0.0,
                    "f1": spans["ents_f"] or 0.0, "per_type": per_type}
    return {"sentences": len(examples), "paper": paper, "spacy": spacy_scores}


def average(per_dataset: Dict[str, Scores]) -> Scores:
    """The unweighted mean over datasets of each metric's precision, recall and F1."""
    count = len(per_dataset)
    return {metric: {key: sum(s[metric][key] for s in per_dataset.values()) / count
                     for key in ("precision", "recall", "f1")}
            for metric in METRICS} if count else {}


def evaluate(
    models: Dict[str, str], datasets: Sequence[Dataset], device: Optional[str] = None,
    prompt_format: Optional[str] = None,
) -> Scores:
    """{model name: {"model", "datasets": {name: scores}, "average"}} for each named model: a
    saved pipeline directory as it is, or a model in a new pipeline (`load_pipeline`), with
    `device` and `prompt_format` where given."""
    results = {}
    for name, model in models.items():
        nlp = load_pipeline(model, device=device, prompt_format=prompt_format)
        per_dataset = {}
        for dataset, records in datasets:
            start = time.perf_counter()
            per_dataset[dataset] = scores = score(predict(nlp, records))
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
        lines.append(f"| {name} | " + " | ".join(
            "-" if cell is None else f"{100 * cell['f1']:.1f}" for cell in cells) + " |")
    return "\n".join(lines)


def markdown_report(results: Scores) -> str:
    """A table per metric, each under its heading."""
    return "\n\n".join(f"### {title}\n\n{markdown_table(results, metric)}"
                       for metric, title in METRICS.items()) + "\n"


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
        help="BIO dataset directories (or directories of them) or GNER .jsonl files")
    add("--name", action="append", default=[], help="a model's name in the tables, once per "
        "model in order (default: the directory names)")
    add("--split", default="test", help="the split file of BIO directories (default: test)")
    add("--limit", type=int, help="at most N sentences per dataset (a seeded sample)")
    add("--seed", type=int, default=0,
        help="seed of the --limit sample and of the shuffled type orders (default: 0)")
    add("--label-order", choices=LABEL_ORDERS, default="shuffled",
        help="type order offered to each sentence of BIO directories: shuffled per sentence "
        "with --seed (the reference's protocol, default) or label.txt's; GNER .jsonl records "
        "keep their own order")
    add("--device", help="gner device: auto, cpu, cuda, cuda:1, ... (default: a pipeline's "
        "own, else auto)")
    add("--prompt-format", choices=PROMPT_FORMATS, help="the prompt wrapping of causal models "
        "(default: a pipeline's own, else inst)")
    add("--output", type=Path, help="write the metrics JSON here")
    add("--markdown", type=Path, help="write the markdown tables here")
    args = parser.parse_args(argv)

    models = model_names(args.models, args.name)
    datasets = load_datasets(args.data, args.split, args.limit, args.seed, args.label_order)
    results = evaluate(models, datasets, args.device, args.prompt_format)
    report = markdown_report(results)
    print(report)
    for path, text in ((args.output, json.dumps(results, indent=2) + "\n"),
                       (args.markdown, report)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
