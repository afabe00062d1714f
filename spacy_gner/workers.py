"""Workers that annotate shards: in this process, or one spawned process per device or CPU
worker, each loading the pipeline once.

Every backend has `ready()`, which returns once every worker holds its pipeline, `run(shards,
progress)`, which yields (shard, output) pairs as shards are finished (in any order) while
keeping a bounded number of shards in flight, and `close()`.
"""
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from spacy.tokens import Doc

from .component import Labels
from .pipeline import gner_pipes, load_pipeline, spans_key
from .shards import Shard, ShardOutput, shard_data

Progress = Callable[[int], None]
DOCS_PER_CALL = 64  # Docs nlp.pipe hands gner at once: it sorts their sentences by length
SHARDS_PER_WORKER = 2  # shards queued per worker, so none waits between shards


class WorkerError(RuntimeError):
    """A worker process that could not load its pipeline, failed or stopped."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs: the pipeline (`load_pipeline(model, labels=..., device=...,
    **settings)`, after importing the Python file `code` that registers custom functions),
    its torch threads (None: as they are), and the output format and text field."""

    model: str
    labels: Optional[Labels] = None
    device: Optional[str] = None
    settings: Dict[str, Any] = field(default_factory=dict)
    code: Optional[str] = None
    threads: Optional[int] = None
    output_format: str = "jsonl"
    text_field: str = "text"


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ShardAnnotator:
    """A pipeline, loaded once, that turns shards into output files' bytes."""

    def __init__(self, spec: WorkerSpec) -> None:
        if spec.code:
            from spacy.util import import_file

            import_file("spacy_gner_user_code", spec.code)
        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.nlp = load_pipeline(spec.model, labels=spec.labels, device=spec.device, **spec.settings)
        for gner in gner_pipes(self.nlp):
            if not gner.labels:
                raise ValueError(f"the gner component {gner.name!r} has no labels: give them")
            gner.initialize(lambda: [], nlp=self.nlp)  # loads the model now, not mid-shard
        self.spans_key = spans_key(self.nlp)

    def __call__(self, shard: Shard, progress: Optional[Progress] = None) -> ShardOutput:
        """Annotate a shard's documents; `progress(1)` after each."""
        docs = (text if doc is None else Doc(self.nlp.vocab).from_bytes(doc)
                for text, doc, _ in shard.items)
        annotated = []
        for (_, _, fields), doc in zip(shard.items, self.nlp.pipe(docs, batch_size=DOCS_PER_CALL)):
            annotated.append((doc, fields))
            if progress is not None:
                progress(1)
        data, count = shard_data(annotated, self.spec.output_format, self.spec.text_field,
                                 self.spans_key)
        return ShardOutput(shard.index, data, count)


class InProcess:
    """One worker: the pipeline in this process."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.annotator = ShardAnnotator(spec)

    def ready(self) -> None:
        pass

    def run(self, shards: Iterable[Shard], progress: Progress) -> Iterator[Tuple[Shard, ShardOutput]]:
        for shard in shards:
            yield shard, self.annotator(shard, progress)

    def close(self) -> None:
        pass


class ProcessPool:
    """A spawned process per spec (fresh interpreters: safe with CUDA and OpenMP), each loading
    its pipeline once; a shard goes to whichever process is free."""

    def __init__(self, specs: List[WorkerSpec]) -> None:
        context = multiprocessing.get_context("spawn")
        self.tasks = context.Queue()
        self.results = context.Queue()
        self.processes = [
            context.Process(target=_serve, args=(spec, self.tasks, self.results), daemon=True,
                            name=f"gner-worker-{i}")
            for i, spec in enumerate(specs)
        ]
        for process in self.processes:
            process.start()

    def ready(self) -> None:
        waiting = len(self.processes)
        while waiting:
            kind, payload = self._next()
            if kind != "ready":
                raise WorkerError(payload)
            waiting -= 1

    def _next(self) -> Tuple[str, Any]:
        """The next message of a worker, checking meanwhile that all are still running."""
        while True:
            try:
                return self.results.get(timeout=1.0)
            except queue.Empty:
                for process in self.processes:
                    if process.exitcode is not None:
                        raise WorkerError(f"{process.name} stopped (exit code {process.exitcode})")

    def run(self, shards: Iterable[Shard], progress: Progress) -> Iterator[Tuple[Shard, ShardOutput]]:
        shards = iter(shards)
        pending: Dict[int, Shard] = {}

        def fill() -> None:
            while len(pending) < SHARDS_PER_WORKER * len(self.processes):
                shard = next(shards, None)
                if shard is None:
                    return
                pending[shard.index] = shard
                self.tasks.put(shard)

        fill()
        while pending:
            kind, payload = self._next()
            if kind == "progress":
                progress(payload)
            elif kind == "done":
                yield pending.pop(payload.index), payload
                fill()
            elif kind != "ready":
                raise WorkerError(payload)

    def close(self) -> None:
        """Stop the workers: take back the shards none has started, ask them to stop, then end
        those still running after 10 s."""
        try:
            while True:
                self.tasks.get_nowait()
        except queue.Empty:
            pass
        for _ in self.processes:
            self.tasks.put(None)
        deadline = time.monotonic() + 10
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join()
        self.tasks.cancel_join_thread()  # shards no worker took must not block our exit


class _Throttled:
    """Adds up progress and passes it on at most every `interval` seconds (and on flush)."""

    def __init__(self, send: Progress, interval: float = 0.5) -> None:
        self.send, self.interval = send, interval
        self.count, self.last = 0, time.monotonic()

    def __call__(self, count: int) -> None:
        self.count += count
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.count:
            self.send(self.count)
        self.count, self.last = 0, time.monotonic()


def _exit_with_parent() -> None:
    """End this process when its parent is gone (killed, so it could not stop us)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _serve(spec: WorkerSpec, tasks: Any, results: Any) -> None:
    """A worker process: load the pipeline, then annotate shards until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent()
    name = f"{multiprocessing.current_process().name} ({spec.device or 'default device'})"
    try:
        annotator = ShardAnnotator(spec)
    except (OSError, ValueError) as error:  # a model or pipeline that cannot load
        results.put(("error", f"{name}: {error}"))
        return
    results.put(("ready", name))
    try:
        while True:
            shard = tasks.get()
            if shard is None:
                return
            progress = _Throttled(lambda count: results.put(("progress", count)))
            output = annotator(shard, progress)
            progress.flush()
            results.put(("done", output))
    except Exception:
        results.put(("error", f"{name} failed:\n{traceback.format_exc()}"))


def local_backend(spec: WorkerSpec, workers: int = 1, devices: Optional[List[str]] = None,
                  threads: Optional[int] = None) -> Any:
    """One worker per device (given), else `workers` CPU workers; a single one runs here.
    Torch threads per worker: `threads`, else the cores split evenly among several workers."""
    specs = [replace(spec, device=device) for device in devices] if devices else [spec] * workers
    if len(specs) == 1:
        return InProcess(replace(specs[0], threads=threads))
    threads = threads or max(1, available_cores() // len(specs))
    return ProcessPool([replace(s, threads=threads) for s in specs])
