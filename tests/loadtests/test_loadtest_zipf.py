"""The Zipf picker the scenarios use to choose feeds, scopes and posts."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from loadtests.zipf import ZipfPicker


def test_frequencies_follow_rank_to_the_minus_exponent() -> None:
    picker = ZipfPicker(list("abcdefghij"), exponent=1.1)
    draws = 200_000
    rng = random.Random(7)
    counts = Counter(picker.pick(rng) for _ in range(draws))
    for rank, item in enumerate("abcdefghij", 1):
        assert counts[item] / draws == pytest.approx(picker.probability(rank), abs=0.005)
    assert counts["a"] / counts["b"] == pytest.approx(2**1.1, rel=0.05)
    assert sum(picker.probability(r) for r in range(1, 11)) == pytest.approx(1.0)


def test_every_item_can_be_drawn_and_nothing_else() -> None:
    picker = ZipfPicker([1, 2, 3], exponent=0.0)  # exponent 0: uniform
    rng = random.Random(1)
    counts = Counter(picker.pick(rng) for _ in range(30_000))
    assert set(counts) == {1, 2, 3}
    assert min(counts.values()) > 9_000


def test_same_seed_same_draws() -> None:
    picker = ZipfPicker(range(100))
    first = [picker.pick(random.Random(42)) for _ in range(3)]
    assert first == [picker.pick(random.Random(42)) for _ in range(3)]
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert [picker.pick(rng_a) for _ in range(50)] == [picker.pick(rng_b) for _ in range(50)]


def test_sample_is_distinct_and_bounded() -> None:
    picker = ZipfPicker(list(range(1000)))
    rng = random.Random(3)
    sample = picker.sample(rng, 20)
    assert len(sample) == len(set(sample)) == 20
    assert sorted(ZipfPicker(["x", "y"]).sample(rng, 5)) == ["x", "y"]


def test_single_item_and_bad_input() -> None:
    assert ZipfPicker(["only"]).pick(random.Random()) == "only"
    with pytest.raises(ValueError):
        ZipfPicker([])
    with pytest.raises(ValueError):
        ZipfPicker([1], exponent=-1)
    with pytest.raises(IndexError):
        ZipfPicker([1]).probability(2)
