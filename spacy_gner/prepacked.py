"""Linear layers whose weights oneDNN has laid out for its own kernels, for decoding on CPUs.

A bfloat16 matrix product on a CPU lays its weight out anew for oneDNN's kernel on every
call. Laid out once (`torch.ops.mkldnn._reorder_linear_weight`), the same product computes
the same numbers faster: about 2x for one token, 1.1-1.3x for the 16-250 tokens of a decoding
pass (README, Fast decoding). `prepacked_linears` swaps a model's bfloat16 linear layers for
such ones while decoding and restores them after; the laid-out weights are kept per layer and
laid out again only where its weight changed (the first time costs about 0.1 s for a
135M-parameter model, and as much memory as its linear layers' weights).
"""
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple

import torch

from .models import native_bfloat16

# per linear layer: (its weight's identity and version, the weight laid out)
_PACKED: "weakref.WeakKeyDictionary[torch.nn.Linear, Tuple[Tuple[int, int], torch.Tensor]]" = (
    weakref.WeakKeyDictionary()
)


class PrepackedLinear(torch.nn.Module):
    """A linear layer computed from its weight as oneDNN lays it out (see the module's text)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        super().__init__()
        self.weight = weight  # opaque oneDNN tensor: not a parameter
        self.bias = bias

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(inputs, self.weight, self.bias, "none", [], "")


def can_prepack(linear: torch.nn.Module) -> bool:
    """Whether `linear` is a plain linear layer with a bfloat16 weight on a CPU that computes
    bfloat16 natively, and this torch has oneDNN's linear kernel."""
    return (type(linear) is torch.nn.Linear and linear.weight.dtype == torch.bfloat16
            and linear.weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and native_bfloat16(linear.weight.device))


def prepack(linear: torch.nn.Linear) -> PrepackedLinear:
    """`linear` computed from its weight laid out for oneDNN, laid out once per weight version."""
    weight = linear.weight
    key = (weight.data_ptr(), -1 if weight.is_inference() else weight._version)  # inference tensors keep no version
    known = _PACKED.get(linear)
    if known is None or known[0] != key:
        known = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1))
        _PACKED[linear] = known
    bias = None if linear.bias is None else linear.bias.detach()
    return PrepackedLinear(known[1], bias)


@contextmanager
def prepacked_linears(model: torch.nn.Module) -> Iterator[int]:
    """Inside: `model`'s linear layers that `can_prepack` computed by `PrepackedLinear`s.
    Yields how many were swapped; the originals are back on the way out."""
    swapped: List[Tuple[torch.nn.Module, str, Any]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if can_prepack(child):
                swapped.append((parent, name, child))
    try:
        for parent, name, child in swapped:
            setattr(parent, name, prepack(child))
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
