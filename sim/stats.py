r"""Statistical checks of simulations against closed forms — used by tests and reports alike.

Every check returns a :class:`CheckResult` with the statistic, a p-value and a verdict at a
stated false-positive level ``alpha`` (default :data:`DEFAULT_ALPHA` = 1e-6 per check): a
correct algorithm fails a check with probability at most ``alpha`` (asymptotically), so a
suite of K checks has a false-positive budget of at most K·alpha.

* :func:`mean_check` — two-sided z-test of a sample mean against its exact value.  With the
  exact variance (from an exact pmf) the statistic is exact up to the CLT; otherwise the sample
  variance is used.
* :func:`counts_check` — Pearson chi-square goodness of fit on *counts* (never frequencies),
  after merging the least likely categories until every bin expects at least 5 observations
  (SciPy's ``check_discrete_chisquare`` practice).  An observation in a category of probability
  0 fails at once (p = 0).
* :func:`pmf_check` — :func:`counts_check` for integer samples against a pmf.
* :func:`cells_check` — Pearson's test pooled over many independent multinomial cells (the
  transition counts of a Markov chain: Anderson & Goodman, 1957), with :func:`chi2_power`
  and :func:`detectable_noncentrality` for the power of such tests.

Checks never retry; seeds are fixed by the caller.  Every check in the test suite sits beside a
*negative control*: a known-wrong algorithm that the same check, at the same sample size, fails.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "DEFAULT_ALPHA",
    "CheckResult",
    "cells_check",
    "chi2_power",
    "counts_check",
    "detectable_noncentrality",
    "mean_check",
    "merge_small_bins",
    "pmf_check",
    "pmf_moments",
    "pooled_pearson",
]

#: Default false-positive level of one statistical check.
DEFAULT_ALPHA = 1e-6


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one statistical check.

    ``passed`` is ``p_value >= alpha``.  ``estimate``/``expected``/``standard_error`` are filled
    by mean checks; ``degrees_of_freedom`` by goodness-of-fit checks.
    """

    name: str
    statistic: float
    p_value: float
    alpha: float
    estimate: float | None = None
    expected: float | None = None
    standard_error: float | None = None
    degrees_of_freedom: int | None = None

    @property
    def passed(self) -> bool:
        return bool(self.p_value >= self.alpha)

    def confidence_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Normal-approximation interval for a mean check's estimate."""
        if self.estimate is None or self.standard_error is None:
            raise ValueError("confidence_interval is defined for mean checks only")
        half = stats.norm.ppf(0.5 + level / 2) * self.standard_error
        return self.estimate - half, self.estimate + half

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        detail = (f"estimate {self.estimate:.6g} vs {self.expected:.6g} ± "
                  f"{self.standard_error:.2g}, " if self.estimate is not None else "")
        return (f"{self.name}: {detail}statistic {self.statistic:.4g}, "
                f"p = {self.p_value:.3g} (alpha {self.alpha:g}) → {verdict}")


def pmf_moments(pmf) -> tuple[float, float]:
    r"""Mean and variance of a pmf on 0, 1, …, K, computed stably.

    Parameters
    ----------
    pmf : array_like, shape (K + 1,)
        P(X = k) for k = 0 … K (floats or Fractions; computed in float64).

    Returns
    -------
    mean, variance : float
        The variance is never negative.

    Raises
    ------
    ValueError
        If ``pmf`` is not a one-dimensional, non-empty array of finite numbers.

    Notes
    -----
    μ = Σ_k k·P(k) and σ² = Σ_k (k − μ)²·P(k).  The textbook shortcut Σ k²P(k) − μ² cancels
    catastrophically when σ² ≪ μ² (for ``Autoregressive`` the number of target calls is T
    with certainty, and the shortcut gives −9e-13); the centred sum is a sum of non-negative
    terms, so it is ≥ 0 and accurate to a few ulps of σ².

    Examples
    --------
    >>> from sim.stats import pmf_moments
    >>> pmf_moments([0.25, 0.5, 0.25])
    (1.0, 0.5)
    >>> pmf_moments([0.0] * 50 + [1.0])  # a constant: exactly zero variance
    (50.0, 0.0)
    """
    pmf = np.asarray(pmf, dtype=np.float64)
    if pmf.ndim != 1 or pmf.size == 0 or not np.isfinite(pmf).all():
        raise ValueError(f"pmf must be a non-empty 1-d array of finite numbers; got shape "
                         f"{pmf.shape}")
    k = np.arange(pmf.size)
    mean = float(k @ pmf)
    return mean, float((k - mean) ** 2 @ pmf)


