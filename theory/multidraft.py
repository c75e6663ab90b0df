r"""Root laws of multi-draft verifiers at the root of Algorithm 4 (the multi-draft verifier
zoo), and the optimal root acceptance α* of any verifier with M i.i.d. drafts.

Every verifier here acts only at a round's *root* (round state 0) of
:class:`theory.BatchSpeculative`: it looks at M drafts of the root token and either emits one
of the drafts' root tokens (the round *accepts* and follows that draft alone with standard
speculative sampling, exactly like ``verifier="paper"``) or emits another token (a
*rejection*; a new round starts).  For the exact dynamic programs all that matters is the
verifier's **root law** per context row,

.. math::  a(x) = P(\text{root emits } x \text{ and accepts}),\qquad
           r(x) = P(\text{root emits } x \text{ and rejects}),

so that the root acceptance is α = Σ_x a(x), and the verifier is lossless at the root iff
a + r = q.  Each function below returns ``(a, r)`` for draft rows p and target rows q of
shape (..., V), vectorized over the leading axes; with ``fractions.Fraction`` rows the result
is exact except where a root is found numerically ("spectr": ρ* by float bisection) or an LP is
solved ("optimal").

Conventions (stated once, used by every verifier):

* a draft can only propose tokens with p(x) > 0: point drafts ("topk", "greedy") are chosen
  among such tokens, so there are fewer than M of them when p has fewer tokens with mass;
* ties in p are broken towards the lower token index ("topk", "greedy");
* "random" drafts are drawn from p (or the verifier's modification of it), i.i.d. for
  "spectr" and "optimal", without replacement for "swor".

Verifiers (p = draft, q = target at the root context):

``"swor"``
    Recursive rejection sampling without replacement (Jeon et al. 2024, arXiv:2402.14160):
    p¹ = p, q¹ = q; X_k ∼ p^k, accepted with min(1, q^k(X_k)/p^k(X_k)); else
    q^{k+1} = [q^k − p^k]₊ normalized and p^{k+1} = p^k without X_k, renormalized; after M
    failures (or when p^{k+1} has no mass) the token is drawn from the last residual.
    :func:`swor_root_law` sums over the ordered sequences of distinct tried tokens:
    exponential in M (guarded by ``max_nodes``).
``"spectr"``
    K-SEQ (Sun et al., NeurIPS 2023, arXiv:2310.15141, §4): i.i.d. drafts, β(ρ) = Σ min(p, q/ρ),
    ρ* ∈ [1, M] the root of 1 − (1 − β(ρ))^M = ρ β(ρ); draft i is accepted with
    min(1, q/(ρ* p)), the first accepted wins, else the token is drawn from [q − ρ* p]₊
    normalized.  a = (1 − (1 − β)^M)/β · min(p, q/ρ*), r = (1 − β)^M [q − ρ* p]₊/Σ[q − ρ* p]₊;
    α = 1 − (1 − β(ρ*))^M ≥ (1 − 1/e) α* (Sun et al., Thm. 3).
``"greedy"``
    Hu et al. (ICLR 2025, arXiv:2502.18779): D = the M − 1 most probable draft tokens as
    deterministic drafts and one X ∼ p' = p·1_{Dᶜ}/p(Dᶜ); X accepted with min(1, q/p'); else
    the token is drawn ∝ q·1_D + [q − p']₊·1_{Dᶜ} (a token in D is an acceptance).
    a = q·1_D + min(q, p')·1_{Dᶜ}, r = [q − p']₊·1_{Dᶜ}; α = q(D) + Σ_{x∉D} min(q, p').
``"topk"``
    EAGLE-style point drafts (Li et al. 2024): D = the M most probable draft tokens, tried in
    decreasing p; x is accepted with q^k(x) (q¹ = q), else q^{k+1} = q^k without x,
    renormalized; all fail → a draw from q^{M+1}.  a = q·1_D, r = q·1_{Dᶜ}; α = q(D).
``"optimal"``
    A verifier attaining α* = 1 + min_H [q(H) − p(H)^M] (Khisti et al. 2024,
    arXiv:2410.18234, Thm. 2; :func:`optimal_multidraft_acceptance`): the M i.i.d.
    drafts are reduced to their set S of distinct tokens (law w(S)); a maximum flow
    f(S, y) from sets to their tokens y ∈ S with token capacities q(y) is solved as an LP; given
    S the root emits y ∈ S with probability f(S, y)/w(S) (an acceptance), else a draw from
    (q − a)/(1 − α), a = Σ_S f(S, ·).  By max-flow/min-cut the flow's value is α*, and at a
    maximum flow every set with leftover mass has all its tokens saturated, so a rejection
    never emits a drafted token.  Sizes: at most :data:`OPTIMAL_MAX_SETS` sets S.

**Optimal multi-draft verifier** (beyond the paper; Khisti et al. 2024, Hu et al. 2025).  Any
verifier that must output one of M i.i.d. drafts from p (or reject) while emitting exactly q
accepts with probability at most

.. math::  α^* = 1 + \min_{H \subseteq V} \big[q(H) - p(H)^M\big]

(if every draft lands in H, which has probability p(H)^M, an accepted output lies in H), and
α* is attained; the minimum is over prefixes of the tokens sorted by q/p, so it costs
O(V log V).  :func:`multidraft_acceptance_lp` checks it by a linear program over all couplings.

Examples
--------
>>> from theory.multidraft import root_law
>>> a, r = root_law("topk", [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], 2)
>>> a.tolist(), r.tolist()  # D = {0, 1}: a = q·1_D
([0.2, 0.3, 0.0], [0.0, 0.0, 0.5])
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from fractions import Fraction

import numpy as np

from theory._arrays import as_scalar, checked_pair
from theory.onestep import _acceptance, _residual, positive_part, safe_ratio

__all__ = [
    "FLOW_TOLERANCE",
    "OPTIMAL_MAX_SETS",
    "ROOT_VERIFIERS",
    "SWOR_MAX_NODES",
    "draft_order",
    "greedy_root_law",
    "multidraft_acceptance_lp",
    "optimal_flow",
    "optimal_multidraft_acceptance",
    "optimal_root_law",
    "root_law",
    "spectr_rho",
    "spectr_root_law",
    "swor_root_law",
    "topk_root_law",
]

#: Root verifiers of :class:`theory.BatchSpeculative` defined by their root law.
ROOT_VERIFIERS = ("swor", "spectr", "greedy", "topk", "optimal")
#: Largest number of nodes (ordered sequences of distinct tried tokens) "swor" may sum over.
SWOR_MAX_NODES = 200_000
#: Flows and leftovers of the "optimal" verifier's LP below this are rounding (set to 0).
FLOW_TOLERANCE = 1e-12
#: Largest number of draft sets S (non-empty, at most M tokens of p's support) for "optimal".
OPTIMAL_MAX_SETS = 4096


def _n_drafts(value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"n_drafts must be an integer >= 1; got {value!r}")
    return int(value)


def _checked(p, q, n_drafts):
    """Validated (p, q, M): probability rows (float64 or Fractions) and an int M >= 1."""
    if not isinstance(n_drafts, numbers.Integral) or isinstance(n_drafts, bool) \
            or n_drafts < 1:
        raise ValueError(f"n_drafts must be an integer >= 1; got {n_drafts!r}")
    p, q = checked_pair(p, q)
    return p, q, int(n_drafts)


def _validated(law):
    """Wrap a root law: validate (p, q, n_drafts) first (see :func:`_checked`)."""
    @functools.wraps(law)
    def wrapper(p, q, n_drafts, **options):
        return law(*_checked(p, q, n_drafts), **options)
    return wrapper


def _zeros(p):
    return 0 * np.asarray(p)


def draft_order(p):
    """Token indices sorted by decreasing p, ties towards the lower index (last axis).

    Examples
    --------
    >>> from theory.multidraft import draft_order
    >>> draft_order([0.2, 0.4, 0.4]).tolist()
    [1, 2, 0]
    """
    p = np.asarray(p)
    keys = -p if p.dtype != object else np.vectorize(lambda v: -v, otypes=[object])(p)
    return np.argsort(keys, axis=-1, kind="stable")


def _top_mask(p, size: int):
    """1_D for D = the ``size`` most probable tokens with p > 0 (ties → lower index)."""
    p = np.asarray(p)
    ranks = np.empty_like(draft_order(p))
    np.put_along_axis(ranks, draft_order(p), np.arange(p.shape[-1]), axis=-1)
    return (ranks < size) & (p > 0)


@_validated
def topk_root_law(p, q, n_drafts: int):
    r"""Root law of "topk" point drafts: a = q·1_D, r = q·1_{Dᶜ}, D = the M most probable.

    Trying x₁, x₂, … ∈ D in turn with acceptance q^k(x_k), q^k = q without x₁…x_{k−1}
    renormalized, accepts x_k with probability (1 − q(x₁…x_{k−1})) · q(x_k)/(1 − q(x₁…x_{k−1}))
    = q(x_k): the chain of removals telescopes (Li et al. 2024's EAGLE verifies its
    top-k tree this way).

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory.multidraft import topk_root_law
    >>> a, r = topk_root_law([F(1, 2), F(1, 2), F(0)], [F(1, 5), F(1, 5), F(3, 5)], 5)
    >>> [str(v) for v in a], [str(v) for v in r]  # only 2 tokens have draft mass
    (['1/5', '1/5', '0'], ['0', '0', '3/5'])
    """
    q = np.asarray(q)
    drafted = _top_mask(p, n_drafts)
    return np.where(drafted, q, 0 * q), np.where(drafted, 0 * q, q)


@_validated
def greedy_root_law(p, q, n_drafts: int):
    r"""Root law of Hu et al.'s greedy drafts (ICLR 2025, arXiv:2502.18779, §3).

    D = the M − 1 most probable draft tokens, p' = p·1_{Dᶜ}/p(Dᶜ) (0 when p(Dᶜ) = 0):

    .. math::  a = q\,1_D + \min(q, p')\,1_{D^c},\qquad r = [q - p']_+\,1_{D^c},

    so α = q(D) + Σ_{x∉D} min(q(x), p'(x)) and a + r = q.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory.multidraft import greedy_root_law
    >>> a, r = greedy_root_law([F(1, 2), F(1, 4), F(1, 4)], [F(1, 10), F(1, 10), F(4, 5)], 2)
    >>> [str(v) for v in a], [str(v) for v in r]  # D = {0}, p' = (0, 1/2, 1/2)
    (['1/10', '1/10', '1/2'], ['0', '0', '3/10'])
    """
    p, q = np.asarray(p), np.asarray(q)
    drafted = _top_mask(p, n_drafts - 1)
    rest = np.where(drafted, 0 * p, p)
    rest = safe_ratio(rest, rest.sum(axis=-1, keepdims=True))
    below = np.where(q < rest, q, rest)
    return np.where(drafted, q, below), np.where(drafted, 0 * q, positive_part(q - rest))


def _exclude_renormalized(p, removed):
    """p with the tokens of the boolean mask ``removed`` set to 0, renormalized (0 when nothing
    is left): the "swor" draft update p^{k+1} (any leading axes)."""
    p = np.asarray(p)
    p = np.where(removed, 0 * p, p)
    return safe_ratio(p, p.sum(axis=-1, keepdims=True))


def _swor_nodes(support: int, n_drafts: int) -> int:
    return sum(math.perm(support, k) for k in range(1, min(n_drafts, support) + 1))


#: Entries of the stacked (sequences, rows, V) arrays "swor" expands at once.
_SWOR_BATCH = 1 << 20


@_validated
def swor_root_law(p, q, n_drafts: int, *, exclude=_exclude_renormalized,
                  max_nodes: int = SWOR_MAX_NODES):
    r"""Root law of recursive rejection sampling without replacement (Jeon et al. 2024).

    Sums over every ordered sequence x₁, x₂, … of distinct tried tokens (the residuals q^k
    depend on the order): with reach R (probability that the first k − 1 drafts were x₁…x_{k−1}
    and all failed), the k-th draft is x with probability p^k(x)/Σp^k and is accepted with
    b = min(1, q^k(x)/p^k(x)) (:func:`theory.onestep.acceptance_probability`'s convention):

    .. math::  a(x) \mathrel{+}= R\, \frac{p^k(x)}{\sum p^k}\, b,\qquad
               R \leftarrow R\, \frac{p^k(x)}{\sum p^k}\,(1 - b),\quad
               q^{k+1} = \frac{[q^k - p^k]_+}{\sum [q^k - p^k]_+},\quad
               p^{k+1} = \mathrm{exclude}(p^k, x);

    after M failures, or when p^{k+1} has no mass, r += R · q^{k+1}.  The sequences of one
    length are expanded together, as stacked arrays (in batches of about 10⁶ entries).

    Parameters
    ----------
    p, q : array_like (..., V)
        Draft and target rows (float64 or Fractions: exact).
    n_drafts : int >= 1
    exclude : callable (p^k, removed) -> p^{k+1}
        The draft update, ``removed`` a boolean mask of the tried token (default: set it to 0
        and renormalize).
    max_nodes : int
        Largest number of sequences Σ_{k ≤ M} V!/(V − k)! (V = tokens with draft mass in some
        row) summed over; larger cases raise ``ValueError``.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory.multidraft import swor_root_law
    >>> a, r = swor_root_law([F(1, 2), F(1, 2)], [F(1), F(0)], 2)
    >>> [str(v) for v in a], [str(v) for v in r]  # the second draft is token 0 for sure
    (['1', '0'], ['0', '0'])
    """
    p, q = np.asarray(p), np.asarray(q)
    support = int(np.count_nonzero((p != 0).reshape(-1, p.shape[-1]).any(axis=0)))
    nodes = _swor_nodes(support, n_drafts)
    if nodes > max_nodes:
        raise ValueError(
            f"verifier 'swor' sums over {nodes} sequences of tried drafts for n_drafts = "
            f"{n_drafts} and {support} tokens with draft mass; the limit is max_nodes = "
            f"{max_nodes}: use fewer drafts or a smaller vocabulary")
    shape = p.shape
    p, q = np.broadcast_arrays(p, q)
    p, q = p.reshape(-1, shape[-1]), q.reshape(-1, shape[-1])
    vocab = shape[-1]
    accepted, rejected = _zeros(p), _zeros(p)

    def expand(draft_k, target_k, reach, depth):  # (N, R, V), (N, R, V), (N, R, 1)
        nonlocal accepted, rejected
        draw = safe_ratio(draft_k, draft_k.sum(axis=-1, keepdims=True))
        accept = _acceptance(draft_k, target_k)
        accepted = accepted + (reach * draw * accept).sum(axis=0)
        following = _residual(draft_k, target_k)
        failed = reach * draw * (1 - accept)  # the k-th draft is x and fails
        if depth == n_drafts:  # M failures: the last residual is drawn
            rejected = rejected + (failed.sum(axis=-1, keepdims=True) * following).sum(axis=0)
            return
        parents, tokens = np.nonzero((failed != 0).any(axis=1))  # children worth following
        step = max(1, _SWOR_BATCH // (p.size or 1))
        for lo in range(0, parents.size, step):
            parent, token = parents[lo:lo + step], tokens[lo:lo + step]
            reach_next = failed[parent, :, token][..., None]
            removed = np.zeros((parent.size, 1, vocab), dtype=bool)
            removed[np.arange(parent.size), 0, token] = True
            draft_next = exclude(draft_k[parent], removed)
            residual = following[parent]
            # rows whose p^{k+1} has no mass stop here: their last residual is drawn
            empty = draft_next.sum(axis=-1, keepdims=True) == 0
            rejected = rejected + (np.where(empty, reach_next, 0 * reach_next)
                                   * residual).sum(axis=0)
            going = ~empty.all(axis=(1, 2))
            if going.any():
                expand(draft_next[going], residual[going],
                       np.where(empty, 0 * reach_next, reach_next)[going], depth + 1)

    expand(p[None], q[None], (1 + 0 * p[:, :1])[None], 1)
    return accepted.reshape(shape), rejected.reshape(shape)


def _beta(p, q, rho):
    return np.minimum(p, q / rho).sum(axis=-1)


@_validated
def spectr_rho(p, q, n_drafts: int, *, iterations: int = 200):
    r"""ρ* ∈ [1, M] with 1 − (1 − β(ρ))^M = ρ β(ρ), β(ρ) = Σ min(p, q/ρ) (Sun et al. 2023).

    f(ρ) = 1 − (1 − β(ρ))^M − ρβ(ρ) is non-increasing (β decreases, ρβ = Σ min(ρp, q)
    increases), f(1) = TV − TV^M ≥ 0 and f(M) ≤ 0 (1 − (1 − β)^M ≤ Mβ), so float64 bisection
    finds it; this is root-finding, so the result is a float even for Fraction rows.  Returns
    the upper end of the final bracket (f ≤ 0 there), or 1 when f(1) ≤ 0 (e.g. p = q).

    Examples
    --------
    >>> from theory.multidraft import spectr_rho
    >>> float(spectr_rho([0.5, 0.5], [0.5, 0.5], 3))  # p = q: ρ* = 1
    1.0
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)

    def f(rho):
        beta = _beta(p, q, rho[..., None])
        return 1 - (1 - beta) ** n_drafts - rho * beta

    lo = np.ones(p.shape[:-1])
    hi = np.full(p.shape[:-1], float(n_drafts))
    done = f(lo) <= 0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        down = f(mid) <= 0
        hi = np.where(down, mid, hi)
        lo = np.where(down, lo, mid)
    return np.where(done, 1.0, hi)


@_validated
def spectr_root_law(p, q, n_drafts: int, *, rho=None):
    r"""Root law of K-SEQ (Sun et al., NeurIPS 2023, arXiv:2310.15141, Alg. 3) for a given ρ.

    With β = Σ min(p, q/ρ), draft i is reached with (1 − β)^{i−1} and accepts x with
    min(p(x), q(x)/ρ), so

    .. math::  a = \frac{1 - (1 - β)^M}{β}\,\min(p, q/ρ),\qquad
               r = (1 - β)^M\,\frac{[q - ρp]_+}{\sum [q - ρp]_+};

    lossless iff ρ solves 1 − (1 − β)^M = ρβ.  ``rho=None`` uses ρ* (:func:`spectr_rho`);
    Fraction rows take the float ρ* as an exact rational, so a and r are exact *for that ρ*
    and a + r = q holds to the bisection's precision (about 1e-16).

    Examples
    --------
    >>> from theory.multidraft import spectr_root_law
    >>> a, r = spectr_root_law([0.5, 0.5], [0.9, 0.1], 1)  # M = 1: standard SD
    >>> a.round(12).tolist(), r.round(12).tolist()
    ([0.5, 0.1], [0.4, 0.0])
    """
    p, q = np.asarray(p), np.asarray(q)
    if rho is None:
        rho = spectr_rho(p, q, n_drafts)
    rho = np.broadcast_to(np.asarray(rho), p.shape[:-1])
    if p.dtype == object:
        rho = np.vectorize(Fraction, otypes=[object])(rho)
    rho = rho[..., None]
    capped = np.where(p < q / rho, p, q / rho)
    beta = capped.sum(axis=-1, keepdims=True)
    missed = (1 - beta) ** n_drafts
    accepted = safe_ratio((1 - missed) * capped, beta)
    gap = positive_part(q - rho * p)
    return accepted, missed * safe_ratio(gap, gap.sum(axis=-1, keepdims=True))


def _draft_sets(p_row, n_drafts: int):
    """(sets S, w(S)): the non-empty sets of distinct tokens of M i.i.d. draws from p_row.

    w(S) = Σ_{T ⊆ S} (−1)^{|S| − |T|} p(T)^M (inclusion–exclusion: all draws in S, each token
    of S drawn at least once), computed for every subset of the support at once by the
    Möbius transform over bitmasks (float64; O(V 2^V)).  Only |S| ≤ M can occur.
    """
    p_row = np.asarray(p_row, dtype=np.float64)
    support = [x for x in range(len(p_row)) if p_row[x] != 0]
    size = len(support)
    masks = np.arange(1 << size)
    bits = (masks[:, None] >> np.arange(size)) & 1  # (2^V', V')
    weights = (bits @ p_row[support]) ** n_drafts  # g(T) = p(T)^M
    for bit in range(size):  # Möbius inversion of the subset sums
        has = (masks >> bit) & 1 == 1
        weights[has] = weights[has] - weights[masks[has] ^ (1 << bit)]
    counts = bits.sum(axis=1)
    order = sorted((int(c), tuple(support[i] for i in range(size) if m >> i & 1), int(m))
                   for m, c in zip(masks, counts, strict=True) if 1 <= c <= n_drafts)
    return [subset for _, subset, _ in order], [max(float(weights[m]), 0.0)
                                                for _, _, m in order]


def _count_sets(support: int, n_drafts: int) -> int:
    return sum(math.comb(support, k) for k in range(1, min(n_drafts, support) + 1))


def _check_optimal_size(p, n_drafts: int) -> None:
    p = np.asarray(p)
    support = int(np.count_nonzero(p != 0, axis=-1).max()) if p.size else 0
    count = _count_sets(support, n_drafts)
    if count > OPTIMAL_MAX_SETS:
        raise ValueError(
            f"verifier 'optimal' solves a flow over {count} draft sets for n_drafts = "
            f"{n_drafts} and {support} tokens with draft mass; the limit is "
            f"OPTIMAL_MAX_SETS = {OPTIMAL_MAX_SETS}: use fewer drafts or a smaller vocabulary")


@functools.lru_cache(maxsize=16384)
def _flow_cached(p_key: tuple, q_key: tuple, n_drafts: int):
    p_row, q_row = np.array(p_key), np.array(q_key)
    sets, weights = _draft_sets(p_row, n_drafts)
    edges = [(i, y) for i, subset in enumerate(sets) for y in subset]
    vocab = len(q_row)
    if not edges:
        return sets, weights, {}
    from scipy.optimize import linprog  # scipy is imported only when an LP is solved

    by_set = np.zeros((len(sets), len(edges)))
    by_token = np.zeros((vocab, len(edges)))
    for e, (i, y) in enumerate(edges):
        by_set[i, e] = 1
        by_token[y, e] = 1
    solution = linprog(-np.ones(len(edges)), A_ub=np.vstack([by_set, by_token]),
                       b_ub=np.concatenate([np.array(weights, dtype=np.float64), q_row]),
                       bounds=(0, None), method="highs")
    if solution.status != 0:
        raise ValueError(f"the optimal verifier's flow LP could not be solved: "
                         f"{solution.message}")
    flow = {}
    for (i, y), value in zip(edges, solution.x, strict=True):
        if value > FLOW_TOLERANCE:
            flow[(i, y)] = float(value)
    return sets, [float(w) for w in weights], flow


def optimal_flow(p_row, q_row, n_drafts: int):
    r"""The maximum flow of the "optimal" verifier for one row: (sets, w, f).

    ``sets`` lists the non-empty sets S of distinct draft tokens (|S| ≤ M, S ⊆ supp p),
    ``w[i]`` = P(the M i.i.d. drafts form sets[i]) and ``f[(i, y)]`` > 0 the flow from sets[i]
    to its token y: maximize Σ f subject to Σ_y f(S, y) ≤ w(S), Σ_S f(S, y) ≤ q(y), f ≥ 0
    (an LP, HiGHS, float64; Khisti et al. 2024, arXiv:2410.18234).  Its value is α*.

    Examples
    --------
    >>> from theory.multidraft import optimal_flow
    >>> sets, w, f = optimal_flow([0.5, 0.5], [0.9, 0.1], 2)
    >>> sets, [round(v, 12) for v in w], round(sum(f.values()), 12)  # α* = 0.85
    ([(0,), (1,), (0, 1)], [0.25, 0.25, 0.5], 0.85)
    """
    p_row = np.asarray(p_row, dtype=np.float64)
    q_row = np.asarray(q_row, dtype=np.float64)
    _check_optimal_size(p_row, n_drafts)
    return _flow_cached(tuple(p_row.tolist()), tuple(q_row.tolist()), int(n_drafts))


@_validated
def optimal_root_law(p, q, n_drafts: int):
    r"""Root law of the verifier attaining α*: a = inflow of :func:`optimal_flow`, r = q − a.

    float64 (an LP), each row solved separately; at most :data:`OPTIMAL_MAX_SETS` draft sets.
    Σ a = α* = 1 + min_H [q(H) − p(H)^M] up to the LP's tolerance.

    Examples
    --------
    >>> from theory.multidraft import optimal_root_law
    >>> a, r = optimal_root_law([0.5, 0.5], [0.9, 0.1], 2)
    >>> round(float(a.sum()), 9), r.round(9).tolist()
    (0.85, [0.15, 0.0])
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = np.broadcast_arrays(p, q)
    _check_optimal_size(p, n_drafts)
    flat_p, flat_q = p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])
    accepted = np.zeros_like(flat_q)
    for row in range(flat_p.shape[0]):
        _, _, flow = optimal_flow(flat_p[row], flat_q[row], n_drafts)
        for (_, y), value in flow.items():
            accepted[row, y] += value
    accepted = np.minimum(accepted, flat_q).reshape(q.shape)
    return accepted, q - accepted


_LAWS = {"swor": swor_root_law, "spectr": spectr_root_law, "greedy": greedy_root_law,
         "topk": topk_root_law, "optimal": optimal_root_law}


_CACHE: dict = {}
_CACHE_SIZE = 16


def root_law(verifier: str, p, q, n_drafts: int):
    """(a, r) of root verifier ``verifier`` (one of :data:`ROOT_VERIFIERS`) for rows p, q.

    float64 results are cached (the last :data:`_CACHE_SIZE` inputs, keyed by their bytes):
    the DPs, the engines and :func:`theory.root_acceptance` ask for the same rows.
    """
    if verifier not in _LAWS:
        raise ValueError(f"verifier must be one of {ROOT_VERIFIERS}; got {verifier!r}")
    p, q = np.asarray(p), np.asarray(q)
    if p.dtype == object or q.dtype == object:
        return _LAWS[verifier](p, q, n_drafts)
    key = (verifier, int(n_drafts), p.shape, q.shape, p.tobytes(), q.tobytes())
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        accepted, rejected = _LAWS[verifier](p, q, n_drafts)
        accepted.setflags(write=False)
        rejected.setflags(write=False)
        _CACHE[key] = accepted, rejected
    return _CACHE[key]


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
    >>> from theory.multidraft import optimal_multidraft_acceptance
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
