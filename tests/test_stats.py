"""The rollout gates' statistics: hand-computed cases, and agreement with scipy (a test peer)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from bridge.stats import (
    MannWhitney,
    mann_whitney_u,
    two_proportion_z_test,
    wilson_interval,
)

ALTERNATIVES = ("two-sided", "less", "greater")
Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def close(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) <= 1e-9 + 1e-7 * abs(theirs)


def norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def assert_like_scipy(
    x: Sequence[float], y: Sequence[float], alternative: str, method: str
) -> MannWhitney:
    ours = mann_whitney_u(x, y, alternative=alternative, method=method)  # type: ignore[arg-type]
    theirs = scipy_stats.mannwhitneyu(x, y, alternative=alternative, method=method)
    assert ours.u == float(theirs.statistic)
    assert close(ours.p, float(theirs.pvalue)), (ours, theirs)
    assert ours.n_x == len(x) and ours.n_y == len(y)
    assert ours.prob_superiority == pytest.approx(ours.u / (len(x) * len(y)), abs=1e-15)
    assert ours.rank_biserial == pytest.approx(2 * ours.prob_superiority - 1, abs=1e-15)
    return ours


# --- Mann-Whitney U: cases worked by hand -------------------------------------------------------


def test_separated_small_samples_use_the_exact_distribution() -> None:
    # U of x is 0; of the C(6, 3) = 20 equally likely arrangements, one gives U = 0 (and one U = 9).
    result = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert result.method == "exact"
    assert (result.u, result.prob_superiority, result.rank_biserial) == (0.0, 0.0, -1.0)
    assert result.p == pytest.approx(2 / 20, rel=1e-12)
    assert mann_whitney_u([1, 2, 3], [4, 5, 6], alternative="less").p == pytest.approx(1 / 20)
    assert mann_whitney_u([1, 2, 3], [4, 5, 6], alternative="greater").p == 1.0
    assert mann_whitney_u([4, 5, 6], [1, 2, 3], alternative="greater").p == pytest.approx(1 / 20)


def test_u_counts_pairs_with_ties_as_one_half() -> None:
    # No x beats a y outright; the two x = 2 tie with y = 2 and count one half each: U = 1.
    result = mann_whitney_u([1, 2, 2], [2, 3])
    assert result.method == "asymptotic"  # ties: no exact distribution
    assert result.u == 1.0
    assert result.prob_superiority == pytest.approx(1 / 6)
    # n = 5, one tie of three: Σ(t³ - t) = 24, variance = 6/12 · (6 - 24/20) = 2.4.
    # Two-sided uses max(U1, U2) = 5: z = (5 - 3 - 0.5) / sqrt(2.4).
    assert result.p == pytest.approx(2 * norm_sf(1.5 / math.sqrt(2.4)), rel=1e-12)


def test_asymptotic_without_ties_by_hand() -> None:
    x = list(range(1, 11))  # ranks 1..10
    y = list(range(11, 21))
    result = mann_whitney_u(x, y, method="asymptotic")
    assert result.u == 0.0
    # mean 50, variance 10·10·21/12 = 175; two-sided with U = 100.
    assert result.p == pytest.approx(2 * norm_sf((100 - 50 - 0.5) / math.sqrt(175)), rel=1e-12)


@pytest.mark.parametrize("method", ["auto", "asymptotic", "exact"])
@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_identical_samples_say_nothing(alternative: str, method: str) -> None:
    for sample in ([3.0] * 10, [1.0, 2.0, 3.0, 4.0, 5.0], [0.5] * 4 + [2.0] * 20):
        result = assert_like_scipy(sample, list(sample), alternative, method)
        assert result.prob_superiority == 0.5
        assert result.rank_biserial == 0.0
        if alternative == "two-sided":
            assert result.p == 1.0
        else:
            assert result.p >= 0.5


def test_fully_separated_samples_give_a_tiny_p() -> None:
    low = [float(i) for i in range(200)]
    high = [float(i) for i in range(200, 400)]
    result = mann_whitney_u(high, low)
    assert (result.prob_superiority, result.rank_biserial) == (1.0, 1.0)
    assert result.p < 1e-60
    assert mann_whitney_u(high, low, alternative="greater").p < 1e-60
    assert mann_whitney_u(high, low, alternative="less").p == 1.0


@pytest.mark.parametrize("x, y", [([], [1.0]), ([1.0], []), ([], [])])
def test_an_empty_sample_is_an_error(x: list[float], y: list[float]) -> None:
    with pytest.raises(ValueError, match="at least one value in each sample"):
        mann_whitney_u(x, y)


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        mann_whitney_u([1.0, math.nan], [2.0])
    with pytest.raises(ValueError, match="alternative"):
        mann_whitney_u([1.0], [2.0], alternative="bigger")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        mann_whitney_u([1.0], [2.0], method="permutation")  # type: ignore[arg-type]


# --- Mann-Whitney U: agreement with scipy --------------------------------------------------------

# Small integers give plenty of ties; floats (infinities included) give none, mostly.
values = st.one_of(
    st.integers(min_value=0, max_value=12).map(float),
    st.floats(allow_nan=False, allow_infinity=True, width=64),
)
tied_sample = st.lists(st.integers(min_value=0, max_value=12).map(float), min_size=1, max_size=300)
distinct_sample = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=300
)
any_sample = st.one_of(tied_sample, distinct_sample, st.lists(values, min_size=1, max_size=300))


@settings(max_examples=300, deadline=None)
@given(x=any_sample, y=any_sample, alternative=st.sampled_from(ALTERNATIVES))
def test_asymptotic_and_auto_agree_with_scipy(
    x: list[float], y: list[float], alternative: str
) -> None:
    assert_like_scipy(x, y, alternative, "asymptotic")
    assert_like_scipy(x, y, alternative, "auto")


@settings(max_examples=300, deadline=None)
@given(
    x=st.lists(values, min_size=1, max_size=8),
    y=st.lists(values, min_size=1, max_size=300),
    alternative=st.sampled_from(ALTERNATIVES),
    swap=st.booleans(),
)
def test_auto_with_a_small_sample_agrees_with_scipy(
    x: list[float], y: list[float], alternative: str, swap: bool
) -> None:
    if swap:
        x, y = y, x
    assert_like_scipy(x, y, alternative, "auto")


@settings(max_examples=200, deadline=None)
@given(
    x=st.lists(values, min_size=1, max_size=30),
    y=st.lists(values, min_size=1, max_size=40),
    alternative=st.sampled_from(ALTERNATIVES),
)
def test_forced_exact_agrees_with_scipy_even_with_ties(
    x: list[float], y: list[float], alternative: str
) -> None:
    assert_like_scipy(x, y, alternative, "exact")


@pytest.mark.parametrize(
    "n_x, n_y, shift, digits",
    [(10_000, 10_000, 0.0, None), (10_000, 3_000, 0.05, None), (10_000, 10_000, 0.02, 1)],
)
def test_large_samples_agree_with_scipy(
    n_x: int, n_y: int, shift: float, digits: int | None
) -> None:
    rng = random.Random(f"{n_x}-{n_y}-{shift}")
    x = [rng.lognormvariate(0.0, 0.5) for _ in range(n_x)]
    y = [rng.lognormvariate(shift, 0.5) for _ in range(n_y)]
    if digits is not None:  # latencies rounded to 100 ms: heavy ties
        x = [round(v, digits) for v in x]
        y = [round(v, digits) for v in y]
    for alternative in ALTERNATIVES:
        assert_like_scipy(x, y, alternative, "auto")


def test_a_hundred_thousand_samples_rank_quickly() -> None:
    rng = random.Random(7)
    x = [rng.gauss(0.0, 1.0) for _ in range(100_000)]
    y = [rng.gauss(0.01, 1.0) for _ in range(100_000)]
    started = time.perf_counter()
    result = assert_like_scipy(x, y, "two-sided", "auto")
    assert time.perf_counter() - started < 5.0
    assert result.method == "asymptotic"


def test_auto_is_exact_against_a_large_sample_too() -> None:
    rng = random.Random(8)
    x = [rng.random() for _ in range(8)]
    y = [rng.random() + 0.01 for _ in range(3_000)]  # scipy is the slow one here
    assert assert_like_scipy(x, y, "less", "auto").method == "exact"


# --- two-proportion z-test -----------------------------------------------------------------------


def test_proportion_test_by_hand() -> None:
    result = two_proportion_z_test(50, 100, 30, 100)
    # pooled 0.4: se = sqrt(0.4 · 0.6 · (1/100 + 1/100)) = sqrt(0.0048)
    assert result.z == pytest.approx(0.2 / math.sqrt(0.0048), rel=1e-12)
    assert result.p == pytest.approx(math.erfc(result.z / math.sqrt(2)), rel=1e-12)
    assert (result.rate1, result.rate2) == (0.5, 0.3)
    assert result.difference == pytest.approx(0.2)
    greater = two_proportion_z_test(50, 100, 30, 100, alternative="greater")
    less = two_proportion_z_test(50, 100, 30, 100, alternative="less")
    assert greater.p == pytest.approx(result.p / 2)
    assert less.p == pytest.approx(1 - result.p / 2)


@pytest.mark.parametrize(
    "k1, n1, k2, n2",
    [(0, 0, 0, 0), (0, 0, 5, 10), (5, 10, 0, 0), (0, 10, 0, 20), (10, 10, 20, 20)],
)
@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_proportion_test_with_nothing_to_compare(
    k1: int, n1: int, k2: int, n2: int, alternative: str
) -> None:
    result = two_proportion_z_test(k1, n1, k2, n2, alternative=alternative)  # type: ignore[arg-type]
    assert (result.z, result.p) == (0.0, 1.0)
    assert result.rate1 == (k1 / n1 if n1 else 0.0)
    assert result.rate2 == (k2 / n2 if n2 else 0.0)


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (0, -1)])
def test_impossible_counts_are_errors(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        two_proportion_z_test(k, n, 1, 2)
    with pytest.raises(ValueError, match="successes"):
        two_proportion_z_test(1, 2, k, n)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(k, n)


@st.composite
def counts(draw: st.DrawFn, max_n: int = 10_000) -> tuple[int, int]:
    n = draw(st.integers(min_value=1, max_value=max_n))
    return draw(st.integers(min_value=0, max_value=n)), n


@settings(max_examples=500, deadline=None)
@given(first=counts(), second=counts(), alternative=st.sampled_from(ALTERNATIVES))
def test_proportion_test_agrees_with_the_scipy_formula_and_chi_square(
    first: tuple[int, int], second: tuple[int, int], alternative: str
) -> None:
    (k1, n1), (k2, n2) = first, second
    ours = two_proportion_z_test(k1, n1, k2, n2, alternative=alternative)  # type: ignore[arg-type]
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        assert (ours.z, ours.p) == (0.0, 1.0)
        return
    # statsmodels' proportions_ztest (pooled variance), written out with scipy's normal.
    z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p = {
        "two-sided": 2 * scipy_stats.norm.sf(abs(z)),
        "greater": scipy_stats.norm.sf(z),
        "less": scipy_stats.norm.cdf(z),
    }[alternative]
    assert close(ours.z, z)
    assert close(ours.p, float(p))
    if alternative == "two-sided":
        table = [[k1, n1 - k1], [k2, n2 - k2]]
        chi2 = scipy_stats.chi2_contingency(table, correction=False)
        assert close(ours.z**2, float(chi2.statistic))
        assert close(ours.p, float(chi2.pvalue))


# --- Wilson score interval -----------------------------------------------------------------------


def test_wilson_by_hand() -> None:
    # No successes in 10: [0, z²/(n + z²)].
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z95**2 / (10 + Z95**2), rel=1e-12)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(10 / (10 + Z95**2), rel=1e-12)
    assert high == 1.0
    # Half of 100: symmetric about 0.5.
    low, high = wilson_interval(50, 100)
    assert low + high == pytest.approx(1.0)
    half = Z95 / (2 * (100 + Z95**2)) * math.sqrt(100 + Z95**2)
    assert high - 0.5 == pytest.approx(half, rel=1e-12)


def test_wilson_of_nothing_is_everything() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 0, confidence=0.5) == (0.0, 1.0)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_wilson_needs_a_confidence_between_zero_and_one(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(3, 10, confidence=confidence)


@settings(max_examples=500, deadline=None)
@given(
    count=counts(max_n=100_000),
    confidence=st.one_of(
        st.sampled_from([0.8, 0.9, 0.95, 0.99, 0.999]),
        st.floats(min_value=0.01, max_value=0.9999),
    ),
)
def test_wilson_agrees_with_scipy(count: tuple[int, int], confidence: float) -> None:
    k, n = count
    low, high = wilson_interval(k, n, confidence=confidence)
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert close(low, float(ci.low)), (low, ci)
    assert close(high, float(ci.high)), (high, ci)
    assert 0.0 <= low <= k / n <= high <= 1.0
