r"""The lossy zoo: practitioners' lossy verifiers, :class:`TypicalAcceptance` (Medusa's typical
acceptance, :func:`typical_cutoff`) and :class:`TruncatedSpeculative` (top-k / nucleus targets,
:func:`truncate`).

Both are token-wise position-level verifiers (subclasses of :class:`theory.Speculative`), so
every exact function and engine runs them through ``verification(p, q)``; their place against
Theorem 5's Pareto line is :func:`theory.lossy.verifier_tradeoff` (per row) and
:func:`theory.lossy.chain_tradeoff` (along the output chain).  The paper's own lossy verifier,
:class:`theory.LossySpeculative`, is in :mod:`theory.lossy`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from theory.lossy import _REJECTION_RULES, _rounded_gap_law
from theory.models import MarkovLM
from theory.onestep import _acceptance, _pair, _residual, positive_part
from theory.speculative import Speculative

__all__ = ["TruncatedSpeculative", "TypicalAcceptance", "truncate", "typical_cutoff"]


def _positive_finite(name: str, value):
    """``value`` as a real number in (0, ∞); ValueError/TypeError naming ``name`` otherwise."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number in (0, inf); got {value!r}")
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise ValueError(f"{name} must be a real number in (0, inf); got {value!r}")
    return value


def _zero_one(mask, like):
    """The 0/1 acceptance of ``mask`` in the kind of ``like`` (Python ints for Fractions)."""
    if np.asarray(like).dtype == object:
        return np.where(mask, 1, 0).astype(object)
    return mask.astype(np.float64)


def _canonical_rejection(p, q, accept):
    """Theorem 4's canonical optimal law 𝒫* = [q − b p]₊ / Σ[q − b p]₊ (zeros where no gap;
    q where rounding leaves no gap although rejection can happen:
    :func:`theory.lossy._rounded_gap_law`)."""
    gap = positive_part(q - accept * p)
    return _rounded_gap_law(gap, p, q, accept)


def typical_cutoff(q, threshold, alpha) -> np.ndarray:
    r"""Medusa's typical-acceptance cutoff min(threshold, α·exp(−H(q))), per row of ``q``.

    H(q) = −Σ_x q(x) ln q(x) is the entropy in **nats** (natural logarithm, 0 ln 0 = 0),
    computed in float64 (Fractions are converted: exp and log are not rational).  Cai et al.
    (ICML 2024, arXiv:2401.10774, §3.3.1) accept a candidate x iff q(x) > this cutoff.

    Parameters
    ----------
    q : array_like (..., V)
        Target rows (not validated here: the algorithm's callers validate models).
    threshold, alpha : float
        ε and δ of Medusa's rule (its defaults: 0.09 and √0.09 = 0.3).

    Returns
    -------
    ndarray (...,)
        The cutoff of each row, float64.

    Examples
    --------
    >>> from theory.lossy_zoo import typical_cutoff
    >>> round(float(typical_cutoff([0.5, 0.5], 0.09, 0.3)), 6)  # 0.3 · exp(−ln 2) = 0.15
    0.09
    >>> round(float(typical_cutoff([0.5, 0.5], 0.5, 0.3)), 6)
    0.15
    """
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(axis=-1)
    return np.minimum(threshold, alpha * np.exp(-entropy))


