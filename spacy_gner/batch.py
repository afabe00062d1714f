"""Annotate corpora: input files in, shards of annotated documents out, resumable.

    python -m spacy_gner annotate INPUT... --output OUT --model MODEL_OR_PIPELINE [--labels ...]

`annotate()` is the Python API; `main()` the command line built on it.
"""
import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .component import SET_ENTS_MODES, Labels
from .corpus import Location, PathLike, count_records, input_files, read_records
from .shards import BAD_LINES, FORMATS, ShardStore, plan_shards
from .workers import WorkerError, WorkerSpec, local_backend

MAX_REPORTED = 10  # bad lines printed one by one; all are in OUT/bad-lines/


@dataclass
class Summary:
    """What a run did. read = written + bad (this run); skipped: records of shards an earlier
    run had finished; seconds: from the call to the last shard written, startup included."""

    output: Path
    read: int
    written: int
    bad: int
    skipped: int
    shards: int
    seconds: float
    startup: float = 0.0  # of the seconds, those until every worker held its pipeline

    def __str__(self) -> str:
        rate = self.written / self.seconds if self.seconds else 0.0
        text = (f"read {self.read} records: wrote {self.written} documents, {self.bad} bad lines "
                f"in {self.shards} shards to {self.output}, in {self.seconds:.1f} s "
                f"({rate:.2f} documents/s; workers ready after {self.startup:.1f} s)")
        if self.bad:
            text += f"; the bad lines are listed in {self.output / BAD_LINES}"
        if self.skipped:
            text += f"; {self.skipped} records were done by an earlier run"
        return text


def annotate(
    inputs: Iterable[PathLike],
    output: PathLike,
    model: Union[str, Path],
    *,
    labels: Optional[Labels] = None,
    output_format: str = "jsonl",
    text_field: str = "text",
    shard_size: int = 1000,
    device: Optional[str] = None,
    devices: Optional[Sequence[str]] = None,
    workers: int = 1,
    threads: Optional[int] = None,
    ray: Optional[str] = None,
    batch_size: Optional[int] = None,
    set_ents_mode: Optional[str] = None,
    code: Optional[PathLike] = None,
    progress: bool = False,
) -> Summary:
    """Annotate the documents of `inputs` (.txt, .jsonl, .spacy files or directories) with the
    gner pipeline of `model` (a saved pipeline directory as it is, or a model in blank en +
    sentencizer + gner, see `load_pipeline`), writing shards of `shard_size` records and a
    manifest to the directory `output` as JSON lines or DocBins (`output_format` "jsonl" or
    "spacy"). Run again with the same arguments, it skips the shards already written.

    labels / device / batch_size / set_ents_mode: replace the pipeline's own (None: keep them;
    set_ents_mode decides what becomes of the entities .spacy inputs already have). devices: one
    worker process per device; workers: that many CPU worker processes (threads: torch threads
    per worker, default the cores split among them); ray: "auto" or a cluster address to run
    on Ray actors instead. code: a Python file registering custom functions, imported by each
    worker. progress: show a progress bar on standard error.
    """
    start = time.perf_counter()
    files = input_files(inputs)
    if devices and workers != 1 and workers != len(devices):
        raise ValueError(f"{workers} workers for {len(devices)} devices: give one or the other")
    if devices and ray:
        raise ValueError("devices are for one machine: on Ray, each actor gets a GPU of its own")
    model_arg = str(Path(model).resolve()) if Path(model).exists() else str(model)
    settings: Dict[str, Any] = {
        "inputs": [{"path": str(f.resolve()), "size": f.stat().st_size,
                    "mtime_ns": f.stat().st_mtime_ns} for f in files],
        "model": model_arg, "labels": labels, "format": output_format,
        "text_field": text_field, "shard_size": shard_size, "set_ents_mode": set_ents_mode,
    }
    store = ShardStore(Path(output), settings, output_format)
    done, skipped = store.done, store.records_done
    if store.manifest["complete"]:
        return Summary(Path(output), 0, 0, 0, skipped, 0, time.perf_counter() - start)
    spec = WorkerSpec(model_arg, labels=labels, device=device,
                      settings={"batch_size": batch_size, "set_ents_mode": set_ents_mode},
                      code=str(code) if code else None, output_format=output_format,
                      text_field=text_field)
    if ray:
        from .ray_backend import RayActors

        backend = RayActors(spec, ray, workers=workers if workers > 1 else None, threads=threads)
    else:
        backend = local_backend(spec, workers, list(devices) if devices else None, threads)
    read = written = bad = shards = 0
    bar = None
    try:
        backend.ready()
        startup = time.perf_counter() - start
        total = sum(count_records(f) for f in files) if progress else None
        bar = _progress_bar(total, skipped, progress)
        records = read_records(files, text_field)
        for shard, result in backend.run(plan_shards(records, shard_size, done), bar.update):
            store.write(shard, result)
            for line in shard.bad:
                if bad < MAX_REPORTED:
                    where = Location(Path(line["file"]), line.get("line"), line.get("item"))
                    bar.write(f"bad line: {where}: {line['error']}", file=sys.stderr)
                bad += 1
            bar.update(len(shard.bad))
            read += shard.records
            written += result.documents
            shards += 1
        store.finish()
        seconds = time.perf_counter() - start  # the workers' shutdown is not counted
    finally:
        if bar is not None:
            bar.close()
        backend.close()
    return Summary(Path(output), read, written, bad, skipped, shards, seconds, startup)


