"""Fine-tuning speed and memory: the shared prompt start on and off, on the workflow's data.

    python benchmarks/finetune.py [--model smollm2] [--steps 16]

Runs the workflow's own commands from project.yml: its `prepare` step's training-data command
(written to a temporary file), then its fine-tuning options (`finetune_options`) for `--model`
and `--steps` optimizer steps, twice, each in a fresh process so peak memory is its own:
  plain   every prompt computed in full (`--no-share-prompt-start`);
  shared  the start a batch's prompts share computed once (the default for causal models).
Prints seconds per step (the Trainer's loop: model loading excluded), examples/s, peak RSS
and the mean training loss (the same in both: sharing is exact up to bf16 rounding), then
the speed ratio shared/plain.
"""
import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from weasel.util import load_project_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the `training` package lives in the repository, not installed
PROJECT = load_project_config(ROOT)  # project.yml, its variables interpolated
WORKFLOW = PROJECT["vars"]
CONFIGS = {"plain": ["--no-share-prompt-start"], "shared": ["--share-prompt-start"]}


def prepare_command() -> List[str]:
    """The workflow's command that writes the training data (its `prepare` step's first)."""
    [step] = [command for command in PROJECT["commands"] if command["name"] == "prepare"]
    return shlex.split(step["script"][0])


def measure(args: argparse.Namespace) -> Dict[str, Any]:
    """Fine-tune once as `args.child` says, here; returns its figures (a child process)."""
    from transformers import TrainerCallback

    from training.finetune import build_parser, finetune

    logged: Dict[str, float] = {}

    class Recorder(TrainerCallback):
        def on_log(self, _args: Any, _state: Any, _control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            logged.update(logs or {})

    with tempfile.TemporaryDirectory() as output:
        # the workflow's options, then what this run changes (the last value of an option wins)
        argv = [*shlex.split(WORKFLOW["finetune_options"]), "--model", args.model,
                "--train", str(args.train), "--output-dir", output, "--max-steps", str(args.steps),
                "--save-steps", str(10 * args.steps), *CONFIGS[args.child]]
        finetune(build_parser().parse_args(argv), callbacks=[Recorder()])
    return {"config": args.child, "seconds": logged["train_runtime"], "loss": logged["train_loss"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="causal model: Hub name, directory or smollm2")
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per configuration")
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "train.jsonl"
        subprocess.run([sys.executable, *prepare_command()[1:], "--jsonl", str(train)], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
        for config in CONFIGS:
            command = [sys.executable, __file__, "--child", config, "--train", str(train),
                       *sys.argv[1:]]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    examples = args.steps * WORKFLOW["total_batch_size"]
    print(f"model: {args.model}  steps: {args.steps}  examples per step: "
          f"{WORKFLOW['total_batch_size']}  options: {WORKFLOW['finetune_args']}")
    print("| configuration | s / step | examples/s | peak RSS MB | mean loss |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for result in results:
        print(f"| {result['config']} | {result['seconds'] / args.steps:.2f} | "
              f"{examples / result['seconds']:.3f} | "
              f"{result['peak_rss_mb']:.0f} | {result['loss']:.4f} |")
    plain, shared = results
    print(f"shared/plain: {plain['seconds'] / shared['seconds']:.2f}x speed, peak RSS "
          f"{shared['peak_rss_mb'] - plain['peak_rss_mb']:+.0f} MB")


if __name__ == "__main__":
    main()