@dataclass(frozen=True, init=False, repr=False)
class TypicalAcceptance(Speculative):
    r"""Medusa's typical acceptance (Cai et al., ICML 2024, arXiv:2401.10774, §3.3.1).

    Drafts to the horizon (like the paper's K = ∞).  A drafted token x̃ ∼ p is accepted iff

    .. math::  q(x̃) > \min\big(\text{threshold},\ α \exp(-H(q))\big),\qquad
               H(q) = -\sum_x q(x) \ln q(x)

    — a *deterministic* acceptance b(x) ∈ {0, 1} that does not read p(x̃).  On rejection the
    token is drawn from

    * ``rejection="target"``: q itself (as the issue specifies: a sampled fallback);
    * ``rejection="opt"``: Theorem 4's canonical optimal law for this b,
      𝒫* = [q − b p]₊ / Σ[q − b p]₊ (q on the rejected tokens, [q − p]₊ on the accepted ones),

    and the next round starts.  The output is biased; per position it sits above Theorem 5's
    line by exactly (with ``"opt"``)

    .. math::  ρ + \mathrm{Loss}^*_{TV} - \mathrm{TV}(p, q) = \sum_{x:\ b(x) = 0} \min(p(x), q(x))

    (from Theorem 4's closed form: a rejected token contributes ½(q + p) instead of ½|p − q|),
    so it is on the line exactly when every rejected token has p(x) = 0 or q(x) = 0.

    Conventions: the entropy is in nats (natural log), ties q(x) = cutoff are **rejected**
    (Medusa's strict ">"); the cutoff is computed in float64 even for Fraction models
    (:func:`typical_cutoff`), after which b is an exact 0/1 and every law is exact in
    rationals.  A comparison within rounding of the cutoff follows the float64 value.

    Parameters
    ----------
    threshold : float in (0, ∞)
        Medusa's ε (hard threshold); default 0.09.
    alpha : float in (0, ∞)
        Medusa's δ, the entropy-adaptive factor; default 0.3.
    rejection : {'target', 'opt'}

    Examples
    --------
    >>> from theory import TypicalAcceptance
    >>> b, law = TypicalAcceptance().verification([0.5, 0.3, 0.2], [0.6, 0.35, 0.05])
    >>> b.tolist(), law.tolist()  # cutoff min(0.09, 0.3 e^{-H}) = 0.09: token 2 rejected
    ([1.0, 1.0, 0.0], [0.6, 0.35, 0.05])
    >>> TypicalAcceptance(rejection="opt").verification([0.5, 0.3, 0.2],
    ...                                                 [0.6, 0.35, 0.05])[1].round(4).tolist()
    [0.5, 0.25, 0.25]
    """

    threshold: float = 0.09
    alpha: float = 0.3
    rejection: str = "target"

    def __init__(self, threshold=0.09, alpha=0.3, rejection: str = "target"):
        _positive_finite("threshold", threshold)
        _positive_finite("alpha", alpha)
        if rejection not in _REJECTION_RULES:
            raise ValueError(f"rejection must be one of {_REJECTION_RULES}; got {rejection!r}")
        object.__setattr__(self, "window", None)
        object.__setattr__(self, "bonus", True)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "rejection", rejection)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(threshold={self.threshold!r}, alpha={self.alpha!r}, "
                f"rejection={self.rejection!r})")

    def cutoff(self, q) -> np.ndarray:
        """min(threshold, α·exp(−H(q))) per row (float64): :func:`typical_cutoff`."""
        return typical_cutoff(q, self.threshold, self.alpha)

    def verification(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        accepted = np.asarray(q, dtype=np.float64) > self.cutoff(q)[..., None]
        accept = _zero_one(np.broadcast_to(accepted, np.broadcast_shapes(p.shape, q.shape)), p)
        if self.rejection == "target":
            return accept, np.broadcast_to(q, accept.shape)
        return accept, _canonical_rejection(p, q, accept)


def truncate(q, top_k=None, top_p=None) -> np.ndarray:
    r"""The truncated, renormalized target q̂: top-k, then nucleus (top-p), per row.

    Tokens are ranked by q, descending, **ties broken by the lower token index first**.
    Top-k keeps the first k ranks.  Nucleus then keeps the shortest prefix of the kept ranks
    whose mass reaches ``top_p`` times the kept mass (the nucleus of the renormalized top-k
    law, as when a top-k and a top-p filter are applied one after the other); i.e. rank r is
    kept iff the mass of the ranks before it is < top_p · (kept mass).  The kept entries are
    divided by their sum.  Exact for Fraction rows (a float ``top_p`` is used at its exact
    binary value).

    Parameters
    ----------
    q : array_like (..., V)
        Probability rows (floats or Fractions; not validated here).
    top_k : int >= 1 or None
    top_p : float in (0, 1] or None

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory.lossy_zoo import truncate
    >>> truncate([0.1, 0.5, 0.4], top_k=2).round(4).tolist()
    [0.0, 0.5556, 0.4444]
    >>> [str(x) for x in truncate([F(1, 4), F(1, 4), F(1, 2)], top_p=F(3, 4))]  # tie: index 0
    ['1/3', '0', '2/3']
    """
    q = np.asarray(q)
    if top_k is None and top_p is None:
        return q
    vocab_size = q.shape[-1]
    order = np.argsort(-q, axis=-1, kind="stable")
    ranked = np.take_along_axis(q, order, axis=-1)
    count = vocab_size if top_k is None else min(int(top_k), vocab_size)
    kept = np.broadcast_to(np.arange(vocab_size) < count, ranked.shape)
    if top_p is not None:
        head = np.where(kept, ranked, 0 * ranked)
        cumulative = np.cumsum(head, axis=-1)
        before = np.concatenate([0 * cumulative[..., :1], cumulative[..., :-1]], axis=-1)
        share = Fraction(top_p) if q.dtype == object else float(top_p)
        kept = kept & (before < share * cumulative[..., count - 1:count])
    keep = np.empty(ranked.shape, dtype=bool)
    np.put_along_axis(keep, order, kept, axis=-1)
    mass = np.where(keep, q, 0 * q)
    return mass / mass.sum(axis=-1, keepdims=True)


@dataclass(frozen=True, init=False, repr=False)
class TruncatedSpeculative(Speculative):
    r"""Speculative decoding against the truncated target q̂ (top-k and/or nucleus).

    Standard speculative sampling (the paper's Algorithm 1) with q replaced by
    q̂ = :func:`truncate` (q, top_k, top_p): accept x̃ ∼ p with probability min(1, q̂/p), on
    rejection draw from [q̂ − p]₊ normalized, and — with a finite window and every draft
    accepted — draw the bonus token from q̂ (:meth:`bonus_law`).  Theorem 1 applied to the
    pair (p, q̂): lossless for q̂, lossy for q, and E[N_rej] = Σₙ E_{q̂}[TV(pₙ, q̂ₙ)] without a
    bonus.  Per position (P(reject), Loss_TV) = (TV(p, q̂), TV(q̂, q)) with
    TV(q̂, q) = 1 − q(kept), so by the triangle inequality it sits on or above Theorem 5's
    line, at TV(p, q̂) + TV(q̂, q) − TV(p, q).

    Parameters
    ----------
    top_k : int >= 1 or None
        Keep the k most probable target tokens (ties: lower index first).
    top_p : float in (0, 1] or None
        Nucleus mass (of the top-k law when both are given); see :func:`truncate`.
    window, bonus :
        As for :class:`Speculative`.

    Examples
    --------
    >>> from theory import TruncatedSpeculative
    >>> b, law = TruncatedSpeculative(top_k=1).verification([0.5, 0.5], [0.6, 0.4])
    >>> b.tolist(), law.tolist()  # q̂ = (1, 0)
    ([1.0, 0.0], [1.0, 0.0])
    """

    top_k: int | None = None
    top_p: float | None = None

    def __init__(self, top_k=None, top_p=None, window=None, bonus=True):
        if top_k is not None:
            if not isinstance(top_k, numbers.Integral) or isinstance(top_k, (bool, np.bool_)):
                raise TypeError(f"top_k must be a positive integer or None; got {top_k!r}")
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1 or None; got {top_k!r}")
            top_k = int(top_k)
        if top_p is not None:
            if not isinstance(top_p, numbers.Real) or isinstance(top_p, (bool, np.bool_)):
                raise TypeError(f"top_p must be a real number in (0, 1] or None; got {top_p!r}")
            if math.isnan(top_p) or not 0 < top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1] or None; got {top_p!r}")
        object.__setattr__(self, "top_k", top_k)
        object.__setattr__(self, "top_p", top_p)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "bonus", bonus)
        super().__post_init__()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(top_k={self.top_k!r}, top_p={self.top_p!r}, "
                f"window={self.window!r}, bonus={self.bonus!r})")

    def truncate(self, q) -> np.ndarray:
        """q̂ for rows ``q``: :func:`truncate` with this algorithm's top_k and top_p."""
        return truncate(q, self.top_k, self.top_p)

    def truncated_target(self, target):
        """The MarkovLM q̂ (same contexts, map and start): the exact output law of this
        algorithm, for any window."""
        next_context = None if target.is_first_order else target.next_context
        return MarkovLM(self.truncate(target.probs), next_context, target.start)

    def verification(self, p, q):
        p, truncated = _pair(p, self.truncate(q))
        return _acceptance(p, truncated), _residual(p, truncated)

    def bonus_law(self, q):
        return self.truncate(q)

