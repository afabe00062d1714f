"""Copy-aware decoding: the input words are forced, only their markup is chosen.

What an output may be is a lattice of options (see `lattices`): per node, the pieces that may
come next as token ids, e.g. a word's `word(tag)` units, or a word, an entity's opening or its
closing. Under the copy constraint the model may only choose, token by token, among the
options still consistent with the tokens written (a `CopyState`, see `copy_state`, walks
one output through its lattice); the loop here knows nothing of formats.

Draft and verify: the next tokens of the output are drafted by the likeliest options (the
first at each node: no entity, unless hinted), one forward pass (reusing the KV cache of the
accepted prefix) scores the draft, the draft is accepted up to the first token where the
model's best allowed token differs, that token is taken instead, and drafting starts again
from there. The scores of the draft past that point are not wasted: they show which options
the model would take at later nodes, and the next draft takes them (Jacobi-style hints).
Where a rejection would lead to a choice among several options (an entity's closing, then
its type), a draft also carries branches: the first token of those options, read beside the
draft token it would replace (rolling rows only: their attention follows each token's own
history), so that one pass shows both whether the model leaves the draft there and which of
the options it would then take. Rolling rows are fed packed, one after another in one
sequence without padding, so each drafts as far as suits it: a row inside an entity, which
the model leaves at the entity's end, drafts less. The result is what greedy decoding
restricted to the allowed tokens gives, in about one forward pass per decision instead of
one per token; only the allowed tokens' rows of the output layer are computed.
"""
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from transformers import AttentionInterface, Cache, DynamicCache, EncoderDecoderCache

from .compat import dynamic_cache, init_cache, layer_states, output_cache, uses_rope, with_cache
from .copy_state import Branch, CopyState, Scores
from .lattices import Lattice
from .prepacked import prepacked_linears

DRAFT_TOKENS = 16  # the tokens a pass drafts (see `draft_width`)
BRANCH_TOKENS = 4  # of those, at most this many are branches (see `CopyState.draft`)
INSIDE_DRAFT_TOKENS = 6  # the tokens a row inside an entity drafts, where rows are packed


def pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> Dict[str, "torch.Tensor"]:
    """`input_ids` and `attention_mask` tensors of token id rows padded to one width."""
    width = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        fill = width - len(row)
        ids.append([pad_id] * fill + list(row) if left else list(row) + [pad_id] * fill)
        mask.append([0] * fill + [1] * len(row) if left else [1] * len(row) + [0] * fill)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


@contextmanager
def _decoding_mode(model: Any, vocabulary: List[int]) -> Iterator[Optional[Dict[int, int]]]:
    """Inside: no gradients, only `vocabulary` scored, the attention that reads
    `_InPlaceRows`' views (where they fit), and linear layers laid out for oneDNN (see
    `prepacked`). The model's output layer is swapped for one made of the
    vocabulary's rows (the argmax over allowed tokens is unchanged, and the layer, a fifth of
    a small model's work, shrinks to almost nothing); everything is restored on the way out.
    Yields the token-to-column map, or None (full vocabulary) for a model whose output layer
    is not a plain linear layer."""
    head = model.get_output_embeddings()
    attention = model.config._attn_implementation
    columns = None
    with torch.inference_mode():
        if isinstance(head, torch.nn.Linear):
            index = torch.tensor(vocabulary, device=head.weight.device)
            small = torch.nn.Linear(head.in_features, len(vocabulary), bias=head.bias is not None)
            small.weight = torch.nn.Parameter(head.weight.detach()[index], requires_grad=False)
            if head.bias is not None:
                small.bias = torch.nn.Parameter(head.bias.detach()[index], requires_grad=False)
            model.set_output_embeddings(small)
            columns = {token: column for column, token in enumerate(vocabulary)}
        if _InPlaceRows.fits(model):
            model.config._attn_implementation = ATTENTION
        try:
            with prepacked_linears(model):
                yield columns
        finally:
            model.set_output_embeddings(head)
            model.config._attn_implementation = attention


