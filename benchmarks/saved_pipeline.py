"""A saved gner pipeline on disk: its files, folder and wheel size, and how long it takes to load.

    python benchmarks/saved_pipeline.py [--model smollm2] [--repeats 3]

Packages `--model` (default: the embedded SmolLM2) as the workflow's package step does
(`python -m training.package`, so weights in the dtype decoding uses here), then prints each file of
the gner model folder with its size and mode, the folder's size, the size of the wheel
`spacy package --build wheel` makes of it, and the time a fresh process takes to
`spacy.load` the pipeline and to annotate its first sentence (the median of `--repeats` runs).
To compare code versions, run it with PYTHONPATH set to another checkout.
"""
import argparse
import json
import statistics
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import spacy_gner
import transformers

ROOT = Path(__file__).resolve().parents[1]

LOAD = """
import json, sys, time
start = time.perf_counter()
import spacy
nlp = spacy.load(sys.argv[1])
loaded = time.perf_counter()
nlp("John explored Tokyo and flew back to New York.")
print(json.dumps({"load": loaded - start, "first": time.perf_counter() - loaded}))
"""


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--labels", nargs="+", default=["person", "location", "organization"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"spacy_gner from {Path(spacy_gner.__file__).parent}, transformers {transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Path(tmp, "pipeline")
        subprocess.run([sys.executable, "-m", "training.package", args.model, str(pipeline),
                        "--labels", *args.labels], check=True, capture_output=True, cwd=ROOT)
        model = pipeline / "gner" / "model"
        print(f"\n{model.relative_to(pipeline)}:")
        for path in sorted(model.iterdir()):
            print(f"  {path.name:28} {megabytes(path.stat().st_size):>10}  "
                  f"{stat.filemode(path.stat().st_mode)}")
        folder = sum(path.stat().st_size for path in pipeline.rglob("*") if path.is_file())
        dist = Path(tmp, "dist")
        dist.mkdir()
        subprocess.run([sys.executable, "-m", "spacy", "package", str(pipeline), str(dist),
                        "--build", "wheel", "--force"], check=True, capture_output=True, cwd=tmp)
        [wheel] = dist.rglob("*.whl")
        times = [json.loads(subprocess.run([sys.executable, "-c", LOAD, str(pipeline)], check=True,
                                           capture_output=True, text=True).stdout.splitlines()[-1])
                 for _ in range(args.repeats)]
        print(f"\npipeline folder {megabytes(folder)}, wheel {megabytes(wheel.stat().st_size)}")
        print(f"spacy.load {statistics.median(t['load'] for t in times):.2f} s, first sentence "
              f"{statistics.median(t['first'] for t in times):.2f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
