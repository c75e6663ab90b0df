r"""Validation of a verifier's (acceptance b, rejection law 𝒫): the one check every consumer runs.

A token-wise verifier (:class:`theory.Speculative` and its subclasses, including the ones users
write) returns, for draft rows p and target rows q, the acceptance b and the rejection law 𝒫.
The output law of one position is then

.. math::  P(\text{out} = x) = b(x)\,p(x) + ρ\,𝒫(x),\qquad ρ = \sum_y (1 - b(y))\,p(y),

which is a probability distribution only when

* :math:`0 ≤ b(x) ≤ 1` for every token (b is a probability), and
* 𝒫 is a distribution — non-negative, summing to 1 — in every row where ρ > 0.  Rows where
  rejection is impossible (ρ = 0) may hold any finite values (e.g. zeros): they are never read.

A verifier that breaks either condition does not define an algorithm, and every consumer — the
exact dynamic programs (:mod:`theory.exact`), the reference engine (:mod:`sim.reference`), the
CPU engine (:mod:`sim.engine`) and the torch engine (:mod:`gpu_kernels`) — would otherwise turn
it into silently wrong, and mutually different, numbers.  :func:`checked_verification` is the
single place the conditions are checked; each consumer calls it once per table of rows and gets
the same :class:`InvalidVerification` (a ``ValueError``) naming the position, context and token.

Every entry of b and 𝒫 must be a finite number, in float and exact tables alike (a rule
written for floats can put a float NaN into an exact table).  Tolerances: exact (``Fraction``)
tables are checked exactly; float tables allow
:data:`ACCEPTANCE_SLACK` of rounding outside [0, 1] and row sums of 𝒫 within
:data:`theory._arrays.ROW_SUM_ATOL` of 1.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from theory._arrays import ROW_SUM_ATOL, describe

__all__ = ["ACCEPTANCE_SLACK", "InvalidVerification", "checked_verification", "not_finite"]

#: Rounding allowed outside [0, 1] for float acceptances (exact acceptances get none).
ACCEPTANCE_SLACK = 1e-12


class InvalidVerification(ValueError):
    """A verifier returned an acceptance outside [0, 1] or a rejection law that is not a law.

    ``position`` (None when the caller does not know it yet), ``context`` and ``token`` (None for
    a whole-row problem) locate the first offending entry; ``problem`` says what is wrong.
    """

    def __init__(self, verifier: str, problem: str, *, position=None, context=0, token=None):
        self.verifier, self.problem = verifier, problem
        self.position, self.context, self.token = position, context, token
        where = [] if position is None else [f"position {position}"]
        where.append(f"context {context}")
        if token is not None:
            where.append(f"token {token}")
        super().__init__(f"invalid verifier {verifier}: at {', '.join(where)}, {problem}")

    def at_position(self, position: int) -> InvalidVerification:
        """The same error, located at ``position`` (for callers that learn it later)."""
        return InvalidVerification(self.verifier, self.problem, position=position,
                                   context=self.context, token=self.token)


def checked_verification(algorithm, p, q, *, position=None, context: int = 0,
                         n_contexts: int | None = None):
    r"""``algorithm.verification(p, q)``, checked: b ∈ [0, 1], 𝒫 a law wherever ρ > 0.

    Parameters
    ----------
    algorithm : Speculative (or any object with ``verification(p, q) -> (b, 𝒫)``)
        The verifier.
    p, q : ndarray, shape (V,) or (R, V)
        Draft and target rows, float64 or ``Fraction`` object arrays (already validated laws).
    position : int or None
        The position of the first row; None when the caller does not know it (the error then
        names no position, and the caller may add it with :meth:`InvalidVerification.at_position`).
    context : int
        The context of the first row (for a single row of shape (V,)).
    n_contexts : int or None
        How rows map to (position, context): row r is position ``position + r // n_contexts``,
        context ``context + r % n_contexts``.  Default: the number of rows (all rows are the
        contexts of one position).

    Returns
    -------
    accept, law : ndarray
        b and 𝒫 broadcast to the shape of p (read-only views when broadcast).

    Raises
    ------
    InvalidVerification
        A ``ValueError`` naming the verifier, position, context and (for entry-wise problems)
        token: b or 𝒫 not shaped like p, b not finite or outside [0, 1] (beyond
        :data:`ACCEPTANCE_SLACK` for floats), 𝒫 not finite anywhere, or, in a row with
        rejection probability ρ = Σ(1 − b)p > 0, 𝒫 negative or not summing to 1 (exactly for
        Fractions, within ``ROW_SUM_ATOL`` for floats).

    Notes
    -----
    The emitted law of a position is :math:`b\,p + ρ\,𝒫`; it sums to
    :math:`\sum b p + ρ \sum 𝒫 = 1 - ρ + ρ\sum 𝒫`, so it is a law exactly when b is a
    probability and :math:`\sum 𝒫 = 1`, 𝒫 ≥ 0 in every row with ρ > 0.  Without the check an
    unnormalized 𝒫 loses mass in the dynamic programs (E[N_rej] far below Theorem 1) while the
    samplers renormalize it, and a 𝒫 of zeros where ρ > 0 has no token to draw.

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import dataclass
    >>> from theory import Speculative
    >>> from theory.verification import checked_verification
    >>> @dataclass(frozen=True)
    ... class Unnormalized(Speculative):
    ...     def verification(self, p, q):
    ...         return np.minimum(1, q / p), np.maximum(q - p, 0)
    >>> p, q = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    >>> checked_verification(Speculative(), p, q, position=3)[1].tolist()
    [[1.0, 0.0]]
    >>> checked_verification(Unnormalized(), p, q, position=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    theory.verification.InvalidVerification: ...at position 3, context 0, the rejection law...
    """
    p = np.asarray(p)
    accept, law = algorithm.verification(p, q)
    name = repr(algorithm)
    rows = 1 if p.ndim == 1 else int(np.prod(p.shape[:-1]))
    stride = rows if n_contexts is None else int(n_contexts)

    def fail(problem, flat_index, token=None):
        at = None if position is None else position + flat_index // stride
        return InvalidVerification(name, problem, position=at,
                                   context=context + flat_index % stride,
                                   token=None if token is None else int(token))

    def shaped(values, what):
        values = np.asarray(values)
        try:
            return np.broadcast_to(values, p.shape)
        except ValueError:
            raise InvalidVerification(
                name, f"the {what} has shape {values.shape}; it must have the shape of p, "
                      f"{p.shape}", position=position, context=context) from None

    accept, law = shaped(accept, "acceptance"), shaped(law, "rejection law")
    flat_p, flat_b, flat_law = (a.reshape(rows, p.shape[-1]) for a in (p, accept, law))
    exact = flat_b.dtype == object
    bad = np.argwhere(not_finite(flat_b))
    if bad.size:
        row, token = bad[0]
        raise fail(f"the acceptance is {describe(flat_b[row, token])}; it must be finite",
                   row, token)
    slack = 0 if exact else ACCEPTANCE_SLACK
    bad = np.argwhere((flat_b < -slack) | (flat_b > 1 + slack))
    if bad.size:
        row, token = bad[0]
        raise fail(f"the acceptance is {describe(flat_b[row, token])}; an acceptance "
                   f"probability must lie in [0, 1]", row, token)
    bad = np.argwhere(not_finite(flat_law))
    if bad.size:
        row, token = bad[0]
        raise fail(f"the rejection law is {describe(flat_law[row, token])}; it must be "
                   f"finite", row, token)
    rejection = ((1 - flat_b) * flat_p).sum(axis=-1)
    rejecting = rejection > 0
    negative = np.argwhere((flat_law < 0) & rejecting[:, None])
    if negative.size:
        row, token = negative[0]
        raise fail(f"the rejection law is {describe(flat_law[row, token])} where rejection "
                   f"has probability {describe(rejection[row])}; it must be >= 0", row, token)
    sums = flat_law.sum(axis=-1)
    if flat_law.dtype == object:
        off, tolerance = (sums != 1), "exactly"
    else:
        off, tolerance = (np.abs(sums - 1) > ROW_SUM_ATOL), f"within {ROW_SUM_ATOL:g}"
    off = np.flatnonzero(off & rejecting)
    if off.size:
        row = off[0]
        raise fail(f"the rejection law sums to {describe(_rounded(sums[row]))} where rejection "
                   f"has probability {describe(_rounded(rejection[row]))}; it must sum to 1 "
                   f"({tolerance}) wherever rejection can happen", row)
    return accept, law


def not_finite(values) -> np.ndarray:
    """Where ``values`` is not a finite number: NaN or ±inf, in float arrays and in ``Fraction``
    (object) arrays alike (an exact table may hold a float NaN a user's rule produced).

    Examples
    --------
    >>> from fractions import Fraction
    >>> import numpy as np
    >>> from theory.verification import not_finite
    >>> not_finite(np.array([Fraction(1, 3), float("nan"), float("inf")], dtype=object)).tolist()
    [False, True, True]
    """
    values = np.asarray(values)
    if values.dtype != object:
        return ~np.isfinite(values.astype(np.float64))
    return np.frompyfunc(_not_finite_number, 1, 1)(values).astype(bool)


def _not_finite_number(value) -> bool:
    if isinstance(value, numbers.Rational):
        return False
    try:
        return not math.isfinite(value)
    except (TypeError, ValueError):  # not a number at all
        return True


def _rounded(value):
    """Floats to 12 significant digits for messages (exact values unchanged)."""
    return float(f"{value:.12g}") if isinstance(value, (float, np.floating)) else value
