"""Fine-tune a seq2seq (T5) or causal (Llama-style) model on GNER JSON lines.

    python -m training.finetune --train train.jsonl --output-dir my-gner-model
    python -m training.finetune --model google/flan-t5-base --train train.jsonl --output-dir out
    torchrun --nproc_per_node 4 -m training.finetune ...     # DDP: NCCL on GPUs, gloo on CPU
    accelerate launch --multi_gpu --num_processes 4 -m training.finetune ...
    torchrun --nproc_per_node 8 -m training.finetune --deepspeed configs/deepspeed_zero3.json ...

(from the repository root: `training` is not an installed package).

Each record's `instance.instruction_inputs` is the prompt and `instance.prompt_labels` the
target. The model reads exactly what the `gner` component gives it at inference: seq2seq models
the bare prompt and learn target + EOS; causal models read the prompt wrapped by
`--prompt-format` and learn only the target tokens + EOS that follow it. The target is
tokenized on its own: its tokens are those copy-aware decoding forces at inference (the pieces
of the output format's lattice, `spacy_gner.lattices`, one after another). With Llama's SentencePiece tokenizer they
are also the GNER reference's (`[INST] prompt [/INST] target` tokenized as one string); with a
byte-level BPE tokenizer (SmolLM2) the first word lacks the leading space it has there.

The paper's settings come as presets (`--preset`, chosen from the model's architecture by
default); every flag overrides its preset value. Checkpoints go to OUTPUT_DIR/checkpoints every
`--save-steps` optimizer steps, `--resume` continues from the newest complete one, and the final
model and tokenizer (LoRA merged into the base weights) are saved as safetensors in OUTPUT_DIR,
ready for `nlp.add_pipe("gner", config={"generator": {"model": OUTPUT_DIR}})`.
"""
import argparse
import contextlib
import ctypes
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from spacy_gner.compat import dtype_argument, training_options
from spacy_gner.models import save_model, tidy_model_dir
from spacy_gner.pipeline import resolve_model
from spacy_gner.prompt import PROMPT_FORMATS, encode_prompts

from . import prefix_sharing

logger = logging.getLogger("training.finetune")

