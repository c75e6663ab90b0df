r"""One-position quantities of rejection-based verification.

At one position a draft token x̃ ∼ p is accepted with probability b(x̃) ∈ [0, 1]; otherwise the
output is drawn from a rejection law 𝒫.  The emitted token then has law

.. math::  P(\text{out} = x) = b(x)\,p(x) + \Big(\sum_y (1 - b(y))\,p(y)\Big)\,𝒫(x).

Standard speculative sampling (Leviathan et al. 2023; the paper's Algorithm 1) takes
b = min(1, q/p) and 𝒫 = [q − p]₊ / Σ[q − p]₊, which makes the output law exactly q, and the
rejection probability is Σ_x p(x)(1 − min(1, q(x)/p(x))) = Σ_x [p − q]₊ = TV(p, q).

Corollary 1 of the paper: every verifier with b ≤ min(1, q/p) and
𝒫 = (q − b p) / Σ(1 − b) p is unbiased; Theorem 2 shows none rejects less often than TV(p, q).

All functions act on the last axis (the vocabulary) and broadcast over leading axes; they accept
float64 arrays or object arrays of ``fractions.Fraction`` (exact).
"""

from __future__ import annotations

import numbers

import numpy as np

from theory._arrays import (
    as_scalar,
    checked_acceptance,
    checked_distributions,
    checked_pair,
)

__all__ = [
    "acceptance_probability",
    "positive_part",
    "rejection_law",
    "rejection_mass",
    "residual_chain",
    "residual_distribution",
    "tv_distance",
]


def _tv_distance(p, q, axis: int = -1):
    """TV without input checks (for validated model rows)."""
    p, q = _pair(p, q)
    return as_scalar(np.abs(p - q).sum(axis=axis) / 2)


def tv_distance(p, q, axis: int = -1):
    r"""Total-variation distance TV(p, q) = ½ Σ_x |p(x) − q(x)| along ``axis``.

    Parameters
    ----------
    p, q : array_like
        Probability vectors (broadcast against each other); Fractions give an exact result.
    axis : int
        The vocabulary axis (default last).

    Examples
    --------
    >>> from theory import tv_distance
    >>> float(tv_distance([0.5, 0.5], [0.9, 0.1]))
    0.4
    """
    return _tv_distance(*checked_pair(p, q, axis=axis), axis=axis)


def positive_part(values):
    """[v]₊ = max(v, 0) elementwise (exact for Fractions)."""
    values = np.asarray(values)
    if values.dtype == object:
        return np.where(values > 0, values, 0 * values)
    return np.maximum(values, 0.0)


def safe_ratio(numerator, denominator):
    """numerator / denominator where the denominator is non-zero, else 0 (no warnings)."""
    numerator, denominator = np.asarray(numerator), np.asarray(denominator)
    zero = denominator == 0
    if numerator.dtype == object or denominator.dtype == object:
        safe = np.where(zero, 1, denominator)
        return np.where(zero, 0, numerator / safe)
    # a denormal denominator can overflow the ratio to inf; callers cap it (min(1, ·))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(zero, 0.0, numerator / np.where(zero, 1.0, denominator))


def acceptance_probability(p, q):
    r"""Standard acceptance b(x) = min(1, q(x)/p(x)) (validated inputs); see :func:`_acceptance`.

    Parameters
    ----------
    p, q : array_like
        Draft and target probability vectors along the last axis (leading axes broadcast);
        Fractions give exact results.

    Returns
    -------
    ndarray
        b, shaped like the broadcast of p and q; 1 where p(x) = 0.

    Raises
    ------
    ValueError, TypeError
        If an input is not a probability vector (the message names the argument and index).

    Examples
    --------
    >>> from theory.onestep import acceptance_probability
    >>> acceptance_probability([0.5, 0.5], [0.9, 0.1]).tolist()
    [1.0, 0.2]
    """
    return _acceptance(*checked_pair(p, q))


def _acceptance(p, q):
    r"""Standard acceptance b(x) = min(1, q(x)/p(x)), with b = 1 where p(x) = 0.

    Where the residual [q − p]₊ has no mass (p ≥ q everywhere, i.e. p = q up to rounding) the
    acceptance is 1 for every token, so rejection has probability exactly 0 even when rounding
    leaves q(x)/p(x) = 1 − 1e-16.

    """
    p, q = _pair(p, q)
    ratio = safe_ratio(q, p)
    accept = np.where(p == 0, 1, np.minimum(1, ratio))
    no_residual = positive_part(q - p).sum(axis=-1, keepdims=True) == 0
    return np.where(no_residual, 1, accept)


def residual_distribution(p, q):
    """The speculative residual [q − p]₊ normalized (validated inputs); see :func:`_residual`.

    Parameters
    ----------
    p, q : array_like
        Draft and target probability vectors along the last axis (leading axes broadcast);
        Fractions give exact results.

    Returns
    -------
    ndarray
        The normalized residual; all zeros in rows where q ≤ p (rejection never happens).

    Raises
    ------
    ValueError, TypeError
        If an input is not a probability vector (the message names the argument and index).

    Examples
    --------
    >>> from theory.onestep import residual_distribution
    >>> residual_distribution([0.5, 0.5], [0.9, 0.1]).tolist()
    [1.0, 0.0]
    """
    return _residual(*checked_pair(p, q))


