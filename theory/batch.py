r"""Batch (multi-draft) speculative decoding: Theorem 3, Proposition 1, the optimal verifier.

**One position.**  With M i.i.d. drafts tried against the recursive residuals
q¹ = q, q^{m+1} = [q^m − p]₊ / Σ[q^m − p]₊ (:func:`theory.onestep.residual_chain`), all M fail
with probability Π_{m=1}^{M} TV(q^m, p), so the *batch improvement* over one draft is

.. math::  \mathrm{BI}(p, q, M) = \mathrm{TV}(p, q) - \prod_{m=1}^{M} \mathrm{TV}(q^m, p).

The paper's closed forms (§3.2): for p = Ber(u), q = Ber(v), u ≥ v,
BI = |u − v|(1 − u^{M−1}); for p uniform on V tokens and q uniform on V/r of them,
BI = (1 − 1/r) − (1 − 1/r)^M.

**Theorem 3** (Algorithm 4, ``verifier="paper"``).  Only a round's first (root) position sees
the M drafts, so

.. math::  E[N_{rej}] = \sum_n E_q[\mathrm{TV}] - \sum_n \bar E_{f_n}\Big[\mathrm{TV}
           - \prod_{m \le M} \mathrm{TV}(q^m, p)\Big],

where f_n(s) is the probability that position n is a root in context s (n = 1 or the previous
position was rejected).  The paper's recursion (22):

.. math::  f_{n+1}(s') = \sum_{s, x:\ \mathrm{next}(s,x) = s'} f_n(s)\,\Big(\prod_m r_m\Big)
           q^{M+1}(x) + \big(μ^q_n(s) - f_n(s)\big)\,[q_n - p_n]_+(x),

since a root rejects into q^{M+1} and a non-root into [q − p]₊ (μ^q are the target's context
marginals: the output law is q).

**Proposition 1** (M → ∞).  The residual mass left after m failures on a token x with
p(x) > 0 shrinks by at least (Π_{j<m} r_j) p(x) per step, so Π_{m≤M} r_m → q(Z) with
Z = {x : p(x) = 0}: with infinitely many drafts a root fails only for tokens the draft cannot
produce, and then draws from q restricted to Z.  Hence

* ``"paper"``: the limit is Theorem 3 with Π r_m replaced by q(Z) and q^{M+1} by q·1_Z / q(Z) —
  positive in general (non-root positions still reject with probability TV);
* ``"trie"``: every position is a root with infinitely many candidates:
  lim E[N_rej] = Σₙ E_q[qₙ(Zₙ)], zero when the draft has full support.

**Optimal multi-draft verifier** (beyond the paper; Khisti et al. 2024, Hu et al. 2025).  Any
verifier that must output one of M i.i.d. drafts from p (or reject) while emitting exactly q
accepts with probability at most

.. math::  α^* = 1 + \min_{H \subseteq V} \big[q(H) - p(H)^M\big]

(if every draft lands in H, which has probability p(H)^M, an accepted output lies in H), and
α* is attained; the minimum is over prefixes of the tokens sorted by q/p, so it costs
O(V log V).  :func:`multidraft_acceptance_lp` checks it by a linear program over all couplings.
"""

from __future__ import annotations

import itertools
import numbers

import numpy as np

from theory._arrays import as_scalar, checked_pair, checked_unit_interval
from theory.algorithms import BatchSpeculative, Branch, Speculative
from theory.exact import expected_rejections
from theory.models import MarkovLM, check_compatible, context_transition
from theory.onestep import _tv_distance, positive_part

__all__ = [
    "batch_improvement",
    "batch_rejection_limit",
    "bernoulli_batch_improvement",
    "multidraft_acceptance_lp",
    "optimal_multidraft_acceptance",
    "root_acceptance",
    "root_theorem3_rejections",
    "theorem3_rejections",
    "uniform_subset_batch_improvement",
]


def _n_drafts(value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"n_drafts must be an integer >= 1; got {value!r}")
    return int(value)


def _all_fail(p, q, n_drafts):
    """(Π_{m≤M} r_m, Π_{m≤M} r_m · q^{M+1}): probability and token mass of M failures."""
    residuals, failures = BatchSpeculative(n_drafts).residuals(p, q)
    product = failures[0]
    for failure in failures[1:]:
        product = product * failure
    return product, np.asarray(product)[..., None] * residuals[-1]