@dataclass(frozen=True)
class SharedPrefix:
    """The keys and values of the prompt tokens that every prompt of a label set and prompt
    format starts with (wrapping, instruction, label list), computed once and shared by every
    row of every batch of a decoder-only model."""

    ids: Tuple[int, ...]
    keys: Tuple[torch.Tensor, ...]  # per layer: 1 x heads x len(ids) x head size
    values: Tuple[torch.Tensor, ...]

    def common_length(self, prompt: Sequence[int]) -> int:
        """How many of the prompt's first tokens are the prefix's."""
        return common_length(self.ids, prompt)


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common start of two token sequences."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def encode_prefix(model: Any, ids: Sequence[int]) -> SharedPrefix:
    """The keys and values a decoder-only model computes for `ids` (its output layer is not run)."""
    with torch.inference_mode():
        output = model.base_model(
            input_ids=torch.tensor([list(ids)], device=model.device), use_cache=True
        )
    states = layer_states(output_cache(output))
    return SharedPrefix(tuple(ids), tuple(k for k, _ in states), tuple(v for _, v in states))


def _best_prefix(
    prefixes: Sequence[SharedPrefix], prompt: Sequence[int]
) -> Tuple[Optional[SharedPrefix], int]:
    """The prefix that shares most tokens with the prompt, and how many (at least one prompt
    token is left to feed: its logits start the output)."""
    best: Tuple[Optional[SharedPrefix], int] = (None, 0)
    for prefix in prefixes:
        length = min(prefix.common_length(prompt), len(prompt) - 1)
        if length > best[1]:
            best = (prefix, length)
    return best


def _right_aligned(parts: Sequence[Tuple[int, torch.Tensor]], rows: int, width: int) -> torch.Tensor:
    """A rows x heads x width x size tensor holding each (row, heads x n x size) part at its
    row's right end, zeros elsewhere."""
    heads, _, size = parts[0][1].shape
    stacked = parts[0][1].new_zeros((rows, heads, width, size))
    for row, part in parts:
        stacked[row, :, width - part.shape[1] :] = part
    return stacked


def _self_attention(cache: Any) -> DynamicCache:
    return cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache


class _RowCache:
    """The KV cache of a batch whose rows advance at their own pace.

    Each row's real positions are right-aligned (masked padding on the left, `width` wide in
    all); after each pass every row keeps only its accepted tokens, so nothing is computed twice
    and relative positions stay exact.
    """

    def __init__(self, cache: Any, lengths: List[int]) -> None:
        self._cache = cache
        self.lengths = lengths  # real positions per row
        self.width = max(lengths, default=0)

    @classmethod
    def from_prefixes(cls, starts: Sequence[Tuple[Optional[SharedPrefix], int]]) -> "_RowCache":
        """A cache whose row k holds the first `length` positions of its prefix, for each
        `(prefix, length)` of `starts` (no prefix: nothing)."""
        lengths = [length for _, length in starts]
        width = max(lengths)
        known = [(row, prefix, length) for row, (prefix, length) in enumerate(starts) if length]
        cache = dynamic_cache(
            (_right_aligned([(r, p.keys[layer][0, :, :n]) for r, p, n in known], len(starts), width),
             _right_aligned([(r, p.values[layer][0, :, :n]) for r, p, n in known], len(starts), width))
            for layer in range(len(known[0][1].keys) if known else 0)
        )
        return cls(cache, lengths)

    @property
    def cache(self) -> Any:
        return self._cache

    def mask(self, feeds: Sequence[int], length: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The 2D attention mask and the position ids of a pass feeding `length` tokens a row
        (of which `feeds[row]` are real)."""
        mask = torch.zeros((len(feeds), self.width + length), dtype=torch.long)
        for row, (cached, fed) in enumerate(zip(self.lengths, feeds)):
            mask[row, self.width - cached : self.width + fed] = 1
        return mask, (mask.cumsum(-1) - 1).clamp(min=0)[:, self.width :]

    def keep(self, rows: List[int], kept: List[int], device: Any) -> None:
        """Keep the batch rows `rows`, each with its first `kept[k]` positions of those the last
        pass fed (after its cached ones), re-aligned to the right."""
        positions = [
            list(range(self.width - self.lengths[row], self.width + extra))
            for row, extra in zip(rows, kept)
        ]
        width = max(len(p) for p in positions)
        index = torch.tensor([[0] * (width - len(p)) + p for p in positions], device=device)
        select = torch.tensor(rows, device=device) if len(rows) < len(self.lengths) else None

        def gather(states: torch.Tensor) -> torch.Tensor:
            states = states if select is None else states[select]
            return states.gather(2, index[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3]))

        kept_states = dynamic_cache((gather(keys), gather(values))
                                    for keys, values in layer_states(_self_attention(self._cache)))
        if isinstance(self._cache, EncoderDecoderCache):
            cross = self._cache.cross_attention_cache
            if select is not None:
                cross.batch_select_indices(select)
            self._cache = EncoderDecoderCache(kept_states, cross)
        else:
            self._cache = kept_states
        self.lengths = [len(p) for p in positions]
        self.width = width


ATTENTION = "spacy-gner-sdpa"  # transformers attention backend of `_InPlaceRows`


class _Packing:
    """Where each row's tokens lie in a pass that feeds the rows one after another as one
    sequence (no padding: the layers before and after attention work per token), where they
    go in the rows' caches, and how attention, which works per row, reads them: in runs of
    neighbouring rows, each run's rows padded to its longest (a row fed more than twice the
    median, one reading its prompt, runs alone, so the others are not padded to its length),
    over the keys its rows hold, no further."""

    def __init__(self, fed: Sequence[int], held: Sequence[int], device: Any) -> None:
        """`fed`: the tokens each row is fed; `held`: the positions each row holds before."""
        self.fed = list(fed)
        self.starts = [0]  # where each row's tokens start
        for count in fed[:-1]:
            self.starts.append(self.starts[-1] + count)
        # each token's row and the cache position it is written to
        self.rows = torch.tensor([row for row, count in enumerate(fed) for _ in range(count)], device=device)
        self.slots = torch.tensor([held[row] + k for row, count in enumerate(fed) for k in range(count)],
                                  device=device)
        total, limit = sum(fed), 2 * sorted(fed)[len(fed) // 2]
        bounds = sorted({0, len(fed)} | {row for row, count in enumerate(fed) if count > limit}
                        | {row + 1 for row, count in enumerate(fed) if count > limit})
        # per run: its rows, its width, the keys they hold after the pass, where their slots read
        self.runs: List[Tuple[slice, int, int, torch.Tensor]] = []
        packing: List[int] = []  # where each token's output lies in the runs' slots
        slots = 0
        for first, end in zip(bounds, bounds[1:]):
            width = max(fed[first:end])
            reach = max(held[row] + fed[row] for row in range(first, end))
            index = [[self.starts[row] + k if k < fed[row] else total for k in range(width)]
                     for row in range(first, end)]
            packing += [slots + (row - first) * width + k
                        for row in range(first, end) for k in range(fed[row])]
            slots += (end - first) * width
            self.runs.append((slice(first, end), width, reach, torch.tensor(index, device=device)))
        self.packing = torch.tensor(packing, device=device)
        self.reach = max(reach for _, _, reach, _ in self.runs)  # the most positions a row holds
        self._masks: Optional[List[Optional[torch.Tensor]]] = None  # per run, as attention reads it

    def write(self, cache: torch.Tensor, states: torch.Tensor) -> None:
        """Write the pass's packed keys or values (1 x heads x tokens x size) to each token's
        row and position of `cache` (rows x heads x capacity x size)."""
        cache[self.rows, :, self.slots] = states[0].transpose(0, 1)

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               mask: Optional[torch.Tensor], scale: Optional[float]) -> torch.Tensor:
        """Attention of packed queries (1 x heads x tokens x size) over each row's keys and
        values, run by run: 1 x tokens x heads x size."""
        if self._masks is None:  # every layer reads the same mask: laid out once per pass
            shared = query.shape[1] // key.shape[1]
            self._masks = [None if mask is None else _group_mask(mask[rows, :, :width, :reach], shared, query.dtype)
                           for rows, width, reach, _ in self.runs]
        flat = query[0].transpose(0, 1)
        flat = torch.cat([flat, flat.new_zeros((1,) + flat.shape[1:])])  # empty slots read zeros
        outputs = [
            _grouped_attention(flat[index].transpose(1, 2), key[rows, :, :reach], value[rows, :, :reach],
                               run_mask, scale).transpose(1, 2).flatten(0, 1)
            for (rows, _, reach, index), run_mask in zip(self.runs, self._masks)
        ]
        return torch.cat(outputs)[self.packing][None]


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
               scaling: Optional[float] = None, gner_packing: Optional[_Packing] = None,
               **kwargs: Any) -> Tuple[torch.Tensor, None]:
    """Scaled dot-product attention over the cache's views as they are: no copy of the keys
    and values, none to repeat them for grouped-query heads; per row where the rows come
    packed (`gner_packing`)."""
    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
    if gner_packing is not None:
        return gner_packing.attend(query, key, value, mask, scaling).contiguous(), None
    if mask is not None:
        mask = _group_mask(mask, query.shape[1] // key.shape[1], query.dtype)
    return _grouped_attention(query, key, value, mask, scaling).transpose(1, 2).contiguous(), None


def _group_mask(mask: torch.Tensor, shared: int, dtype: torch.dtype) -> torch.Tensor:
    """An attention mask (rows x 1 x queries x keys; boolean, True where a query reads a key,
    or additive) as `_grouped_attention` reads it: additive, in `dtype`, each query's row
    repeated for each of the `shared` query heads that read one key head."""
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    if shared > 1:
        mask = mask[:, :, None].expand(-1, -1, shared, -1, -1).reshape(mask.shape[0], 1, -1, mask.shape[-1])
    return mask.to(dtype)


def _grouped_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       mask: Optional[torch.Tensor], scale: Optional[float]) -> torch.Tensor:
    """Scaled dot-product attention of queries (rows x heads x tokens x size) over keys and
    values with fewer heads, each shared by a group of query heads (grouped-query attention),
    under a mask laid out by `_group_mask`: a group's queries are read as one head's longer
    sequence, so each key and value is read once per group. The same numbers as SDPA's
    `enable_gqa`, up to twice as fast on CPUs."""
    rows, heads, length, size = query.shape
    groups = key.shape[1]
    output = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(rows, groups, heads // groups * length, size), key, value, attn_mask=mask, scale=scale)
    return output.view(rows, heads, length, size)


AttentionInterface.register(ATTENTION, _attention)


class _InPlaceRows(Cache):
    """The KV cache of decoder-only rows, kept in place, whose rows can be refilled.

    Each row's keys and values start at position 0 of preallocated buffers (rows x heads x
    capacity x size, per layer); a pass writes each row's new tokens right after the ones it
    accepted (over those it rejected before), and attention reads a view of the filled part,
    under a 4D mask in which each new token sees its row's accepted tokens and the new tokens
    before it. A pass feeds the rows packed, one after another in one sequence, each as many
    tokens as it needs (see `_Packing`). Nothing moves after a pass; a row whose output is
    complete is taken over by the next prompt (`admit`), and only rows that leave for good
    are copied out (`select`).
    For models whose attention runs through transformers' attention interface and whose
    positions are the position ids given (`fits`).
    """

    def __init__(self, rows: int, capacity: int) -> None:
        """`capacity`: the most positions a row will hold (its prompt and output)."""
        init_cache(self)
        self.lengths = torch.zeros(rows, dtype=torch.long)  # accepted positions per row
        self.capacity = capacity
        self.keys: List[torch.Tensor] = []
        self.values: List[torch.Tensor] = []
        self._packing: Optional[_Packing] = None  # where the pass's tokens are

    @staticmethod
    def fits(model: Any) -> bool:
        config = model.config
        return (not config.is_encoder_decoder and getattr(model, "_supports_attention_backend", False)
                and uses_rope(config)
                and getattr(config, "sliding_window", None) is None)

    @property
    def cache(self) -> "_InPlaceRows":
        return self

    def _allocate(self, layer: int, like: torch.Tensor) -> None:
        """Buffers for one more layer, shaped after `like` (rows x heads x _ x size)."""
        shape = (len(self.lengths), like.shape[1], self.capacity, like.shape[3])
        self.keys.append(like.new_zeros(shape))
        self.values.append(like.new_zeros(shape))

    def admit(self, row: int, prefix: Optional[SharedPrefix], length: int) -> None:
        """Start row `row` afresh with the first `length` positions of `prefix`."""
        self.lengths[row] = length
        if not length:
            return
        for layer, (keys, values) in enumerate(zip(prefix.keys, prefix.values)):
            if layer == len(self.keys):
                self._allocate(layer, keys)
            self.keys[layer][row, :, :length] = keys[0, :, :length]
            self.values[layer][row, :, :length] = values[0, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self._allocate(layer_idx, key_states)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        self._packing.write(keys, key_states)
        self._packing.write(values, value_states)
        return keys[:, :, : self._packing.reach], values[:, :, : self._packing.reach]

    def get_seq_length(self, layer_idx: Optional[int] = 0) -> int:
        return int(self.lengths.max()) if len(self.lengths) else 0

    def mask(self, packing: _Packing,
             branches: Sequence[Sequence[int]] = ()) -> Tuple[torch.Tensor, torch.Tensor]:
        """The 4D attention mask (rows x 1 x the most tokens a row is fed x keys) and the
        packed position ids (1 x tokens) of a pass laid out as `packing`. The last
        `len(branches[row])` tokens of a row are branches: branch j comes after the first
        `branches[row][j]` tokens of the row's pass and sees only those (and itself)."""
        feeds, length = packing.fed, max(packing.fed)
        slots = self.lengths[:, None] + torch.arange(length)
        positions, seen = slots.clone(), slots.clone()  # seen: the last slot read in order
        for row, starts in enumerate(branches):
            first = feeds[row] - len(starts)
            for j, before in enumerate(starts):
                positions[row, first + j] = self.lengths[row] + before
                seen[row, first + j] = self.lengths[row] + before - 1
        self._packing = packing
        if packing.reach > self.capacity:
            raise ValueError(f"a row would hold {packing.reach} positions, more than {self.capacity}")
        columns = torch.arange(packing.reach)[None, None, :]
        mask = (columns <= seen[:, :, None]) | (columns == slots[:, :, None])
        packed = torch.cat([positions[row, :fed] for row, fed in enumerate(feeds)])
        return mask[:, None], packed[None]

    def advance(self, rows: List[int], counts: List[int]) -> None:
        """Rows `rows` accepted `counts` more positions."""
        self.lengths[rows] += torch.tensor(counts, dtype=torch.long)

    def add(self, count: int) -> None:
        """`count` more rows, empty."""
        self.lengths = torch.cat([self.lengths, self.lengths.new_zeros(count)])
        for store in (self.keys, self.values):
            for layer, buffer in enumerate(store):
                store[layer] = torch.cat([buffer, buffer.new_zeros((count,) + buffer.shape[1:])])

    def select(self, rows: List[int]) -> None:
        """Keep only the rows `rows`, in that order."""
        self.lengths = self.lengths[torch.tensor(rows, dtype=torch.long)]
        if self.keys:
            index = torch.tensor(rows, dtype=torch.long, device=self.keys[0].device)
            self.keys = [buffer[index] for buffer in self.keys]
            self.values = [buffer[index] for buffer in self.values]