IGNORE_INDEX = -100
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 64 << 20  # bytes: larger blocks are mapped on their own (see HeapTrimmer)
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: marks it complete
# The GNER paper's settings (reference scripts for Flan-T5-base and LLaMA-7B). total_batch_size
# is over all devices and gradient accumulation.
PRESETS: Dict[str, Dict[str, Any]] = {
    "t5": {"learning_rate": 5e-5, "lr_scheduler": "constant", "warmup_ratio": 0.0,
           "epochs": 12.0, "batch_size": 4, "total_batch_size": 256},
    "llama": {"learning_rate": 2e-5, "lr_scheduler": "cosine", "warmup_ratio": 0.04,
              "epochs": 3.0, "batch_size": 1, "total_batch_size": 32},
}
Example = Tuple[str, str]  # (prompt, target)
Feature = Dict[str, List[int]]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the defaults worth showing: not those of flags, nor the unset (preset) ones."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.finetune", description=__doc__.split("\n")[0],
        formatter_class=_HelpFormatter,
        epilog="presets: " + "; ".join(
            f"{name}: " + ", ".join(f"{key}={value}" for key, value in preset.items())
            for name, preset in PRESETS.items()),
    )
    data = parser.add_argument_group("data and model")
    data.add_argument("--train", nargs="+", required=True, type=Path, help="GNER .jsonl files")
    data.add_argument("--output-dir", required=True, type=Path,
                      help="final model and tokenizer; checkpoints go to OUTPUT_DIR/checkpoints")
    data.add_argument("--model", default="smollm2",
                      help="Hub name or directory; 'smollm2' is the offline SmolLM2-135M-Instruct")
    data.add_argument("--prompt-format", default="inst", choices=PROMPT_FORMATS,
                      help="causal models: how the prompt is wrapped (give gner the same)")
    data.add_argument("--max-source-length", type=int, default=640, help="most prompt tokens")
    data.add_argument("--max-target-length", type=int, default=640,
                      help="most target tokens, EOS included")
    data.add_argument("--trust-remote-code", action="store_true",
                      help="run the model repository's code")

    optim = parser.add_argument_group("optimisation (default: the preset's value)")
    optim.add_argument("--preset", default="auto", choices=["auto", *PRESETS],
                       help="auto: t5 for encoder-decoder models, llama for the others")
    optim.add_argument("--learning-rate", type=float, help="peak learning rate (AdamW)")
    optim.add_argument("--lr-scheduler", help="constant, cosine, linear, ...")
    optim.add_argument("--warmup-ratio", type=float, help="share of the steps spent warming up")
    optim.add_argument("--epochs", type=float, help="passes over the data")
    optim.add_argument("--max-steps", type=int, default=-1,
                       help="optimizer steps; overrides --epochs if > 0")
    optim.add_argument("--batch-size", type=int, help="examples per device and forward pass")
    optim.add_argument("--total-batch-size", type=int,
                       help="examples per optimizer step, all devices (sets gradient accumulation)")
    optim.add_argument("--optim", default="adamw_torch",
                       help="the Trainer's optimizer: adamw_torch (default), adamw_torch_fused "
                       "(one kernel per step: faster on CPU too), adafactor, ...")
    optim.add_argument("--seed", type=int, default=1234,
                       help="seed of initialisation, data order, dropout")

    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                          help="bf16 autocast (default: on GPUs that support it; CPU: if asked)")
    hardware.add_argument("--gradient-checkpointing", action="store_true",
                          help="recompute activations: less memory, slower")
    hardware.add_argument("--share-prompt-start", action=argparse.BooleanOptionalAction,
                          default=True, help="causal models: compute the start that a batch's "
                          "prompts share once (the same loss and gradients, less work; not with "
                          "--deepspeed)")
    hardware.add_argument("--deepspeed", type=Path,
                          help="DeepSpeed config json, e.g. configs/deepspeed_zero3.json")

    lora = parser.add_argument_group("LoRA (needs peft)")
    lora.add_argument("--lora", action="store_true", help="train LoRA adapters on linear layers")
    lora.add_argument("--lora-r", type=int, default=16, help="adapter rank")
    lora.add_argument("--lora-alpha", type=int, default=32, help="adapter scale numerator")
    lora.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on adapter inputs")

    run = parser.add_argument_group("checkpoints and logging")
    run.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps")
    run.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest complete checkpoint (or start if none)")
    run.add_argument("--logging-steps", type=int, default=10,
                     help="log loss and learning rate every N steps")
    run.add_argument("--report-to", default="none", help="tensorboard, wandb, ... (none: stdout)")
    return parser


def apply_preset(args: argparse.Namespace, encoder_decoder: bool) -> argparse.Namespace:
    """A copy of `args` with the unset optimisation settings taken from the preset."""
    name = args.preset if args.preset != "auto" else ("t5" if encoder_decoder else "llama")
    filled = argparse.Namespace(**vars(args))
    filled.preset = name
    for key, value in PRESETS[name].items():
        if getattr(filled, key) is None:
            setattr(filled, key, value)
    return filled


def read_examples(paths: Sequence[Path]) -> List[Example]:
    """(prompt, target) of every record of GNER JSON lines files."""
    examples = []
    for path in paths:
        with open(path, encoding="utf-8-sig") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    instance = json.loads(line)["instance"]
                    examples.append((instance["instruction_inputs"], instance["prompt_labels"]))
                except (ValueError, KeyError, TypeError) as error:
                    message = f"{path}, line {number}: not a GNER record ({error!r})"
                    raise ValueError(message) from error
    return examples


def feature(source: List[int], target: List[int], encoder_decoder: bool) -> Feature:
    """Model inputs of one example. Causal: prompt + target, with only the target learned."""
    if encoder_decoder:
        return {"input_ids": source, "attention_mask": [1] * len(source), "labels": target}
    ids = source + target
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [IGNORE_INDEX] * len(source) + target}


