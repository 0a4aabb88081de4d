"""How sure an accuracy is: what every accuracy report states beside the number.

A test set of a few dozen utterances makes 100 % and 98.8 % the same result; these give the
95 % interval of one accuracy (Wilson score: sensible at 0 and 100 %, unlike the normal
approximation), and compare two classifiers scored on the same utterances with McNemar's exact
test (only the utterances where they disagree carry information) and Newcombe's interval for
the paired difference (Newcombe, Stat. Med. 17, 2635 (1998), method 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest, norm

from spinlab.errors import ConfigError

#: Two-sided level of every interval and test.
LEVEL = 0.95


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``."""
    if n <= 0 or not 0 <= successes <= n:
        raise ConfigError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy(correct: Sequence[bool] | np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """``{"accuracy", "n_test", "ci95"}`` of per-utterance hits."""
    hits = _hits(correct)
    low, high = wilson_interval(int(hits.sum()), hits.size, level)
    return {"accuracy": float(hits.mean()), "n_test": int(hits.size), "ci95": [low, high]}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: of the utterances exactly one classifier gets right,
    is ``only_a`` against ``only_b`` a fair coin?"""
    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)


def paired_difference_interval(
    both: int, only_a: int, only_b: int, neither: int, level: float = LEVEL
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``accuracy(a) - accuracy(b)`` on the same utterances."""
    n = both + only_a + only_b + neither
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, level)
    l2, u2 = wilson_interval(both + only_b, n, level)
    denominator = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    # the correlation of the two accuracies, its numerator shrunk by n/2 towards 0 when positive
    # (Newcombe's continuity correction; as in Altman et al., "Statistics with confidence", p. 52)
    numerator = both * neither - only_a * only_b
    numerator = max(numerator - n / 2, 0.0) if numerator >= 0 else numerator
    phi = numerator / math.sqrt(denominator) if denominator else 0.0
    difference = p1 - p2
    low = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return max(-1.0, difference - low), min(1.0, difference + high)


def compare(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray, level: float = LEVEL
) -> dict[str, Any]:
    """``a`` (the device) against ``b`` (a baseline) on the same utterances: the difference of
    their accuracies with its interval, McNemar's exact p-value, and whether it is significant."""
    a, b = _hits(correct_a), _hits(correct_b)
    if a.shape != b.shape:
        raise ConfigError(f"a paired comparison needs the same utterances, got {a.size} and {b.size}")
    both, only_a = int(np.sum(a & b)), int(np.sum(a & ~b))
    only_b, neither = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    p = mcnemar_p(only_a, only_b)
    low, high = paired_difference_interval(both, only_a, only_b, neither, level)
    return {
        "difference": float(a.mean() - b.mean()),
        "ci95": [low, high],
        "only_device": only_a,
        "only_baseline": only_b,
        "mcnemar_p": p,
        "significant": bool(p < 1 - level),
    }


def describe_accuracy(stats: dict[str, Any]) -> str:
    """``98.0 % [95.0, 99.2] of 200``."""
    low, high = stats["ci95"]
    return f"{100 * stats['accuracy']:.1f} % [{100 * low:.1f}, {100 * high:.1f}] of {stats['n_test']}"


def describe_comparison(name: str, comparison: dict[str, Any]) -> str:
    """``vs drive only: +1.0 points [-0.8, +2.9], McNemar p = 0.63, not significant``."""
    return f"vs {name}: {describe_difference(comparison)}"


def describe_difference(comparison: dict[str, Any]) -> str:
    """``+1.0 points [-0.8, +2.9], McNemar p = 0.63, not significant``."""
    low, high = comparison["ci95"]
    verdict = "significant" if comparison["significant"] else "not significant"
    return (
        f"{100 * comparison['difference']:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}], "
        f"McNemar p = {comparison['mcnemar_p']:.2g}, {verdict}"
    )


def _hits(correct: Sequence[bool] | np.ndarray) -> np.ndarray:
    hits = np.asarray(correct, dtype=bool).ravel()
    if hits.size == 0:
        raise ConfigError("no test utterances to score")
    return hits


__all__ = [
    "LEVEL",
    "accuracy",
    "compare",
    "describe_accuracy",
    "describe_comparison",
    "describe_difference",
    "mcnemar_p",
    "paired_difference_interval",
    "wilson_interval",
]
