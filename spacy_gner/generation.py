"""Generation with a Hugging Face model: token-budget batches sorted by length, copy-aware
decoding (or free generation matched back onto the words), per-word tag probabilities.

`decoding` (and with it transformers) is imported on first use: spaCy creates the generator
with its pipeline, which should stay quick.
"""
import logging
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

import torch

from .formats import OutputFormat, WordTag, spans_to_bio
from .generators import Request, Result, parse_output
from .lattices import Lattice
from .models import check_dtype, load_model, save_model
from .output import bio_to_spans
from .pipeline import resolve_model
from .prompt import build_prompt, encode_prompt_start, encode_prompts

if TYPE_CHECKING:
    from .copy_state import CopyState
    from .decoding import SharedPrefix

logger = logging.getLogger(__name__)
PREFIXES_KEPT = 4  # label sets whose shared prompt prefix stays cached
Types = Tuple[Tuple[str, ...], Tuple[Tuple[str, str], ...]]  # `Request.types`
FREE_MARGIN = 8  # new tokens a free output may take beyond every word an entity of the widest type


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
    """A GNER generator on a Hugging Face seq2seq or causal model, loaded on first use.

    model: Hub name, local directory, saved pipeline directory or "smollm2". batch_size /
    max_batch_tokens: the most sequences, and the most padded tokens (input + new tokens,
    times beams), decoded together. max_length: the most output tokens of one request (longer
    chunks are split by the component, see `costs`). prompt_format: how decoder-only models get
    the prompt ("inst", "chat_template", "plain"). output_format: what the model writes (see
    `formats`; GNER's word(tag) by default). copy_aware: force the input words and choose only
    their markup (see `decoding`); otherwise outputs are generated freely and matched back
    onto the words, as the reference implementation does (requests with fixed tags, and greedy
    or beam search alike, are always decoded under the copy constraint where the tokenizer can
    cut the output's pieces). Decoder-only models compute the keys and values of the prompt
    part before the sentence once per label set (`shared_prefixes`). Results carry the
    probabilities of the model's choices: from the decoding scores, or from one teacher-forced
    pass over freely generated outputs.
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
        copy_aware: bool = True,
        max_length: int = 640,
        prompt_format: str = "inst",
        trust_remote_code: bool = False,
        output_format: Optional[OutputFormat] = None,
    ) -> None:
        if min(batch_size, max_batch_tokens, num_beams, max_length) < 1:
            raise ValueError("batch_size, max_batch_tokens, num_beams and max_length must be positive")
        self.name = str(model)
        self.device = device
        self.dtype = check_dtype(dtype)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.num_beams = num_beams
        self.copy_aware = copy_aware
        self.max_length = max_length
        self.prompt_format = prompt_format
        self.trust_remote_code = trust_remote_code
        self.output_format = output_format or WordTag()
        self._model: Any = None
        self._tokenizer: Any = None
        self._prefixes: "OrderedDict[Optional[Types], SharedPrefix]" = OrderedDict()
        self._last_types: List[Types] = []

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
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

    def prompt(self, request: Request) -> str:
        """A request's prompt in this generator's output format."""
        return build_prompt(request.words, request.labels, dict(request.descriptions), self.output_format)

    def encode(self, prompts: Sequence[str]) -> List[List[int]]:
        """The token ids the model reads for prompts (see `encode_prompts`)."""
        seq2seq = self.model.config.is_encoder_decoder
        return encode_prompts(self.tokenizer, prompts, None if seq2seq else self.prompt_format)

    def costs(self, words: Sequence[str], labels: Sequence[str]) -> Tuple[List[int], int]:
        """Each word's tokens in an output that marks no entity, and `max_length`."""
        if not words:
            return [], self.max_length
        counts = self.tokenizer([self.output_format.cost_text(word) for word in words],
                                add_special_tokens=False)
        return [max(1, len(ids)) for ids in counts["input_ids"]], self.max_length

    def __call__(self, requests: Sequence[Request]) -> List[Result]:
        """One Result per request: the model's entities, its choices' probabilities and, for
        free generation, the generated text."""
        prompts = self.encode([self.prompt(request) for request in requests])
        lattices = [self.output_format.lattice(self.tokenizer, request) for request in requests]
        copied = [l is not None and (self.copy_aware or bool(r.fixed)) for r, l in zip(requests, lattices)]
        new_tokens = [self._new_tokens(r, l, c) for r, l, c in zip(requests, lattices, copied)]
        costs = [(len(ids) + new) * self.num_beams for ids, new in zip(prompts, new_tokens)]
        prefixes = self.shared_prefixes([r for r, l in zip(requests, lattices) if l])
        results: List[Optional[Result]] = [None] * len(requests)
        greedy = [i for i in range(len(requests)) if copied[i] and self.num_beams == 1]
        if greedy:  # one rolling batch, longest first
            from .decoding import copy_decode

            greedy.sort(key=lambda i: costs[i], reverse=True)
            rows = max(1, min(self.batch_size, self.max_batch_tokens // costs[greedy[0]]))
            states = copy_decode(self.model, [prompts[i] for i in greedy], [lattices[i] for i in greedy],
                                 self.tokenizer.pad_token_id, prefixes=prefixes, rows=rows)
            for i, state in zip(greedy, states):
                results[i] = self._result(requests[i], state)
        others = [i for i in range(len(requests)) if i not in set(greedy)]
        for batch in plan_batches([costs[i] for i in others], self.batch_size, self.max_batch_tokens):
            batch = [others[k] for k in batch]
            for group, decode in (([i for i in batch if copied[i]], self._beams),
                                  ([i for i in batch if not copied[i]], self._free)):
                if group:
                    decoded = decode([requests[i] for i in group], [prompts[i] for i in group],
                                     [lattices[i] for i in group], [new_tokens[i] for i in group],
                                     prefixes)
                    for i, result in zip(group, decoded):
                        results[i] = result
        return results  # type: ignore[return-value]

    def _result(self, request: Request, state: "CopyState", text: Optional[str] = None) -> Result:
        """The Result of a finished lattice path: word(tag) gives tags and their probabilities,
        nesting formats scored entities (and the output's text)."""
        fmt = self.output_format
        if not fmt.nests:
            return Result(tuple(state.actions), tuple(state.probs), text)
        spans = fmt.spans(state.actions, state.probs)
        return Result(tuple(spans_to_bio(len(request.words), spans)), None,
                      fmt.target(request.words, spans) if text is None else text, tuple(spans))

    def _new_tokens(self, request: Request, lattice: Optional[Lattice], copied: bool) -> int:
        """The most new tokens a request's output may take: a bound of its lattice (and the
        end of sequence), else its words, each an entity of the widest type, and a margin."""
        if lattice is not None:
            return lattice.bound(lattice.start) + (1 if copied else FREE_MARGIN)
        widest = max(request.labels, key=len) if request.labels else "O"
        words = request.words
        text = self.output_format.target(words, [(k, k + 1, widest) for k in range(len(words))])
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + len(words) + FREE_MARGIN

    def shared_prefixes(self, requests: Sequence[Request]) -> List["SharedPrefix"]:
        """The prompt prefixes whose keys and values decoding reuses for these requests
        (decoder-only models; none for seq2seq models, whose encoder reads every prompt whole).

        The part before the label list serves every label set; the part before the sentence
        serves one label set (with its descriptions): it is computed for those that two
        requests of the call share or that an earlier call used, and kept for the last few.
        """
        from .decoding import encode_prefix

        if not requests or self.model.config.is_encoder_decoder:
            return []
        counts = Counter(request.types for request in requests)
        wanted = [None] + [types for types, count in counts.items()
                           if count > 1 or types in self._last_types or types in self._prefixes]
        self._last_types = list(counts)
        prefixes = []
        for key in wanted:
            if key not in self._prefixes:
                labels, descriptions = key or (None, ())
                ids = encode_prompt_start(self.tokenizer, self.prompt_format, labels,
                                          dict(descriptions), self.output_format)
                self._prefixes[key] = encode_prefix(self.model, ids)
            self._prefixes.move_to_end(key)
            prefixes.append(self._prefixes[key])
        while len(self._prefixes) > PREFIXES_KEPT + 1:  # the label-free part stays
            oldest = next(key for key in self._prefixes if key is not None)
            del self._prefixes[oldest]
        return prefixes  # this call may use more label sets than the cache keeps

    def _beams(
        self, requests: List[Request], prompts: List[List[int]], lattices: List[Lattice],
        new_tokens: List[int], prefixes: Sequence["SharedPrefix"],
    ) -> List[Result]:
        """Beam search under the copy constraint, its outputs then scored."""
        from .copy_state import complete, copy_constraint
        from .decoding import follow_outputs

        start = 1 if self.model.config.is_encoder_decoder else max(len(ids) for ids in prompts)
        constraint = copy_constraint(lattices, start, self.tokenizer.eos_token_id)
        generated = self._generate(prompts, max(new_tokens), constraint)
        outputs = [complete(lattice, tokens) for lattice, tokens in zip(lattices, generated)]
        states = follow_outputs(self.model, prompts, lattices, outputs,
                                self.tokenizer.pad_token_id, prefixes=prefixes)
        return [self._result(r, state) for r, state in zip(requests, states)]

    def _free(
        self, requests: List[Request], prompts: List[List[int]], lattices: List[Optional[Lattice]],
        new_tokens: List[int], prefixes: Sequence["SharedPrefix"],
    ) -> List[Result]:
        """Free generation, each output matched back onto its words (`parse_output`) and, where
        the tokenizer cuts pieces, its entities scored by one teacher-forced pass over the
        output that writes them."""
        from .copy_state import complete
        from .decoding import follow_outputs

        tokenizer, fmt = self.tokenizer, self.output_format
        generated = self._generate(prompts, max(new_tokens))
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True,
                                       clean_up_tokenization_spaces=False)
        results = [parse_output(r, text, tokenizer, fmt) for r, text in zip(requests, texts)]
        scored = [k for k, lattice in enumerate(lattices) if lattice is not None]
        if scored:
            outputs = []
            for k in scored:
                spans = results[k].spans if results[k].spans is not None else bio_to_spans(results[k].tags)
                target = fmt.target(requests[k].words, spans)
                ids = tokenizer(target, add_special_tokens=False)["input_ids"]
                outputs.append(complete(lattices[k], ids))
            states = follow_outputs(self.model, [prompts[k] for k in scored],
                                    [lattices[k] for k in scored], outputs,
                                    tokenizer.pad_token_id, prefixes=prefixes)
            for k, state in zip(scored, states):
                results[k] = self._result(requests[k], state, texts[k])
        return results

    def _generate(self, prompts: List[List[int]], max_new_tokens: int,
                  constraint: Any = None) -> List[List[int]]:
        """Hugging Face `generate` (greedy or beam search), optionally constrained: the new
        token ids of each row."""
        from .decoding import pad

        tokenizer, model = self.tokenizer, self.model
        encoded = pad(prompts, tokenizer.pad_token_id, tokenizer.padding_side == "left")
        encoded = {key: value.to(model.device) for key, value in encoded.items()}
        with torch.inference_mode():
            generated = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                num_beams=self.num_beams,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                prefix_allowed_tokens_fn=constraint,
            )
        if not model.config.is_encoder_decoder:
            generated = generated[:, encoded["input_ids"].shape[1] :]
        elif model.config.decoder_start_token_id is not None:
            generated = generated[:, 1:]
        self._warn_if_cut(generated, max_new_tokens)
        return generated.tolist()

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
        """Write the model (safetensors) and tokenizer to a directory (`models.save_model`)."""
        save_model(self.model, self.tokenizer, path)

    def from_disk(self, path: Union[str, Path]) -> "HFGenerator":
        """Load the model and tokenizer written by `to_disk`."""
        self.name = str(path)
        self._model = self._tokenizer = None
        self.load()
        return self
