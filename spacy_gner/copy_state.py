"""Where one output stands in its lattice as the model chooses, and what a draft guesses.

A `CopyState` walks a lattice (see `lattices`) token by token: the options still possible,
the actions taken with their probabilities, and the guesses a draft makes from here on
(the first option at each node, or the one the model hinted at), with the branches it
carries. `Scores` are the model's scores over a draft's positions. Pure Python but for the
score tensors; `decoding` runs the model.
"""
import math
from typing import Dict, Hashable, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .lattices import Lattice, Option


class Branch(NamedTuple):
    """A one-token side branch of a draft: `token`, read as if it came instead of draft token
    `at`, is the first token that options of `node` other than the drafted one share at
    `position`; its scores show which of them the model would go on with."""

    at: int
    token: int
    node: Hashable
    position: int


def _branches(node: Hashable, options: Sequence[Option], candidates: Sequence[int], choice: int,
              skip: int, start: int) -> List[Branch]:
    """The branches at a drafted node whose option `choice` is written from token `skip` on,
    its token k at draft position `start + k`: per token where other candidates leave it,
    one branch if the candidates that take that token go on in different ways."""
    drafted = options[choice].tokens
    after: Dict[Tuple[int, int], set] = {}  # (position, token) -> the tokens that follow
    for i in candidates:
        if i == choice:
            continue
        tokens = options[i].tokens
        k = next((k for k in range(skip, min(len(tokens), len(drafted))) if tokens[k] != drafted[k]), None)
        if k is not None and k + 1 < len(tokens):
            after.setdefault((k, tokens[k]), set()).add(tokens[k + 1])
    return [Branch(start + k, token, node, k) for (k, token), following in sorted(after.items())
            if len(following) > 1]


class CopyState:
    """Where one output stands in its lattice: the node, the tokens of the current option
    written so far, the options still possible, the options taken before (their actions)
    with their probabilities, and hints: the options the model favoured at later nodes when
    it last read them in a draft."""

    def __init__(self, lattice: Lattice) -> None:
        self.lattice = lattice
        self.node: Hashable = lattice.start
        self.options: List[Option] = lattice.options(self.node)
        self.alive: List[int] = list(range(len(self.options)))
        self.position = 0
        self.actions: List[Hashable] = []
        self.probs: List[float] = []  # per option taken: the model's probability of it
        self.tokens: List[int] = []
        self._logprob = 0.0  # of the current option so far
        self.hints: Dict[Hashable, List[int]] = {}
        self._plan: List[Tuple[Hashable, int, int]] = []  # the last draft: (node, option, start)
        self.branches: List[Branch] = []  # the last draft's

    @property
    def done(self) -> bool:
        return not self.options

    @property
    def remaining(self) -> int:
        """The most tokens the rest of the output may take."""
        return self.lattice.bound(self.node) - self.position

    @property
    def inside(self) -> bool:
        """Whether an entity is open where the option being written leads (see `Lattice.inside`)."""
        node = self.node if not self.position else self.options[self.alive[0]].next
        return self.lattice.inside(node)

    def allowed(self) -> List[int]:
        """The tokens that may come next (none when the output is complete)."""
        options, position = self.options, self.position
        return sorted({options[i].tokens[position] for i in self.alive})

    def guess(self, node: Hashable, candidates: Sequence[int]) -> int:
        """The option a draft takes at a node among `candidates`: the first hinted, else the
        first (the lattice lists the options without a new entity first)."""
        hinted = self.hints.get(node, ())
        return next((i for i in candidates if i in hinted), candidates[0])

    def draft(self, limit: int, branches: int = 0) -> List[int]:
        """At most `limit` tokens of the rest of the output: at each node from here on, the
        option `guess` takes. With `branches`, up to that many of the `limit` tokens go to
        `Branch`es instead (kept in `self.branches`, the earliest first): at a drafted node,
        the first token of other options that then differ among themselves."""
        self._plan = []
        found: List[Branch] = []
        tokens: List[int] = []
        node, candidates, skip = self.node, self.alive, self.position
        while candidates and len(tokens) < limit:
            choice = self.guess(node, candidates)
            options = self.lattice.options(node)
            option = options[choice]
            start = len(tokens) - skip
            self._plan.append((node, choice, start))
            if len(found) < branches:
                found += _branches(node, options, candidates, choice, skip, start)
            tokens.extend(option.tokens[skip:])
            node, skip = option.next, 0
            candidates = range(len(self.lattice.options(node)))  # type: ignore[assignment]
        kept = 0  # branches fit while each still comes at or before the draft's end
        while (kept < min(branches, len(found))
               and found[kept].at <= min(len(tokens), limit - kept - 1)):
            kept += 1
        self.branches = found[:kept]
        return tokens[: limit - kept]

    def step(self, token: int, logprob: float = 0.0) -> None:
        """Write the next token, whose log-probability among the allowed tokens is `logprob`."""
        options, position = self.options, self.position
        self.alive = [i for i in self.alive if options[i].tokens[position] == token]
        if not self.alive:
            raise ValueError(f"token {token} is not allowed after {self.tokens}")
        self.tokens.append(token)
        self.position += 1
        self._logprob += logprob
        finished = next((i for i in self.alive if len(options[i].tokens) == self.position), None)
        if finished is not None:
            option = options[finished]
            self.actions.append(option.action)
            self.probs.append(math.exp(self._logprob))
            self._logprob = 0.0
            self.hints.pop(self.node, None)
            self.node, self.position = option.next, 0
            self.options = self.lattice.options(self.node)
            self.alive = list(range(len(self.options)))

    def verify(self, draft: Sequence[int], scores: "Scores",
               branch_scores: Optional["Scores"] = None) -> int:
        """Take the draft up to the first token where the model's best allowed token differs
        and take that token instead (or, when the whole draft holds, one more token): the
        number of draft tokens accepted. Position k of `scores` scores draft token k; there
        is one position more than the draft. Where the draft was rejected, the scores
        of the later nodes it held still give hints for their next draft, and so does the
        score of a branch that took the token the model chose (position k of
        `branch_scores` scores what follows branch k of the draft)."""
        for accepted, token in enumerate(draft):
            choice = scores.choose(accepted, self.allowed())
            self.step(*choice)
            if choice[0] != token:
                self._read_hints(scores, accepted)
                self._read_branch(accepted, choice[0], branch_scores)
                return accepted
        if not self.done:
            choice = scores.choose(len(draft), self.allowed())
            self.step(*choice)
            self._read_branch(len(draft), choice[0], branch_scores)
        return len(draft)

    def _read_branch(self, at: int, token: int, scores: Optional["Scores"]) -> None:
        """After the model chose `token` for draft position `at`: where a branch read that
        token there, a hint of the options the model would go on with."""
        if scores is None:
            return
        for k, branch in enumerate(self.branches):
            if (branch.at, branch.token, branch.node, branch.position + 1) == (
                    at, token, self.node, self.position):
                best = scores.best(k, self.allowed())
                self.hints[self.node] = [i for i in self.alive
                                         if self.options[i].tokens[self.position] == best]
                return

    def follow(self, tokens: Sequence[int], scores: "Scores") -> None:
        """Write `tokens` whatever the model prefers, with their probabilities: position k of
        `scores` scores token k."""
        for position, token in enumerate(tokens):
            self.step(token, scores.logprob(position, self.allowed(), token))

    def _read_hints(self, scores: "Scores", rejected: int) -> None:
        """For each drafted node after the rejected token: the options consistent with the
        model's choices along its drafted option, up to where it left the draft."""
        for node, choice, start in self._plan:
            if start <= rejected:
                continue
            options = self.lattice.options(node)
            kept = list(range(len(options)))
            for position, token in enumerate(options[choice].tokens):
                if start + position >= len(scores):
                    break
                kept = [i for i in kept if len(options[i].tokens) > position]
                best = scores.best(start + position, sorted({options[i].tokens[position] for i in kept}))
                kept = [i for i in kept if options[i].tokens[position] == best]
                if best != token:
                    break
            if len(kept) < len(options):
                self.hints[node] = kept


