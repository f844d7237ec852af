"""The statistics behind `compare`: exact McNemar and the bootstrap over problems."""

from __future__ import annotations

import random

import pytest

from orchestrator.core.common.stats import bootstrap_interval, mcnemar_exact

# (fixed, broken, p): p = min(1, 2 * sum_{k<=min} C(n,k) / 2^n), n = fixed + broken, by hand:
MCNEMAR = [
    pytest.param(0, 0, 1.0, id="nothing-changed"),
    pytest.param(1, 0, 1.0, id="one-flip"),  # 2 * 1/2
    pytest.param(5, 0, 0.0625, id="five-one-way"),  # 2 * 1/32
    pytest.param(0, 5, 0.0625, id="symmetric"),
    pytest.param(6, 1, 0.125, id="six-one"),  # 2 * (1 + 7) / 128
    pytest.param(10, 2, 0.03857421875, id="ten-two"),  # 2 * (1 + 12 + 66) / 4096
    pytest.param(3, 3, 1.0, id="even-capped"),  # 2 * 42/64 > 1
    pytest.param(8, 2, 0.109375, id="eight-two"),  # 2 * (1 + 10 + 45) / 1024
]


@pytest.mark.parametrize("fixed, broken, p", MCNEMAR)
def test_mcnemar_exact_known_values(fixed: int, broken: int, p: float) -> None:
    assert mcnemar_exact(fixed, broken) == pytest.approx(p, rel=1e-12)


def test_mcnemar_large_counts_stay_finite() -> None:
    # 0.89 vs 0.82 on 1,328 questions: about 93 more right; with 40 broken that is 133 vs 40
    assert mcnemar_exact(133, 40) < 1e-11
    assert mcnemar_exact(600, 600) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def _synthetic_run(accuracy: float, problems: int, per_problem: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(sum(rng.random() < accuracy for _ in range(per_problem)), per_problem) for _ in range(problems)]


@pytest.mark.parametrize("accuracy", [0.3, 0.5, 0.73, 0.89, 0.97])
def test_interval_contains_the_true_accuracy(accuracy: float) -> None:
    # one sample per accuracy (a 95% interval misses 1 sample in 20: the coverage test below
    # checks that rate; this seed's samples are all covered)
    run = _synthetic_run(accuracy, problems=400, per_problem=3, seed=0)
    low, high = bootstrap_interval(run, seed=0)
    assert low < accuracy < high
    assert high - low < 0.1  # 1,200 questions: about +-0.03 to +-0.05


def test_interval_coverage_is_near_95_percent() -> None:
    runs = [_synthetic_run(0.8, problems=150, per_problem=3, seed=s) for s in range(60)]
    covered = sum(low <= 0.8 <= high for low, high in (bootstrap_interval(r, resamples=400) for r in runs))
    assert covered >= 52  # 95% of 60 is 57; a broken interval (say, too narrow) misses far more often


def test_interval_is_seeded_and_narrows_with_more_problems() -> None:
    run = _synthetic_run(0.7, problems=200, per_problem=4, seed=1)
    assert bootstrap_interval(run, seed=3) == bootstrap_interval(run, seed=3)
    small = bootstrap_interval(run[:50])
    large = bootstrap_interval(run)
    assert large[1] - large[0] < small[1] - small[0]
    assert bootstrap_interval([]) == (0.0, 0.0)
