"""Output formats side by side: decoding cost per format, and a GLiNER-shaped encoder as reference.

    python benchmarks/formats.py --run word_tag=PIPELINE_A --run bracket=PIPELINE_B [--n 200]
        [--encoders small base] [--batch-size 8] [--branch-tokens 0 4] [--repeats 3]

Each `--run FORMAT=MODEL` is a model fine-tuned to write that format (a pipeline directory
trained by the workflow with `--vars.format FORMAT`). On the same CrossNER test sentences and
label lists (the shipped fixture), each runs through the gner component (copy-aware decoding,
`benchmarks/decoding.py` mode C, in a fresh process) and prints: sentences/s, the paper's F1
on these sentences, the tokens fed per sentence against the format's minimum (the
sentence-specific prompt tokens and the output's), forward passes per sentence, peak memory;
with `--branch-tokens`, once per branch budget of the drafts (see `spacy_gner.decoding`).

`--encoders` adds reference rows: randomly initialised DeBERTa-v3 encoders of GLiNER's shapes
(small: 6 layers, base: 12 layers; hidden size 768), reading each sentence with its label
list once (GLiNER's input: `<<ENT>> type ... <<SEP>> words`, counted with SmolLM2's tokenizer
as a stand-in for DeBERTa's), in batches, in bfloat16 where the CPU computes it. Their weights
do not change their cost; they give what a CPU user would pick instead. Every row comes from
this one run: compare figures only within it. A shared CPU's speed drifts by 10-20% from
minute to minute: `--repeats R` runs every row once per round, R rounds, and reports each
row's median (and its slowest and fastest round).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoding import load_sentences  # noqa: E402

ENCODERS = {"small": 6, "base": 12}  # DeBERTa-v3 layers of GLiNER's small and base models


def encoder_lengths(sentences: List[Dict[str, Any]]) -> List[int]:
    """Each sentence's GLiNER-style input length in tokens (label prompt, separator, words,
    and the two special tokens), counted with SmolLM2's tokenizer."""
    from transformers import AutoTokenizer

    from spacy_gner.pipeline import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    texts = [" ".join(f"<<ENT>> {label}" for label in s["labels"]) + " <<SEP>> " + " ".join(s["words"])
             for s in sentences]
    return [len(ids) + 2 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def measure_encoder(shape: str, sentences: List[Dict[str, Any]], batch_size: int) -> Dict[str, Any]:
    """Sentences/s of a random DeBERTa-v3 encoder of a GLiNER shape (called in a child process)."""
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    from spacy_gner.models import native_bfloat16

    torch.manual_seed(0)
    config = DebertaV2Config(hidden_size=768, num_hidden_layers=ENCODERS[shape], num_attention_heads=12,
                             intermediate_size=3072, vocab_size=128100, relative_attention=True,
                             position_buckets=256, max_relative_positions=-1,
                             pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True)
    dtype = torch.bfloat16 if native_bfloat16(torch.device("cpu")) else torch.float32
    model = DebertaV2Model(config).to(dtype).eval()
    lengths = encoder_lengths(sentences)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]

    def run(selected: List[List[int]]) -> None:
        with torch.inference_mode():
            for batch in selected:
                width = max(lengths[i] for i in batch)
                ids = torch.randint(1000, 120000, (len(batch), width))
                mask = torch.tensor([[1] * lengths[i] + [0] * (width - lengths[i]) for i in batch])
                model(input_ids=ids, attention_mask=mask)

    run(batches[:1])  # warm up
    start = time.perf_counter()
    run(batches)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "sentences": len(sentences), "tokens": sum(lengths),
            "dtype": str(dtype).replace("torch.", ""),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", default=[], metavar="FORMAT=MODEL",
                        help="a format and a model fine-tuned to write it (repeat)")
    parser.add_argument("--n", type=int, default=200, help="sentences")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--branch-tokens", nargs="+", type=int, metavar="N",
                        help="run each format once per branch budget (default: the component's)")
    parser.add_argument("--encoders", nargs="*", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds: every row runs once per round, and its median speed is reported")
    parser.add_argument("--encoder-child", choices=list(ENCODERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sentences = load_sentences(args.n)
    if args.encoder_child:
        print(json.dumps(measure_encoder(args.encoder_child, sentences, args.batch_size)))
        return
    runs = [run.split("=", 1) for run in args.run]
    if any(len(run) != 2 for run in runs):
        parser.error("--run takes FORMAT=MODEL, e.g. --run bracket=training/pipelines/gner-default")
    from spacy_gner.formats import get_format
    from spacy_gner.metrics import paper_f1

    for name, _ in runs:
        get_format(name)  # an unknown name fails here, before anything runs
    here = Path(__file__).resolve().parent
    jobs: Dict[str, List[str]] = {}  # row name -> the command that measures it
    for (name, model), branches in product(runs, args.branch_tokens or [None]):
        command = [sys.executable, str(here / "decoding.py"), "--child", "C", "--model", model,
                   "--format", name, "--n", str(args.n), "--batch-size", str(args.batch_size),
                   "--device", args.device]
        if branches is not None:
            command += ["--branch-tokens", str(branches)]
            name = f"{name} (branches {branches})"
        jobs[name] = command
    for shape in args.encoders:
        jobs[f"encoder {shape}"] = [sys.executable, __file__, "--encoder-child", shape, "--n", str(args.n),
                                    "--batch-size", str(args.batch_size)]
    results: Dict[str, List[Dict[str, Any]]] = {name: [] for name in jobs}
    for _ in range(args.repeats):  # round after round, so a slow spell of the machine hits every row
        for name, command in jobs.items():
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[name].append(json.loads(output.strip().splitlines()[-1]))
    print(f"sentences: {len(sentences)}  batch size: {args.batch_size}  device: {args.device}"
          + (f"  sentences/s: median of {args.repeats} rounds (slowest-fastest)" if args.repeats > 1 else ""))
    print("| format | sentences/s | F1 | tokens fed / sentence | minimum / sentence | fed / minimum "
          "| passes / sentence | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    speeds: Dict[str, float] = {}
    for name, rounds in results.items():
        result, count = rounds[0], rounds[0]["sentences"]
        each = sorted(count / r["seconds"] for r in rounds)
        speeds[name] = statistics.median(each)
        speed = f"{speeds[name]:.2f}" + (f" ({each[0]:.2f}-{each[-1]:.2f})" if len(each) > 1 else "")
        peak = max(r["peak_rss_mb"] for r in rounds)
        if name.startswith("encoder"):
            print(f"| GLiNER-{name.split()[1]}-shaped encoder ({result['dtype']}, random weights) | {speed} | - | "
                  f"{result['tokens'] / count:.0f} | - | - | 1.00 | {peak:.0f} |")
            continue
        f1 = 100 * paper_f1((s["words"], s["tags"], p) for s, p in zip(sentences, result["predictions"]))["f1"]
        print(f"| {name} | {speed} | {f1:.1f} | {result['tokens'] / count:.0f} | "
              f"{result['minimum'] / count:.0f} | {result['tokens'] / result['minimum']:.2f}x | "
              f"{result['passes'] / count:.2f} | {peak:.0f} |")
    decoders = {name: speed for name, speed in speeds.items() if not name.startswith("encoder")}
    fastest = max(decoders, key=decoders.__getitem__, default=None)
    word_tag = max((name for name in decoders if name.split()[0] == "word_tag"),
                   key=decoders.__getitem__, default=None)
    if fastest and word_tag and fastest != word_tag:
        print(f"{fastest}/{word_tag}: {speeds[fastest] / speeds[word_tag]:.2f}x sentences/s")
    if fastest and "encoder base" in speeds:
        print(f"{fastest}/GLiNER-base-shaped encoder: {speeds[fastest] / speeds['encoder base']:.2f}x sentences/s")


if __name__ == "__main__":
    main()
