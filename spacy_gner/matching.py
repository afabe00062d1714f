"""Hierarchical matching: one predicted tag per input word, however the output differs.

Levels, cheapest first: (1) the predicted words are the input words; (2) they are an in-order
subsequence of them (omissions), matched greedily in O(N); (3) a longest common subsequence
(Hunt–Szymanski, O((N + R) log N) for R matching pairs, small when words rarely repeat),
after which gaps holding as many unmatched input words as unmatched predicted words are
paired in order where the predicted word is a respelling of the input word (substitutions
such as "manattan" → "manhattan"). Words compare case-insensitively, as written or as the
model's tokenizer spells them (back tokenization).
"""
from bisect import bisect_left
from collections import defaultdict
from difflib import SequenceMatcher
from typing import Any, Dict, List, Optional, Sequence, Tuple

Forms = Sequence[Tuple[str, ...]]
# Least similarity (difflib's ratio: 2 × the characters two words have in common, in order,
# over both lengths) of a respelling: one edit in a word of four or more characters, two in
# one of eight or more. Unrelated words fall short: of random pairs of CrossNER test words,
# 0.04% reach it (0.3% of pairs from one sentence, mostly inflections: "cluster",
# "clusters"), while one edit in a three-letter word (2/3) or words sharing a letter ("a",
# "as"; "on", "john") do not.
RESPELLING = 0.75


def back_tokenize(words: Sequence[str], tokenizer: Any) -> List[str]:
    """Each word as the tokenizer spells it after encoding and decoding (e.g. "brontë" → "bront")."""
    if not words:
        return []
    ids = tokenizer(list(words), add_special_tokens=False)["input_ids"]
    decoded = tokenizer.batch_decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return [text.strip() for text in decoded]


def _word_forms(words: Sequence[str], tokenizer: Any) -> List[Tuple[str, ...]]:
    lowered = [word.lower() for word in words]
    if tokenizer is None:
        return [(word,) for word in lowered]
    spelled = [word.lower() for word in back_tokenize(words, tokenizer)]
    return [(a,) if a == b else (a, b) for a, b in zip(lowered, spelled)]


def match_subsequence(forms: Forms, targets: Sequence[str]) -> Optional[List[int]]:
    """Greedy in-order match of all `targets` into `forms`, or None if they are no subsequence."""
    match = [-1] * len(forms)
    j = 0
    for i, word_forms in enumerate(forms):
        if j == len(targets):
            break
        if targets[j] in word_forms:
            match[i] = j
            j += 1
    return match if j == len(targets) else None


def match_lcs(forms: Forms, targets: Sequence[str]) -> List[int]:
    """A longest common subsequence as `match[i] = j` (or -1), by Hunt–Szymanski.

    Matching pairs are visited by input word, with target positions in decreasing order, so
    that a longest strictly increasing run of target positions is a longest common subsequence.
    """
    positions: Dict[str, List[int]] = defaultdict(list)
    for j, word in enumerate(targets):
        positions[word].append(j)
    tails: List[int] = []  # tails[k]: smallest last target position of a common run of k+1
    tail_nodes: List[int] = []
    node_source: List[int] = []
    node_target: List[int] = []
    node_parent: List[int] = []
    for i, word_forms in enumerate(forms):
        if len(word_forms) == 1:
            candidates = positions.get(word_forms[0], ())
        else:
            candidates = sorted({j for form in word_forms for j in positions.get(form, ())})
        for j in reversed(candidates):
            k = bisect_left(tails, j)
            node_source.append(i)
            node_target.append(j)
            node_parent.append(tail_nodes[k - 1] if k else -1)
            if k == len(tails):
                tails.append(j)
                tail_nodes.append(len(node_source) - 1)
            else:
                tails[k] = j
                tail_nodes[k] = len(node_source) - 1
    match = [-1] * len(forms)
    node = tail_nodes[-1] if tail_nodes else -1
    while node != -1:
        match[node_source[node]] = node_target[node]
        node = node_parent[node]
    return match


def respelling(forms: Tuple[str, ...], target: str) -> bool:
    """Whether `target` is a respelling of a word with these forms: as similar as RESPELLING
    to one of them (the bound that lengths set first, then difflib's)."""
    for form in forms:
        shorter, total = min(len(form), len(target)), len(form) + len(target)
        if total and 2 * shorter >= RESPELLING * total:
            matcher = SequenceMatcher(None, form, target, autojunk=False)
            if matcher.quick_ratio() >= RESPELLING and matcher.ratio() >= RESPELLING:
                return True
    return False


def pair_gaps(match: List[int], forms: Forms, targets: Sequence[str]) -> List[int]:
    """Pair, in order, the unmatched words of gaps that hold as many on each side, where the
    predicted word is a respelling of the input word; unrelated words stay unmatched."""
    anchors = [(i, j) for i, j in enumerate(match) if j >= 0]
    bounds = [(-1, -1)] + anchors + [(len(match), len(targets))]
    paired = list(match)
    for (i0, j0), (i1, j1) in zip(bounds, bounds[1:]):
        if i1 - i0 == j1 - j0 > 1:
            for i, j in zip(range(i0 + 1, i1), range(j0 + 1, j1)):
                if respelling(forms[i], targets[j]):
                    paired[i] = j
    return paired


def align(words: Sequence[str], pred_words: Sequence[str], tokenizer: Any = None) -> List[int]:
    """For each input word, the index of the predicted word matched to it (-1: none), by the
    cheapest level that matches: the same words, an in-order subsequence, or an LCS with
    respellings paired."""
    targets = [word.lower() for word in pred_words]
    forms = _word_forms(words, tokenizer)
    if len(forms) == len(targets) and all(t in f for f, t in zip(forms, targets)):
        return list(range(len(targets)))
    match = match_subsequence(forms, targets)
    if match is None:
        match = pair_gaps(match_lcs(forms, targets), forms, targets)
    return match


def hierarchical_match(
    words: Sequence[str],
    pred_words: Sequence[str],
    pred_tags: Sequence[str],
    tokenizer: Any = None,
) -> List[str]:
    """One tag per input word, taken from the predicted words matched to it ("O" if none)."""
    if len(pred_words) != len(pred_tags):
        raise ValueError(f"{len(pred_words)} predicted words but {len(pred_tags)} tags")
    return [pred_tags[j] if j >= 0 else "O" for j in align(words, pred_words, tokenizer)]
