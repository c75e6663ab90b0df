r"""Batch (multi-draft) speculative decoding: :class:`BatchSpeculative`, Theorem 3,
Proposition 1.

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

**The family.**  :class:`BatchSpeculative` (with its trie weights, :func:`_trie_stay_weights`)
is a position-level algorithm (:mod:`theory.algorithms`); the exact root laws of its root
verifiers ("swor", "spectr", …) and the optimal acceptance α*
(:func:`theory.multidraft.optimal_multidraft_acceptance`) are in :mod:`theory.multidraft`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from theory._arrays import as_scalar, checked_pair, checked_unit_interval
from theory.algorithms import Algorithm, Branch
from theory.exact import expected_rejections
from theory.models import MarkovLM, check_compatible, context_transition
from theory.multidraft import (
    ROOT_VERIFIERS,
    _n_drafts,
    multidraft_acceptance_lp,
    optimal_multidraft_acceptance,
    root_law,
)
from theory.onestep import (
    _acceptance,
    _residual,
    _residual_chain,
    _tv_distance,
    positive_part,
    safe_ratio,
)
from theory.speculative import Speculative

__all__ = [
    "BatchSpeculative",
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

