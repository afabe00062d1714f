"""Corpus annotation throughput, scaling and memory: `spacy_gner.annotate` measured.

    python benchmarks/annotate.py [--model PIPELINE] [--n 2506] [--workers 1 2]

Prints three tables, each configuration run in a fresh process (so peak memory is its own):
  1. the CrossNER test sentences (assets/crossner/*/test.txt, 2,506) annotated with the
     pipeline (default: training/pipelines/gner-default, with its own labels) by 1 worker and
     by --workers 2 on this machine: documents/s (startup excluded, and the whole run), the
     workers' startup, peak memory of the main process and of the largest worker process;
  2. scaling, simulated: a registered generator that sleeps a fixed latency per batch of
     sequences (standing for a GPU: --latency s per --sim-batch sequences), 1/2/4/8 worker
     processes and Ray actors (a local Ray instance): documents/s, speed-up over one worker,
     and the dispatch overhead per document, (time - ideal time) / documents, where the ideal
     is the simulated model time divided among the workers;
  3. peak memory of a run over 1,000 and over 10,000 input lines (the simulated generator
     without latency, one worker): it stays flat, as input streams through in shards.
"""
import argparse
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from spacy.util import registry

from spacy_gner.generators import Request, Result

ROOT = Path(__file__).resolve().parents[1]
CROSSNER = ROOT / "assets" / "crossner"
DEFAULT_PIPELINE = ROOT / "training" / "pipelines" / "gner-default"
SIM_LABELS = ["person", "location", "organization"]


class FixedLatency:
    """A stand-in model: sleeps `latency` seconds per batch of `batch_size` requests, and tags
    capitalised words as entities of the first type, every other word O (probability 1)."""

    def __init__(self, latency: float, batch_size: int) -> None:
        self.latency = latency
        self.batch_size = batch_size

    def costs(self, words: Sequence[str], labels: Sequence[str]) -> Tuple[List[int], int]:
        return [1] * len(words), 1024

    def __call__(self, requests: Sequence[Request]) -> List[Result]:
        time.sleep(self.latency * math.ceil(len(requests) / self.batch_size))
        return [Result(r.enforce([f"B-{r.labels[0]}" if w[:1].isupper() else "O" for w in r.words]),
                       (1.0,) * len(r.words)) for r in requests]


@registry.gner_generators("spacy-gner.bench.FixedLatency.v1")
def fixed_latency(latency: float = 0.1, batch_size: int = 8) -> FixedLatency:
    return FixedLatency(latency, batch_size)


def crossner_sentences(n: int) -> List[str]:
    """n CrossNER test sentences, the five domains in turn (repeated past 2,506)."""
    sys.path.insert(0, str(ROOT))
    from training.readers import dataset_dirs, read_bio_dir

    domains = [[" ".join(r.words) for r in read_bio_dir(d, "test")] for d in dataset_dirs(CROSSNER)]
    mixed = [s for group in domains for s in group]
    return list(islice(cycle(mixed), n))


