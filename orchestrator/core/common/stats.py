"""The statistics `compare` needs, in plain Python: an exact McNemar test for two runs on the
same questions, and a seeded bootstrap interval over problems (a problem's questions share
a text, so they are resampled together)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each of the n = fixed + broken
    questions that changed is a fair coin flip, so the p-value is twice the binomial tail of
    the rarer direction, capped at 1. No changed question gives 1.0."""
    if fixed < 0 or broken < 0:
        raise ValueError("counts are never negative")
    n = fixed + broken
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(fixed, broken) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers; the one division rounds once


def bootstrap_interval(
    problems: Sequence[tuple[int, int]],
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile interval for sum(right) / sum(total) over `problems`, each a pair
    (questions right, questions asked), resampling problems with replacement."""
    if not problems:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(problems)
    right = [p[0] for p in problems]
    total = [p[1] for p in problems]
    stats = []
    for _ in range(resamples):
        picks = rng.choices(range(n), k=n)
        asked = sum(total[i] for i in picks)
        stats.append(sum(right[i] for i in picks) / asked if asked else 0.0)
    stats.sort()
    tail = (1 - level) / 2
    low = stats[max(0, math.floor(tail * resamples))]
    high = stats[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return (low, high)
