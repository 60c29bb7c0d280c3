"""The statistics of the rollout gates: do two samples or two rates differ, and by how much.

The progressive rollout (design §2.7) compares the voicegateway path with the legacy path over a
step's window: latency distributions with the Mann-Whitney U test and an effect size, outcome rates
with the pooled two-proportion z-test and Wilson score intervals. Pure functions: no I/O, no state.

Hand-written rather than scipy: scipy is a large native dependency for a small gateway image, and
these formulas are short. The tests check every function against scipy (a test-only dependency),
to ~1e-9: the Mann-Whitney p-values follow `scipy.stats.mannwhitneyu` (continuity and tie
correction, the same `auto` choice of method), Wilson follows `binomtest(...).proportion_ci`.
The normal distribution comes from the standard library (`math.erfc`, `statistics.NormalDist`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from statistics import NormalDist
from typing import Literal

Alternative = Literal["two-sided", "less", "greater"]
MannWhitneyMethod = Literal["auto", "asymptotic", "exact"]

_ALTERNATIVES: frozenset[str] = frozenset(("two-sided", "less", "greater"))
_METHODS: frozenset[str] = frozenset(("auto", "asymptotic", "exact"))
# scipy's `auto` rule: the exact null distribution when either sample has at most this many
# values and there are no ties; the normal approximation otherwise.
EXACT_MAX_SIZE = 8


@dataclass(frozen=True, slots=True)
class MannWhitney:
    """A Mann-Whitney U test of x against y.

    `u` is the U statistic of x (scipy's `statistic`): the number of (x, y) pairs with x > y, ties
    counting one half. `prob_superiority` is U/(n_x·n_y) = P(X > Y) + ½·P(X = Y), the common
    language effect size (0.5: no effect); `rank_biserial` is 2·U/(n_x·n_y) - 1, in [-1, 1]
    (positive: x tends to be larger). `method` is the one used, after `auto` chose.
    """

    u: float
    p: float
    prob_superiority: float
    rank_biserial: float
    n_x: int
    n_y: int
    method: Literal["asymptotic", "exact"]


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """A pooled two-proportion z-test of rate1 = k1/n1 against rate2 = k2/n2.

    `difference` is rate1 - rate2. The rate of an empty sample is reported as 0.0.
    """

    z: float
    p: float
    rate1: float
    rate2: float
    difference: float


def mann_whitney_u(
    x: Sequence[float],
    y: Sequence[float],
    *,
    alternative: Alternative = "two-sided",
    method: MannWhitneyMethod = "auto",
) -> MannWhitney:
    """The Mann-Whitney U test of x against y, as `scipy.stats.mannwhitneyu` computes it.

    `alternative` "greater" means x tends to be larger than y (stochastically), "less" smaller.
    `asymptotic`: the normal approximation with tie correction and continuity correction.
    `exact`: the exact null distribution of U, which (as in scipy) ignores ties; it costs about
    min(n_x, n_y)·n_x·n_y/2 steps, so it is meant for small samples. `auto` picks exact when
    either sample has at most 8 values and there are no ties, asymptotic otherwise.
    Ranking sorts once: O(n log n) for n = n_x + n_y values.
    """
    _check_alternative(alternative)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, not {method!r}")
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError(
            f"mann_whitney_u needs at least one value in each sample (got {n1} and {n2})"
        )
    values = [float(v) for v in x] + [float(v) for v in y]
    if any(math.isnan(v) for v in values):
        raise ValueError("mann_whitney_u: the samples must not contain NaN")

    twice_rank_sum_x, tie_term = _rank_x(values, n1)
    u1 = twice_rank_sum_x / 2 - n1 * (n1 + 1) / 2
    pairs = n1 * n2
    u2 = pairs - u1
    if alternative == "greater":
        u, factor = u1, 1
    elif alternative == "less":
        # By symmetry, P(U1 <= u1) = P(U2 >= u2): every branch takes an upper tail.
        u, factor = u2, 1
    else:
        u, factor = max(u1, u2), 2

    chosen: Literal["asymptotic", "exact"]
    if method == "auto":
        small = min(n1, n2) <= EXACT_MAX_SIZE
        chosen = "exact" if small and tie_term == 0 else "asymptotic"
    else:
        chosen = method

    if chosen == "exact":
        # scipy truncates a half-integer U (possible only with ties) to an integer.
        tail = _exact_upper_tail(int(u), n1, n2)
    else:
        tail = _asymptotic_upper_tail(u, n1, n2, tie_term)
    p = min(1.0, max(0.0, factor * tail))
    share = u1 / pairs
    return MannWhitney(
        u=u1,
        p=p,
        prob_superiority=share,
        rank_biserial=2 * share - 1,
        n_x=n1,
        n_y=n2,
        method=chosen,
    )


def two_proportion_z_test(
    k1: int, n1: int, k2: int, n2: int, *, alternative: Alternative = "two-sided"
) -> ProportionTest:
    """The pooled two-proportion z-test of k1/n1 against k2/n2 (statsmodels' `proportions_ztest`).

    z = (r1 - r2) / sqrt(p̄(1 - p̄)(1/n1 + 1/n2)) with the pooled rate p̄ = (k1 + k2)/(n1 + n2).
    "greater" means rate1 > rate2. Two-sided, z² is the uncorrected chi-square of the 2x2 table.
    When there is nothing to compare (an empty sample, or no success or no failure on either
    side) the test says nothing: z = 0, p = 1.
    """
    _check_alternative(alternative)
    _check_count(k1, n1)
    _check_count(k2, n2)
    rate1 = k1 / n1 if n1 else 0.0
    rate2 = k2 / n2 if n2 else 0.0
    difference = rate1 - rate2
    successes, trials = k1 + k2, n1 + n2
    if n1 == 0 or n2 == 0 or successes == 0 or successes == trials:
        return ProportionTest(z=0.0, p=1.0, rate1=rate1, rate2=rate2, difference=difference)
    pooled = successes / trials
    z = difference / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if alternative == "greater":
        p = _norm_sf(z)
    elif alternative == "less":
        p = _norm_sf(-z)
    else:
        p = min(1.0, 2 * _norm_sf(abs(z)))
    return ProportionTest(z=z, p=p, rate1=rate1, rate2=rate2, difference=difference)


def wilson_interval(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided Wilson score interval for the rate k/n (Newcombe 1998, method 3).

    No successes gives a lower bound of exactly 0, all successes an upper bound of exactly 1;
    an empty sample says nothing: (0.0, 1.0).
    """
    _check_count(k, n)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, not {confidence!r}")
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + 0.5 * confidence)
    z2 = z * z
    denominator = 2 * (n + z2)
    center = (2 * k + z2) / denominator
    # 4·n·p·q with p = k/n, q = 1 - p, written in counts.
    half_width = z / denominator * math.sqrt(4 * k * (n - k) / n + z2)
    low = 0.0 if k == 0 else center - half_width
    high = 1.0 if k == n else center + half_width
    return (low, high)


def _rank_x(values: list[float], n1: int) -> tuple[int, int]:
    """Twice the sum of the average ranks of the first n1 values, and the tie term Σ(t³ - t).

    Twice the rank sum is an integer (average ranks are whole or half), so it is exact.
    """
    order = sorted(range(len(values)), key=values.__getitem__)
    twice_sum = 0
    tie_term = 0
    start = 0
    total = len(order)
    while start < total:
        end = start + 1
        value = values[order[start]]
        while end < total and values[order[end]] == value:
            end += 1
        size = end - start
        from_x = sum(1 for i in range(start, end) if order[i] < n1)
        # Positions start+1 .. end share the rank (start + 1 + end) / 2.
        twice_sum += from_x * (start + 1 + end)
        tie_term += size * size * size - size
        start = end
    return twice_sum, tie_term


def _asymptotic_upper_tail(u: float, n1: int, n2: int, tie_term: int) -> float:
    """P(U >= u) under the null, normal approximation with tie and continuity correction."""
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:
        # Every value is equal: U sits at its mean and nothing can be said.
        return 1.0
    # The continuity correction always subtracts: the tail includes the mass at u.
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return _norm_sf(z)


def _exact_upper_tail(u: int, n1: int, n2: int) -> float:
    """P(U >= u) under the null for samples of n1 and n2 distinct values, in exact integers."""
    pairs = n1 * n2
    if u <= 0:
        return 1.0
    if u > pairs:
        return 0.0
    ways = math.comb(n1 + n2, n1)
    # The distribution is symmetric about pairs/2; sum the shorter side.
    if u <= pairs - u:
        below = sum(_u_counts(min(n1, n2), max(n1, n2), u - 1))
        return (ways - below) / ways
    return sum(_u_counts(min(n1, n2), max(n1, n2), pairs - u)) / ways


@lru_cache(maxsize=64)
def _u_counts(m: int, n: int, top: int) -> tuple[int, ...]:
    """How many arrangements of m x-values among n y-values give U = 0 .. top (m <= n).

    These are the coefficients of the Gaussian binomial [m + n choose m] in q, built as the
    product over i = 1..m of (1 - q^(n+i)) / (1 - q^i); every partial product is again a
    Gaussian binomial, so each step stays in integers. Both operations only move weight to
    higher powers, so working modulo q^(top+1) is exact.
    """
    counts = [1] + [0] * top
    size = top + 1
    for i in range(1, m + 1):
        shift = n + i
        if shift < size:
            # Times (1 - q^shift): subtract a copy moved up by shift (old values on the right).
            counts[shift:] = list(map(operator.sub, counts[shift:], counts[: size - shift]))
        if i < size:
            # Divided by (1 - q^i) = times 1 + q^i + q^2i + ...: a running sum along each
            # residue class modulo i.
            for residue in range(i):
                counts[residue::i] = list(accumulate(counts[residue::i]))
    return tuple(counts)


def _norm_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z, accurate far into the upper tail."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {sorted(_ALTERNATIVES)}, not {alternative!r}")


def _check_count(k: int, n: int) -> None:
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= successes <= trials, got {k} of {n}")
