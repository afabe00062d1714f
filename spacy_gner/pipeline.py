"""Pipelines with gner: a saved pipeline directory as it is, or a model in a new pipeline.

`.models` (torch, transformers) is imported only where a model is resolved, so a saved pipeline
whose gner has a registered generator loads without them.
"""
from pathlib import Path
from typing import Any, List, Optional, Union

import spacy
from spacy.language import Language
from spacy.util import load_config

from .component import GNER, Labels

SPANS_KEY = "gner"  # where a gner component without a `spans_key` would put scored candidates


def is_pipeline_dir(path: Union[str, Path]) -> bool:
    """Whether `path` is a saved spaCy pipeline directory (it has config.cfg)."""
    return (Path(path) / "config.cfg").is_file()


def gner_components(pipeline_dir: Union[str, Path]) -> List[str]:
    """The names of the gner components in a saved pipeline's config.cfg."""
    config = load_config(Path(pipeline_dir) / "config.cfg", interpolate=False)
    return [name for name, component in config.get("components", {}).items()
            if component.get("factory") == "gner"]


def load_pipeline(
    model: Union[str, Path],
    *,
    labels: Optional[Labels] = None,
    base: Optional[str] = None,
    **settings: Any,
) -> Language:
    """A pipeline whose gner component runs `model`.

    A saved pipeline directory (config.cfg) loads as it is, with its own components and
    sentence boundaries; only what is given here replaces its gner components' own: `labels`
    and the gner config settings (`device="cpu"`, `store_raw=True`, ...) that are not None.
    Anything else (a model directory, Hub name or "smollm2", see `resolve_model`) becomes a gner
    component with `labels` and the settings, added to `base` (a pipeline name or directory)
    or to a blank English pipeline with a sentencizer; its model loads on first use.
    """
    settings = {key: value for key, value in settings.items() if value is not None}
    if is_pipeline_dir(model):
        if base:
            raise ValueError(f"{str(model)!r} is a saved pipeline: it takes no base pipeline")
        names = gner_components(model)
        if not names:
            from .models import ModelLoadError

            raise ModelLoadError(f"the spaCy pipeline {str(model)!r} has no gner component")
        overrides = {f"components.{name}.{key}": value
                     for name in names for key, value in settings.items()}
        nlp = spacy.load(model, config=overrides)
        if labels is not None:  # the saved labels were read by from_disk; these replace them
            for name in names:
                nlp.get_pipe(name).initialize(lambda: [], nlp=nlp, labels=labels)
        return nlp
    from .models import resolve_model

    if base:
        nlp = spacy.load(base)
    else:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
    config = {"model": resolve_model(model), **settings}
    if labels is not None:
        config["labels"] = labels
    nlp.add_pipe("gner", config=config)
    return nlp


def gner_pipes(nlp: Language) -> List[GNER]:
    """The pipeline's gner components, in order."""
    return [pipe for _, pipe in nlp.pipeline if isinstance(pipe, GNER)]


def spans_key(nlp: Language) -> str:
    """The span group holding the scored candidate entities of the pipeline's (last) gner
    component, `doc.spans[key]` with attrs["scores"]: its `spans_key`, by default "gner"."""
    pipes = gner_pipes(nlp)
    return getattr(pipes[-1], "spans_key", SPANS_KEY) if pipes else SPANS_KEY
