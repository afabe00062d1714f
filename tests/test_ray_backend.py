"""Annotating on Ray actors: a local Ray instance on loopback with 2 CPUs, 2 actors; the output
equals that of one process, and a run through Ray resumes what another run left."""
import json
import os
import sys

# Ray's nodes then take 127.0.0.1 as their address and listen on it only (read when ray is
# imported, so set before); the command-line run below gets the same environment.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(LOOPBACK)

import pytest  # noqa: E402
import ray  # noqa: E402
from support import SENTENCES, SUPPORT, files, run_process, save_pipeline  # noqa: E402

from spacy_gner.batch import annotate  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """A Ray instance started by this process, on this machine only; its address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def texts(tmp_path):
    sentence = "John explored Tokyo and flew back to New York . Mary visited Paris"
    path = tmp_path / "in.txt"
    path.write_text("\n".join([sentence, "Mary visited Paris", *SENTENCES] * 2) + "\n")
    return path


def test_two_actors_write_what_one_process_does(cluster, tiny_t5_pipeline, texts, tmp_path):
    assert cluster.startswith("127.0.0.1:")
    annotate([texts], tmp_path / "here", tiny_t5_pipeline, shard_size=3)
    code = ("import sys; from spacy_gner import annotate; "
            "print(annotate([sys.argv[1]], sys.argv[2], sys.argv[3], shard_size=3, ray=sys.argv[4], "
            "workers=2).shards)")
    result = run_process([sys.executable, "-c", code, str(texts), str(tmp_path / "ray"),
                          str(tiny_t5_pipeline), cluster], timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4"]
    assert files(tmp_path / "ray") == files(tmp_path / "here")


def test_the_command_line_resumes_through_ray_what_a_run_left(cluster, texts, tmp_path):
    pipeline = save_pipeline(tmp_path / "pipeline")
    annotate([texts], tmp_path / "out", pipeline, shard_size=2)
    expected = files(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for shard in manifest["shards"][1::2]:  # as if the run had been killed before these
        (tmp_path / "out" / shard["file"]).unlink()
    manifest["shards"], manifest["complete"] = manifest["shards"][::2], False
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))

    result = run_process(
        [sys.executable, "-m", "spacy_gner", "annotate", str(texts), "--output",
         str(tmp_path / "out"), "--model", str(pipeline), "--shard-size", "2", "--ray", cluster,
         "--workers", "2", "--code", SUPPORT],
        timeout=300)
    assert result.returncode == 0, result.stderr
    assert "wrote 6 documents" in result.stderr
    assert "6 records were done by an earlier run" in result.stderr
    assert files(tmp_path / "out") == expected