def root_acceptance(p, q, algorithm):
    r"""P(the root's emitted token is one of the drafts') for a :class:`BatchSpeculative`.

    ``algorithm`` is a ``BatchSpeculative`` or an int M (meaning ``BatchSpeculative(M)``, the
    paper's Algorithm 4).  "paper" and "trie": 1 − Π_{m≤M} TV(q^m, p) (Theorem 3's root);
    the verifiers of :mod:`theory.multidraft`: Σ_x a(x) of their root law.  Leading axes of
    p, q broadcast; Fractions give exact results except for "spectr" (ρ* is found by
    bisection) and "optimal" (an LP).

    Parameters
    ----------
    p, q : array_like (..., V)
        Draft and target laws at the root (validated probability vectors).
    algorithm : BatchSpeculative or int
        The multi-draft verifier, or M for Algorithm 4.

    Returns
    -------
    float, Fraction or ndarray
        The root acceptance probability, one per leading index.

    Raises
    ------
    TypeError
        If ``algorithm`` is neither a ``BatchSpeculative`` nor an int.

    Examples
    --------
    >>> from theory import BatchSpeculative, root_acceptance
    >>> round(float(root_acceptance([0.5, 0.5], [0.9, 0.1], 2)), 12)  # 1 − 0.4 · 0.5
    0.8
    >>> round(float(root_acceptance([0.5, 0.5], [0.9, 0.1], BatchSpeculative(2, "topk"))), 12)
    1.0
    """
    p, q = checked_pair(p, q)
    if isinstance(algorithm, BatchSpeculative):
        if algorithm.verifier in ("paper", "trie"):
            return as_scalar(1 - _all_fail(p, q, algorithm.n_drafts)[0])
        p, q = np.broadcast_arrays(p, q)
        return as_scalar(algorithm.root_law(p, q)[0].sum(axis=-1))
    if isinstance(algorithm, numbers.Integral) and not isinstance(algorithm, bool):
        return as_scalar(1 - _all_fail(p, q, _n_drafts(algorithm))[0])
    raise TypeError(f"algorithm must be a BatchSpeculative or an int n_drafts >= 1; "
                    f"got {algorithm!r}")


def batch_improvement(p, q, n_drafts: int):
    r"""BI(p, q, M) = TV(p, q) − Π_{m=1}^{M} TV(q^m, p), the one-position gain of M drafts.

    Parameters
    ----------
    p, q : array_like
        Draft and target probability vectors along the last axis (leading axes broadcast);
        Fractions give exact results.
    n_drafts : int >= 1
        M, the number of i.i.d. drafts.

    Returns
    -------
    float, Fraction or ndarray
        TV(p, q) − r₁⋯r_M ≥ 0, with r_m = TV(q^m, p) along the residual chain.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory.batch import batch_improvement
    >>> str(batch_improvement([F(1, 2), F(1, 2)], [F(9, 10), F(1, 10)], 3))  # 2/5 (1 − 1/4)
    '3/10'
    """
    p, q = checked_pair(p, q)
    return as_scalar(_tv_distance(p, q) - _all_fail(p, q, _n_drafts(n_drafts))[0])


def bernoulli_batch_improvement(u, v, n_drafts: int):
    """The paper's closed form for p = Ber(u), q = Ber(v) with u ≥ v: |u − v|(1 − u^{M−1})."""
    checked_unit_interval("u", u)
    checked_unit_interval("v", v)
    if not u >= v:
        raise ValueError(f"the closed form needs u >= v; got u={u!r}, v={v!r}")
    return abs(u - v) * (1 - u ** (_n_drafts(n_drafts) - 1))


def uniform_subset_batch_improvement(ratio, n_drafts: int):
    """The paper's closed form, p uniform on V and q on V/r tokens: (1 − 1/r) − (1 − 1/r)^M."""
    if not ratio >= 1:
        raise ValueError(f"ratio r = V / V' must be >= 1; got {ratio!r}")
    distance = 1 - 1 / ratio
    return distance - distance ** _n_drafts(n_drafts)


def _root_rejection(p, q, n_drafts):
    """Rejection probability and token mass at a root with M (or, for None, ∞) drafts."""
    if n_drafts is not None:
        return _all_fail(p, q, n_drafts)
    unreachable = q * (p == 0)  # q restricted to Z = {p = 0}
    return unreachable.sum(axis=-1), unreachable