def encode(
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    encoder_decoder: bool,
    prompt_format: str,
    max_source_length: int,
    max_target_length: int,
) -> List[Feature]:
    """Features of the examples; an example whose prompt or target (+ EOS) is over its limit is
    left out, with a warning, rather than cut into a sentence that does not match its labels."""
    wrapping = None if encoder_decoder else prompt_format
    sources = encode_prompts(tokenizer, [prompt for prompt, _ in examples], wrapping)
    targets = tokenizer([t for _, t in examples], add_special_tokens=False)["input_ids"]
    features = []
    for source, target in zip(sources, targets):
        target = target + [tokenizer.eos_token_id]
        if len(source) <= max_source_length and len(target) <= max_target_length:
            features.append(feature(source, target, encoder_decoder))
    if len(features) < len(examples):
        logger.warning("%d of %d examples are longer than --max-source-length %d or "
                       "--max-target-length %d tokens and are left out",
                       len(examples) - len(features), len(examples), max_source_length,
                       max_target_length)
    if not features:
        raise ValueError("No training examples within the length limits")
    return features


def gradient_accumulation(total_batch_size: int, batch_size: int, world_size: int) -> int:
    """Forward passes per optimizer step for `total_batch_size` examples over all devices."""
    steps = max(1, round(total_batch_size / (batch_size * world_size)))
    if steps * batch_size * world_size != total_batch_size:
        logger.warning("total batch size %d is not a multiple of %d devices x %d: using %d",
                       total_batch_size, world_size, batch_size, steps * batch_size * world_size)
    return steps


def training_arguments(args: argparse.Namespace, checkpoint_dir: Path) -> TrainingArguments:
    """Trainer settings from the (preset-filled) command line options."""
    cuda = torch.cuda.is_available()
    bf16 = args.bf16 if args.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = gradient_accumulation(args.total_batch_size, args.batch_size, world_size)
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler,
        weight_decay=0.0,
        optim=args.optim,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        bf16=bf16,
        use_cpu=not cuda,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps,
        logging_first_step=True,
        log_level="info",
        report_to=args.report_to,
        seed=args.seed,
        data_seed=args.seed,
        ddp_find_unused_parameters=False,
        deepspeed=str(args.deepspeed) if args.deepspeed else None,
        **training_options(warmup_ratio=args.warmup_ratio, group_by_length=True,
                           checkpointing=args.gradient_checkpointing),
    )


def add_lora(model: PreTrainedModel, args: argparse.Namespace) -> Any:
    """The model with LoRA adapters on all its linear layers; only they are trained."""
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as error:
        raise SystemExit("--lora needs peft: pip install peft") from error
    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    config = LoraConfig(task_type=task, r=args.lora_r, lora_alpha=args.lora_alpha,
                        lora_dropout=args.lora_dropout, target_modules="all-linear")
    model = get_peft_model(model, config)
    model.print_trainable_parameters()
    return model


def load_for_training(
    name: str, encoder_decoder: bool, args: argparse.Namespace
) -> Tuple[Any, Any]:
    """Model (float32 weights; bf16 comes from autocast) and tokenizer, padding on the right."""
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=args.trust_remote_code)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_class = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    model = model_class.from_pretrained(name, trust_remote_code=args.trust_remote_code,
                                        **dtype_argument(torch.float32))
    return (add_lora(model, args) if args.lora else model), tokenizer


class HeapTrimmer(TrainerCallback):
    """Keeps the C allocator's heap from growing step after step, at little cost in time.

    Every step frees and allocates activations of other sizes (batches differ in length).
    glibc keeps freed blocks in its heap and raises its mmap threshold as large blocks are
    freed, so the heap fragments and the resident memory grows over an epoch. Here the
    threshold is fixed at `MMAP_THRESHOLD` (only blocks at least that large, such as the
    output layer's logits, are mapped on their own) and the free pages of the heap are given
    back after every optimizer step (`malloc_trim`). A threshold of 1 MiB would also bound the
    memory, but then every activation is a fresh mapping whose pages fault in: a fifth of the
    time of a CPU epoch went to the kernel. Nothing is done where the C library is not glibc.
    """

    def __init__(self) -> None:
        try:
            self.libc: Optional[ctypes.CDLL] = ctypes.CDLL("libc.so.6")
        except OSError:
            self.libc = None
            return
        self.libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.libc is not None:
            self.libc.malloc_trim(0)


def last_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    """The newest checkpoint whose writing finished (the Trainer writes its state file last)."""
    complete = [path for path in checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                if path.name.rsplit("-", 1)[1].isdigit() and (path / TRAINER_STATE).is_file()]
    return max(complete, key=lambda path: int(path.name.rsplit("-", 1)[1]), default=None)


