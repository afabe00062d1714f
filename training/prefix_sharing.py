"""Training a decoder-only model on prompts that start alike, computing their common start once.

Every GNER prompt starts with the same instruction (about 130 of SmolLM2's tokens, a third of
an example). For a batch whose rows share their first P tokens, those are run once, for one
row, and every row's remaining tokens attend to that row's keys and values. The loss and the
gradients are those of the whole rows: the shared keys and values are the ones each row
would compute, and their gradients sum over the rows that read them, as the rows' own would.

This goes through transformers' attention interface: while training, the model's attention is
`ATTENTION` (the `sdpa` attention, with the shared keys and values put before the row's own),
set by `enable` for the whole run, as activation checkpointing recomputes attention during the
backward pass.
"""
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "spacy-gner-shared-prefix"


class SharedStart:
    """The keys and values of the shared start, per layer: recorded by the pass over the start,
    then read by the pass over the rest of every row."""

    def __init__(self) -> None:
        self.keys: Dict[int, torch.Tensor] = {}
        self.values: Dict[int, torch.Tensor] = {}
        self.recording = True


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: Optional[torch.Tensor], shared_start: Optional[SharedStart] = None,
               **kwargs: Any) -> Any:
    """`sdpa` attention; with `shared_start`, the start's keys and values are recorded (first
    pass) or put before each row's own (second pass)."""
    if shared_start is not None:
        layer = module.layer_idx
        if shared_start.recording:
            shared_start.keys[layer], shared_start.values[layer] = key, value
        else:
            rows = key.shape[0]
            key = torch.cat([shared_start.keys[layer].expand(rows, -1, -1, -1), key], dim=2)
            value = torch.cat([shared_start.values[layer].expand(rows, -1, -1, -1), value], dim=2)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, _attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def supported(model: Any) -> bool:
    """Whether the model can share its prompts' start: a decoder-only model with the `sdpa`
    attention of transformers' attention interface and no sliding window."""
    config = model.config
    return (not config.is_encoder_decoder and config._attn_implementation in ("sdpa", ATTENTION)
            and getattr(model, "_supports_attention_backend", False)
            and getattr(config, "sliding_window", None) is None)


@contextmanager
def enable(model: Any) -> Iterator[None]:
    """Inside, the model's attention is `ATTENTION` (it is `sdpa` where no start is given)."""
    attention = model.config._attn_implementation
    model.config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        model.config._attn_implementation = attention


def shared_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many first tokens all rows of a batch share (real tokens, equal in every row)."""
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)
    return int(same.long().cumprod(0).sum())


@contextmanager
def _no_checkpointing(model: Any) -> Iterator[None]:
    """Activation checkpointing off inside: the pass over the start records keys and values,
    so it must not be run again in the backward pass (it is one row, and short)."""
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    for layer in layers:
        layer.gradient_checkpointing = False
    try:
        yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = True


def forward(model: Any, decoder: Any, inputs: Dict[str, torch.Tensor],
            logits_to_keep: torch.Tensor) -> Any:
    """The model's outputs for a batch of right-padded rows (`input_ids`, `attention_mask`),
    with logits at the positions `logits_to_keep` (ascending), the rows' shared start computed
    once by `decoder`, the model's transformer without its output layer. Rows share nothing,
    a batch of one row, or a position to keep inside the start: a plain forward pass."""
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    rows, width = input_ids.shape
    start = min(shared_length(input_ids, attention_mask), int(logits_to_keep[0]))
    if rows < 2 or start == 0:
        return model(**inputs, logits_to_keep=logits_to_keep, use_cache=False)
    shared = SharedStart()
    with _no_checkpointing(decoder):
        decoder(input_ids=input_ids[:1, :start], shared_start=shared, use_cache=False)
    shared.recording = False
    positions = torch.arange(start, width, device=input_ids.device)
    keys = torch.arange(width, device=input_ids.device)
    visible = (keys[None, :] <= positions[:, None])[None, None] & attention_mask.bool()[:, None, None, :]
    return model(input_ids=input_ids[:, start:], attention_mask=visible,
                 position_ids=positions.expand(rows, -1), shared_start=shared,
                 logits_to_keep=logits_to_keep - start, use_cache=False)
