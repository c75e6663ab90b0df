r"""The token-wise family: :class:`Autoregressive`, :class:`Speculative` (the paper's
Algorithm 1) and :class:`UnbiasedSpeculative` (its class ℱ of unbiased verifiers).

All are position-level algorithms (:mod:`theory.algorithms`): a token-wise verifier is given
by one table, ``verification(p, q)`` = (acceptance b, rejection law 𝒫), from which its
per-position branches follow — accept with weight b·p, reject with weight ρ·𝒫,
ρ = Σ(1 − b)p.  The engines in :mod:`sim` read the same tables: the reference engine follows
the paper's pseudo-code literally; the vectorized engines read the per-position tables
returned by ``verification(p, q)``.

Standard speculative decoding (the paper's Algorithm 1, Leviathan et al. 2023), round states:

* ``window=None`` (the paper's K = ∞): 0 = round starts, 1 = inside a round.  Accept
  (weight b·p) → 1; reject (weight ρ·𝒫, ρ = Σ(1 − b)p) → 0.
* ``window=γ``: j = number of drafts accepted so far in the round (0 ≤ j < γ), and j = γ the
  bonus position when ``bonus=True``.  Accept at j → j + 1 (→ 0 when j + 1 = γ without bonus);
  reject → 0; the bonus position emits from ``bonus_law(q)`` (q itself, except for
  :class:`theory.TruncatedSpeculative`) with no test → 0.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from theory.algorithms import Algorithm, Branch
from theory.onestep import _acceptance, _rejection_law, _rejection_mass, _residual
from theory.verification import checked_verification

__all__ = ["Autoregressive", "Speculative", "UnbiasedSpeculative"]


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
        return [Branch(0, 0, False, np.asarray(q), from_target=True)]


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
        :class:`theory.TruncatedSpeculative` draws it from its truncated target instead.
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
            out.append(Branch(self.window, 0, False, self.bonus_law(q), from_target=True))
        return out



def _is_nan(value) -> bool:
    return value != value  # NaN is the one number unequal to itself


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
        # a NaN passes through untouched, to be refused by checked_verification as in float
        # tables (comparing it, even inside an exact table, only raises the invalid flag)
        with np.errstate(invalid="ignore"):
            nan = np.frompyfunc(_is_nan, 1, 1)(accept).astype(bool) \
                if accept.dtype == object else np.isnan(accept)
            bad = np.argwhere(~nan & ((accept < 0) | (accept > ceiling + slack)))
            if bad.size:
                where = tuple(bad[0])
                raise ValueError(
                    f"acceptance(p, q){list(where)} = {accept[where]!r} is outside "
                    f"[0, min(1, q/p)] = [0, {ceiling[where]!r}]; such a verifier is biased"
                )
            if accept.dtype != object:
                accept = np.where(nan, accept, np.minimum(accept, ceiling))
            if nan.any():
                return accept, _rejection_law(p, q, accept)
        return accept, _rejection_law(p, q, accept)

