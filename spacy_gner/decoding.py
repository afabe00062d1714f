"""Copy-aware decoding: the input words are forced, only their tags are chosen.

A GNER output is a sequence of units, one per input word: `word(tag)` with a space before
every word but the first. Fast tokenizers split text at spaces before merging, so each unit
tokenizes on its own, and the output's tokens are the units' tokens one after another. Under
the copy constraint the model may only choose, for each word in turn, among the units of its
valid tags.

Draft and verify: the rest of the output is drafted with every remaining word tagged `O`,
one forward pass (reusing the KV cache of the accepted prefix) scores the draft, the draft is
accepted up to the first token where the model's best allowed token differs, that token is
taken instead, and drafting starts again from there. The result is what greedy decoding
restricted to the allowed tokens gives, in a few forward passes per entity instead of one
per token.
"""
from bisect import bisect_right
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from transformers import DynamicCache, EncoderDecoderCache

from .prompt import Request, build_target

Units = List[Dict[str, Tuple[int, ...]]]  # per word: {tag: token ids of "word(tag)"}


def word_units(tokenizer: Any, request: Request) -> Optional[Units]:
    """The token ids of every `word(tag)` unit of the request's output, for every valid tag.

    Cut from tokenizations of whole outputs (all words with one tag), so each unit is spelled
    as in context. None when the tokenizer has no offsets or a token spans two words.
    """
    words = list(request.words)
    if not words or not getattr(tokenizer, "is_fast", False):
        return None
    tags = request.tags
    starts, offset = [], 0
    for word in words:
        starts.append(offset)
        offset += len(word) + 1  # the space after it, before the next word
    units: Units = [{} for _ in words]
    texts = [build_target(words, [tag] * len(words)) for tag in tags]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    for tag, text, ids, spans in zip(
        tags, texts, encoded["input_ids"], encoded["offset_mapping"]
    ):
        unit_starts = [start + i * (len(tag) + 2) for i, start in enumerate(starts)]
        pieces: List[List[int]] = [[] for _ in words]
        for token, (begin, end) in zip(ids, spans):
            k = bisect_right(unit_starts, max(begin, end - 1)) - 1
            if k < 0 or (k > 0 and begin < unit_starts[k] - 1):
                return None  # the token reaches back into the previous word's unit
            pieces[k].append(token)
        if any(not piece for piece in pieces):
            return None
        for unit, piece in zip(units, pieces):
            unit[tag] = tuple(piece)
    return units


class CopyState:
    """Where one output stands: the word being written, the tokens of its unit written so
    far, the tags still possible for it, and the tags chosen before."""

    def __init__(self, units: Units) -> None:
        self.units = units
        self.word = 0
        self.position = 0
        self.alive: List[str] = list(units[0]) if units else []
        self.tags: List[str] = []
        self.tokens: List[int] = []

    @property
    def done(self) -> bool:
        return self.word >= len(self.units)

    def allowed(self) -> List[int]:
        """The tokens that may come next (none when the output is complete)."""
        if self.done:
            return []
        unit = self.units[self.word]
        return sorted({unit[tag][self.position] for tag in self.alive})

    def guess(self) -> str:
        """The likeliest tag still possible for the current word: O, else the type of the
        word before (an entity's next word), else the first."""
        if "O" in self.alive:
            return "O"
        previous = self.tags[-1][2:] if self.tags else ""
        for tag in (f"I-{previous}", f"B-{previous}"):
            if tag in self.alive:
                return tag
        return self.alive[0]

    def draft(self) -> List[int]:
        """The rest of the output: the current word finished with its likeliest tag, every
        later word tagged `O`."""
        if self.done:
            return []
        unit = self.units[self.word]
        tokens = list(unit[self.guess()][self.position :])
        for later in self.units[self.word + 1 :]:
            tokens.extend(later["O"])
        return tokens

    def step(self, token: int) -> None:
        unit = self.units[self.word]
        self.alive = [tag for tag in self.alive if unit[tag][self.position] == token]
        if not self.alive:
            raise ValueError(f"token {token} is not allowed after {self.tokens}")
        self.tokens.append(token)
        self.position += 1
        finished = [tag for tag in self.alive if len(unit[tag]) == self.position]
        if finished:
            self.tags.append(finished[0])
            self.word += 1
            self.position = 0
            self.alive = list(self.units[self.word]) if not self.done else []


def pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> Dict[str, "torch.Tensor"]:
    """`input_ids` and `attention_mask` tensors of token id rows padded to one width."""
    width = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        fill = width - len(row)
        ids.append([pad_id] * fill + list(row) if left else list(row) + [pad_id] * fill)
        mask.append([0] * fill + [1] * len(row) if left else [1] * len(row) + [0] * fill)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def _choose(logits: torch.Tensor, allowed: List[int]) -> int:
    if len(allowed) == 1:
        return allowed[0]
    return allowed[int(torch.argmax(logits[allowed]))]


def _self_attention(cache: Any) -> DynamicCache:
    return cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache


def _keep(cache: Any, index: torch.Tensor) -> None:
    """Keep, for each row, the cache positions in `index` (rows × new length)."""
    layers = _self_attention(cache)
    for store in (layers.key_cache, layers.value_cache):
        for layer, states in enumerate(store):
            gather = index[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3])
            store[layer] = states.gather(2, gather)
    layers._seen_tokens = index.shape[1]


def copy_decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    units: Sequence[Units],
    pad_id: int,
    draft_tokens: int = 64,
) -> List[List[str]]:
    """Greedy decoding under the copy constraint, by draft and verify: the tags chosen for
    each prompt's words. `prompts` are token ids (causal models continue them, seq2seq models
    encode them); drafts are at most `draft_tokens` long.

    Rows of a batch advance at their own pace: after each pass, every row keeps its accepted
    tokens' keys and values and the cache is re-aligned to the right (masked padding on the
    left), so nothing is computed twice. Relative positions stay exact under the shift.
    """
    states = [CopyState(u) for u in units]
    active = [i for i, state in enumerate(states) if not state.done]
    seq2seq = model.config.is_encoder_decoder
    device = model.device
    if not active:
        return [state.tags for state in states]
    if seq2seq:
        encoded = pad([prompts[i] for i in active], pad_id, left=False)
        encoder_mask = encoded["attention_mask"].to(device)
        with torch.inference_mode():
            encoder_outputs = model.get_encoder()(
                input_ids=encoded["input_ids"].to(device), attention_mask=encoder_mask
            )
        pending = {i: [model.config.decoder_start_token_id] for i in active}
        cache: Any = EncoderDecoderCache(DynamicCache(), DynamicCache())
    else:
        pending = {i: list(prompts[i]) for i in active}
        cache = DynamicCache()
    cached = {i: 0 for i in active}  # real positions in the cache, right-aligned
    width = 0
    with torch.inference_mode():
        while active:
            drafts = {i: states[i].draft()[:draft_tokens] for i in active}
            feeds = [pending[i] + drafts[i] for i in active]
            length = max(len(feed) for feed in feeds)
            input_ids = torch.full((len(active), length), pad_id, dtype=torch.long)
            mask = torch.zeros((len(active), width + length), dtype=torch.long)
            for row, (i, feed) in enumerate(zip(active, feeds)):
                input_ids[row, : len(feed)] = torch.tensor(feed)
                mask[row, width - cached[i] : width + len(feed)] = 1
            if seq2seq:
                logits = model(
                    encoder_outputs=encoder_outputs,
                    attention_mask=encoder_mask,
                    decoder_input_ids=input_ids.to(device),
                    decoder_attention_mask=mask.to(device),
                    past_key_values=cache,
                    use_cache=True,
                ).logits
            else:
                positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, width:]
                logits = model(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    past_key_values=cache,
                    use_cache=True,
                ).logits
            kept_rows, kept_positions = [], []
            for row, i in enumerate(active):
                state, draft = states[i], drafts[i]
                first = len(pending[i]) - 1  # the logits that predict the draft's first token
                accepted = 0
                for token in draft:
                    choice = _choose(logits[row, first + accepted], state.allowed())
                    state.step(choice)
                    if choice != token:
                        break
                    accepted += 1
                else:  # the whole draft holds: the logits after it give one more token
                    if not state.done:
                        state.step(_choose(logits[row, first + accepted], state.allowed()))
                if state.done:
                    continue
                kept_rows.append(row)
                kept_positions.append(
                    list(range(width - cached[i], width + len(pending[i]) + accepted))
                )
                cached[i] = len(kept_positions[-1])
                pending[i] = [state.tokens[-1]]
            if not kept_rows:
                break
            rows = torch.tensor(kept_rows, device=device)
            if len(kept_rows) < len(active):
                cache.batch_select_indices(rows)
                if seq2seq:
                    encoder_mask = encoder_mask[rows]
                    encoder_outputs.last_hidden_state = encoder_outputs.last_hidden_state[rows]
            active = [active[row] for row in kept_rows]
            width = max(len(p) for p in kept_positions)
            index = torch.tensor([[0] * (width - len(p)) + p for p in kept_positions], device=device)
            _keep(cache, index)
    return [state.tags for state in states]


def output_length(units: Units) -> int:
    """The most tokens an output under the copy constraint can take."""
    return sum(max(len(tokens) for tokens in unit.values()) for unit in units)


def copy_constraint(units: Sequence[Units], prefix_length: int, eos_id: int):
    """A `prefix_allowed_tokens_fn` for `generate` (beam search) with the copy constraint:
    the tokens after the first `prefix_length` of each sequence must spell its units, then end."""

    def allowed(batch_id: int, sequence: torch.Tensor) -> List[int]:
        state = CopyState(units[batch_id])
        try:
            for token in sequence[prefix_length:].tolist():
                if state.done:
                    return [eos_id]
                state.step(token)
        except ValueError:  # a beam that beam search kept with a disallowed token, at -inf
            return [eos_id]
        return state.allowed() or [eos_id]

    return allowed
