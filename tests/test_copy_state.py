"""A CopyState's walk through a lattice: the tokens allowed, drafts, hints and branches."""
import pytest
import torch

from spacy_gner.copy_state import Branch, CopyState, Scores
from spacy_gner.lattices import InlineLattice, Open, TagLattice


def _tags(units):
    """A TagLattice of units given in order of their tags."""
    return TagLattice(units)


def test_copy_state_walks_the_lattice():
    units = [{"O": (1, 2), "B-x": (1, 3, 4), "I-x": (1, 3, 5)}, {"O": (6,), "B-x": (7,), "I-x": (8,)}]
    state = CopyState(_tags(units))
    assert state.allowed() == [1] and state.draft(10) == [1, 2, 6]
    state.step(1)
    assert state.allowed() == [2, 3]
    state.step(3)
    assert state.allowed() == [4, 5] and state.draft(10) == [4, 6]
    state.step(5)
    assert state.actions == ["I-x"] and state.allowed() == [6, 7, 8]
    state.step(7)
    assert state.done and state.actions == ["I-x", "B-x"] and state.allowed() == []
    with pytest.raises(ValueError):
        CopyState(_tags(units)).step(9)


def test_a_draft_takes_the_hinted_option():
    unit = {"O": (1, 2), "B-x": (1, 3, 4), "I-x": (1, 3, 5), "B-y": (1, 3, 6), "I-y": (1, 3, 7)}
    state = CopyState(_tags([unit, unit]))
    state.hints[1] = [4]  # the model favoured I-y for the second word
    assert state.draft(10) == [1, 2, 1, 3, 7]


def _favouring(*tokens, vocabulary=8):
    """Scores whose position k favours tokens[k]."""
    logits = torch.zeros(len(tokens), vocabulary)
    for position, token in enumerate(tokens):
        logits[position, token] = 1.0
    return Scores(logits, None)


def test_a_rejected_draft_leaves_hints_for_the_words_after_it():
    units = [{"O": (w, 2), "B-x": (w, 3, 4), "I-x": (w, 3, 5)} for w in (1, 6, 7)]
    state = CopyState(_tags(units))
    draft = state.draft(10)
    assert draft == [1, 2, 6, 2, 7, 2]
    # the model starts an entity at the first word and, further on, at the third
    accepted = state.verify(draft, _favouring(1, 3, 6, 2, 7, 3, 0))
    assert accepted == 1 and state.tokens == [1, 3]
    assert state.hints == {1: [0], 2: [1, 2]}
    assert state.draft(10) == [4, 6, 2, 7, 3, 4]
    assert state.draft(3) == [4, 6, 2]


def test_a_draft_that_holds_is_taken_whole_with_one_more_token():
    units = [{"O": (w, 2), "B-x": (w, 3, 4), "I-x": (w, 3, 5)} for w in (1, 6)]
    state = CopyState(_tags(units))
    draft = state.draft(3)
    assert state.verify(draft, _favouring(1, 2, 6, 3)) == 3
    assert state.tokens == [1, 2, 6, 3] and state.actions == ["O"] and state.hints == {}


def test_a_branch_shows_what_follows_a_rejected_draft_token():
    # words 1, 2, 3; opening 10; closings `| a ]` (20 30 40) and `| b ]` (20 31 40)
    lattice = InlineLattice([(1,), (2,), (3,)], {None: (10,)},
                            {"a": (20, 30, 40), "b": (20, 31, 40)}, depth=1)
    state = CopyState(lattice)
    state.step(10)
    state.step(1)
    inside = (Open(0, None, False),)
    assert state.draft(10) == [2, 3, 20, 30, 40] and state.branches == []
    # each closing of the entity read beside the word it would replace; the last closing
    # has one way on (`]`), so no branch there; the branches take the draft's last tokens
    draft = state.draft(6, branches=2)
    assert draft == [2, 3, 20, 30]
    assert state.branches == [Branch(0, 20, (1, inside), 0), Branch(1, 20, (2, inside), 0)]
    # the model closes the entity instead of going on with word 2, and after `|` it would
    # write type b: the next draft writes b at once
    accepted = state.verify(draft, _favouring(20, 3, 20, 30, 40, vocabulary=41),
                            _favouring(31, 30, vocabulary=41))
    assert accepted == 0 and state.tokens == [10, 1, 20]
    assert state.draft(10) == [31, 40, 2, 3]
    # a branch of a token the model did not choose leaves no hint
    other = CopyState(lattice)
    for token in (10, 1):
        other.step(token)
    draft = other.draft(6, branches=2)
    assert other.verify(draft, _favouring(2, 3, 20, 31, 40, vocabulary=41),
                        _favouring(31, 31, vocabulary=41)) == 3
    assert other.tokens == [10, 1, 2, 3, 20, 31] and other.hints == {}


def test_a_state_knows_when_an_entity_is_open_where_it_is_going():
    # words 1, 2; opening `<x>` (10 11); closing `</x>` (12 13)
    lattice = InlineLattice([(1,), (2,)], {"x": (10, 11)}, {"x": (12, 13)}, depth=1)
    state = CopyState(lattice)
    assert not state.inside
    state.step(10)  # halfway through the opening: it leads inside
    assert state.inside
    state.step(11)
    state.step(1)
    assert state.inside
    state.step(12)  # halfway through the closing: it leads outside
    assert not state.inside
    tags = CopyState(_tags([{"O": (1,), "B-x": (2,)}, {"O": (3,), "I-x": (4,)}]))
    tags.step(2)
    assert not tags.inside  # a TagLattice does not say
