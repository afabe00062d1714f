"""Turn a fine-tuned Hugging Face model directory into a spaCy pipeline directory.

    python -m training.package MODEL_DIR OUTPUT_DIR --labels person location
    python -m training.package MODEL_DIR OUTPUT_DIR --labels person --base en_core_web_sm
    python -m training.package MODEL_DIR OUTPUT_DIR --labels person --calibration calibration.json
    python -m training.package MODEL_DIR OUTPUT_DIR --labels protein DNA --output-format bracket

The pipeline is a blank English one with a sentencizer (or the `--base` pipeline) and a `gner`
component on MODEL_DIR, its scores calibrated by `--calibration` (from `training.calibrate`)
where given, writing the output format it was trained on (`--output-format`, saved in the
generator's config). Its weights and tokenizer are written inside OUTPUT_DIR/gner/model
(MODEL_DIR's training checkpoints are not), so `spacy.load(OUTPUT_DIR)` needs nothing else.
"""
import argparse
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from spacy_gner.calibration import Calibration
from spacy_gner.pipeline import load_pipeline
from spacy_gner.prompt import PROMPT_FORMATS

from .calibrate import read_calibration
from .prepare import format_name

DEFAULT_META = {"name": "gner_default", "version": "0.0.0"}


def package(
    model: str,
    output_dir: Path,
    labels: Sequence[str],
    *,
    base: Optional[str] = None,
    prompt_format: Optional[str] = None,
    output_format: Optional[str] = None,
    meta: Optional[Dict[str, Any]] = None,
    calibration: Optional[Calibration] = None,
) -> Path:
    """Write the pipeline of `spacy_gner.pipeline.load_pipeline`, with the model's weights and
    the score `calibration` where given, to `output_dir`."""
    nlp = load_pipeline(model, labels=list(labels), base=base, prompt_format=prompt_format,
                        output_format=output_format)
    gner = nlp.get_pipe("gner")
    # Only gner: initialising the whole pipeline would reset a base pipeline's trained weights
    gner.initialize(lambda: [], nlp=nlp)  # loads the weights `to_disk` saves
    gner.calibration = calibration
    defaults = {**DEFAULT_META, "description": f"Generative NER (GNER) with the model {model}"}
    nlp.meta.update({**defaults, **(meta or {})})
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(output_dir)
    return output_dir


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.package",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("model", help="fine-tuned model directory (or Hub name, or 'smollm2')")
    parser.add_argument("output_dir", type=Path, help="the pipeline directory to write")
    parser.add_argument("--labels", nargs="+", required=True, help="entity types, e.g. person")
    parser.add_argument("--base", help="a spaCy pipeline to add gner to "
                        "(default: blank en + sentencizer)")
    parser.add_argument("--prompt-format", choices=PROMPT_FORMATS,
                        help="causal models: the prompt wrapping they were fine-tuned with "
                        "(default: inst)")
    parser.add_argument("--output-format", type=format_name, metavar="word_tag|bracket|xml",
                        help="the output format the model was trained on (training.prepare "
                        "--output-format), by short or registered name (default: word_tag)")
    parser.add_argument("--calibration", type=Path, help="a score calibration written by "
                        "training.calibrate (default: none, the model's own probabilities)")
    parser.add_argument("--name", default=DEFAULT_META["name"], help="meta name")
    parser.add_argument("--version", default=DEFAULT_META["version"], help="meta version")
    parser.add_argument("--description", help="meta description")
    args = parser.parse_args(argv)
    meta = {"name": args.name, "version": args.version}
    if args.description:
        meta["description"] = args.description
    calibration = read_calibration(args.calibration) if args.calibration else None
    path = package(args.model, args.output_dir, args.labels, base=args.base,
                   prompt_format=args.prompt_format, output_format=args.output_format,
                   meta=meta, calibration=calibration)
    print(f"wrote the pipeline to {path}")


if __name__ == "__main__":
    main()
