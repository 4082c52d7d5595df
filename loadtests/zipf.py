"""Zipf-weighted picks over ranked items (rank 1 the most popular), the skew the seed gives its data."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

# The seed's exponent (app/seed.py ZIPF_EXPONENT): readers favour scopes as the data is skewed.
DEFAULT_EXPONENT = 1.1


class ZipfPicker(Generic[T]):
    """Draws items with probability proportional to rank**-exponent (items given most popular first)."""

    def __init__(self, items: Sequence[T], exponent: float = DEFAULT_EXPONENT) -> None:
        if not items:
            raise ValueError("a Zipf picker needs at least one item")
        if exponent < 0:
            raise ValueError("the Zipf exponent must be >= 0")
        self.items: tuple[T, ...] = tuple(items)
        self.exponent = exponent
        self._cumulative = list(itertools.accumulate(rank**-exponent for rank in range(1, len(self.items) + 1)))

    def __len__(self) -> int:
        return len(self.items)

    def probability(self, rank: int) -> float:
        """The chance of drawing the item at `rank` (1-based)."""
        if not 1 <= rank <= len(self.items):
            raise IndexError(f"rank {rank} outside 1..{len(self.items)}")
        return rank**-self.exponent / self._cumulative[-1]

    def pick(self, rng: random.Random) -> T:
        index = bisect.bisect(self._cumulative, rng.random() * self._cumulative[-1], 0, len(self.items) - 1)
        return self.items[index]

    def sample(self, rng: random.Random, k: int) -> list[T]:
        """Up to `k` distinct items, Zipf-weighted (fewer when there are fewer items)."""
        wanted = min(k, len(self.items))
        picked: dict[T, None] = {}
        for _ in range(wanted * 20):  # bounded: the tail is thin, so stop rather than spin
            picked[self.pick(rng)] = None
            if len(picked) == wanted:
                break
        return list(picked)
