"""Batched generation with a Hugging Face model: token-budget batches sorted by length."""
import logging
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from .decoding import (
    SharedPrefix,
    Units,
    copy_constraint,
    copy_decode,
    encode_prefix,
    output_length,
    pad,
    word_units,
)
from .forking import fork_safe_threads
from .models import check_dtype, load_model, resolve_model
from .prompt import Request, build_target, encode_prompt_start, encode_prompts

logger = logging.getLogger(__name__)
PREFIXES_KEPT = 4  # label sets whose shared prompt prefix stays cached


def plan_batches(costs: Sequence[int], batch_size: int, max_batch_tokens: int) -> List[List[int]]:
    """Group item indices, longest first, into batches of at most `batch_size` items whose
    padded size (items × longest cost) stays within `max_batch_tokens`; an item larger than
    the budget goes alone."""
    order = sorted(range(len(costs)), key=lambda i: costs[i], reverse=True)
    batches: List[List[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            widest = costs[batch[0]]
            if len(batch) < batch_size and widest * (len(batch) + 1) <= max_batch_tokens:
                batch.append(i)
                continue
        batches.append([i])
    return batches


class HFGenerator:
    """Generates GNER outputs with a seq2seq or causal model, loaded on first use.

    model: Hub name, model directory, saved pipeline directory or "smollm2" (`resolve_model`).
    batch_size / max_batch_tokens: the most sequences, and the most padded tokens (input + new
    tokens, times beams), in one `generate` call.
    prompt_format: how decoder-only models get the prompt ("inst", "chat_template", "plain").
    copy_aware: force the input words and choose only their tags (see `decoding`); requests
    whose words the tokenizer cannot cut into units are generated freely. Greedy copy-aware
    decoding takes the requests of a call longest first, `batch_size` rows at a time, and
    decoder-only models compute the keys and values of the prompt part that precedes the
    sentence once per label set (`shared_prefixes`), not once per sentence.
    """

    def __init__(
        self,
        model: Union[str, Path],
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        max_batch_tokens: int = 16384,
        num_beams: int = 1,
        prompt_format: str = "inst",
        trust_remote_code: bool = False,
        copy_aware: bool = True,
    ) -> None:
        if batch_size < 1 or max_batch_tokens < 1 or num_beams < 1:
            raise ValueError("batch_size, max_batch_tokens and num_beams must be positive")
        self.name = str(model)
        self.device = device
        self.dtype = check_dtype(dtype)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.num_beams = num_beams
        self.prompt_format = prompt_format
        self.trust_remote_code = trust_remote_code
        self.copy_aware = copy_aware
        self._model: Any = None
        self._tokenizer: Any = None
        self._prefixes: "OrderedDict[Optional[Tuple[str, ...]], SharedPrefix]" = OrderedDict()
        self._last_labels: List[Tuple[str, ...]] = []

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        fork_safe_threads()
        if self._model is None:
            self._prefixes.clear()
            self._model, self._tokenizer = load_model(
                resolve_model(self.name),
                device=self.device,
                dtype=self.dtype,
                trust_remote_code=self.trust_remote_code,
            )

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    def encode(self, prompts: Sequence[str]) -> List[List[int]]:
        """The token ids the model reads for prompts (see `encode_prompts`)."""
        seq2seq = self.model.config.is_encoder_decoder
        return encode_prompts(self.tokenizer, prompts, None if seq2seq else self.prompt_format)

    def __call__(self, requests: Sequence[Request]) -> List[str]:
        """Generate one output text per request."""
        tokenizer = self.tokenizer
        input_ids = self.encode([request.prompt for request in requests])
        units = [word_units(tokenizer, r) if self.copy_aware else None for r in requests]
        new_tokens = [output_length(u) + 1 if u else r.max_new_tokens for r, u in zip(requests, units)]
        costs = [(len(ids) + new) * self.num_beams for ids, new in zip(input_ids, new_tokens)]
        outputs = [""] * len(requests)
        greedy = [i for i in range(len(requests)) if units[i] and self.num_beams == 1]
        if greedy:  # one rolling batch, longest first
            greedy.sort(key=lambda i: costs[i], reverse=True)
            rows = max(1, min(self.batch_size, self.max_batch_tokens // costs[greedy[0]]))
            tags = copy_decode(self.model, [input_ids[i] for i in greedy], [units[i] for i in greedy],
                               tokenizer.pad_token_id,
                               prefixes=self.shared_prefixes([requests[i] for i in greedy]), rows=rows)
            for i, row_tags in zip(greedy, tags):
                outputs[i] = build_target(requests[i].words, row_tags)
        others = [i for i in range(len(requests)) if i not in set(greedy)]
        for batch in plan_batches([costs[i] for i in others], self.batch_size, self.max_batch_tokens):
            batch = [others[k] for k in batch]
            copied = [i for i in batch if units[i]]
            free = [i for i in batch if not units[i]]
            if copied:
                decoded = self._beams([input_ids[i] for i in copied], [units[i] for i in copied])
                for i, text in zip(copied, decoded):
                    outputs[i] = text
            if free:
                limit = max(requests[i].max_new_tokens for i in free)
                for i, text in zip(free, self._generate([input_ids[i] for i in free], limit)):
                    outputs[i] = text
        return outputs

    def shared_prefixes(self, requests: Sequence[Request]) -> List[SharedPrefix]:
        """The prompt prefixes whose keys and values decoding reuses for these requests
        (decoder-only models; none for seq2seq models, whose encoder reads every prompt whole).

        The part before the label list serves every label set; the part before the sentence
        serves one label set: it is computed for those that two requests of the call share or
        that an earlier call used, and kept for the last few label sets.
        """
        if not requests or self.model.config.is_encoder_decoder:
            return []
        counts = Counter(request.labels for request in requests)
        wanted = [None] + [labels for labels, count in counts.items()
                           if count > 1 or labels in self._last_labels or labels in self._prefixes]
        self._last_labels = list(counts)
        for key in wanted:
            if key not in self._prefixes:
                ids = encode_prompt_start(self.tokenizer, self.prompt_format, key)
                self._prefixes[key] = encode_prefix(self.model, ids)
            self._prefixes.move_to_end(key)
        while len(self._prefixes) > PREFIXES_KEPT + 1:  # the label-free part stays
            oldest = next(key for key in self._prefixes if key is not None)
            del self._prefixes[oldest]
        return [self._prefixes[key] for key in wanted]

    def _beams(self, input_ids: List[List[int]], units: List[Units]) -> List[str]:
        """Beam search under the copy constraint."""
        prefix = 1 if self.model.config.is_encoder_decoder else max(len(ids) for ids in input_ids)
        constraint = copy_constraint(units, prefix, self.tokenizer.eos_token_id)
        limit = max(output_length(u) for u in units) + 1  # and the end of sequence
        return self._generate(input_ids, limit, prefix_allowed_tokens_fn=constraint)

    def _generate(self, input_ids: List[List[int]], max_new_tokens: int, **kwargs: Any) -> List[str]:
        tokenizer, model = self.tokenizer, self.model
        encoded = pad(input_ids, tokenizer.pad_token_id, tokenizer.padding_side == "left")
        encoded = {key: value.to(model.device) for key, value in encoded.items()}
        with torch.inference_mode():
            generated = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                num_beams=self.num_beams,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                **kwargs,
            )
        if not model.config.is_encoder_decoder:
            generated = generated[:, encoded["input_ids"].shape[1] :]
        self._warn_if_cut(generated, max_new_tokens)
        return tokenizer.batch_decode(
            generated, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _warn_if_cut(self, generated: "torch.Tensor", max_new_tokens: int) -> None:
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        for row in generated.tolist():
            if len(row) >= max_new_tokens and not eos_ids.intersection(row):
                logger.warning(
                    "A GNER output reached max_new_tokens=%d without ending; the words after "
                    "it get the tag O. The model may be repeating itself.",
                    max_new_tokens,
                )

    def to_disk(self, path: Union[str, Path]) -> None:
        """Write the model (safetensors) and tokenizer to a directory."""
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    def from_disk(self, path: Union[str, Path]) -> "HFGenerator":
        """Load the model and tokenizer written by `to_disk`."""
        self.name = str(path)
        self._model = self._tokenizer = None
        self.load()
        return self