def theorem3_rejections(draft: MarkovLM, target: MarkovLM, n_drafts: int | None):
    r"""Theorem 3 in the paper's own form, with f from recursion (22) (module docstring).

    ``n_drafts=None`` gives Proposition 1's M → ∞ limit for the "paper" verifier.  Equal to
    ``expected_rejections(draft, target, BatchSpeculative(M))``.

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    n_drafts : int >= 1 or None
        M; None for the M → ∞ limit.

    Returns
    -------
    float or Fraction
        E[N_rej] of Algorithm 4 with M drafts.

    Examples
    --------
    >>> from sim.models import fig2_pair
    >>> from theory import BatchSpeculative, expected_rejections
    >>> from theory.batch import theorem3_rejections
    >>> draft, target = fig2_pair()
    >>> abs(theorem3_rejections(draft, target, 4)
    ...     - expected_rejections(draft, target, BatchSpeculative(4))) < 1e-12
    True
    """
    check_compatible(draft, target)
    if n_drafts is not None:
        n_drafts = _n_drafts(n_drafts)
    marginals = target.context_marginals()
    root = marginals[0]  # f_1 = μ_1: the first position is a root
    total = 0 * marginals[0, 0]
    for n in range(target.horizon):
        p, q = draft.probs[n], target.probs[n]
        distance = _tv_distance(p, q)
        fail, fail_mass = _root_rejection(p, q, n_drafts)
        total = total + (marginals[n] * distance).sum() - (root * (distance - fail)).sum()
        rejected = root[:, None] * fail_mass + (marginals[n] - root)[:, None] * \
            positive_part(q - p)
        root = _push(rejected, target)
    return as_scalar(total)


def root_theorem3_rejections(draft: MarkovLM, target: MarkovLM, algorithm: BatchSpeculative):
    r"""Theorem 3's form of E[N_rej] for any root verifier of :class:`BatchSpeculative`.

    A root (probability f_n(s) of being one, recursion (22)) rejects with Σ_x r(x) of the
    verifier's root law and a non-root with TV(p, q), so

    .. math::  E[N_{rej}] = \sum_n \sum_s \Big[f_n(s) \sum_x r_n(s, x)
               + (μ^q_n(s) - f_n(s))\,\mathrm{TV}(p_n(s), q_n(s))\Big],\qquad
               f_{n+1}(s') = \sum_{\mathrm{next}(s, x) = s'} f_n(s)\,r_n(s, x)
               + (μ^q_n(s) - f_n(s))\,[q_n - p_n]_+(x),

    valid for lossless verifiers (the context marginals are the target's).  ``"paper"`` is
    :func:`theorem3_rejections`.  Equal to ``expected_rejections(draft, target, algorithm)``.

    Examples
    --------
    >>> from sim.models import fig2_pair
    >>> from theory import BatchSpeculative, expected_rejections
    >>> from theory.batch import root_theorem3_rejections
    >>> draft, target = fig2_pair()
    >>> topk = BatchSpeculative(3, "topk")
    >>> abs(root_theorem3_rejections(draft, target, topk)
    ...     - expected_rejections(draft, target, topk)) < 1e-12
    True
    """
    check_compatible(draft, target)
    if not isinstance(algorithm, BatchSpeculative):
        raise TypeError(f"algorithm must be a BatchSpeculative; got {algorithm!r}")
    if algorithm.verifier in ("paper", "trie"):
        if algorithm.verifier == "trie":
            raise ValueError("the trie verifier has no root law: every position may branch")
        return theorem3_rejections(draft, target, algorithm.n_drafts)
    marginals = target.context_marginals()
    root = marginals[0]
    total = 0 * marginals[0, 0]
    for n in range(target.horizon):
        p, q = np.broadcast_arrays(draft.probs[n], target.probs[n])
        _, fail_mass = algorithm.root_law(p, q)
        distance = _tv_distance(p, q)
        total = total + (root * fail_mass.sum(axis=-1)).sum() + \
            ((marginals[n] - root) * distance).sum()
        rejected = root[:, None] * fail_mass + (marginals[n] - root)[:, None] * \
            positive_part(q - p)
        root = _push(rejected, target)
    return as_scalar(total)


def _push(mass: np.ndarray, target: MarkovLM) -> np.ndarray:
    """Σ_{s, x: next(s, x) = s'} mass[s, x] for every s'."""
    if target.is_first_order:
        return np.asarray(mass).sum(axis=0)
    return context_transition(mass, target.next_context).sum(axis=0)


class _PaperLimit(Speculative):
    """Algorithm 4 with M = ∞: branches of the root from Proposition 1 (internal)."""

    def n_round_states(self) -> int:
        return 2

    def branches(self, p, q):
        _, fail_mass = _root_rejection(np.asarray(p), np.asarray(q), None)
        reachable = np.asarray(q) - fail_mass
        standard = super().branches(p, q)  # states 0 and 1 of window=None
        following = [b for b in standard if b.source == 1]
        return [Branch(0, 1, False, reachable), Branch(0, 0, True, fail_mass), *following]


