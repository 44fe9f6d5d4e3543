"""Designs: Sylvester's Hadamard matrix, what a fractional design aliases, and patch merging."""

from __future__ import annotations

import itertools

import pytest

from ablate.execution.designs import aliasing_note, hadamard
from ablate.training.catalog import PatchConflict, merge_patches


def test_fractional_sizes():
    assert len(hadamard(16)) == 16
    for k, n in [(15, 16), (7, 8), (8, 16), (3, 4), (1, 2)]:
        assert str(n) in aliasing_note(k).split(" runs")[0]


def test_hadamard_is_sylvester():
    h = hadamard(8)
    assert h[0] == [1] * 8 and [row[0] for row in h] == [1] * 8
    for a, b in itertools.combinations(range(8), 2):
        assert sum(x * y for x, y in zip(h[a], h[b])) == 0
    assert [row[:4] for row in h[:4]] == hadamard(4)
    assert [row[4:] for row in h[4:]] == [[-x for x in row] for row in hadamard(4)]
    with pytest.raises(ValueError):
        hadamard(6)


def test_aliasing_note_says_what_is_confounded():
    note = aliasing_note(7)
    assert "resolution III" in note and "two-factor interactions" in note and "3 ~ 1x2" in note
    assert "full factorial" in aliasing_note(2)


def test_merge_patches_allows_agreement_and_refuses_conflicts():
    assert merge_patches([("a", {"lr": 0.1, "dropout": 0.0}), ("b", {"lr": 0.1})]) == {"lr": 0.1, "dropout": 0.0}
    with pytest.raises(PatchConflict) as conflict:
        merge_patches([("a", {"lr": 0.1}), ("b", {"lr": 0.1}), ("c", {"lr": 0.2})])
    c = conflict.value
    assert (c.key, c.first, c.first_value, c.second, c.second_value) == ("lr", "a", 0.1, "c", 0.2)
