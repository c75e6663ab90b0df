r"""Decoding algorithms as small, immutable specifications (docs/architecture.md §1).

Every algorithm here is *position-synchronous*: given the context s and a small per-trial
*round state* j, the law of what happens at position n — the token emitted, whether the
position is a rejection, the next round state — depends only on (n, s, j).  An algorithm
exposes that law as a list of :class:`Branch` objects,

.. math::  w_b(s, x) = P(\text{emit } x \text{ and take branch } b \mid \text{context } s,
           \text{ state } j = \mathrm{source}_b),

which is all the exact dynamic programs of :mod:`theory.exact` need.  Round state 0 always
means "a new round starts at this position", i.e. one target (oracle) call happens there.

The engines in :mod:`sim` run the same specifications: the reference engine follows the
paper's pseudo-code literally; the vectorized engines read the per-position tables returned by
``verification(p, q)``.

Standard speculative decoding (the paper's Algorithm 1, Leviathan et al. 2023), round states:

* ``window=None`` (the paper's K = ∞): 0 = round starts, 1 = inside a round.  Accept
  (weight b·p) → 1; reject (weight ρ·𝒫, ρ = Σ(1 − b)p) → 0.
* ``window=γ``: j = number of drafts accepted so far in the round (0 ≤ j < γ), and j = γ the
  bonus position when ``bonus=True``.  Accept at j → j + 1 (→ 0 when j + 1 = γ without bonus);
  reject → 0; the bonus position emits from ``bonus_law(q)`` (q itself, except for
  :class:`TruncatedSpeculative`) with no test → 0.
"""

from __future__ import annotations

import abc
import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar, NamedTuple

import numpy as np

from theory.models import MarkovLM
from theory.multidraft import ROOT_VERIFIERS, root_law
from theory.onestep import (
    _acceptance,
    _pair,
    _rejection_law,
    _rejection_mass,
    _residual,
    _residual_chain,
    positive_part,
    safe_ratio,
)
from theory.verification import checked_verification

__all__ = [
    "Algorithm",
    "Autoregressive",
    "BatchSpeculative",
    "BlockSpeculative",
    "Branch",
    "LossySpeculative",
    "Speculative",
    "TruncatedSpeculative",
    "TypicalAcceptance",
    "UnbiasedSpeculative",
]


class Branch(NamedTuple):
    """One way a position can unfold.

    ``weights[s, x]`` is the probability, in context s and round state ``source``, of emitting
    token x through this branch; the round state becomes ``destination``.  ``rejected`` marks
    branches that count as a rejection (N_rej).
    """

    source: int
    destination: int
    rejected: bool
    weights: np.ndarray


class Algorithm(abc.ABC):
    """Base class: a decoding algorithm specified by its per-position branches."""

    #: Whether the algorithm reads the draft model at all.
    uses_draft: bool = True
    #: Whether its branches depend on the position itself, not only on the rows (p, q) there
    #: (e.g. :class:`theory.WindowPolicy`); the DPs then never share positions.
    position_dependent: bool = False
    #: Whether the law of a position depends only on (n, s, round state) (see the module
    #: docstring).  Algorithms that are not (:class:`BlockSpeculative`) are computed round by
    #: round (:mod:`theory.block`).
    position_synchronous: bool = True

    @abc.abstractmethod
    def n_round_states(self) -> int:
        """Number of round states (state 0 = a round, i.e. a target call, starts here)."""

    @abc.abstractmethod
    def branches(self, p: np.ndarray, q: np.ndarray) -> list[Branch]:
        """The branches at one position for draft rows ``p`` and target rows ``q`` (S, V)."""

    def branches_at(self, position: int, p: np.ndarray, q: np.ndarray) -> list[Branch]:
        """The branches at ``position``: :meth:`branches` unless the algorithm depends on it."""
        return self.branches(p, q)

    def check_models(self, draft, target) -> None:
        """Raise ``ValueError`` if the algorithm cannot run on these models (default: it can)."""
        return None

    def draft_lengths(self, horizon: int, n_contexts: int) -> np.ndarray:
        """Tokens drafted by a round that starts at position n in context s, shape (T, S).

        min(window, T − n) (T − n without a window; 0 when the draft is never read): the
        draft cost of :func:`theory.expected_walltime`.
        """
        remaining = horizon - np.arange(horizon)
        window = getattr(self, "window", None)
        if not self.uses_draft:
            remaining = 0 * remaining
        elif window is not None:
            remaining = np.minimum(window, remaining)
        return np.repeat(remaining[:, None], n_contexts, axis=1)

    def check_cost(self, draft, target, consumer: str) -> None:
        """Raise ``ValueError`` when running on this pair would be absurdly large.

        Called once per problem by the exact DP (``consumer='dp'``) and by the engines'
        table builder (``consumer='engine'``); the default accepts everything.
        """
        return None


