"""Where the transformers lines spacy-gner supports differ (4.53.x and 5.x), in one place.

Every name here is chosen by what the installed transformers has, never by its version number,
and uses public APIs only:

- the keyword a model takes its KV cache by, and the output field that returns it
  (`past_key_values` in 4.x, `cache` in 5.x);
- reading and building a `DynamicCache` from per-layer keys and values (its iteration and its
  constructor, the same in both; 4.x kept `key_cache` lists, 5.x keeps layer objects);
- the base initialisation of a `Cache` subclass that keeps its own tensors;
- the keyword `from_pretrained` takes the weights' dtype by (`torch_dtype`, `dtype`), and
  what makes it read a GGUF file into plain dense weights (5.x keeps them packed unless told);
- where a config keeps its rotary position settings (4.x `rope_theta` / `rope_scaling`, 5.x
  `rope_parameters`) and its dtype (`torch_dtype`, `dtype`);
- what a saved model directory names, so that a model saved on either line loads on both:
  the tokenizer class (5.x's `TokenizersBackend` is `PreTrainedTokenizerFast` to 4.x) and the
  config's renamed keys (4.x reads no `rope_parameters`: it would fall back to its default
  RoPE base, and compute another model);
- Trainer settings and model methods that were renamed (warm-up ratio, length-grouped batches,
  gradient checkpointing, now activation checkpointing).

transformers is imported with this module: import it where a model is used.
"""
import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

import torch
import transformers
from transformers import Cache, DynamicCache, PretrainedConfig, TrainingArguments
from transformers.modeling_outputs import BaseModelOutputWithPast

CACHE_ARGUMENT = ("cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__
                  else "past_key_values")
DTYPE_ARGUMENT = "dtype" if hasattr(PretrainedConfig, "dtype") else "torch_dtype"
_TRAINING_FIELDS = {field.name for field in dataclasses.fields(TrainingArguments)}
_CHECKPOINTING = ("activation_checkpointing" if "activation_checkpointing" in _TRAINING_FIELDS
                  else "gradient_checkpointing")
_CACHE_TAKES_LAYERS = "layers" in inspect.signature(Cache.__init__).parameters
# tokenizer classes of one line that the other does not know, and their common name
_PORTABLE_TOKENIZERS = {"TokenizersBackend": "PreTrainedTokenizerFast"}

KeysValues = Tuple[torch.Tensor, torch.Tensor]


def with_cache(cache: Any) -> Dict[str, Any]:
    """The keyword argument that passes `cache` to a model's forward pass."""
    return {CACHE_ARGUMENT: cache}


def output_cache(output: Any) -> Any:
    """The KV cache a model's forward pass returned."""
    return getattr(output, CACHE_ARGUMENT)


def layer_states(cache: DynamicCache) -> List[KeysValues]:
    """Per layer, the keys and values a `DynamicCache` holds (batch x heads x length x size)."""
    return [(layer[0], layer[1]) for layer in cache]


def dynamic_cache(states: Iterable[KeysValues]) -> DynamicCache:
    """A `DynamicCache` holding these keys and values, per layer."""
    return DynamicCache(list(states))


def init_cache(cache: Cache) -> None:
    """The base-class initialisation of a `Cache` subclass that keeps its own tensors."""
    if _CACHE_TAKES_LAYERS:
        Cache.__init__(cache, layers=[])
    else:
        Cache.__init__(cache)


def dtype_argument(dtype: torch.dtype) -> Dict[str, torch.dtype]:
    """The keyword argument that loads a model's weights in `dtype` (`from_pretrained`)."""
    return {DTYPE_ARGUMENT: dtype}


def dense_gguf() -> Dict[str, Any]:
    """The keyword arguments that make `from_pretrained(..., gguf_file=...)` give a model of plain
    dense weights, which can be saved (4.x always dequantises; 5.x is told to)."""
    config = getattr(transformers, "GgufConfig", None)
    if config is None or "dequantize" not in inspect.signature(config.__init__).parameters:
        return {}
    return {"quantization_config": config(dequantize=True)}


def uses_rope(config: Any) -> bool:
    """Whether a model config's positions are rotary (RoPE), under either line's keys."""
    return getattr(config, "rope_theta", None) is not None or bool(getattr(config, "rope_parameters", None))


def _rewrite_json(path: Path, change: Any) -> None:
    """Apply `change` (a function that edits a dict in place) to a JSON file, if there is one."""
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf8"))
        before = json.dumps(data, sort_keys=True)
        change(data)
        if json.dumps(data, sort_keys=True) != before:
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf8")


def _portable_tokenizer(config: Dict[str, Any]) -> None:
    if config.get("tokenizer_class") in _PORTABLE_TOKENIZERS:
        config["tokenizer_class"] = _PORTABLE_TOKENIZERS[config["tokenizer_class"]]


def _portable_config(config: Dict[str, Any]) -> None:
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        scaling = {key: value for key, value in rope.items() if key != "rope_theta"}
        config["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    if "dtype" in config and "torch_dtype" not in config:
        config["torch_dtype"] = config["dtype"]


def portable_model_dir(directory: Path) -> None:
    """Write a saved model's config.json and tokenizer_config.json so that both lines read
    them as the line that saved them does (the renamed keys given under both names)."""
    _rewrite_json(Path(directory) / "config.json", _portable_config)
    _rewrite_json(Path(directory) / "tokenizer_config.json", _portable_tokenizer)


def training_options(*, warmup_ratio: float, group_by_length: bool,
                     checkpointing: bool) -> Dict[str, Any]:
    """TrainingArguments for a warm-up over a share of the steps, batches of examples of about
    one length, and activation (gradient) checkpointing without re-entrant backward passes,
    under this transformers' names (5.x: a warm-up below 1 is a ratio)."""
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup ratio must be in [0, 1), got {warmup_ratio}")
    options: Dict[str, Any] = {_CHECKPOINTING: checkpointing,
                               f"{_CHECKPOINTING}_kwargs": {"use_reentrant": False}}
    if "warmup_ratio" in _TRAINING_FIELDS:
        options["warmup_ratio"] = warmup_ratio
    else:
        options["warmup_steps"] = warmup_ratio
    if "group_by_length" in _TRAINING_FIELDS:
        options["group_by_length"] = group_by_length
    elif group_by_length:
        options["train_sampling_strategy"] = "group_by_length"
    if "save_safetensors" in _TRAINING_FIELDS:  # 5.x always saves safetensors
        options["save_safetensors"] = True
    return options


def enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing on, without re-entrant backward passes."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})


def checkpointing(model: Any) -> bool:
    """Whether the model recomputes activations in its backward pass."""
    renamed = hasattr(type(model), "is_activation_checkpointing")
    return bool(getattr(model, "is_activation_checkpointing" if renamed else "is_gradient_checkpointing"))
