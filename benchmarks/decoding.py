"""Decoding speed and quality: the reference way of running GNER against spacy-gner.

    python benchmarks/decoding.py --model MODEL_OR_PIPELINE [--n 200] [--batch-size 8]
    python benchmarks/decoding.py --modes C --dtypes float32 bfloat16    # precision options
    python benchmarks/decoding.py --modes C --draft-tokens 12 --branch-tokens 0   # draft budgets

On the same model, labels and sentences (CrossNER test, from the shipped test fixture), it
runs, each in a fresh process so peak memory is its own:
  A  the reference way: one sentence at a time, generate(max_new_tokens=640), greedy, then
     extraction + hierarchical matching;
  B  Hugging Face batched greedy generate(max_new_tokens=640) (batches of --batch-size,
     sorted by length), then extraction + hierarchical matching;
  C  the gner component's default decoding (copy-aware), through nlp.pipe (once per --dtypes
     value: "auto" is the component's default);
and prints sentences/s, words/s, peak memory, the paper's F1 against gold, the tokens fed to
the model per sentence (every position of every forward pass, padding included) against the
minimum (the sentence-specific prompt tokens and the output tokens: what a decoder-only model
must read at the least), and the forward passes per sentence; then the ratios of C to A and B.
A and B are GNER's word(tag) decoding: for a model trained on another output format (see
`benchmarks/formats.py`) only C runs.
"""
import argparse
import functools
import gzip
import json
import resource
import subprocess
import sys
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "crossner-reference-prompts.jsonl.gz"
DEFAULT_PIPELINE = ROOT / "training" / "pipelines" / "gner-default"
MODES = {"A": "reference: 1 at a time, generate(640)", "B": "HF batched generate", "C": "gner component"}
WARM_LABELS = ["warm-up type"]  # warm-up uses its own label set: no prefix is reused from it
Sentence = Dict[str, Any]
Runner = Callable[[List[Sentence]], Tuple[List[List[str]], List[str]]]  # -> tags, output texts


def load_sentences(n: int) -> List[Sentence]:
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


class TokenCounter:
    """Counts the forward passes of a model and the token positions each one reads (all
    passes through its input embedding: encoder and decoder, prompts, drafts and padding)."""

    def __init__(self) -> None:
        self.passes = 0
        self.tokens = 0

    def attach(self, model: Any) -> None:
        model.get_input_embeddings().register_forward_hook(self._count)

    def _count(self, _module: Any, inputs: Tuple[Any, ...], _output: Any) -> None:
        self.passes += 1
        self.tokens += inputs[0].numel()


def reference_runner(model: Path, args: argparse.Namespace, counter: TokenCounter) -> Runner:
    import torch

    from spacy_gner import extract, hierarchical_match
    from spacy_gner.models import load_model
    from spacy_gner.prompt import build_prompt, format_prompt

    hf_model, tokenizer = load_model(model, device=args.device)
    counter.attach(hf_model)

    def run(sentences: List[Sentence]) -> Tuple[List[List[str]], List[str]]:
        predictions, texts = [], []
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
            texts.append(text)
        return predictions, texts

    return run


