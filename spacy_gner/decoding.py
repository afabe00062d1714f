"""Copy-aware decoding: the input words are forced, only their tags are chosen.

A GNER output is a sequence of units, one per input word: `word(tag)` with a space before
every word but the first. Fast tokenizers split text at spaces before merging, so each unit
tokenizes on its own, and the output's tokens are the units' tokens one after another. Under
the copy constraint the model may only choose, for each word in turn, among the units of its
valid tags.

Draft and verify: the next tokens of the output are drafted with every remaining word tagged
`O`, one forward pass (reusing the KV cache of the accepted prefix) scores the draft, the
draft is accepted up to the first token where the model's best allowed token differs, that
token is taken instead, and drafting starts again from there. The scores of the draft past
that point are not wasted: they show which later words the model would tag as entities, and
the next draft tags them so (Jacobi-style hints). The result is what greedy decoding
restricted to the allowed tokens gives, in about one forward pass per entity instead of one
per token; only the allowed tokens' rows of the output layer are computed.
"""
from bisect import bisect_right
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

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
    far, the tags still possible for it, the tags chosen before, and hints: the tags the
    model favoured for later words when it last read them in a draft."""

    def __init__(self, units: Units) -> None:
        self.units = units
        self.word = 0
        self.position = 0
        self.alive: List[str] = list(units[0]) if units else []
        self.tags: List[str] = []
        self.tokens: List[int] = []
        self.hints: Dict[int, List[str]] = {}
        self._plan: List[Tuple[int, str, int]] = []  # the last draft: (word, tag, start)

    @property
    def done(self) -> bool:
        return self.word >= len(self.units)

    def allowed(self) -> List[int]:
        """The tokens that may come next (none when the output is complete)."""
        if self.done:
            return []
        unit = self.units[self.word]
        return sorted({unit[tag][self.position] for tag in self.alive})

    def guess(self, word: Optional[int] = None, previous: Optional[str] = None) -> str:
        """The likeliest tag of a word (default: the current one) among those still possible
        and hinted: O, else the type of the word before (an entity's next word), else the
        first."""
        word = self.word if word is None else word
        candidates = self.alive if word == self.word else list(self.units[word])
        hinted = [tag for tag in candidates if tag in self.hints.get(word, ())]
        candidates = hinted or candidates
        if "O" in candidates:
            return "O"
        if previous is None:
            previous = self.tags[-1] if self.tags else "O"
        for tag in (f"I-{previous[2:]}", f"B-{previous[2:]}"):
            if tag in candidates:
                return tag
        return candidates[0]

    def draft(self, limit: int) -> List[int]:
        """At most `limit` tokens of the rest of the output: the current word finished with
        its likeliest tag, every later word with its likeliest tag (O unless hinted)."""
        self._plan = []
        tokens: List[int] = []
        tag = None
        for word in range(self.word, len(self.units)):
            if len(tokens) >= limit:
                break
            tag = self.guess(word, tag)
            skip = self.position if word == self.word else 0
            self._plan.append((word, tag, len(tokens) - skip))
            tokens.extend(self.units[word][tag][skip:])
        return tokens[:limit]

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
            self.hints.pop(self.word, None)
            self.word += 1
            self.position = 0
            self.alive = list(self.units[self.word]) if not self.done else []

    def verify(self, draft: Sequence[int], scores: "Scores") -> int:
        """Take the draft up to the first token where the model's best allowed token differs
        and take that token instead (or, when the whole draft holds, one more token): the
        number of draft tokens accepted. Position k of `scores` scores draft token k; there
        is one position more than the draft. Where the draft was rejected, the scores
        of the later words it held still give hints for their next draft."""
        for accepted, token in enumerate(draft):
            choice = scores.best(accepted, self.allowed())
            self.step(choice)
            if choice != token:
                self._read_hints(scores, accepted)
                return accepted
        if not self.done:
            self.step(scores.best(len(draft), self.allowed()))
        return len(draft)

    def _read_hints(self, scores: "Scores", rejected: int) -> None:
        """For each drafted word after the rejected token: the tags consistent with the
        model's choices along its drafted unit, up to where it left the draft."""
        for word, tag, start in self._plan:
            if start <= rejected:
                continue
            tags, drafted = list(self.units[word]), self.units[word][tag]
            for position, token in enumerate(drafted):
                if start + position >= len(scores):
                    break
                tags = [t for t in tags if len(self.units[word][t]) > position]
                options = sorted({self.units[word][t][position] for t in tags})
                choice = scores.best(start + position, options)
                tags = [t for t in tags if self.units[word][t][position] == choice]
                if choice != token:
                    break
            if len(tags) < len(self.units[word]):
                self.hints[word] = tags


def pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> Dict[str, "torch.Tensor"]:
    """`input_ids` and `attention_mask` tensors of token id rows padded to one width."""
    width = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        fill = width - len(row)
        ids.append([pad_id] * fill + list(row) if left else list(row) + [pad_id] * fill)
        mask.append([0] * fill + [1] * len(row) if left else [1] * len(row) + [0] * fill)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


class Scores:
    """The model's scores for the positions of one row's draft, over a vocabulary subset:
    `columns` maps a token id to its column (None: the full vocabulary)."""

    def __init__(self, logits: torch.Tensor, columns: Optional[Dict[int, int]]) -> None:
        self.logits = logits
        self.columns = columns

    def __len__(self) -> int:
        return self.logits.shape[0]

    def best(self, position: int, allowed: List[int]) -> int:
        """The allowed token the model scores highest at a position."""
        if len(allowed) == 1:
            return allowed[0]
        index = [self.columns[t] for t in allowed] if self.columns is not None else allowed
        return allowed[int(torch.argmax(self.logits[position, index]))]


@contextmanager
def _output_head(model: Any, vocabulary: List[int]) -> Iterator[Optional[Dict[int, int]]]:
    """Score only `vocabulary` while inside: the model's output layer is swapped for one made
    of its rows (the argmax over allowed tokens is unchanged, and the layer, a fifth of a
    small model's work, shrinks to almost nothing). Yields the token-to-column map, or None
    (full vocabulary) for a model whose output layer is not a plain linear layer."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        yield None
        return
    index = torch.tensor(vocabulary, device=head.weight.device)
    small = torch.nn.Linear(head.in_features, len(vocabulary), bias=head.bias is not None)
    small.weight = torch.nn.Parameter(head.weight.detach()[index], requires_grad=False)
    if head.bias is not None:
        small.bias = torch.nn.Parameter(head.bias.detach()[index], requires_grad=False)
    model.set_output_embeddings(small)
    try:
        yield {token: column for column, token in enumerate(vocabulary)}
    finally:
        model.set_output_embeddings(head)


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
    draft_tokens: int = 32,
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
    vocabulary = sorted({t for row in units for unit in row for ids in unit.values() for t in ids})
    with torch.inference_mode(), _output_head(model, vocabulary) as columns:
        while active:
            drafts = {i: states[i].draft(draft_tokens) for i in active}
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
            # only the positions that score a draft (not a prompt's) go to the CPU
            skipped = min(len(pending[i]) for i in active) - 1
            logits = logits[:, skipped:].float().cpu()
            kept_rows, kept_positions = [], []
            for row, i in enumerate(active):
                state, draft = states[i], drafts[i]
                first = len(pending[i]) - 1 - skipped  # logits predicting the draft's first token
                scores = Scores(logits[row, first : first + len(draft) + 1], columns)
                accepted = state.verify(draft, scores)
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
