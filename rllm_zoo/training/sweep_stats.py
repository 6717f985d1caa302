"""Statistics of a layer sweep: Welch's t-test and confidence interval, Holm's correction.

Pure Python (``math`` only), so the library needs no SciPy; ``tests/test_sweep.py`` checks every
number against ``scipy.stats``.

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

__all__ = ["Welch", "holm", "mean_std", "t_ppf", "t_sf", "welch"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t distribution with ``df`` (> 0, not necessarily whole) degrees.

    Example:
        >>> round(t_sf(2.0, 10), 6)
        0.036694
    """
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t distribution (bisection on :func:`t_sf`, to ~1e-12).

    Example:
        >>> round(t_ppf(0.975, 4), 6)
        2.776445
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    upper = 1.0 - q if q > 0.5 else q  # the tail beyond |t|
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > upper:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > upper:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    t = 0.5 * (lo + hi)
    return t if q > 0.5 else -t


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
    ``diff ± t_{(1+confidence)/2, df} * sqrt(var_a/n_a + var_b/n_b)`` (sample variances). The
    p-value equals ``scipy.stats.ttest_ind(a, b, equal_var=False).pvalue``.

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
    if sd_a is None or sd_b is None:
        return Welch(diff, n, m, None, None, None, None)
    va, vb = sd_a**2 / n, sd_b**2 / m
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Welch(diff, n, m, None, None, None, None)
    df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (m - 1))
    t = diff / se
    p = min(1.0, 2.0 * t_sf(abs(t), df))
    half = t_ppf(0.5 + confidence / 2.0, df) * se
    return Welch(diff, n, m, t, df, (diff - half, diff + half), p)


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