def batched_runner(model: Path, args: argparse.Namespace, counter: TokenCounter) -> Runner:
    import torch

    from spacy_gner import extract, hierarchical_match
    from spacy_gner.decoding import pad
    from spacy_gner.generation import plan_batches
    from spacy_gner.models import load_model
    from spacy_gner.prompt import build_prompt, encode_prompts

    hf_model, tokenizer = load_model(model, device=args.device)
    counter.attach(hf_model)
    wrapping = None if hf_model.config.is_encoder_decoder else "inst"

    def run(sentences: List[Sentence]) -> Tuple[List[List[str]], List[str]]:
        prompts = encode_prompts(tokenizer, [build_prompt(s["words"], s["labels"]) for s in sentences], wrapping)
        texts = [""] * len(sentences)
        for batch in plan_batches([len(p) for p in prompts], args.batch_size, 10**9):
            encoded = pad([prompts[i] for i in batch], tokenizer.pad_token_id, tokenizer.padding_side == "left")
            with torch.inference_mode():
                output = hf_model.generate(**{k: v.to(hf_model.device) for k, v in encoded.items()},
                                           max_new_tokens=640, do_sample=False, num_beams=1,
                                           pad_token_id=tokenizer.pad_token_id)
            if not hf_model.config.is_encoder_decoder:
                output = output[:, encoded["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(output, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for i, text in zip(batch, decoded):
                texts[i] = text
        predictions = [hierarchical_match(s["words"], *extract(text, s["labels"]), tokenizer)
                       for s, text in zip(sentences, texts)]
        return predictions, texts

    return run


def component_runner(model: Path, args: argparse.Namespace, counter: TokenCounter) -> Runner:
    import spacy
    from spacy.tokens import Doc

    from spacy_gner.component import RAW_OUTPUT_KEY

    nlp = spacy.blank("en")
    from spacy_gner.formats import get_format

    generator = {"model": str(model), "device": args.device, "batch_size": args.batch_size, "dtype": args.dtype,
                 "output_format": {"@gner_formats": get_format(args.format).name}}
    gner = nlp.add_pipe("gner", config={"generator": generator, "labels": WARM_LABELS, "store_raw": True})
    nlp.initialize()
    counter.attach(gner.generator.model)
    budgets = {name: value for name, value in (("draft_tokens", args.draft_tokens),
                                                ("branch_tokens", args.branch_tokens)) if value is not None}
    if budgets:  # the component's decoding with other draft budgets
        from spacy_gner import decoding

        decoding.copy_decode = functools.partial(decoding.copy_decode, **budgets)

    def run(sentences: List[Sentence]) -> Tuple[List[List[str]], List[str]]:
        predictions: List[List[str]] = [[] for _ in sentences]
        texts = [""] * len(sentences)
        for dataset in dict.fromkeys(s["dataset"] for s in sentences):
            indices = [i for i, s in enumerate(sentences) if s["dataset"] == dataset]
            gner.initialize(lambda: [], nlp=nlp, labels=sentences[indices[0]]["labels"])
            docs = (Doc(nlp.vocab, words=sentences[i]["words"]) for i in indices)
            for i, doc in zip(indices, nlp.pipe(docs, batch_size=len(indices))):
                tags = ["O"] * len(doc)
                for ent in doc.ents:
                    tags[ent.start : ent.end] = [f"B-{ent.label_}"] + [f"I-{ent.label_}"] * (len(ent) - 1)
                predictions[i] = tags
                texts[i] = " ".join(chunk["output"] for chunk in doc.user_data[RAW_OUTPUT_KEY])
        return predictions, texts

    return run


RUNNERS = {"A": reference_runner, "B": batched_runner, "C": component_runner}


def minimum_tokens(model: Path, prompt_format: str, sentences: List[Sentence], texts: List[str],
                   output_format: str = "word_tag") -> int:
    """What a decoder-only model must read at the least: each prompt's tokens after the part
    it shares with every prompt of its label set, and each output's tokens (seq2seq models read
    the whole prompt: their encoder sees it at once)."""
    from transformers import AutoConfig, AutoTokenizer

    from spacy_gner.decoding import common_length
    from spacy_gner.formats import get_format
    from spacy_gner.prompt import build_prompt, encode_prompt_start, encode_prompts

    fmt = get_format(output_format)
    tokenizer = AutoTokenizer.from_pretrained(model)
    seq2seq = AutoConfig.from_pretrained(model).is_encoder_decoder
    prompts = encode_prompts(tokenizer, [build_prompt(s["words"], s["labels"], None, fmt) for s in sentences],
                             None if seq2seq else prompt_format)
    total = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    for sentence, prompt in zip(sentences, prompts):
        if not seq2seq:
            start = encode_prompt_start(tokenizer, prompt_format, sentence["labels"], None, fmt)
            prompt = prompt[common_length(start, prompt):]
        total += len(prompt)
    return total


def model_format(model: Path) -> str:
    """The output format a pipeline directory's gner generator writes (registered name), else
    word(tag)'s."""
    from spacy.util import load_config

    config = model / "config.cfg"
    if config.is_file():
        for component in load_config(config, interpolate=False).get("components", {}).values():
            block = component.get("generator", {}).get("output_format") or {}
            if component.get("factory") == "gner" and "@gner_formats" in block:
                return block["@gner_formats"]
    return "word_tag"


def measure(mode: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Run one mode here and return its figures (called in a child process)."""
    import torch

    from spacy_gner.pipeline import resolve_model

    sentences = load_sentences(args.n)
    args.format = args.format or model_format(Path(args.model))
    model = Path(resolve_model(args.model))
    counter = TokenCounter()
    run = RUNNERS[mode](model, args, counter)
    warm = [{**s, "labels": WARM_LABELS} for s in sentences[: min(2, len(sentences))]]
    run(warm)  # warm up kernels and caches, on a label set of its own
    counter.passes = counter.tokens = 0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    predictions, texts = run(sentences)
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "mode": mode,
        "seconds": seconds,
        "sentences": len(sentences),
        "words": sum(len(s["words"]) for s in sentences),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": gpu,
        "passes": counter.passes,
        "tokens": counter.tokens,
        "minimum": minimum_tokens(model, "inst", sentences, texts, args.format),
        "predictions": predictions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_PIPELINE), help="model or saved pipeline directory, or smollm2")
    parser.add_argument("--n", type=int, default=200, help="sentences")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--dtypes", nargs="+", default=["auto"],
                        help="mode C's dtype settings, one run each (auto: the component's default)")
    parser.add_argument("--format", help="mode C's output format (word_tag, bracket, xml), the one the "
                        "model was trained on (default: a pipeline's own, else word_tag); modes A "
                        "and B are the reference's, for word(tag) models (see benchmarks/formats.py)")
    parser.add_argument("--draft-tokens", type=int, help="mode C's draft length (default: the component's)")
    parser.add_argument("--branch-tokens", type=int, help="mode C's branch budget per row and pass "
                        "(default: the component's; 0: drafts without branches)")
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    from spacy_gner.metrics import paper_f1
    from spacy_gner.models import ModelLoadError
    from spacy_gner.pipeline import resolve_model

    try:
        if not Path(resolve_model(args.model)).is_dir():
            parser.error(f"no model at {args.model}: train the default pipeline or pass --model")
    except ModelLoadError as error:
        parser.error(str(error))

    sentences = load_sentences(args.n)
    from spacy_gner.formats import WordTag, get_format

    if not isinstance(get_format(args.format or model_format(Path(args.model))), WordTag):
        args.modes = [mode for mode in args.modes if mode == "C"] or parser.error(
            "modes A and B are GNER's word(tag) decoding; this model writes another format")
    runs = [(mode, dtype) for mode in args.modes for dtype in (args.dtypes if mode == "C" else ["auto"])]
    results = {}
    for mode, dtype in runs:
        name = mode if mode != "C" or args.dtypes == ["auto"] else f"C {dtype}"
        command = [sys.executable, __file__, "--child", mode, "--dtype", dtype] + sys.argv[1:]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
    print(f"model: {args.model}  sentences: {len(sentences)}  batch size: {args.batch_size}  device: {args.device}")
    print("| mode | sentences/s | words/s | peak RSS MB | peak GPU MB | F1 | tokens fed / sentence "
          "| over the minimum | passes / sentence |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, result in results.items():
        f1 = paper_f1((s["words"], s["tags"], p) for s, p in zip(sentences, result["predictions"]))["f1"]
        result["f1"] = 100 * f1
        gpu = f"{result['peak_gpu_mb']:.0f}" if result["peak_gpu_mb"] is not None else "-"
        count = result["sentences"]
        print(f"| {name}: {MODES[result['mode']]} | {count / result['seconds']:.2f} | "
              f"{result['words'] / result['seconds']:.1f} | {result['peak_rss_mb']:.0f} | {gpu} | "
              f"{result['f1']:.1f} | {result['tokens'] / count:.0f} | "
              f"{result['tokens'] / result['minimum']:.2f}x | {result['passes'] / count:.2f} |")
    for name, result in results.items():
        if result["mode"] != "C":
            continue
        for other in ("A", "B"):
            if other in results:
                print(f"{name}/{other}: {results[other]['seconds'] / result['seconds']:.2f}x speed, "
                      f"F1 {result['f1'] - results[other]['f1']:+.1f}")


if __name__ == "__main__":
    main()