def _finish(result: CheckResult) -> CheckResult:
    """Every check returns through here: one hook to count checks (the test suite states its
    false-positive budget from it)."""
    return result


def _alpha(alpha) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
    return float(alpha)


def mean_check(samples, expected, *, variance=None, alpha: float = DEFAULT_ALPHA,
               name: str = "mean") -> CheckResult:
    r"""Two-sided z-test of H₀: E[samples] = ``expected``.

    z = (x̄ − expected) / √(σ²/n), with σ² = ``variance`` when known exactly, else the sample
    variance.  When σ² = 0 the check passes only if every sample equals ``expected``
    (to 1e-12).

    Parameters
    ----------
    samples : array_like
        At least 2 numbers (e.g. N_rej of each trial).
    expected : float
        The exact mean under H₀.
    variance : float >= 0, optional
        The exact variance under H₀ (e.g. from :func:`pmf_moments`); default: the sample
        variance.
    alpha : float in (0, 1)
        False-positive level of the check.
    name : str
        Label of the check in reports.

    Returns
    -------
    CheckResult
        z, its two-sided p-value, the estimate and its standard error.

    Raises
    ------
    ValueError
        Fewer than 2 samples, a negative variance, or ``alpha`` outside (0, 1).

    Notes
    -----
    An ``expected`` value computed in floats carries rounding error: a count that is T with
    certainty comes out of a float pmf as T(1 + 2e-16), with a rounding-level variance of
    1e-28, which would turn an exact agreement into z = −1000.  So differences
    |x̄ − expected| ≤ 1e-12 · max(1, |expected|) — the float resolution of an exact value, far
    below any standard error a simulation can reach — count as zero.

    Examples
    --------
    >>> import numpy as np
    >>> from sim.stats import mean_check
    >>> rolls = np.random.default_rng(0).integers(1, 7, size=10_000)
    >>> mean_check(rolls, 3.5, variance=35 / 12).passed
    True
    >>> mean_check(rolls, 3.6, variance=35 / 12).passed
    False
    """
    alpha = _alpha(alpha)
    samples = np.asarray(samples, dtype=np.float64).ravel()
    n = samples.size
    if n < 2:
        raise ValueError(f"samples must hold at least 2 values; got {n}")
    expected = float(expected)
    estimate = float(samples.mean())
    var = float(samples.var(ddof=1)) if variance is None else float(variance)
    if var < 0:
        raise ValueError(f"variance must be >= 0; got {var}")
    error = np.sqrt(var / n)
    if error == 0:
        same = bool(np.all(np.abs(samples - expected) <= 1e-12))
        return _finish(CheckResult(name, 0.0 if same else np.inf, 1.0 if same else 0.0,
                                   alpha, estimate, expected, 0.0))
    difference = estimate - expected
    if abs(difference) <= 1e-12 * max(1.0, abs(expected)):  # float resolution of `expected`
        difference = 0.0
    z = difference / error
    return _finish(CheckResult(name, float(z), float(2 * stats.norm.sf(abs(z))), alpha,
                               estimate, expected, float(error)))


