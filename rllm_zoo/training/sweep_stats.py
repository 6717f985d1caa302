"""Statistics of a layer sweep: Welch's t-test and confidence interval, Holm's correction.

The test and its interval are SciPy's (``scipy.stats.ttest_ind(equal_var=False)``); this module
adds what a sweep report needs around them: undefined cases (one seed, no spread) as ``None``
instead of NaN, and Holm's step-down correction.

Example:
    >>> w = welch([0.80, 0.82, 0.81], [0.75, 0.77, 0.74])
    >>> round(w.diff, 4), w.n, w.n_ref
    (0.0567, 3, 3)
    >>> round(w.ci95[0], 4), round(w.ci95[1], 4), round(w.p, 5)
    (0.0255, 0.0879, 0.00873)
    >>> [round(p, 6) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Welch", "holm", "mean_std", "welch"]


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``; ``None`` for a single value).

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    if not values:
        raise ValueError("mean_std of no values")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class Welch:
    """One comparison ``mean(a) - mean(b)`` by Welch's unequal-variance t-test.

    ``t``, ``df``, ``ci95`` and ``p`` are ``None`` when a side has fewer than two values or
    both sides have no spread (the test is undefined).
    """

    diff: float
    n: int
    n_ref: int
    t: float | None
    df: float | None
    ci95: tuple[float, float] | None
    p: float | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return d


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Welch:
    """Welch's two-sided t-test of ``mean(a) - mean(b)`` with its t-based confidence interval.

    The degrees of freedom are Welch-Satterthwaite's; the interval is
    ``diff ± t_{(1+confidence)/2, df} * sqrt(var_a/n_a + var_b/n_b)`` (sample variances), both from
    ``scipy.stats.ttest_ind(a, b, equal_var=False)``.

    Example:
        >>> w = welch([1.0, 2.0, 3.0], [1.0, 1.5])
        >>> w.diff, round(w.df, 3), round(w.p, 4)
        (0.75, 2.635, 0.3295)
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise ValueError("welch needs at least one value on each side")
    mean_a, sd_a = mean_std(a)
    mean_b, sd_b = mean_std(b)
    diff = mean_a - mean_b
    if sd_a is None or sd_b is None or sd_a == sd_b == 0.0:
        return Welch(diff, n, m, None, None, None, None)
    from scipy.stats import ttest_ind

    res = ttest_ind(a, b, equal_var=False)
    if not math.isfinite(res.pvalue):  # e.g. values so close that the variance underflows
        return Welch(diff, n, m, None, None, None, None)
    ci = res.confidence_interval(confidence)
    return Welch(
        diff, n, m, float(res.statistic), float(res.df), (float(ci.low), float(ci.high)), float(res.pvalue)
    )


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order; ``None`` entries stay ``None``.

    The family is the non-``None`` p-values (m of them): sorted ascending, the k-th smallest
    (k = 1..m) becomes ``min(1, max_{j <= k} (m - j + 1) p_(j))``. Rejecting where the adjusted
    value is below alpha controls the family-wise error rate at alpha.

    Example:
        >>> holm([0.01, 0.04, 0.03, None])
        [0.03, 0.06, 0.06, None]
    """
    given = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    for p, _ in given:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must be in [0, 1], got {p}")
    m = len(given)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(sorted(given)):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out
