"""pass@k and its uncertainty, as pure functions.

Every pass@1 a user sees comes with a standard error: a held-out score from one sample per
task moves by several points between sampling seeds alone, so a difference without its
noise is not a result. The standard error treats tasks as the unit (each task's pass rate
is one observation), which covers both the sampling noise within a task and the spread
between tasks; a comparison of two models on the same tasks uses the per-task differences
(paired), which removes the spread between tasks from the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021, eq. 1): ``1 - C(n-c, k) / C(n, k)``,
    the probability that at least one of ``k`` samples drawn without replacement from ``n``
    samples, ``c`` of them correct, is correct. Computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean over tasks of :func:`pass_at_k` for (n, c) pairs."""
    if not counts:
        return 0.0
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


@dataclass(frozen=True)
class Estimate:
    """A mean over tasks with its standard error (``se``) and the number of tasks."""

    mean: float
    se: float
    tasks: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f}% ± {100 * self.se:.1f}"


def mean_and_se(values: Sequence[float]) -> Estimate:
    """``mean`` and ``sd / sqrt(T)`` (sample sd, ``T - 1`` in the denominator) of per-task values."""
    t = len(values)
    if t == 0:
        return Estimate(0.0, 0.0, 0)
    mean = sum(values) / t
    if t == 1:
        return Estimate(mean, 0.0, 1)
    var = sum((v - mean) ** 2 for v in values) / (t - 1)
    return Estimate(mean, math.sqrt(var / t), t)


def pass_at_k_estimate(counts: Sequence[tuple[int, int]], k: int = 1) -> Estimate:
    """pass@k over tasks from per-task (n, c) counts, with its standard error."""
    return mean_and_se([pass_at_k(n, c, k) for n, c in counts])


def paired_difference(before: Sequence[tuple[int, int]], after: Sequence[tuple[int, int]], k: int = 1) -> Estimate:
    """pass@k(after) - pass@k(before) on the same tasks, with the standard error of the mean
    per-task difference (paired: each task is compared with itself)."""
    if len(before) != len(after):
        raise ValueError(f"paired_difference needs the same tasks on both sides ({len(before)} vs {len(after)})")
    return mean_and_se([pass_at_k(*a, k) - pass_at_k(*b, k) for b, a in zip(before, after)])