def merge_small_bins(expected_counts, min_expected: float = 5.0) -> np.ndarray:
    """Bin labels merging categories so that every bin expects ≥ ``min_expected`` counts.

    Categories are taken from least to most likely and accumulated into a bin until it reaches
    ``min_expected``; a last bin that falls short joins the previous one.  Returns an int label
    per category (categories with expected count 0 get label −1: they are tested separately).

    Parameters
    ----------
    expected_counts : array_like
        Expected count of every category (n · probability).
    min_expected : float
        The least expected count of a bin.

    Returns
    -------
    ndarray of int
        A bin label per category; −1 for categories with expected count 0.
    """
    expected_counts = np.asarray(expected_counts, dtype=np.float64)
    labels = np.full(expected_counts.size, -1, dtype=np.intp)
    order = [i for i in np.argsort(expected_counts, kind="stable") if expected_counts[i] > 0]
    label, accumulated = 0, 0.0
    for i in order:
        labels[i] = label
        accumulated += expected_counts[i]
        if accumulated >= min_expected:
            label, accumulated = label + 1, 0.0
    if 0 < accumulated < min_expected and label > 0:
        labels[labels == label] = label - 1
    return labels


def counts_check(observed, probabilities, *, alpha: float = DEFAULT_ALPHA,
                 name: str = "counts", min_expected: float = 5.0) -> CheckResult:
    r"""Chi-square goodness of fit of observed *counts* to category probabilities.

    Parameters
    ----------
    observed : int array (K,)
        Counts per category.
    probabilities : array (K,)
        H₀ law of the categories (sums to 1 within 1e-9).
    alpha : float in (0, 1)
        False-positive level of the check.
    name : str
        Label of the check in reports.
    min_expected : float
        Least expected count of a bin after merging (:func:`merge_small_bins`).

    Returns
    -------
    CheckResult
        Pearson's statistic, its p-value and the degrees of freedom (bins − 1).

    Examples
    --------
    >>> import numpy as np
    >>> from sim.stats import counts_check
    >>> counts = np.bincount(np.random.default_rng(1).integers(0, 4, 4000), minlength=4)
    >>> counts_check(counts, [0.25] * 4).passed, counts_check(counts, [0.4, 0.2, 0.2, 0.2]).passed
    (True, False)
    """
    alpha = _alpha(alpha)
    observed = np.asarray(observed)
    if observed.dtype.kind not in "iu":
        raise TypeError(f"observed must be integer counts; got dtype {observed.dtype}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != observed.shape:
        raise ValueError(f"probabilities must have the shape of observed, {observed.shape}; "
                         f"got {probabilities.shape}")
    if abs(probabilities.sum() - 1) > 1e-9 or (probabilities < 0).any():
        raise ValueError(f"probabilities must be a distribution; sum {probabilities.sum()!r}")
    total = int(observed.sum())
    expected = total * probabilities
    labels = merge_small_bins(expected, min_expected)
    impossible = int(observed[labels < 0].sum())
    if impossible:
        return _finish(CheckResult(
            f"{name} ({impossible} observations in zero-probability categories)", np.inf, 0.0,
            alpha, degrees_of_freedom=0))
    n_bins = int(labels.max()) + 1
    binned_observed = np.bincount(labels[labels >= 0], weights=observed[labels >= 0],
                                  minlength=n_bins)
    binned_expected = np.bincount(labels[labels >= 0], weights=expected[labels >= 0],
                                  minlength=n_bins)
    if n_bins < 2:
        return _finish(CheckResult(name, 0.0, 1.0, alpha, degrees_of_freedom=0))
    statistic = float(((binned_observed - binned_expected) ** 2 / binned_expected).sum())
    dof = n_bins - 1
    return _finish(CheckResult(name, statistic, float(stats.chi2.sf(statistic, dof)), alpha,
                               degrees_of_freedom=dof))


def pmf_check(samples, pmf, *, alpha: float = DEFAULT_ALPHA, name: str = "pmf") -> CheckResult:
    """Goodness of fit of integer samples in 0..len(pmf)−1 to ``pmf``.

    Parameters
    ----------
    samples : array_like of int
        Draws in 0 … len(pmf) − 1.
    pmf : array_like
        The exact law under H₀.
    alpha : float in (0, 1)
        False-positive level of the check.
    name : str
        Label of the check in reports.

    Returns
    -------
    CheckResult
        Pearson's statistic (bins merged to expected counts ≥ 5), p-value, degrees of
        freedom.

    Examples
    --------
    >>> import numpy as np
    >>> from sim.stats import pmf_check
    >>> draws = np.random.default_rng(2).binomial(3, 0.5, size=2000)
    >>> pmf_check(draws, [1 / 8, 3 / 8, 3 / 8, 1 / 8]).passed
    True
    """
    pmf = np.asarray(pmf, dtype=np.float64)
    samples = np.asarray(samples)
    if samples.dtype.kind not in "iu":
        raise TypeError(f"samples must be integers; got dtype {samples.dtype}")
    if samples.size and (samples.min() < 0 or samples.max() >= pmf.size):
        raise ValueError(f"samples must lie in range(0, {pmf.size}); got "
                         f"[{samples.min()}, {samples.max()}]")
    return counts_check(np.bincount(samples, minlength=pmf.size), pmf, alpha=alpha, name=name)


def cells_check(observed, probabilities, *, alpha: float = DEFAULT_ALPHA, name: str = "cells",
                min_expected: float = 5.0) -> CheckResult:
    r"""Pearson's χ² pooled over cells: row c of ``observed`` counts outcomes of N_c draws from
    row c of ``probabilities``.

    Each row is binned as in :func:`counts_check` (categories merged until every bin expects
    ≥ ``min_expected``); the statistic is the sum of the rows' statistics and the degrees of
    freedom the sum of (bins − 1).  For the transition counts of a Markov chain — N_c random,
    each draw from the row of its current state — the statistic is asymptotically χ² with these
    degrees of freedom (Anderson & Goodman, 1957; Billingsley, 1961), which is how
    :mod:`sim.conformance` tests whole generations.  An observation in a zero-probability
    category fails at once (p = 0).

    Parameters
    ----------
    observed : int array (C, K)
        Counts per cell and category.
    probabilities : array (C, K)
        H₀ law of each cell (rows with no observation are ignored).
    alpha : float in (0, 1)
        False-positive level.
    name : str
        Label of the check.
    min_expected : float
        Least expected count of a bin after merging.

    Returns
    -------
    CheckResult

    Examples
    --------
    >>> import numpy as np
    >>> from sim.stats import cells_check
    >>> rng = np.random.default_rng(0)
    >>> laws = np.array([[0.5, 0.5, 0.0], [0.1, 0.3, 0.6]])
    >>> counts = np.stack([rng.multinomial(n, law) for n, law in zip([300, 500], laws)])
    >>> cells_check(counts, laws).passed, cells_check(counts, laws[::-1]).passed
    (True, False)
    """
    alpha = _alpha(alpha)
    statistic, dof, impossible, _ = pooled_pearson(observed, probabilities, min_expected)
    if impossible:
        return _finish(CheckResult(
            f"{name} ({impossible} observations in zero-probability categories)", np.inf, 0.0,
            alpha, degrees_of_freedom=dof))
    p_value = float(stats.chi2.sf(statistic, dof)) if dof else 1.0
    return _finish(CheckResult(name, statistic, p_value, alpha, degrees_of_freedom=dof))


def pooled_pearson(observed, probabilities, min_expected: float = 5.0):
    """(statistic, degrees of freedom, observations in zero-probability categories, observations
    in cells with ≥ 2 bins) of :func:`cells_check`, without making a check (for fits and power
    computations).

    Parameters
    ----------
    observed, probabilities, min_expected :
        As for :func:`cells_check`.
    """
    observed = np.asarray(observed)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if observed.dtype.kind not in "iu":
        raise TypeError(f"observed must be integer counts; got dtype {observed.dtype}")
    if observed.ndim != 2 or probabilities.shape != observed.shape:
        raise ValueError(f"observed and probabilities must be (cells, categories) arrays of one "
                         f"shape; got {observed.shape} and {probabilities.shape}")
    totals = observed.sum(axis=1)
    statistic, dof, impossible, tested = 0.0, 0, 0, 0
    for row in np.flatnonzero(totals):
        expected = totals[row] * probabilities[row]
        labels = merge_small_bins(expected, min_expected)
        impossible += int(observed[row][labels < 0].sum())
        n_bins = int(labels.max()) + 1
        if n_bins < 2:
            continue
        kept = labels >= 0
        binned_observed = np.bincount(labels[kept], weights=observed[row][kept],
                                      minlength=n_bins)
        binned_expected = np.bincount(labels[kept], weights=expected[kept], minlength=n_bins)
        statistic += float(((binned_observed - binned_expected) ** 2 / binned_expected).sum())
        dof += n_bins - 1
        tested += int(totals[row])
    return statistic, dof, impossible, tested


def chi2_power(degrees_of_freedom: int, noncentrality: float, alpha: float) -> float:
    """P(a level-``alpha`` χ² test with ``degrees_of_freedom`` rejects) when the statistic is
    noncentral χ² with ``noncentrality`` λ (Pearson's statistic under a fixed alternative:
    λ = N · χ²(alternative ‖ H₀)).

    Parameters
    ----------
    degrees_of_freedom : int
        Of the test statistic (0 gives power 0).
    noncentrality : float
        λ ≥ 0 (``inf``: power 1).
    alpha : float in (0, 1)
        Level of the test.

    Examples
    --------
    >>> from sim.stats import chi2_power
    >>> round(chi2_power(10, 0.0, 0.05), 6), chi2_power(10, 60.0, 1e-6) > 0.9
    (0.05, True)
    """
    alpha = _alpha(alpha)
    if degrees_of_freedom < 1:
        return 0.0
    if noncentrality == np.inf:
        return 1.0
    critical = stats.chi2.isf(alpha, degrees_of_freedom)
    if noncentrality <= 0:
        return float(stats.chi2.sf(critical, degrees_of_freedom))
    return float(stats.ncx2.sf(critical, degrees_of_freedom, noncentrality))


def detectable_noncentrality(degrees_of_freedom: int, alpha: float, power: float = 0.9) -> float:
    """The least noncentrality λ at which a level-``alpha`` χ² test with these degrees of
    freedom rejects with probability ≥ ``power`` (the inverse of :func:`chi2_power` in λ).

    Parameters
    ----------
    degrees_of_freedom : int >= 1
    alpha : float in (0, 1)
        Level of the test.
    power : float in (0, 1)
        Required probability of rejecting.

    Examples
    --------
    >>> from sim.stats import chi2_power, detectable_noncentrality
    >>> lam = detectable_noncentrality(10, 1e-6)
    >>> round(chi2_power(10, lam, 1e-6), 6)
    0.9
    """
    alpha = _alpha(alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1); got {power!r}")
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees_of_freedom must be >= 1; got {degrees_of_freedom!r}")
    return _detectable_noncentrality(int(degrees_of_freedom), alpha, float(power))


@functools.lru_cache(maxsize=4096)
def _detectable_noncentrality(degrees_of_freedom: int, alpha: float, power: float) -> float:
    """:func:`detectable_noncentrality` for checked arguments, remembered (a root search of
    ~20 noncentral χ² tails; the verdicts ask for the same few (dof, α) many times)."""
    from scipy.optimize import brentq

    upper = 1.0
    while chi2_power(degrees_of_freedom, upper, alpha) < power:
        upper *= 2
    return float(brentq(lambda lam: chi2_power(degrees_of_freedom, lam, alpha) - power,
                        0.0, upper, xtol=1e-10))
