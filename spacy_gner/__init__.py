"""spacy-gner: generative NER (GNER) as a spaCy pipeline component.

Importing this package (as spaCy does for the `gner` factory) loads neither torch nor
transformers; models load on first use.
"""
from . import forking  # noqa: F401  (registers its fork handler before workers are forked)
from .batch import Summary, annotate
from .calibration import Calibration
from .chunking import Chunk, Entity, merge_chunk_entities, plan_chunks
from .component import GNER, make_gner, normalize_labels
from .formats import InlineBracket, InlineXML, OutputFormat, WordTag, entity_score, get_format
from .generators import Generator, Loadable, Request, Result, Serializable, parse_output
from .matching import back_tokenize, hierarchical_match
from .output import bio_to_spans, extract, repair_bio
from .pipeline import load_pipeline
from .prompt import INSTRUCTION, build_prompt, build_target, format_prompt

__version__ = "0.2.0"

__all__ = [
    "GNER",
    "INSTRUCTION",
    "Calibration",
    "Chunk",
    "Entity",
    "Generator",
    "InlineBracket",
    "InlineXML",
    "OutputFormat",
    "WordTag",
    "Loadable",
    "Request",
    "Result",
    "Serializable",
    "back_tokenize",
    "bio_to_spans",
    "build_prompt",
    "build_target",
    "entity_score",
    "extract",
    "format_prompt",
    "get_format",
    "hierarchical_match",
    "make_gner",
    "merge_chunk_entities",
    "normalize_labels",
    "parse_output",
    "plan_chunks",
    "repair_bio",
    "Summary",
    "annotate",
    "load_pipeline",
]
