"""Pipelines with gner: a saved pipeline directory as it is, or a model in a new pipeline;
what model a name stands for (a saved pipeline's own, "smollm2", a directory or Hub name).

`.models` (torch, transformers) is imported only where a model is resolved, so a saved pipeline
whose gner has a registered generator loads without them.
"""
import inspect
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import spacy
from spacy.language import Language
from spacy.util import load_config

from .component import DEFAULT_CONFIG, GNER, Labels
from .formats import FORMATS, get_format
from .generators import make_hf_generator

HF_GENERATOR = "spacy-gner.HFGenerator.v1"
# The settings of the default generator, spacy-gner.HFGenerator.v1, besides its model.
GENERATOR_SETTINGS = tuple(name for name in inspect.signature(make_hf_generator).parameters
                           if name != "model")


def is_pipeline_dir(path: Union[str, Path]) -> bool:
    """Whether `path` is a saved spaCy pipeline directory (it has config.cfg)."""
    return (Path(path) / "config.cfg").is_file()


def gner_components(pipeline_dir: Union[str, Path]) -> List[str]:
    """The names of the gner components in a saved pipeline's config.cfg."""
    return _gner_names(load_config(Path(pipeline_dir) / "config.cfg", interpolate=False))


def resolve_model(name: Union[str, Path]) -> str:
    """The model directory or Hub name that `name` stands for.

    "smollm2" is `smollm2_path()`; a saved spaCy pipeline directory (config.cfg) stands for
    the model saved by its gner component (`DIR/<component>/model`); a model directory
    (config.json) and anything else (a Hub name) are taken as given. A directory that is
    neither, or a pipeline without one saved gner model, is a short ModelLoadError.
    """
    from .models import ModelLoadError, smollm2_path

    if str(name) == "smollm2":
        return str(smollm2_path())
    path = Path(name)
    if not path.is_dir() or (path / "config.json").is_file():
        return str(name)
    if not is_pipeline_dir(path):
        raise ModelLoadError(
            f"{str(name)!r} is a directory, but neither a model directory (config.json, the "
            f"tokenizer files and the weights) nor a saved spaCy pipeline (config.cfg)"
        )
    names = gner_components(path)
    if len(names) != 1:
        raise ModelLoadError(
            f"the spaCy pipeline {str(name)!r} has {len(names)} gner components "
            f"({', '.join(names) or 'none'}): expected one, whose model to use"
        )
    model = path / names[0] / "model"
    if not (model / "config.json").is_file():
        raise ModelLoadError(
            f"the spaCy pipeline {str(name)!r} has no saved gner model: expected {model} "
            f"with config.json (a pipeline saved with its model, as training.package writes)"
        )
    return str(model)


def format_config(output_format: Union[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The generator config block of an output format named by its short name (word_tag,
    bracket, xml) or registered name (`spacy-gner.InlineBracket.v1`): `{"@gner_formats":
    <registered name>}`; a block (a dict) is taken as it is. An unknown name is a ValueError."""
    if isinstance(output_format, dict):
        return output_format
    found = get_format(output_format)
    return {"@gner_formats": found.name if output_format in FORMATS else output_format}


def _hf_setting(key: str, value: Any) -> Any:
    """An HFGenerator setting's config value: a block for `output_format` (`format_config`),
    others as they are."""
    return format_config(value) if key == "output_format" else value


def _gner_names(config: Dict[str, Any]) -> List[str]:
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

    `settings` that are not None replace the gner component's own: its config keys
    (`store_raw=True`, `threshold=0.5`, ...) and its generator's (`device="cpu"`,
    `prompt_format="plain"`, `output_format="bracket"`, ...; see `spacy-gner.HFGenerator.v1`),
    routed to the generator block; an HFGenerator's `output_format` is a format's short or
    registered name (see `format_config`). A saved pipeline directory (config.cfg) loads as
    it is, with its own components and sentence boundaries, and only what is given here
    replaces its gner components' settings and `labels`. Anything else (a model directory, Hub
    name or "smollm2", see `resolve_model`) becomes a gner component on an HFGenerator with
    `labels` and the settings, added to `base` (a pipeline name or directory) or to a blank
    English pipeline with a sentencizer; its model loads on first use.
    """
    settings = {key: value for key, value in settings.items() if value is not None}
    unknown = sorted(set(settings) - set(DEFAULT_CONFIG) - set(GENERATOR_SETTINGS))
    if unknown:
        raise ValueError(f"unknown gner setting(s) {unknown}: expected one of "
                         f"{sorted(set(DEFAULT_CONFIG) | set(GENERATOR_SETTINGS))}")
    if is_pipeline_dir(model):
        if base:
            raise ValueError(f"{str(model)!r} is a saved pipeline: it takes no base pipeline")
        nlp = spacy.load(model, config=saved_overrides(Path(model), settings))
        if labels is not None:  # the saved labels were read by from_disk; these replace them
            for pipe in gner_pipes(nlp):
                pipe.initialize(lambda: [], nlp=nlp, labels=labels)
        return nlp
    if base:
        nlp = spacy.load(base)
    else:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
    generator = {key: _hf_setting(key, settings.pop(key)) for key in GENERATOR_SETTINGS
                 if key in settings}
    config: Dict[str, Any] = {"generator": {"model": resolve_model(model), **generator}, **settings}
    if labels is not None:
        config["labels"] = labels
    nlp.add_pipe("gner", config=config)
    return nlp


def saved_overrides(pipeline_dir: Path, settings: Dict[str, Any]) -> Dict[str, Any]:
    """Config overrides that give a saved pipeline's gner components `settings`; a generator
    setting its generator block does not have (a custom generator; an HFGenerator takes them
    all) is an error, not ignored."""
    config = load_config(pipeline_dir / "config.cfg", interpolate=False)
    names = _gner_names(config)
    if not names:
        from .models import ModelLoadError

        raise ModelLoadError(f"the spaCy pipeline {str(pipeline_dir)!r} has no gner component")
    overrides = {}
    for name in names:
        generator = config["components"][name].get("generator", {})
        hf = generator.get("@gner_generators") == HF_GENERATOR
        for key, value in settings.items():
            if key not in GENERATOR_SETTINGS:
                overrides[f"components.{name}.{key}"] = value
            elif key in generator or hf:
                overrides[f"components.{name}.generator.{key}"] = _hf_setting(key, value) if hf else value
            else:
                raise ValueError(f"the generator of {name!r} in {str(pipeline_dir)!r} "
                                 f"({generator.get('@gner_generators')}) takes no {key!r}")
    return overrides


def gner_pipes(nlp: Language) -> List[GNER]:
    """The pipeline's gner components, in order."""
    return [pipe for _, pipe in nlp.pipeline if isinstance(pipe, GNER)]


def spans_key(nlp: Language) -> str:
    """The span group holding the scored candidate entities of the pipeline's (last) gner
    component: `doc.spans[key]` with attrs["scores"]."""
    pipes = gner_pipes(nlp)
    return pipes[-1].spans_key if pipes else DEFAULT_CONFIG["spans_key"]