def _residual(p, q):
    r"""The rejection law of speculative sampling, [q − p]₊ / Σ_y [q − p]₊(y).

    Rows where q ≤ p everywhere (no residual mass; then p = q) return all zeros: rejection never
    happens there, so no law is needed.
    """
    p, q = _pair(p, q)
    residual = positive_part(q - p)
    return safe_ratio(residual, residual.sum(axis=-1, keepdims=True))


def residual_chain(p, q, n_drafts: int, step=None):
    """:func:`_residual_chain` on validated inputs (``n_drafts`` an integer >= 1).

    Examples
    --------
    >>> from theory.onestep import residual_chain
    >>> residuals, failures = residual_chain([0.5, 0.5], [0.9, 0.1], 2)
    >>> [r.tolist() for r in residuals], [float(f) for f in failures]
    ([[0.9, 0.1], [1.0, 0.0], [1.0, 0.0]], [0.4, 0.5])
    """
    if not isinstance(n_drafts, numbers.Integral) or isinstance(n_drafts, bool) \
            or n_drafts < 1:
        raise ValueError(f"n_drafts must be an integer >= 1; got {n_drafts!r}")
    return _residual_chain(*checked_pair(p, q), n_drafts, step=step)


def _residual_chain(p, q, n_drafts: int, step=None):
    r"""The recursive residuals of multi-draft verification (the paper's Algorithm 4).

    q¹ = q and q^{m+1} = [q^m − p]₊ / Σ[q^m − p]₊; draft m is accepted with probability
    min(1, q^m/p) and fails with probability r_m = Σ_x [p − q^m]₊(x) = TV(q^m, p).

    Parameters
    ----------
    step : callable (p, residual) -> next residual, optional
        Default :func:`residual_distribution`; other rules define other (e.g. wrong) verifiers.

    Returns
    -------
    residuals : list of M + 1 arrays shaped like q (q¹ … q^{M+1}; zeros once a residual has
        no mass, i.e. after a draft that is accepted for sure)
    failures : list of M arrays (r₁ … r_M), the leading shape of q
    """
    p, q = _pair(p, q)
    step = _residual if step is None else step
    residuals, failures = [q], []
    for _ in range(n_drafts):
        current = residuals[-1]
        failures.append(_rejection_mass(p, _acceptance(p, current)))
        residuals.append(np.asarray(step(p, current)))
    return residuals, failures


def rejection_mass(p, accept):
    r"""Probability of rejection Σ_x (1 − b(x)) p(x) for acceptance b ∈ [0, 1].

    Parameters
    ----------
    p : array_like
        Draft probability vectors (last axis).
    accept : array_like
        The acceptance b(x) ∈ [0, 1], shaped like ``p``.

    Returns
    -------
    float, Fraction or ndarray
        ρ = Σ_x (1 − b(x)) p(x), one value per row.

    Raises
    ------
    ValueError, TypeError
        If an input is not a probability vector (the message names the argument and index).

    Examples
    --------
    >>> from theory.onestep import rejection_mass
    >>> round(float(rejection_mass([0.5, 0.5], [1.0, 0.2])), 12)
    0.4
    """
    p = checked_distributions("p", p)
    return as_scalar(_rejection_mass(p, checked_acceptance(accept, p)))


def _rejection_mass(p, accept):
    p, accept = _pair(p, accept)
    return ((1 - accept) * p).sum(axis=-1)


def rejection_law(p, q, accept):
    r"""Corollary 1's rejection law (q − b p) / Σ_y (1 − b(y)) p(y), the unique unbiased one.

    Rows that never reject (Σ(1 − b)p = 0) return zeros.

    Parameters
    ----------
    p, q : array_like
        Draft and target probability vectors along the last axis (leading axes broadcast);
        Fractions give exact results.
    accept : array_like
        The acceptance b(x) ∈ [0, 1], shaped like ``p``; b ≤ min(1, q/p) makes the law
        unbiased.

    Returns
    -------
    ndarray
        𝒫 = [q − b p]₊ / Σ(1 − b)p, shaped like ``p``; zeros in rows that never reject.

    Raises
    ------
    ValueError, TypeError
        If an input is not a probability vector (the message names the argument and index).

    Examples
    --------
    >>> from theory.onestep import rejection_law
    >>> rejection_law([0.5, 0.5], [0.9, 0.1], [1.0, 0.2]).tolist()
    [1.0, 0.0]
    """
    p, q = checked_pair(p, q)
    return _rejection_law(p, q, checked_acceptance(accept, p))


def _rejection_law(p, q, accept):
    p, q = _pair(p, q)
    accept = np.asarray(accept)
    # q − b p ≥ 0 when b ≤ q/p; the positive part removes rounding residue of order 1e-17.
    mass = ((1 - accept) * p).sum(axis=-1, keepdims=True)
    return safe_ratio(positive_part(q - accept * p), mass)


def _pair(p, q):
    p, q = np.asarray(p), np.asarray(q)
    if p.dtype == object or q.dtype == object:
        return p.astype(object), q.astype(object)
    return p.astype(np.float64, copy=False), q.astype(np.float64, copy=False)