def draft_width(pending: Sequence[int], remaining: Sequence[int], draft: int) -> int:
    """The tokens one pass feeds every padded row (see `_Batch`): its pending tokens (a
    prompt's, or the token chosen last), then a draft; a row with more pending tokens reads
    the first ones.

    Every row is fed as many tokens as the widest (a row that drafts less is padded, and
    padding costs as much as drafting), so the width is chosen for the batch: one pending token
    and `draft` tokens, or wider where that takes at least half the rows' pending tokens at
    once (a batch starting on its prompts), and no wider than any row still needs (`remaining`:
    the tokens of its draft to its output's end). A prompt starting among rows that decode is
    read in pieces of that width.
    """
    half = sorted(pending, reverse=True)[(len(pending) - 1) // 2]
    need = max(p + r for p, r in zip(pending, remaining))
    return min(max(1 + draft, half), need)


class _Batch:
    """The prompts a model continues together, a row each, and the requests waiting.

    Decoder-only models that `_InPlaceRows` fits decode with rolling rows: when a row's output
    is complete, the next prompt takes its place at once, so every pass works on `rows` rows
    while prompts wait; their tokens are fed packed (see `_Packing`). Other models (seq2seq
    ones) decode `rows` prompts at a time, with the encoder's output and a `_RowCache`, their
    rows padded to one width. Decoder-only rows start after the keys and values of the shared
    prefix they share most tokens with.

    `forward` feeds every row its pending tokens and then its draft, and gives per row the
    logits that score the draft (one position more than the draft); `advance` moves each row
    on by the draft tokens it accepted and sets what it feeds next (None: its output is
    complete).
    """

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], pad_id: int,
                 prefixes: Sequence[SharedPrefix], rows: int, capacity: int) -> None:
        self.model = model
        self.prompts = prompts
        self.pad_id = pad_id
        self.prefixes = prefixes
        self.size = rows
        self.seq2seq = model.config.is_encoder_decoder
        self.in_place = _InPlaceRows.fits(model)
        self.active: List[int] = []  # the prompt of each row
        self.pending: List[List[int]] = []  # the tokens each row feeds next
        self.rows: Any = None
        if self.in_place:
            self.rows = _InPlaceRows(0, capacity)

    def admit(self, queue: Deque[int]) -> None:
        """Give rows to waiting prompts: rolling rows take prompts as rows free up (and the
        rows left free when none waits are dropped); other batches start anew when empty."""
        if self.in_place:
            if len(self.active) < self.size and queue:  # the first rows
                added = min(self.size - len(self.active), len(queue))
                self.rows.add(added)
                self.active += [-1] * added
                self.pending += [[] for _ in range(added)]
            for row in [row for row, i in enumerate(self.active) if i < 0]:
                if not queue:
                    break
                i = queue.popleft()
                prefix, length = _best_prefix(self.prefixes, self.prompts[i])
                self.rows.admit(row, prefix, length)
                self.active[row], self.pending[row] = i, list(self.prompts[i][length:])
            if any(i < 0 for i in self.active):  # no prompt is left for these rows
                kept = [row for row, i in enumerate(self.active) if i >= 0]
                self.rows.select(kept)
                self.active = [self.active[row] for row in kept]
                self.pending = [self.pending[row] for row in kept]
            return
        if self.active or not queue:
            return
        self.active = [queue.popleft() for _ in range(min(self.size, len(queue)))]
        prompts = [self.prompts[i] for i in self.active]
        if self.seq2seq:
            device = self.model.device
            encoded = pad(prompts, self.pad_id, left=False)
            self.encoder_mask = encoded["attention_mask"].to(device)
            self.encoder_outputs = self.model.get_encoder()(
                input_ids=encoded["input_ids"].to(device), attention_mask=self.encoder_mask
            )
            self.pending = [[self.model.config.decoder_start_token_id] for _ in prompts]
            self.rows = _RowCache(EncoderDecoderCache(DynamicCache(), DynamicCache()), [0] * len(prompts))
        else:
            starts = [_best_prefix(self.prefixes, prompt) for prompt in prompts]
            self.pending = [list(prompt[length:]) for prompt, (_, length) in zip(prompts, starts)]
            self.rows = _RowCache.from_prefixes(starts)

    def forward(self, takes: Sequence[int], drafts: Sequence[Sequence[int]],
                branches: Sequence[Sequence[Branch]] = ()) -> torch.Tensor:
        """Feed each row the first `takes[row]` of its pending tokens, then its draft, then
        its draft's branches (rolling rows only): rows x (longest draft + 1 + most branches) x
        vocabulary, where position k of row r scores token k of its draft and position
        `len(draft) + 1 + j` what follows its branch j (other positions are padding)."""
        model, device = self.model, self.model.device
        branches = branches or [()] * len(drafts)
        feeds = [pending[:take] + list(draft) + [branch.token for branch in row_branches]
                 for pending, take, draft, row_branches in zip(self.pending, takes, drafts, branches)]
        fed = [len(feed) for feed in feeds]
        length = max(fed)
        if self.in_place:  # packed: row r's tokens start at starts[r]
            packing = _Packing(fed, self.rows.lengths.tolist(), device)
            mask, positions = self.rows.mask(packing, [[take + branch.at for branch in row_branches]
                                                       for take, row_branches in zip(takes, branches)])
            logits = model(
                input_ids=torch.tensor([[token for feed in feeds for token in feed]], device=device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=True,
                gner_packing=packing,
                **with_cache(self.rows.cache),
            ).logits[0]
            starts = packing.starts
        else:  # padded: row r's tokens start at r * length
            input_ids = torch.full((len(feeds), length), self.pad_id, dtype=torch.long)
            for row, feed in enumerate(feeds):
                input_ids[row, : len(feed)] = torch.tensor(feed)
            mask, positions = self.rows.mask(fed, length)
            if self.seq2seq:
                logits = model(
                    encoder_outputs=self.encoder_outputs,
                    attention_mask=self.encoder_mask,
                    decoder_input_ids=input_ids.to(device),
                    decoder_attention_mask=mask.to(device),
                    use_cache=True,
                    **with_cache(self.rows.cache),
                ).logits
            else:
                logits = model(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    use_cache=True,
                    **with_cache(self.rows.cache),
                ).logits
            logits = logits.flatten(0, 1)
            starts = [row * length for row in range(len(feeds))]
        # each row's scores start where its pending tokens end: only those go to the CPU
        span = max(len(draft) for draft in drafts) + 1
        most = max(map(len, branches))
        index = torch.tensor([[start + min(k, count - 1) for k in
                               [max(take - 1, 0) + k for k in range(span)]
                               + [take + len(draft) + j for j in range(most)]]
                              for start, count, take, draft in zip(starts, fed, takes, drafts)])
        return logits[index.to(logits.device)].float().cpu()

    def advance(self, fed: List[int], pending: List[Optional[List[int]]]) -> None:
        """Each row's cache keeps the first `fed[row]` tokens it was fed in this pass; it feeds
        `pending[row]` next, or, None, its output is complete."""
        going = [row for row, tokens in enumerate(pending) if tokens is not None]
        if self.in_place:
            self.rows.advance(going, [fed[row] for row in going])
            for row, tokens in enumerate(pending):
                self.pending[row] = tokens or []
                if tokens is None:
                    self.active[row] = -1
            return
        if going:
            self.rows.keep(going, [fed[row] for row in going], self.model.device)
            if self.seq2seq and len(going) < len(self.active):
                select = torch.tensor(going, device=self.model.device)
                self.encoder_mask = self.encoder_mask[select]
                self.encoder_outputs.last_hidden_state = self.encoder_outputs.last_hidden_state[select]
        self.active = [self.active[row] for row in going]
        self.pending = [pending[row] for row in going]


def _vocabulary(lattices: Sequence[Lattice]) -> List[int]:
    """Every token an output under the copy constraint may hold."""
    return sorted(set().union(*(lattice.vocabulary for lattice in lattices)))


def copy_decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    lattices: Sequence[Lattice],
    pad_id: int,
    draft_tokens: int = DRAFT_TOKENS,
    *,
    prefixes: Sequence[SharedPrefix] = (),
    rows: Optional[int] = None,
    branch_tokens: int = BRANCH_TOKENS,
    inside_tokens: int = INSIDE_DRAFT_TOKENS,
) -> List[CopyState]:
    """Greedy decoding under the copy constraint, by draft and verify: for each prompt, the
    finished CopyState with the options taken (their actions) and their probabilities. `prompts`
    are token ids (causal models continue them, seq2seq models encode them), decoded `rows`
    at a time (default: all), in order (put the longest first); drafts are at most
    `draft_tokens` long, `branch_tokens` of them at most branches, and `inside_tokens` long
    where an entity is open (both for rolling rows only).
    `prefixes` (decoder-only models): shared starts of prompts whose keys and values are known.

    Each pass feeds every row its pending tokens and a draft: rolling rows, packed, all their
    pending tokens and their own draft; other rows, padded, a draft filling the pass's width
    (see `draft_width`: no wider than the longest draft to an output's end needs). Rows keep
    their accepted tokens' keys and values, and a row whose output is complete leaves at
    once, for the next prompt where rows roll (see `_Batch`).
    """
    states = [CopyState(lattice) for lattice in lattices]
    queue = deque(i for i, state in enumerate(states) if not state.done)
    if not queue:
        return states
    capacity = max(len(prompts[i]) + lattices[i].bound(lattices[i].start) for i in queue) + branch_tokens
    with _decoding_mode(model, _vocabulary(lattices)) as columns:
        batch = _Batch(model, prompts, pad_id, prefixes, rows or len(queue), capacity)
        branch_tokens = branch_tokens if batch.in_place else 0
        while True:
            batch.admit(queue)
            if not batch.active:
                break
            if batch.in_place:  # packed rows: each reads all it has pending, then drafts
                takes = [len(pending) for pending in batch.pending]
                limits = [min(draft_tokens, inside_tokens) if states[i].inside else draft_tokens
                          for i in batch.active]
                drafts = [states[i].draft(limit, branch_tokens) for i, limit in zip(batch.active, limits)]
            else:  # padded rows: the pass is no wider than the longest draft to an end needs
                ahead = [states[i].draft(states[i].remaining) for i in batch.active]
                width = draft_width([len(pending) for pending in batch.pending],
                                    [len(tokens) for tokens in ahead], draft_tokens)
                takes = [min(len(pending), width) for pending in batch.pending]
                drafts = [[] if take < len(pending) else tokens[: width - take]  # [] still reading its prompt
                          for tokens, pending, take in zip(ahead, batch.pending, takes)]
            branches = [states[i].branches for i in batch.active]  # none where reading a prompt
            logits = batch.forward(takes, drafts, branches)
            span = max(len(draft) for draft in drafts) + 1
            fed: List[int] = []
            pending: List[Optional[List[int]]] = []
            for row, (i, draft, take) in enumerate(zip(batch.active, drafts, takes)):
                if take < len(batch.pending[row]):  # still reading its prompt
                    fed.append(take)
                    pending.append(batch.pending[row][take:])
                    continue
                count = states[i].verify(draft, Scores(logits[row, : len(draft) + 1], columns),
                                         Scores(logits[row, span : span + len(branches[row])], columns))
                fed.append(take + count)
                pending.append(None if states[i].done else [states[i].tokens[-1]])
            batch.advance(fed, pending)
    return states


def follow_outputs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    lattices: Sequence[Lattice],
    outputs: Sequence[Sequence[int]],
    pad_id: int,
    *,
    prefixes: Sequence[SharedPrefix] = (),
) -> List[CopyState]:
    """The finished CopyStates of given outputs (token ids the lattices allow, e.g. from
    `complete`), with the model's probability of each option taken under the copy constraint
    (normalised over the allowed continuations, over all its tokens), from one teacher-forced
    pass: for outputs generated freely or by beam search."""
    states = [CopyState(lattice) for lattice in lattices]
    queue = deque(i for i, output in enumerate(outputs) if output)
    if queue:
        with _decoding_mode(model, _vocabulary(lattices)) as columns:
            batch = _Batch(model, prompts, pad_id, prefixes, len(queue),
                           max(len(prompts[i]) + len(outputs[i]) for i in queue))
            batch.admit(queue)
            logits = batch.forward([len(p) for p in batch.pending], [outputs[i] for i in batch.active])
            for row, i in enumerate(batch.active):
                states[i].follow(outputs[i], Scores(logits[row, : len(outputs[i])], columns))
    return states