class GnerTrainer(Trainer):
    """A Trainer that counts the examples this process trained on and, for causal models,
    computes the output layer only where the loss needs it: from the first position that
    predicts a target token on (most of a GNER example is its prompt, and the output layer
    over a large vocabulary is the biggest activation of a small model). With `share_start`,
    the start that a batch's prompts share is computed once (`prefix_sharing`)."""

    examples_seen = 0
    share_start = False

    def compute_loss(self, model: Any, inputs: Dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Optional[Any] = None) -> Any:
        self.examples_seen += len(inputs["input_ids"])
        if self.model.config.is_encoder_decoder:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        targets = labels[:, 1:]  # position t predicts token t + 1
        first = int((targets != IGNORE_INDEX).any(0).nonzero()[0])
        keep = torch.arange(first, targets.shape[1], device=labels.device)
        if self.share_start:
            decoder = self.accelerator.unwrap_model(model)
            decoder = decoder.get_base_model() if hasattr(decoder, "get_base_model") else decoder
            outputs = prefix_sharing.forward(model, decoder.base_model, inputs, keep)
        else:
            outputs = model(**inputs, logits_to_keep=keep)
        logits = outputs.logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets[:, first:].reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="sum",
        )
        count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
        loss = loss / count
        return (loss, outputs) if return_outputs else loss


def save_final(trainer: Trainer, tokenizer: Any, output_dir: Path, lora: bool) -> None:
    """Model and tokenizer as safetensors in `output_dir`, only the files loading reads (see
    `save_model`); LoRA adapters merged into the base."""
    if not lora:
        trainer.save_model(str(output_dir))  # gathers sharded (DeepSpeed, FSDP) weights
        if trainer.is_world_process_zero():
            tidy_model_dir(output_dir, tokenizer)
        return
    merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    if trainer.is_world_process_zero():
        save_model(merged, tokenizer, output_dir)


def finetune(args: argparse.Namespace, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Train as the command line options say; returns the directory of the final model."""
    name = resolve_model(args.model)
    config = AutoConfig.from_pretrained(name, trust_remote_code=args.trust_remote_code)
    encoder_decoder = config.is_encoder_decoder
    args = apply_preset(args, encoder_decoder)
    checkpoint_dir = args.output_dir / "checkpoints"
    resume_from = last_checkpoint(checkpoint_dir) if args.resume else None
    if not args.resume and any(checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
        raise SystemExit(f"{checkpoint_dir} holds checkpoints: pass --resume, or remove them")
    training_args = training_arguments(args, checkpoint_dir)  # before loading: DeepSpeed ZeRO-3
    if args.lora and is_deepspeed_zero3_enabled():
        raise SystemExit("--lora cannot merge adapters into ZeRO-3 sharded weights: use ZeRO-2")
    set_seed(args.seed)
    trimmer = HeapTrimmer()
    model, tokenizer = load_for_training(name, encoder_decoder, args)
    features = encode(tokenizer, read_examples(args.train), encoder_decoder=encoder_decoder,
                      prompt_format=args.prompt_format, max_source_length=args.max_source_length,
                      max_target_length=args.max_target_length)
    logger.info("%s (%s preset): %d training examples", name, args.preset, len(features))
    trainer = GnerTrainer(
        model=model, args=training_args, train_dataset=features, processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX),
        callbacks=[trimmer, *callbacks],
    )
    trainer.share_start = (args.share_prompt_start and not args.deepspeed
                           and prefix_sharing.supported(model))
    if resume_from:
        logger.info("Resuming from %s", resume_from)
    with prefix_sharing.enable(model) if trainer.share_start else contextlib.nullcontext():
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    logger.info("rank %d of %d trained on %d examples", training_args.process_index,
                training_args.world_size, trainer.examples_seen)
    save_final(trainer, tokenizer, args.output_dir, args.lora)
    return args.output_dir


def main(argv: Optional[Sequence[str]] = None) -> None:
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    try:
        finetune(build_parser().parse_args(argv))
    finally:
        # Leave the process group cleanly, or a gloo rank can abort while the process exits.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