def batch_rejection_limit(draft: MarkovLM, target: MarkovLM, verifier: str = "paper"):
    r"""lim_{M→∞} E[N_rej] of ``BatchSpeculative(M, verifier)`` (Proposition 1).

    ``"paper"``: the exact DP of Algorithm 4 with the M = ∞ root (never rejects except into
    Z = {p = 0}); positive whenever non-root positions can reject.  ``"trie"``:
    Σₙ E_q[qₙ(Zₙ)], zero when the draft has full support.

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    verifier : {'paper', 'trie'}
        Algorithm 4 or the trie verifier of :class:`theory.BatchSpeculative`.

    Returns
    -------
    float or Fraction
        The limit of E[N_rej] as M → ∞.

    Raises
    ------
    ValueError
        If ``verifier`` is not one of the two, or the models are incompatible.

    Examples
    --------
    >>> from sim.models import fig2_pair
    >>> from theory import batch_rejection_limit
    >>> draft, target = fig2_pair()
    >>> batch_rejection_limit(draft, target, "trie")  # the draft has full support
    0.0
    >>> bool(batch_rejection_limit(draft, target, "paper") > 5)
    True
    """
    if verifier == "paper":
        return expected_rejections(draft, target, _PaperLimit())
    if verifier == "trie":
        check_compatible(draft, target)
        marginals = target.context_marginals()
        unreachable = (target.probs * (draft.probs == 0)).sum(axis=-1)  # q(Z), (T, S)
        return as_scalar((marginals * unreachable).sum())
    raise ValueError(f"verifier must be 'paper' or 'trie'; got {verifier!r}")


def optimal_multidraft_acceptance(p, q, n_drafts: int):
    r"""α* = 1 + min_H [q(H) − p(H)^M], the best acceptance of any verifier with M i.i.d. drafts.

    The minimum runs over prefixes of the tokens sorted by q/p ascending (O(V log V));
    leading axes broadcast.

    Parameters
    ----------
    p, q : array_like
        Draft and target probability vectors along the last axis (leading axes broadcast);
        Fractions give exact results.
    n_drafts : int >= 1
        M, the number of i.i.d. drafts.

    Returns
    -------
    float, Fraction or ndarray
        α* ∈ [1 − TV(p, q), 1], one value per row.

    Examples
    --------
    >>> from theory.batch import optimal_multidraft_acceptance
    >>> round(float(optimal_multidraft_acceptance([0.5, 0.5], [0.9, 0.1], 1)), 12)  # 1 − TV
    0.6
    >>> round(float(optimal_multidraft_acceptance([0.5, 0.5], [0.9, 0.1], 2)), 12)  # H = {1}
    0.85
    """
    n_drafts = _n_drafts(n_drafts)
    p, q = checked_pair(p, q)
    p, q = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(p > 0, q / np.where(p > 0, p, 1), np.inf)
    order = np.argsort(ratio, axis=-1, kind="stable")
    q_prefix = np.cumsum(np.take_along_axis(q, order, axis=-1), axis=-1)
    p_prefix = np.cumsum(np.take_along_axis(p, order, axis=-1), axis=-1)
    gap = np.minimum((q_prefix - p_prefix ** n_drafts).min(axis=-1), 0.0)  # H = ∅ gives 0
    return as_scalar(1.0 + gap)


def multidraft_acceptance_lp(p, q, n_drafts: int) -> float:
    r"""Brute-force check of α*: max P(output ∈ drafts) over all couplings, as an LP.

    Variables π(d₁…d_M, y) ≥ 0 with Σ_y π(d, y) = Π_i p(d_i) and Σ_d π(d, y) = q(y); maximize
    Σ_{d, y ∈ d} π(d, y).  Size V^M · V: for small V and M only.
    """
    n_drafts = _n_drafts(n_drafts)
    p, q = (np.asarray(a, dtype=np.float64) for a in checked_pair(p, q))
    if p.ndim != 1 or p.shape != q.shape:
        raise ValueError(f"p and q must be single vectors; got shapes {p.shape}, {q.shape}")
    vocab_size = p.size
    tuples = list(itertools.product(range(vocab_size), repeat=n_drafts))
    n_vars = len(tuples) * vocab_size
    objective = np.zeros(n_vars)
    rows, rhs = [], []
    for t, drafts in enumerate(tuples):
        row = np.zeros(n_vars)
        row[t * vocab_size:(t + 1) * vocab_size] = 1
        rows.append(row)
        rhs.append(np.prod(p[list(drafts)]))
        for y in set(drafts):
            objective[t * vocab_size + y] = -1
    for y in range(vocab_size):
        row = np.zeros(n_vars)
        row[y::vocab_size] = 1
        rows.append(row)
        rhs.append(q[y])
    from scipy.optimize import linprog  # scipy is imported only when an LP is solved

    solution = linprog(objective, A_eq=np.array(rows), b_eq=np.array(rhs),
                       bounds=(0, None), method="highs")
    if solution.status != 0:
        raise ValueError(f"the coupling LP could not be solved: {solution.message}")
    return float(-solution.fun)