class Scores:
    """The model's scores for the positions of one row's draft, over a vocabulary subset:
    `columns` maps a token id to its column (None: the full vocabulary)."""

    def __init__(self, logits: torch.Tensor, columns: Optional[Dict[int, int]]) -> None:
        self.logits = logits
        self.columns = columns

    def __len__(self) -> int:
        return self.logits.shape[0]

    def _row(self, position: int, allowed: List[int]) -> torch.Tensor:
        index = [self.columns[t] for t in allowed] if self.columns is not None else allowed
        return self.logits[position, index]

    def best(self, position: int, allowed: List[int]) -> int:
        """The allowed token the model scores highest at a position."""
        if len(allowed) == 1:
            return allowed[0]
        return allowed[int(torch.argmax(self._row(position, allowed)))]

    def choose(self, position: int, allowed: List[int]) -> Tuple[int, float]:
        """The best allowed token at a position, and its log-probability among them."""
        if len(allowed) == 1:
            return allowed[0], 0.0
        row = self._row(position, allowed)
        best = int(torch.argmax(row))
        return allowed[best], float(row[best] - torch.logsumexp(row, 0))

    def logprob(self, position: int, allowed: List[int], token: int) -> float:
        """The log-probability of an allowed token among the allowed tokens at a position."""
        if len(allowed) == 1:
            return 0.0
        row = self._row(position, allowed)
        return float(row[allowed.index(token)] - torch.logsumexp(row, 0))


def complete(lattice: Lattice, tokens: Sequence[int]) -> List[int]:
    """The output that `tokens` start, as far as the lattice allows them (tokens after the
    end, or from the first one it does not allow on, are dropped), finished by the first
    option at every node after."""
    state = CopyState(lattice)
    kept: List[int] = []
    for token in tokens:
        if state.done or token not in state.allowed():
            break
        state.step(token)
        kept.append(token)
    while not state.done:
        option = state.options[state.alive[0]]
        for token in option.tokens[state.position :]:
            state.step(token)
            kept.append(token)
    return kept


def copy_constraint(lattices: Sequence[Lattice], prefix_length: int, eos_id: int):
    """A `prefix_allowed_tokens_fn` for `generate` (beam search) with the copy constraint:
    the tokens after the first `prefix_length` of each sequence must follow its lattice, then end."""

    def allowed(batch_id: int, sequence: torch.Tensor) -> List[int]:
        state = CopyState(lattices[batch_id])
        try:
            for token in sequence[prefix_length:].tolist():
                if state.done:
                    return [eos_id]
                state.step(token)
        except ValueError:  # a beam that beam search kept with a disallowed token, at -inf
            return [eos_id]
        return state.allowed() or [eos_id]

    return allowed
