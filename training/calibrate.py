"""Fit the calibration of a gner model's confidence scores on held-out sentences.

    python -m training.calibrate training/models/gner-default --data corpus/held-out.jsonl \\
        --output metrics/calibration.json
    python -m training.package MODEL_DIR PIPELINE_DIR --labels ... --calibration metrics/calibration.json

The model (a pipeline directory, or a model directory packaged on the fly) tags the sentences
of `--data` (GNER .jsonl, e.g. `training.prepare --held-out`, or BIO directories' `--split`),
its scores uncalibrated; `spacy_gner.calibration.fit` fits a `Calibration` on (entity score,
correct) pairs of all datasets together. Written: the calibration with the expected calibration
error before and after on these sentences (JSON, `--output`), per dataset and in all, and
optionally a reliability plot (`--plot`). `training.package --calibration` stores it in a
pipeline; to set it on a loaded one: `nlp.get_pipe("gner").calibration = Calibration(slope,
intercept)`.
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from spacy.training import Example

from spacy_gner.calibration import Calibration, fit
from spacy_gner.component import MODEL_SCORES
from spacy_gner.metrics import calibration as reliability
from spacy_gner.pipeline import load_pipeline
from spacy_gner.prompt import PROMPT_FORMATS

from .evaluate import Dataset, correctness, gner_component, load_datasets, plot_confidence
from .evaluate import predict, score, scored_candidates
from .prepare import format_name, parse_cap


def calibrate_scores(examples: Sequence[Example], spans_key: str, calibration: Calibration) -> None:
    """Set the scores of Examples predicted uncalibrated as a calibrated component sets them:
    calibrated in attrs["scores"], the model's own in attrs["model_scores"]."""
    for example in examples:
        group = example.predicted.spans.get(spans_key)
        if group is None:
            continue
        model = list(group.attrs.get(MODEL_SCORES, group.attrs["scores"]))
        group.attrs[MODEL_SCORES] = model
        group.attrs["scores"] = calibration.scores(model)


def read_calibration(path: Path) -> Calibration:
    """The calibration in a JSON file written by this command."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        return Calibration(float(data["slope"]), float(data["intercept"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a calibration (slope, intercept): {error}") from None


def calibrate(
    model: str,
    datasets: Sequence[Dataset],
    device: Optional[str] = None,
    prompt_format: Optional[str] = None,
    output_format: Optional[str] = None,
) -> Dict[str, Any]:
    """Fit a calibration of `model`'s scores (writing `output_format`, where given) on the
    datasets; return it with the scores per dataset before ("model scores") and after
    ("calibrated") it, and the expected calibration error of all datasets together before and
    after."""
    nlp = load_pipeline(model, device=device, prompt_format=prompt_format,
                        output_format=output_format)
    component = gner_component(nlp)
    component.calibration = None
    key = component.spans_key
    predicted = {name: predict(nlp, records) for name, records in datasets}
    candidates = [scored_candidates(eg, key) for examples in predicted.values() for eg in examples]
    pairs = correctness([(gold, scored or []) for gold, scored in candidates])
    if not pairs:
        print("no entity candidates on these sentences: the calibration is the identity")
    calibration = fit(pairs) if pairs else Calibration()
    before = {name: score(examples, key) for name, examples in predicted.items()}
    for examples in predicted.values():
        calibrate_scores(examples, key, calibration)
    after = {name: score(examples, key) for name, examples in predicted.items()}
    return {
        "slope": calibration.slope,
        "intercept": calibration.intercept,
        "temperature": calibration.temperature,
        "candidates": len(pairs),
        "ece_before": reliability(pairs)["ece"],
        "ece_after": reliability([(calibration(p), correct) for p, correct in pairs])["ece"],
        "results": {"model scores": {"model": model, "datasets": before},
                    "calibrated": {"model": model, "datasets": after}},
    }


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate",
                                     description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("model", help="a pipeline directory, or a model directory / Hub name / 'smollm2'")
    add("--data", nargs="+", required=True, type=Path,
        help="GNER .jsonl files (e.g. training.prepare --held-out) or BIO dataset directories")
    add("--split", default="dev", help="the split file of BIO directories (default: dev)")
    add("--limit", action="append", type=parse_cap, default=[], metavar="N|NAME=N",
        help="at most N sentences per dataset (a seeded sample); NAME=N for one dataset")
    add("--seed", type=int, default=0, help="seed of the --limit sample (default: 0)")
    add("--device", help="auto, cpu, cuda, cuda:1, ... (default: a pipeline's own, else auto)")
    add("--prompt-format", choices=PROMPT_FORMATS, help="the prompt wrapping of causal models "
        "(default: a pipeline's own, else inst)")
    add("--output-format", type=format_name, metavar="word_tag|bracket|xml", help="what the "
        "model writes: the format it was trained on (training.prepare --output-format) "
        "(default: a pipeline's own, else word_tag)")
    add("--output", type=Path, required=True, help="write the calibration (JSON) here")
    add("--plot", type=Path, help="write reliability diagrams before and after (PNG) here")
    args = parser.parse_args(argv)
    limits = dict(args.limit)
    try:
        datasets = load_datasets(args.data, args.split, limits.pop(None, None), args.seed,
                                 limits=limits)
    except ValueError as error:
        parser.error(str(error))
    if not any(records for _, records in datasets):
        parser.error(f"no sentences in {', '.join(map(str, args.data))}")
    result = calibrate(args.model, datasets, args.device, args.prompt_format, args.output_format)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"calibration on {result['candidates']} candidates: temperature "
          f"{result['temperature']:.3f}, intercept {result['intercept']:.3f}; expected "
          f"calibration error {_ece(result['ece_before'])} before, {_ece(result['ece_after'])} "
          f"after (these sentences); written to {args.output}")
    if args.plot:
        plot_confidence(result["results"], args.plot)


def _ece(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
