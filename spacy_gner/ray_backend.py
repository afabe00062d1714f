"""Shards on a Ray cluster (`pip install spacy-gner[ray]`): actors that each hold the pipeline,
one GPU each where the cluster has GPUs, else CPUs.

Every node needs spacy-gner installed and the model or pipeline directory (and any --code
file) at the same path; inputs are read, and outputs written, where the run was started: shards
travel through Ray's object store.
"""
from dataclasses import replace
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from .shards import Shard, ShardOutput
from .workers import SHARDS_PER_WORKER, Progress, ShardAnnotator, WorkerError, WorkerSpec


def _actor_class() -> Any:
    import ray

    @ray.remote(concurrency_groups={"annotate": 1, "progress": 1})
    class Annotator:
        """A ShardAnnotator in an actor; `progress` answers while a shard is annotated."""

        def __init__(self, spec: WorkerSpec) -> None:
            self.annotator = ShardAnnotator(spec)
            self.documents = 0

        def _count(self, count: int) -> None:
            self.documents += count

        @ray.method(concurrency_group="annotate")
        def annotate(self, shard: Shard) -> ShardOutput:
            return self.annotator(shard, self._count)

        @ray.method(concurrency_group="progress")
        def progress(self) -> int:
            return self.documents

    return Annotator


class RayActors:
    """Actors on the Ray cluster at `address` ("auto": the one this machine belongs to), or on
    the one this process is already connected to.

    With GPUs in the cluster: one actor per GPU (at most `workers`), each with its GPU and one
    reserved CPU. Without: `workers` actors (default: one per node), each reserving `threads`
    CPUs. Torch threads per actor: `threads`, default the cluster's CPUs split evenly.
    """

    def __init__(self, spec: WorkerSpec, address: Optional[str] = "auto",
                 workers: Optional[int] = None, threads: Optional[int] = None) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError("--ray needs Ray: pip install 'spacy-gner[ray]'") from None
        self.ray = ray
        self.connected_here = not ray.is_initialized()
        if self.connected_here:
            ray.init(address=address, log_to_driver=False)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            count = min(workers or gpus, gpus)
            threads = threads or max(1, int(resources.get("CPU", 1)) // count)
            options: Dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
            spec = replace(spec, device="cuda", threads=threads)
        else:
            count = workers or len([node for node in ray.nodes() if node["Alive"]])
            threads = threads or max(1, int(resources.get("CPU", 1)) // count)
            options = {"num_cpus": threads}
            spec = replace(spec, threads=threads)
        actor = _actor_class()
        self.actors: List[Any] = [actor.options(**options).remote(spec) for _ in range(count)]

    def ready(self) -> None:
        try:  # an actor answers once its __init__ (loading the pipeline) is done
            self.ray.get([actor.progress.remote() for actor in self.actors])
        except self.ray.exceptions.RayError as error:
            raise WorkerError(f"a Ray actor could not start: {error}") from None

    def run(self, shards: Iterable[Shard], progress: Progress) -> Iterator[Tuple[Shard, ShardOutput]]:
        ray = self.ray
        shards = iter(shards)
        in_flight: Dict[Any, Tuple[Shard, Any]] = {}
        load = {id(actor): 0 for actor in self.actors}

        def fill() -> None:
            for actor in self.actors:
                while load[id(actor)] < SHARDS_PER_WORKER:
                    shard = next(shards, None)
                    if shard is None:
                        return
                    in_flight[actor.annotate.remote(shard)] = (shard, actor)
                    load[id(actor)] += 1

        reported = 0
        fill()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            documents = sum(ray.get([actor.progress.remote() for actor in self.actors]))
            progress(documents - reported)
            reported = documents
            for ref in ready:
                shard, actor = in_flight.pop(ref)
                load[id(actor)] -= 1
                try:
                    output = ray.get(ref)
                except ray.exceptions.RayError as error:  # the actor's own traceback is in it
                    raise WorkerError(f"a Ray actor failed on shard {shard.index}: {error}") from None
                yield shard, output
            fill()

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.connected_here:
            self.ray.shutdown()