def _progress_bar(total: Optional[int], initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="doc", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0, smoothing=0.05)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m spacy_gner annotate",
        description="Annotate corpora with gner, in resumable shards.",
        epilog="Run the same command again to resume a run that was stopped: finished shards "
               "are kept, the others done again.")
    add = parser.add_argument
    add("inputs", nargs="+", help=".txt (a document a line), .jsonl or .spacy files, or "
        "directories of them")
    add("--output", required=True, type=Path, help="the output directory (shards + manifest)")
    add("--model", required=True, help="a saved pipeline directory, a model directory, a "
        "Hub name, or 'smollm2'")
    add("--labels", nargs="+", help="entity types (default: a saved pipeline's own)")
    add("--format", dest="output_format", default="jsonl", choices=FORMATS,
        help="output shards as JSON lines or DocBins (default: jsonl)")
    add("--text-field", default="text", help="the text field of .jsonl records (default: text)")
    add("--shard-size", type=int, default=1000, help="records per shard (default: 1000)")
    add("--device", help="auto, cpu, cuda, cuda:1, ... (default: a saved pipeline's own, else auto)")
    add("--devices", nargs="+", help="one worker process per device, e.g. cuda:0 cuda:1")
    add("--workers", type=int, default=1, help="worker processes (Ray: actors) (default: 1)")
    add("--threads", type=int, help="torch threads per worker (default: the cores split among "
        "the workers)")
    add("--ray", metavar="auto|ADDRESS", help="run on Ray actors: 'auto' (the cluster this "
        "machine belongs to) or the head's address")
    add("--batch-size", type=int, help="gner's sequences per generate call (default: the "
        "pipeline's own)")
    add("--set-ents-mode", choices=SET_ENTS_MODES, help="what becomes of the entities .spacy "
        "inputs have; condition: the model is told them and tags the rest (default: the "
        "pipeline's own, else replace)")
    add("--code", type=Path, help="a Python file with registered functions to import first")
    add("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.shard_size < 1:
        parser.error("--workers and --shard-size must be positive")
    options = {key: value for key, value in vars(args).items() if key not in ("quiet", "inputs", "output", "model")}
    try:
        summary = annotate(args.inputs, args.output, args.model, progress=not args.quiet, **options)
    except (OSError, ValueError, WorkerError) as error:  # bad arguments, a model that cannot load
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: stopped; the finished shards are kept: run the same "
                         f"command again to go on\n")
    print(summary, file=sys.stderr)