def sim_pipeline(directory: Path, latency: float, batch: int) -> Path:
    """A saved pipeline (sentencizer + gner) whose gner runs the fixed-latency generator."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    generator = {"@gner_generators": "spacy-gner.bench.FixedLatency.v1", "latency": latency, "batch_size": batch}
    nlp.add_pipe("gner", config={"labels": SIM_LABELS, "generator": generator})
    nlp.to_disk(directory)
    return directory


def measure(job: Dict[str, Any]) -> Dict[str, Any]:
    """Run one annotate job here (in a child process) and return its figures."""
    if job.get("ray"):
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a local instance, on loopback
        import ray

        ray.init(num_cpus=job["workers"], include_dashboard=False, log_to_driver=False)
    from spacy_gner import annotate

    with tempfile.TemporaryDirectory() as out:
        summary = annotate([job["input"]], Path(out) / "out", job["model"], workers=job["workers"],
                           shard_size=job["shard_size"], device=job.get("device"),
                           ray="auto" if job.get("ray") else None, code=__file__)
        digest = hashlib.sha256()
        for shard in sorted((Path(out) / "out").glob("shard-*")):
            digest.update(shard.read_bytes())
    return {
        "output_sha256": digest.hexdigest(),
        "documents": summary.written,
        "seconds": summary.seconds,
        "startup": summary.startup,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run_child(job: Dict[str, Any]) -> Dict[str, Any]:
    output = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def real_table(args: argparse.Namespace, tmp: Path) -> None:
    texts = write_lines(tmp / "crossner.txt", crossner_sentences(args.n))
    print(f"\n1. {args.n} CrossNER test sentences, {args.model}, device {args.device}, "
          f"shards of {args.shard_size}")
    print("| workers | documents/s | documents/s, whole run | startup s | peak RSS MB, main | "
          "peak RSS MB, largest worker |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    rates, outputs = {}, {}
    for workers in args.workers:
        r = run_child({"input": str(texts), "model": args.model, "workers": workers,
                       "shard_size": args.shard_size, "device": args.device})
        rates[workers] = r["documents"] / (r["seconds"] - r["startup"])
        worker_rss = f"{r['peak_worker_rss_mb']:.0f}" if workers > 1 else "(in main)"
        print(f"| {workers} | {rates[workers]:.2f} | {r['documents'] / r['seconds']:.2f} | "
              f"{r['startup']:.1f} | {r['peak_rss_mb']:.0f} | {worker_rss} |")
        outputs[workers] = r["output_sha256"]
    if len(rates) > 1:
        first = min(rates)
        print("; ".join(f"{w} workers / {first}: {rates[w] / rates[first]:.2f}x"
                        for w in rates if w != first))
        print("the same output from every worker count:", len(set(outputs.values())) == 1)


def sim_table(args: argparse.Namespace, tmp: Path) -> None:
    texts = write_lines(tmp / "sim.txt", crossner_sentences(args.sim_n))
    pipeline = sim_pipeline(tmp / "sim-pipeline", args.latency, args.sim_batch)
    sentences, batches = simulated_batches(texts, args.sim_shard_size, args.sim_batch)
    print(f"\n2. simulated model: {args.latency} s per batch of {args.sim_batch} sequences, "
          f"{args.sim_n} documents ({sentences} sentences, {batches} batches), shards of "
          f"{args.sim_shard_size}")
    print("| backend | workers | documents/s | speed-up | ideal s | measured s | "
          "overhead ms/document |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    backends = ["processes"] + ([] if args.no_ray else ["ray"])
    for backend in backends:
        base = None
        for workers in args.scaling:
            r = run_child({"input": str(texts), "model": str(pipeline), "workers": workers,
                           "shard_size": args.sim_shard_size, "ray": backend == "ray"})
            seconds = r["seconds"] - r["startup"]
            rate = r["documents"] / seconds
            base = base or rate
            ideal = batches * args.latency / workers
            overhead = 1000 * (seconds - ideal) / r["documents"]
            print(f"| {backend} | {workers} | {rate:.1f} | {rate / base:.2f}x | {ideal:.1f} | "
                  f"{seconds:.1f} | {overhead:.2f} |")


def simulated_batches(path: Path, shard_size: int, batch: int) -> Tuple[int, int]:
    """(sentences, batches) the simulated model sees: gner gets the documents of a shard
    DOCS_PER_CALL at a time and makes one generate call of their sentences, sleeping per
    started batch."""
    import spacy

    from spacy_gner.workers import DOCS_PER_CALL

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    texts = path.read_text(encoding="utf-8").splitlines()
    sentences = batches = 0
    for start in range(0, len(texts), shard_size):
        shard = texts[start : start + shard_size]
        for call in range(0, len(shard), DOCS_PER_CALL):
            count = sum(len(list(doc.sents)) for doc in nlp.pipe(shard[call : call + DOCS_PER_CALL]))
            sentences += count
            batches += math.ceil(count / batch)
    return sentences, batches


def memory_table(args: argparse.Namespace, tmp: Path) -> None:
    pipeline = sim_pipeline(tmp / "memory-pipeline", 0.0, args.sim_batch)
    print(f"\n3. peak memory by input size (simulated model without latency, 1 worker, "
          f"shards of {args.sim_shard_size})")
    print("| input lines | documents/s | peak RSS MB |")
    print("| ---: | ---: | ---: |")
    for lines in args.memory_lines:
        texts = write_lines(tmp / f"memory-{lines}.txt", crossner_sentences(lines))
        r = run_child({"input": str(texts), "model": str(pipeline), "workers": 1,
                       "shard_size": args.sim_shard_size})
        print(f"| {lines:,} | {r['documents'] / r['seconds']:.0f} | {r['peak_rss_mb']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--model", default=str(DEFAULT_PIPELINE), help="pipeline or model directory for table 1")
    add("--n", type=int, default=2506, help="CrossNER sentences for table 1 (default: all)")
    add("--workers", type=int, nargs="+", default=[1, 2], help="table 1's worker counts")
    add("--shard-size", type=int, default=50, help="table 1's records per shard")
    add("--device", help="table 1's device (default: the pipeline's own)")
    add("--latency", type=float, default=0.1, help="simulated seconds per batch")
    add("--sim-batch", type=int, default=8, help="simulated sequences per batch")
    add("--sim-n", type=int, default=2506, help="documents for table 2")
    add("--sim-shard-size", type=int, default=100, help="records per shard in tables 2 and 3")
    add("--scaling", type=int, nargs="+", default=[1, 2, 4, 8], help="table 2's worker counts")
    add("--no-ray", action="store_true", help="leave Ray actors out of table 2")
    add("--memory-lines", type=int, nargs="+", default=[1000, 10000], help="table 3's sizes")
    add("--tables", nargs="+", default=["1", "2", "3"], choices=["1", "2", "3"])
    add("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    if "1" in args.tables and not Path(args.model).exists():
        parser.error(f"no pipeline at {args.model}: run the training workflow or give --model")
    print(f"{os.cpu_count()} CPUs; every figure from one run")
    with tempfile.TemporaryDirectory() as tmp:
        for table, run in (("1", real_table), ("2", sim_table), ("3", memory_table)):
            if table in args.tables:
                run(args, Path(tmp))


if __name__ == "__main__":
    main()
