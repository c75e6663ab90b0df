r"""Theorem 2: no unbiased rejection-based verifier rejects less often than TV(p, q).

A rejection-based verifier at one position is an acceptance function b: V → [0, 1] and a
rejection law 𝒫.  Writing r(x) = ρ 𝒫(x) for the joint mass of "reject and output x"
(ρ = Σ(1 − b)p the rejection probability) makes the problem linear:

.. math::
    \min_{b, r}\ \sum_x (1 - b(x))\,p(x)\quad\text{s.t.}\quad
    b(x)p(x) + r(x) = q(x)\ \ (\text{unbiased}),\quad
    \sum_x r(x) = \sum_x (1 - b(x))p(x),\quad 0 \le b \le 1,\ r \ge 0.

Its optimum is TV(p, q), attained by b = min(1, q/p), r = [q − p]₊ — speculative sampling
(the paper's Theorem 2 with Corollary 1's class ℱ).  :func:`optimal_verifier_lp` solves this
LP with SciPy's HiGHS, so the bound is verified by optimization, not only restated;
:func:`optimal_rejections_lp` sums the per-(position, context) optima under the target's
context law, which is the sequence-level bound Σₙ E_q[TV] of Theorem 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory._arrays import checked_pair
from theory.models import MarkovLM, check_compatible

__all__ = ["VerifierLP", "optimal_rejections_lp", "optimal_verifier_lp"]


@dataclass(frozen=True)
class VerifierLP:
    """Solution of the one-position verifier LP."""

    rejection_probability: float
    acceptance: np.ndarray  # b, (V,)
    rejection_law: np.ndarray  # 𝒫 = r / Σ r, (V,) (zeros when the verifier never rejects)


def optimal_verifier_lp(p, q) -> VerifierLP:
    """Minimum rejection probability over all unbiased rejection-based verifiers (an LP).

    Examples
    --------
    >>> from theory.optimality import optimal_verifier_lp
    >>> round(optimal_verifier_lp([0.5, 0.5], [0.9, 0.1]).rejection_probability, 9)
    0.4
    """
    p, q = (np.asarray(a, dtype=np.float64) for a in checked_pair(p, q))
    if p.ndim != 1 or p.shape != q.shape:
        raise ValueError(f"p and q must be vectors of one shape; got {p.shape} and {q.shape}")
    vocab_size = p.size
    identity = np.eye(vocab_size)
    # variables: [b (V), r (V)]; objective Σ(1 − b)p = 1 − p·b
    objective = np.concatenate([-p, np.zeros(vocab_size)])
    unbiased = np.hstack([identity * p, identity])
    consistency = np.concatenate([p, np.ones(vocab_size)])[None, :]  # Σ r + Σ b p = Σ p
    from scipy.optimize import linprog  # scipy is imported only when an LP is solved

    solution = linprog(
        objective,
        A_eq=np.vstack([unbiased, consistency]),
        b_eq=np.concatenate([q, [p.sum()]]),
        bounds=[(0, 1)] * vocab_size + [(0, None)] * vocab_size,
        method="highs",
    )
    if solution.status != 0:
        raise ValueError(f"the verifier LP could not be solved: {solution.message}")
    acceptance = solution.x[:vocab_size]
    mass = np.maximum(solution.x[vocab_size:], 0.0)
    total = mass.sum()
    law = mass / total if total > 0 else np.zeros(vocab_size)
    return VerifierLP(float(p.sum() + solution.fun), acceptance, law)


def optimal_rejections_lp(draft: MarkovLM, target: MarkovLM) -> float:
    r"""Σₙ Σ_s μ^q_n(s) · LP(pₙ(·|s), qₙ(·|s)): the best E[N_rej] any unbiased verifier in ℱ
    can reach, solving one LP per (position, context) with positive target mass.

    Equals :func:`theory.theorem1_rejections` (Theorem 2).  Cost: T·S linear programs.
    """
    check_compatible(draft, target)
    marginals = np.asarray(target.context_marginals(), dtype=np.float64)
    total = 0.0
    for n in range(target.horizon):
        for s in np.flatnonzero(marginals[n] > 0):
            lp = optimal_verifier_lp(draft.probs[n, s].astype(float),
                                     target.probs[n, s].astype(float))
            total += marginals[n, s] * lp.rejection_probability
    return total
