"""Decoding speed and quality: the reference way of running GNER against spacy-gner.

    python benchmarks/decoding.py --model MODEL_OR_PIPELINE [--n 200] [--batch-size 8]

On the same model, labels and sentences (CrossNER test, from the shipped test fixture), it
runs, each in a fresh process so peak memory is its own:
  A  the reference way: one sentence at a time, generate(max_new_tokens=640), greedy, then
     extraction + hierarchical matching;
  B  Hugging Face batched greedy generate (batches of --batch-size, sorted by length);
  C  the gner component's default decoding (copy-aware), through nlp.pipe;
and prints sentences/s, words/s, peak memory and the paper's F1 against gold, with the
ratios C/A and C/B.
"""
import argparse
import gzip
import json
import resource
import subprocess
import sys
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "crossner-reference-prompts.jsonl.gz"
DEFAULT_PIPELINE = ROOT / "training" / "pipelines" / "gner-default"
MODES = {"A": "reference: 1 at a time, generate(640)", "B": "HF batched generate", "C": "gner component"}


def load_sentences(n: int) -> List[Dict[str, Any]]:
    """n CrossNER test sentences, round-robin over the five domains, each domain with one
    label order (its first record's) so every mode sees the same prompts."""
    by_dataset: Dict[str, List[Dict[str, Any]]] = {}
    with gzip.open(DATA, "rt", encoding="utf8") as file:
        for line in file:
            record = json.loads(line)
            by_dataset.setdefault(record["dataset"], []).append(record)
    sentences = []
    for dataset, records in by_dataset.items():
        labels = records[0]["label_list"]
        for record in records:
            instance = record["instance"]
            sentences.append({"dataset": dataset, "labels": labels, "words": instance["words"], "tags": instance["labels"]})
    groups = [[s for s in sentences if s["dataset"] == d] for d in by_dataset]
    mixed = [s for batch in zip(*groups) for s in batch]
    return list(islice(cycle(mixed), n)) if n > len(mixed) else mixed[:n]


def model_dir(path: str) -> Path:
    """A Hugging Face model directory, or the model inside a saved spaCy pipeline."""
    inner = Path(path) / "gner" / "model"
    return inner if inner.is_dir() else Path(path)


def run_reference(model: Path, sentences: List[Dict[str, Any]], device: str, batch_size: int) -> List[List[str]]:
    import torch

    from spacy_gner import extract, hierarchical_match
    from spacy_gner.models import load_model
    from spacy_gner.prompt import build_prompt, format_prompt

    hf_model, tokenizer = load_model(model, device=device)
    predictions = []
    for sentence in sentences:
        prompt = build_prompt(sentence["words"], sentence["labels"])
        if not hf_model.config.is_encoder_decoder:
            prompt = format_prompt(prompt, "inst")
        inputs = tokenizer(prompt, return_tensors="pt").to(hf_model.device)
        with torch.inference_mode():
            output = hf_model.generate(**inputs, max_new_tokens=640, do_sample=False, num_beams=1,
                                       pad_token_id=tokenizer.pad_token_id)
        if not hf_model.config.is_encoder_decoder:
            output = output[:, inputs["input_ids"].shape[1] :]
        text = tokenizer.decode(output[0], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        words, tags = extract(text, sentence["labels"])
        predictions.append(hierarchical_match(sentence["words"], words, tags, tokenizer))
    return predictions


def run_batched(model: Path, sentences: List[Dict[str, Any]], device: str, batch_size: int) -> List[List[str]]:
    from spacy_gner import extract, hierarchical_match
    from spacy_gner.generation import HFGenerator
    from spacy_gner.prompt import Request

    generator = HFGenerator(model, device=device, batch_size=batch_size, copy_aware=False)
    requests = [Request(tuple(s["words"]), tuple(s["labels"]), 640) for s in sentences]
    predictions = []
    for sentence, text in zip(sentences, generator(requests)):
        words, tags = extract(text, sentence["labels"])
        predictions.append(hierarchical_match(sentence["words"], words, tags, generator.tokenizer))
    return predictions


def run_component(model: Path, sentences: List[Dict[str, Any]], device: str, batch_size: int) -> List[List[str]]:
    import spacy
    from spacy.tokens import Doc

    nlp = spacy.blank("en")
    gner = nlp.add_pipe("gner", config={"model": str(model), "device": device, "batch_size": batch_size})
    predictions: List[List[str]] = [[] for _ in sentences]
    for dataset in dict.fromkeys(s["dataset"] for s in sentences):
        indices = [i for i, s in enumerate(sentences) if s["dataset"] == dataset]
        gner.initialize(lambda: [], nlp=nlp, labels=sentences[indices[0]]["labels"])
        docs = (Doc(nlp.vocab, words=sentences[i]["words"]) for i in indices)
        for i, doc in zip(indices, nlp.pipe(docs, batch_size=len(indices))):
            tags = ["O"] * len(doc)
            for ent in doc.ents:
                tags[ent.start : ent.end] = [f"B-{ent.label_}"] + [f"I-{ent.label_}"] * (len(ent) - 1)
            predictions[i] = tags
    return predictions


RUNNERS = {"A": run_reference, "B": run_batched, "C": run_component}


def measure(mode: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Run one mode here and return its figures (called in a child process)."""
    import torch

    sentences = load_sentences(args.n)
    model = model_dir(args.model)
    warm = sentences[: min(2, len(sentences))]
    RUNNERS[mode](model, warm, args.device, args.batch_size)  # load weights, warm up kernels
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    predictions = RUNNERS[mode](model, sentences, args.device, args.batch_size)
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "mode": mode,
        "seconds": seconds,
        "sentences": len(sentences),
        "words": sum(len(s["words"]) for s in sentences),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": gpu,
        "predictions": predictions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_PIPELINE), help="HF model dir or saved gner pipeline")
    parser.add_argument("--n", type=int, default=200, help="sentences")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    if not model_dir(args.model).is_dir():
        parser.error(f"no model at {args.model}: train the default pipeline or pass --model")

    from spacy_gner.metrics import paper_f1

    sentences = load_sentences(args.n)
    results = {}
    for mode in args.modes:
        command = [sys.executable, __file__, "--child", mode] + sys.argv[1:]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"model: {args.model}  sentences: {len(sentences)}  batch size: {args.batch_size}  device: {args.device}")
    print("| mode | sentences/s | words/s | peak RSS MB | peak GPU MB | F1 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode, result in results.items():
        f1 = paper_f1((s["words"], s["tags"], p) for s, p in zip(sentences, result["predictions"]))["f1"]
        result["f1"] = 100 * f1
        gpu = f"{result['peak_gpu_mb']:.0f}" if result["peak_gpu_mb"] is not None else "-"
        print(f"| {mode}: {MODES[mode]} | {result['sentences'] / result['seconds']:.2f} | "
              f"{result['words'] / result['seconds']:.1f} | {result['peak_rss_mb']:.0f} | {gpu} | {result['f1']:.1f} |")
    for other in ("A", "B"):
        if "C" in results and other in results:
            print(f"C/{other}: {results[other]['seconds'] / results['C']['seconds']:.2f}x speed, "
                  f"F1 {results['C']['f1'] - results[other]['f1']:+.1f}")


if __name__ == "__main__":
    main()