@dataclass(frozen=True)
class Autoregressive(Algorithm):
    """Plain sampling from the target: T target calls, no rejections.

    Examples
    --------
    >>> import numpy as np
    >>> from theory import MarkovLM, Autoregressive, expected_target_calls
    >>> lm = MarkovLM(np.full((4, 2, 2), 0.5))
    >>> float(expected_target_calls(lm, lm, Autoregressive()))
    4.0
    """

    uses_draft = False

    def n_round_states(self) -> int:
        return 1

    def branches(self, p, q):
        return [Branch(0, 0, False, np.asarray(q))]


@dataclass(frozen=True)
class Speculative(Algorithm):
    r"""Speculative decoding, the paper's Algorithm 1 (rejection sampling).

    A round drafts tokens from p (to the horizon when ``window=None``, the paper's K = ∞; else
    ``window`` tokens) and verifies them in order: x̃ is accepted with probability
    b(x̃) = min(1, q(x̃)/p(x̃)); at the first failure the token is drawn from
    [q − p]₊ / Σ[q − p]₊ and the round ends.  With a finite window and all drafts accepted,
    ``bonus=True`` draws one more token straight from q (no test) before the round ends.

    One target call happens at the start of every round.  The output law is exactly q
    (Theorem 1) and E[N_rej] = Σₙ E_{x₁:ₙ₋₁∼q}[TV(pₙ, qₙ)] for any window without bonus; a bonus
    token is never a rejection.

    Parameters
    ----------
    window : int >= 1 or None
        Draft tokens per round (γ in Leviathan et al.); None drafts to the horizon.
    bonus : bool
        Whether a round whose drafts were all accepted emits one extra token from q.

    Examples
    --------
    >>> import numpy as np
    >>> from theory import MarkovLM, Speculative, expected_rejections, tv_distance
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 3, next_context=[[0, 0]])
    >>> round(float(expected_rejections(p, q, Speculative())), 12)  # 3 × TV = 3 × 0.4
    1.2
    """

    window: int | None = None
    bonus: bool = True

    def __post_init__(self):
        if self.window is not None:
            if not isinstance(self.window, numbers.Integral) or isinstance(self.window, bool):
                raise TypeError(f"window must be a positive integer or None; got {self.window!r}")
            if self.window < 1:
                raise ValueError(f"window must be >= 1 or None; got {self.window}")
            object.__setattr__(self, "window", int(self.window))
        if not isinstance(self.bonus, (bool, np.bool_)):
            raise TypeError(f"bonus must be a bool; got {self.bonus!r}")

    # -- the verification rule: what the engines read -----------------------------------
    def verification(self, p, q) -> tuple[np.ndarray, np.ndarray]:
        """(acceptance b, rejection law 𝒫) for rows p, q; both shaped like p.

        Standard rule: b = min(1, q/p) and 𝒫 = [q − p]₊ normalized.
        """
        return _acceptance(p, q), _residual(p, q)

    def bonus_law(self, q) -> np.ndarray:
        """The law of the bonus token (finite window, every draft accepted): q by default.

        The one hook every engine reads for the bonus position (the DPs through
        :meth:`branches`, the reference routine, the sampling tables of :mod:`sim.engine`);
        :class:`TruncatedSpeculative` draws it from its truncated target instead.
        """
        return np.asarray(q)

    # -- round structure ----------------------------------------------------------------
    @property
    def has_bonus_state(self) -> bool:
        return self.window is not None and self.bonus

    @property
    def bonus_state(self) -> int | None:
        """The round state of the bonus position (None without one)."""
        return self.window if self.has_bonus_state else None

    def round_start_states(self) -> np.ndarray | None:
        """The state each (position, context) puts a starting round in, (T, S); None when a
        round always starts in state 0 (only :class:`theory.WindowPolicy` varies it)."""
        return None

    def n_round_states(self) -> int:
        if self.window is None:
            return 2
        return self.window + (1 if self.bonus else 0)

    def after_accept(self, state: int) -> int:
        """Round state after an accepted draft in state ``state``."""
        if self.window is None:
            return 1
        following = state + 1
        if following == self.window and not self.bonus:
            return 0
        return following

    def branches(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        accept, law = checked_verification(self, p, q)  # the DP adds the position to errors
        accepted = accept * p
        rejected = _rejection_mass(p, accept)[..., None] * law
        tested_states = range(2) if self.window is None else range(self.window)
        out = []
        for state in tested_states:
            out.append(Branch(state, self.after_accept(state), False, accepted))
            out.append(Branch(state, 0, True, rejected))
        if self.has_bonus_state:
            out.append(Branch(self.window, 0, False, self.bonus_law(q)))
        return out


_REJECTION_RULES = ("opt", "target")


@dataclass(frozen=True, init=False, repr=False)
class LossySpeculative(Speculative):
    r"""Lossy speculative decoding by over-acceptance (the paper's §4), drafting to the horizon.

    A draft x̃ ∼ p is accepted with probability b(x̃) = min(1, (q(x̃) + ε)/p(x̃)) ≥ min(1, q/p);
    on rejection the token is drawn from

    * ``rejection="opt"`` (Decoding-OPT): 𝒫* = [q − b p]₊ / Σ[q − b p]₊, the canonical member
      of Theorem 4's optimal set, which minimizes TV(output, q) for this b;
    * ``rejection="target"`` (Decoding-UNO): q itself.

    Biased for ε > 0: the emitted tokens follow :func:`theory.output_model`, not q.  ε = ∞
    accepts every draft (the emitted law is p).  ε = 0 is ``Speculative()`` for
    ``rejection="opt"`` **only**: Decoding-UNO (𝒫 = q) is lossy already at ε = 0, since it
    emits o = min(p, q) + TV(p, q)·q ≠ q whenever 0 < TV(p, q) < 1 (its per-position TV
    loss at ε = 0, averaged along its output chain (:func:`theory.lossy.chain_tradeoff`), is
    0.131 on the Fig. 2 chains of :func:`sim.models.fig2_pair` and 0.150 on their Dirichlet
    stand-in, ``instance="dirichlet"``).  The two
    rules' trade-off curves therefore start at different points: OPT on the Pareto line at
    (TV, 0), UNO above it.

    Note: under over-acceptance q − b p = −ε < 0 wherever b < 1, so 𝒫* is the lossless
    residual [q − p]₊ restricted to {b = 1} ⊇ {q ≥ p} — that is, [q − p]₊ itself: Decoding-OPT
    only changes the acceptance rule, never the rejection law.

    Examples
    --------
    >>> from theory import LossySpeculative
    >>> b, law = LossySpeculative(0.1).verification([0.5, 0.5], [0.9, 0.1])
    >>> b.round(3).tolist(), law.round(3).tolist()
    ([1.0, 0.4], [1.0, 0.0])
    """

    eps: float = 0.0
    rejection: str = "opt"

    def __init__(self, eps, rejection: str = "opt"):
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or math.isnan(eps) \
                or eps < 0:
            raise ValueError(f"eps must be a real number >= 0 (inf allowed); got {eps!r}")
        if rejection not in _REJECTION_RULES:
            raise ValueError(f"rejection must be one of {_REJECTION_RULES}; got {rejection!r}")
        object.__setattr__(self, "window", None)
        object.__setattr__(self, "bonus", True)
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "rejection", rejection)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps!r}, rejection={self.rejection!r})"

    def verification(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        if math.isinf(self.eps):
            accept = np.ones_like(p)
        else:
            accept = np.where(p == 0, 1, np.minimum(1, safe_ratio(q + self.eps, p)))
            if self.eps == 0:  # exactly the standard rule (incl. its p = q convention)
                accept = _acceptance(p, q)
        if self.rejection == "target":
            return accept, q
        # 𝒫* ∝ [q − b p]₊, which is [q − p]₊ where b = 1 and exactly 0 where
        # b = (q + ε)/p < 1 (there q − b p = −ε): written so, no rounding residue survives
        # and ε = 0 gives the speculative residual exactly.
        gap = np.where(accept >= 1, positive_part(q - p), 0 * p)
        return accept, safe_ratio(gap, gap.sum(axis=-1, keepdims=True))


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
    """Theorem 4's canonical optimal law 𝒫* = [q − b p]₊ / Σ[q − b p]₊ (zeros where no gap)."""
    gap = positive_part(q - accept * p)
    return safe_ratio(gap, gap.sum(axis=-1, keepdims=True))


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
    >>> from theory.algorithms import typical_cutoff
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
    >>> from theory.algorithms import truncate
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


def _scaled_standard_acceptance(p, q, *, factor):
    return factor * _acceptance(p, q)


@dataclass(frozen=True)
class UnbiasedSpeculative(Speculative):
    r"""A member of the paper's class ℱ of unbiased rejection-based verifiers (Corollary 1).

    Acceptance b = ``acceptance(p, q)`` with 0 ≤ b ≤ min(1, q/p), and on rejection the token is
    drawn from 𝒫 = (q − b p) / Σ_y (1 − b(y)) p(y).  Every member emits exactly the law q;
    Theorem 2 says none rejects less often than ``Speculative()`` (b = min(1, q/p)).

    Parameters
    ----------
    acceptance : callable (p, q) -> b
        Acts on the last axis and broadcasts, like :func:`theory.onestep.acceptance_probability`.
    window, bonus :
        As for :class:`Speculative`.

    Examples
    --------
    >>> from theory import UnbiasedSpeculative
    >>> half = UnbiasedSpeculative.scaled(0.5)  # b = ½ min(1, q/p)
    >>> b, law = half.verification([0.5, 0.5], [0.9, 0.1])
    >>> b.tolist(), law.round(4).tolist()  # law = (q − b p) / 0.7
    ([0.5, 0.1], [0.9286, 0.0714])
    """

    acceptance: Callable = field(default=_acceptance, kw_only=True)

    @classmethod
    def scaled(cls, factor, *, window=None, bonus=True) -> UnbiasedSpeculative:
        """The member with b = factor · min(1, q/p), 0 ≤ factor ≤ 1."""
        if not isinstance(factor, numbers.Real) or not 0 <= factor <= 1:
            raise ValueError(f"factor must be a real number in [0, 1]; got {factor!r}")
        rule = functools.partial(_scaled_standard_acceptance, factor=factor)
        return cls(window=window, bonus=bonus, acceptance=rule)

    def verification(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        accept = np.asarray(self.acceptance(p, q))
        if accept.shape != p.shape:
            raise ValueError(
                f"acceptance(p, q) must have the shape of p, {p.shape}; got {accept.shape}"
            )
        ceiling = _acceptance(p, q)
        slack = 0 if accept.dtype == object else 1e-12
        bad = np.argwhere((accept < 0) | (accept > ceiling + slack))
        if bad.size:
            where = tuple(bad[0])
            raise ValueError(
                f"acceptance(p, q){list(where)} = {accept[where]!r} is outside "
                f"[0, min(1, q/p)] = [0, {ceiling[where]!r}]; such a verifier is biased"
            )
        accept = np.minimum(accept, ceiling) if accept.dtype != object else accept
        return accept, _rejection_law(p, q, accept)


_VERIFIERS = ("paper", "trie", *ROOT_VERIFIERS)


@dataclass(frozen=True)
class BatchSpeculative(Algorithm):
    r"""Batch speculative decoding with M i.i.d. drafts (the paper's Algorithm 4, and a trie).

    Every round drafts M independent continuations from p (to the horizon).  Candidate drafts
    at a position are tried in draft order against the recursive residuals q¹ = q,
    q^{m+1} = [q^m − p]₊ / Σ[q^m − p]₊ (:func:`theory.onestep.residual_chain`): draft m is
    accepted with probability min(1, q^m(x̃_m)/p(x̃_m)).  If all k candidates fail, the token is
    drawn from q^{k+1}, the position is a rejection and a new round (M fresh drafts) starts.

    * ``verifier="paper"`` (Algorithm 4): all M drafts are candidates at the round's first
      (root) position; the accepted draft is then followed alone, standard speculative
      sampling against q, until its first rejection (drawn from [q − p]₊).
    * ``verifier="trie"`` (our extension, SpecInfer-style, with replacement): at every
      position, every draft whose prefix equals the accepted prefix is a candidate; after
      accepting x, the candidates whose token here is x stay candidates.  Never worse than
      ``"paper"``.

    * ``verifier`` in ``("swor", "spectr", "greedy", "topk", "optimal")``: the root tries the
      M drafts with that verifier's rule (:mod:`theory.multidraft`: recursive rejection
      sampling without replacement, SpecTr's K-SEQ, Hu et al.'s greedy drafts, top-k point
      drafts, a verifier attaining α*); an emitted drafted token accepts and the round follows
      that draft alone like ``"paper"``.  Only the verifier's root law (a, r) enters the DPs:
      branches (0 → 1, a), (0 → 0 rejected, r) and standard SD in state 1.

    All emit exactly the law q.  Round states: 0 = a round starts (M candidates); k ≥ 1 =
    k live candidates continue (``"paper"`` uses only k = 1).  Given k live candidates
    sharing a prefix, their next tokens are i.i.d. p, so acceptance at candidate i with token x
    has weight (Π_{j<i} r_j) min(p, q^i)(x), r_j = TV(q^j, p), and the number of later
    candidates with token x is Binomial(k − i, p(x)).  The trie's M(M + 1)/2 branch weights
    (k live candidates, j of the later ones drafted x too) follow from Pascal's rule for that
    binomial, in M stacked array steps rather than a triple sum (:func:`_trie_stay_weights`).

    Parameters
    ----------
    n_drafts : int >= 1
        M.  ``n_drafts=1`` is ``Speculative()`` (except for "topk", whose one draft is the
        most probable token, and "spectr"/"optimal", equal to it up to rounding).
    verifier : {'paper', 'trie', 'swor', 'spectr', 'greedy', 'topk', 'optimal'}

    Raises
    ------
    ValueError
        From the DP or an engine (:meth:`check_cost`) when the estimated tables exceed
        :attr:`max_table_bytes`, or from the DP when its estimated run time exceeds
        :attr:`max_dp_seconds`; the message names M, the estimate and the limit.

    Notes
    -----
    **Cost in M.**  The engines' tables hold, per row (position, context) and token, one
    acceptance and one residual alias entry for each of the M candidates — about
    112 · (M + 1) · rows · V bytes while they are built (rows = T·S, or S for time-homogeneous
    models), so memory and set-up time grow linearly in M (Fig. 2's chains: ≈ 270 MB and 2 s at
    M = 1000).  The DP of ``"paper"`` costs O(T · M) small array operations (≈ 7 s at M = 1000
    on Fig. 2) and little memory; the trie's DP has M(M + 1)/2 branches per position, so
    O(T · M²) operations and ≈ 16 · M(M + 1)/2 · S · (T·S + V) bytes (≈ 1 GB at M = 200).
    E[N_rej] changes little beyond a few dozen drafts, and
    :func:`theory.batch_rejection_limit` gives M → ∞ exactly, so problems whose estimate
    exceeds :attr:`max_table_bytes` (1 GiB) are refused with a clear message; assign a larger
    ``BatchSpeculative.max_table_bytes`` to run them anyway.  The DP's time, which the tables
    do not bound for ``"paper"`` (M = 10⁵ on Fig. 2: 160 MB, but about 6 minutes), is
    estimated too (:meth:`dp_seconds`) and refused above :attr:`max_dp_seconds` (two minutes).

    Examples
    --------
    >>> from sim.models import fig2_pair
    >>> from theory import BatchSpeculative, expected_rejections
    >>> draft, target = fig2_pair()
    >>> paper = expected_rejections(draft, target, BatchSpeculative(4))
    >>> trie = expected_rejections(draft, target, BatchSpeculative(4, "trie"))
    >>> bool(trie <= paper < expected_rejections(draft, target, BatchSpeculative(1)))
    True
    """

    n_drafts: int = 2
    verifier: str = "paper"

    #: Refuse problems whose tables are estimated above this many bytes (a class attribute:
    #: assign ``BatchSpeculative.max_table_bytes`` to change it).
    max_table_bytes: ClassVar[int] = 1 << 30

    #: Refuse exact DPs whose run time (:meth:`dp_seconds`) is estimated above this many
    #: seconds (a class attribute: assign ``BatchSpeculative.max_dp_seconds`` to change it).
    max_dp_seconds: ClassVar[float] = 120.0

    def __post_init__(self):
        if not isinstance(self.n_drafts, numbers.Integral) or isinstance(self.n_drafts, bool):
            raise TypeError(f"n_drafts must be a positive integer; got {self.n_drafts!r}")
        if self.n_drafts < 1:
            raise ValueError(f"n_drafts must be >= 1; got {self.n_drafts}")
        object.__setattr__(self, "n_drafts", int(self.n_drafts))
        if self.verifier not in _VERIFIERS:
            raise ValueError(f"verifier must be one of {_VERIFIERS}; got {self.verifier!r}")

    def n_round_states(self) -> int:
        return self.n_drafts + 1 if self.verifier == "trie" else 2

    def root_law(self, p, q):
        """(a, r) of a root verifier: P(root emits x and accepts / rejects), shaped like p.

        Only for the verifiers of :mod:`theory.multidraft` (not "paper" or "trie").
        """
        return root_law(self.verifier, p, q, self.n_drafts)

    def table_bytes(self, draft, target, consumer: str) -> int:
        """Estimated peak bytes of the tables ``consumer`` ('dp' or 'engine') builds (Notes)."""
        m = self.n_drafts
        homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
        rows = (1 if homogeneous else target.horizon) * target.n_contexts
        contexts, vocab = target.n_contexts, target.vocab_size
        if consumer == "engine":
            return 112 * (m + 1) * rows * vocab
        if self.verifier == "trie":
            return 16 * (m * (m + 1) // 2) * contexts * (rows + vocab)
        return 32 * (m + 1) * contexts * vocab + 32 * rows * contexts

    def dp_seconds(self, draft, target) -> float:
        """A rough estimate of the exact DP's run time on one core (seconds).

        Parameters
        ----------
        draft, target : MarkovLM
            The model pair.

        Returns
        -------
        float
            Seconds; 0 for the root verifiers (their DP is that of ``Speculative``).

        Notes
        -----
        The DP builds, at each of T' positions (T' = 1 for time-homogeneous models, else T),
        M candidate steps (``"paper"``) or M(M + 1)/2 branches (``"trie"``), each ≈ 80 µs
        (paper) or 15 µs (trie) plus 8 ns per entry of its (S, S + V) arrays; the trie then
        applies its branches at each of the T positions (≈ 2 µs each).  Calibrated on
        Fig. 2's chains, hidden-context and random pairs up to V = 300: measured times lay
        between a third of the estimate and 1.5 times it.

        Examples
        --------
        >>> from sim.models import fig2_pair
        >>> from theory import BatchSpeculative
        >>> round(BatchSpeculative(200, "trie").dp_seconds(*fig2_pair()))
        18
        """
        if self.verifier not in ("paper", "trie"):
            return 0.0
        m, contexts = self.n_drafts, target.n_contexts
        homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
        built_at = 1 if homogeneous else target.horizon
        cells = contexts * (contexts + target.vocab_size)
        if self.verifier == "trie":
            return m * (m + 1) / 2 * (built_at * (15e-6 + 8e-9 * cells) + target.horizon * 2e-6)
        return m * built_at * (80e-6 + 8e-9 * cells)

    def check_cost(self, draft, target, consumer: str) -> None:
        estimate, limit = self.table_bytes(draft, target, consumer), type(self).max_table_bytes
        problem = (f"{self!r} with n_drafts = {self.n_drafts} on T = {target.horizon}, "
                   f"S = {target.n_contexts}, V = {target.vocab_size}")
        advice = ("E[N_rej] changes little past a few dozen drafts and "
                  "theory.batch_rejection_limit gives M -> infinity exactly")
        if estimate > limit:
            what = "the exact DP" if consumer == "dp" else "the engine"
            raise ValueError(
                f"{problem}: {what} would need about {estimate / 1e9:.3g} GB of tables, above "
                f"BatchSpeculative.max_table_bytes = {limit / 1e9:.3g} GB; {advice} (to run "
                f"anyway, assign a larger BatchSpeculative.max_table_bytes)")
        seconds, limit = self.dp_seconds(draft, target), type(self).max_dp_seconds
        if consumer == "dp" and seconds > limit:
            raise ValueError(
                f"{problem}: the exact DP would take about {seconds:.3g} s (estimate), above "
                f"BatchSpeculative.max_dp_seconds = {limit:.3g} s; {advice} (to run anyway, "
                f"assign a larger BatchSpeculative.max_dp_seconds)")

    def next_residual(self, p, residual):
        """The law candidate m + 1 is tested against after candidate m failed: [q^m − p]₊."""
        return _residual(p, residual)

    def residuals(self, p, q):
        """(q¹ … q^{M+1}, r₁ … r_M) for rows p, q: :func:`theory.onestep.residual_chain`."""
        return _residual_chain(p, q, self.n_drafts, step=self.next_residual)

    def live_drafts(self, state: int) -> int:
        """Number of candidate drafts in round state ``state``."""
        return self.n_drafts if state == 0 else state

    def branches(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        if self.verifier in ROOT_VERIFIERS:  # root law, then standard SD on the winner
            accepted, rejected = self.root_law(p, q)
            following = [b for b in Speculative().branches(p, q) if b.source == 1]
            return [Branch(0, 1, False, accepted), Branch(0, 0, True, rejected), *following]
        residuals, failures = self.residuals(p, q)
        reach = [1]  # P(the first i − 1 candidates failed) = Π_{j<i} r_j
        for failure in failures:
            reach.append(reach[-1] * failure)
        # candidate i is reached, drafts x and accepts it: (Π_{j<i} r_j) p(x) min(1, q^i(x)/p(x))
        accept_at = [np.asarray(reach[i])[..., None] * _acceptance(p, residuals[i]) * p
                     for i in range(self.n_drafts)]

        def rejected(k):  # all k candidates failed: token from q^{k+1} (normalized)
            law = residuals[k]
            return reach[k][..., None] * safe_ratio(law, law.sum(axis=-1, keepdims=True))

        if self.verifier == "paper":
            return [Branch(0, 1, False, sum(accept_at)),
                    Branch(0, 0, True, rejected(self.n_drafts)),
                    Branch(1, 1, False, accept_at[0]), Branch(1, 0, True, rejected(1))]
        stay_weights = _trie_stay_weights(accept_at, p)  # O(M) steps, see its Notes
        all_failed = {k: rejected(k) for k in range(1, self.n_drafts + 1)}
        out = []
        for state in range(self.n_round_states()):
            k = self.live_drafts(state)
            # stay = candidates left after accepting x (incl. the winner): stay − 1 of the
            # later ones drafted x too
            out.extend(Branch(state, stay, False, stay_weights[k][stay - 1])
                       for stay in range(1, k + 1))
            out.append(Branch(state, 0, True, all_failed[k]))
        return out


def _trie_stay_weights(accept_at, p):
    r"""Trie branch weights W_{k,j} for k = 1 … M live candidates and j = 0 … k − 1 (internal).

    ``W[k][j]`` (shaped like ``p``) is the probability, with k live candidates, that some
    candidate i accepts token x (weight ``accept_at[i]``) and exactly j of the k − 1 − i later
    candidates drafted x too, so that j + 1 candidates stay live:

    .. math::  W_{k,j} = \sum_{i=0}^{k-1-j} a_i\, \binom{k-1-i}{j}\, p^j (1 - p)^{k-1-i-j}
               = \sum_{i=0}^{k-1} a_i\, β_{k-1-i}(j),

    with :math:`β_n(j)` the Binomial(n, p) pmf (zero for j > n).

    Parameters
    ----------
    accept_at : list of M arrays shaped like p
        a_i = r₁ ⋯ r_i · min(p, q^{i+1}) (0-based i): candidate i + 1 is reached, accepts x.
    p : ndarray
        The draft rows (float64, or object arrays of Fractions).

    Returns
    -------
    list of M + 1 arrays
        ``W[k]`` has shape (k, *p.shape) and holds W_{k,0} … W_{k,k−1}; ``W[0]`` is empty.

    Notes
    -----
    Pascal's rule for the binomial pmf (is the newest of n + 1 draws x or not?),
    :math:`β_{n+1}(j) = (1 - p)\, β_n(j) + p\, β_n(j - 1)` with :math:`β_0(j) = [j = 0]`,
    carries over term by term to the sums over i (the new term i = k has n = 0):

    .. math::  W_{1,0} = a_0,\qquad W_{k+1,j} = (1 - p)\, W_{k,j} + p\, W_{k,j-1}
               + [j = 0]\, a_k\qquad (0 ≤ j ≤ k),

    with :math:`W_{k,-1} = W_{k,k} = 0`.  Each step acts on the stacked (k, …) array at once,
    so the M steps cost O(M) array operations and O(M² · S · V) arithmetic; the direct sum
    costs O(M³) array operations.  Only sums and products of the inputs appear, so Fraction
    inputs give exactly the values of the direct sum.
    """
    stays, first = 1 - p, np.asarray(accept_at[0])
    weights = [first[:0], first[None]]
    for k in range(1, len(accept_at)):
        previous = weights[k]
        kept, moved = stays * previous, p * previous  # later candidate: another token / x
        weights.append(np.concatenate([kept[:1] + accept_at[k], kept[1:] + moved[:-1],
                                       moved[-1:]]))
    return weights


_BLOCK_SELECTION = "block"


@dataclass(frozen=True)
class BlockSpeculative(Algorithm):
    r"""Block verification (Sun, Mendlovic, Leviathan, Aharoni, Ro, Beirami, Suresh, ICLR 2025).

    A round starting at position n in context s drafts γ' = min(γ, T − n) tokens
    X₁ … X_γ' from p (p = draft, q = target) and verifies them *jointly* (Sun et al.,
    arXiv:2403.10444, Algorithm 2).  With

    .. math::  π_0 = 1,\quad π_i = \min\Big(1, π_{i-1}\,
               \frac{q(X_i \mid X_{<i})}{p(X_i \mid X_{<i})}\Big),\qquad
               r_i = \sum_x \big[π_i\, q(x \mid X_{\le i}) - p(x \mid X_{\le i})\big]_+,

    :math:`h_i = r_i / (r_i + 1 - π_i)` for 1 ≤ i < γ' (h_i = 1 when the denominator is 0) and
    :math:`h_{γ'} = π_{γ'}`, independent η_i ∼ U(0, 1) give
    τ = max{i ≥ 1 : η_i ≤ h_i} (0 if none).  The round emits X₁ … X_τ and then one token Y:

    * τ < γ': Y ∼ [π_τ q(·|X≤τ) − p(·|X≤τ)]₊ / r_τ — the round ends in a *rejection*
      (one per round, the convention of ``Speculative``'s N_rej);
    * τ = γ', ``bonus=True`` and a position remains (n + γ' < T): Y ∼ q(·|X≤γ'), no rejection;
    * τ = γ' otherwise (horizon reached, or ``bonus=False``): no Y.

    One target call per round.  The output law is exactly q, and the expected number of
    accepted drafts per round is the largest among verifiers of a single drafted block (Sun
    et al., Theorems 1–2); ``window=1`` is ``Speculative(window=1)`` exactly.

    Conventions.  A residual with r_τ = 0 is reached with probability 0: if r_i = 0 and
    π_i < 1 then h_i = 0; if r_i = 0 and π_i = 1 then q = p in that context, so π_{i+1} = 1
    and h_{i+1} = 1, which rules out τ = i (for i = 0 too: π₀ = 1).  The exact code skips such
    zero-mass outcomes; the engines' float guard is described in :mod:`sim.kernels`.

    Block verification is not position-synchronous (τ depends on the whole block), so it has
    no per-position :meth:`branches`: :mod:`theory.block` computes the law of a round and a
    dynamic program over rounds, to which :func:`theory.expected_target_calls` and the other
    exact functions dispatch.

    Parameters
    ----------
    window : int >= 1
        γ, draft tokens per round (required: a block needs a length).
    bonus : bool
        Whether a round whose whole block is accepted emits Y ∼ q (when a position remains).

    Examples
    --------
    The paper's toy (Sun et al., §3): q = (1/3, 2/3), p = (2/3, 1/3), γ = 2; expected accepted
    drafts per round are 10/9 token-wise and 11/9 block-wise.

    >>> from fractions import Fraction as F
    >>> import numpy as np
    >>> from theory import BlockSpeculative, MarkovLM, Speculative, round_length_pmf
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 3, next_context=[[0, 0]])
    >>> [str(np.arange(4) @ round_length_pmf(p, q, a) - 1)
    ...  for a in (Speculative(window=2), BlockSpeculative(2))]
    ['10/9', '11/9']
    """

    window: int
    bonus: bool = True

    position_synchronous = False
    #: How τ is selected from (η, h); only "block" is correct.  The negative controls of the
    #: test suite (known-wrong rules that implementations have shipped) override it.
    selection = _BLOCK_SELECTION

    def __post_init__(self):
        if not isinstance(self.window, numbers.Integral) or isinstance(self.window, bool):
            raise TypeError(f"window must be a positive integer; got {self.window!r}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1; got {self.window}")
        object.__setattr__(self, "window", int(self.window))
        if not isinstance(self.bonus, (bool, np.bool_)):
            raise TypeError(f"bonus must be a bool; got {self.bonus!r}")

    def n_round_states(self) -> int:
        return 1

    def branches(self, p, q):
        raise TypeError(
            "BlockSpeculative is not position-synchronous and has no per-position branches; "
            "its exact laws are computed round by round (theory.block)"
        )
