r"""The optimal lossless tree verifier: a linear program over couplings of drafted trees and
output strings, with an exact certificate of its optimum.

**The round.**  A round starts at position n in context s and drafts a token tree of a fixed
*shape* (a nested tuple: a node is the tuple of its children's subtrees in drafted order, a
leaf is ``()``; ``branching=(k₁, …, k_d)`` gives every node at depth i − 1 k_i children),
cut at depth d′ = min(d, T − n).  At every node the children's tokens are drawn from the
draft row p(· | node) at that node's position and context: "iid" i.i.d.; "swor" sequentially
without replacement (p renormalized after each removal; fewer children when the draft has fewer
tokens with mass); "topk" the k most probable tokens with p > 0 (ties to the lower index).
Let 𝒟 be the random drafted tree and P(D) its law.

**Verifiers.**  A verifier sees D and the target rows and emits an *output* o: a path z of D
(the tokens from the root to a node v, |z| = depth of v, the *accepted* drafts) followed by one
extra token y (z·y; a correction, or a bonus at a leaf) — or, when v is a leaf of the cut
shape and no bonus is due there (``bonus=False``, or n + |z| = T), z alone.  It is
*lossless* when the output, continued by sampling the target, has the target's law.  Two
siblings carrying the same token give the same strings, so only the *trie* of D (the set of
its root-to-node token strings, with for every string whether an extra token or a plain stop
is allowed there) matters: drafted trees are grouped by trie and P(D) is summed.

**Losslessness as linear constraints.**  Let Z be the emitted string and, for every string u
with 1 ≤ |u| ≤ L (L the longest possible output), m(u) = P(Z = u) and
r(u) = P(Z extends u strictly) (r(∅) = 1, r(u) = 0 for |u| = L).  The continued output has
the target's law iff, for every u = w·x,

.. math::  m(u) + r(u) = q(x \mid w)\, r(w),

i.e. given that the output goes past w, its next token has law q(· | w) (sum these equations
over the futures of u: P(continued output starts with u) = q(u)).  This is the stopping-time
condition: the output is a target sample X stopped at a randomized stopping time of X.

**The linear program** (:func:`optimal_tree_lp`).  Variables π(D, o) ≥ 0 for every trie D
with P(D) > 0 and every output o allowed by D whose string s(o) has q(s(o)) > 0, and r(u)
(free) for 1 ≤ |u| < L:

.. math::  \max \sum_{D, o} |z(o)|\, π(D, o) \quad\text{s.t.}\quad
           \sum_o π(D, o) = P(D),\qquad
           \sum_{D, o:\, s(o) = u} π(D, o) + r(u) - q(x \mid w)\, r(w) = [|u| = 1]\, q(u).

Its value is the largest expected number of accepted drafts per round of any lossless
verifier that sees the drafted tree: a verifier is exactly a conditional law π(o | D), and the
constraints are losslessness.  The objective counts |z|: the extra token is never counted.

**The dual, a second formulation** (:func:`optimal_tree_lp` solves it as its own LP).  Prices
f(x) on the strings of length L define μ(u) = E_q[f(X_{1:L}) | X_{1:|u|} = u] (a q-martingale,
the dual constraints of the free r), and

.. math::  \mathrm{OPT} = \min_f\ \sum_D P(D)\, \max_{o \in D} \big(|z(o)| - μ(s(o))\big)
           + E_q[f(X_{1:L})].

Weak duality for *any* f: for a lossless verifier E[μ(Z)] = E_q[f] (optional stopping), so
E|z| = E[|z| − μ(Z)] + E_q[f] ≤ the right-hand side.  **Exact certificate** (exact models):
the support of the HiGHS primal vertex is solved again in rationals (a sparse exact linear
solve, checked non-negative and feasible), the dual prices are solved in rationals so that every
output of that support ties for the maximum in its trie, and the two exact objectives are
compared: equal means the rational value is the optimum (``certified=True``).

**Known optima it reproduces** (tests/theory/test_tree_optimal.py, exactly).  On a single path
(branching (1,)*d) the LP's class — lossless verifiers that see the drafted path and every
model probability — is the class in which Sun et al. (ICLR 2025, arXiv:2403.10444, Thms. 1–2)
prove block verification optimal for the on-path probabilities, and Thomas & Pal (2026,
arXiv:2602.16961, an information-agnostic LP) for off-path ones as well: the LP equals
:class:`theory.BlockSpeculative`'s expected accepted drafts.  On (k,) with i.i.d. drafts it is
α* = 1 + min_H [q(H) − p(H)^k] (Khisti et al. 2024, :func:`theory.optimal_multidraft_acceptance`).

**The looser coupling** (:func:`match_coupling_acceptance`): maximizing the expected longest
match between D and a *full* target sample X ∼ q, over all couplings of D and X, drops the
stopping-time condition — the match may look at tokens of X after the emitted ones — and
overstates the optimum whenever the best coupling correlates D with X's future.

Sizes: tries × outputs variables; :func:`optimal_tree_lp` estimates them from the shape before
enumerating and refuses above ``max_variables``.  One optimal coupling is returned
(:attr:`TreeLP.coupling`) but no engine runs it: the optimum is not unique.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from theory.models import MarkovLM
from theory.tree_drafts import (
    _Rows,
    _start_contexts,
    cut_shape,
    drafted_tries,
    estimate_variables,
    resolve_tree,
    shape_depth,
    shape_size,
)

__all__ = [
    "DEFAULT_MAX_VARIABLES",
    "TreeLP",
    "match_coupling_acceptance",
    "optimal_tree_acceptance",
    "optimal_tree_lp",
]

#: Largest LP (bound on the number of variables) :func:`optimal_tree_lp` builds.
DEFAULT_MAX_VARIABLES = 200_000
_SUPPORT_TOL = 1e-9


# ---------------------------------------------------------------------------- exact algebra
def _solve_exact(equations, unknowns, defaults=None):
    """Solve sparse equations {var: coef}·x = rhs exactly (Fractions), Gauss–Jordan.

    Returns {var: value}, or None when the system is inconsistent, or underdetermined without
    ``defaults`` (the values given to the free unknowns).
    """
    unknowns = set(unknowns)
    pivots = {}  # pivot var -> (row dict without the pivot, rhs): var = rhs - Σ coef·other
    holders = {}  # var -> set of pivot vars whose rows mention it
    for coefficients, rhs in equations:
        row = {v: Fraction(c) for v, c in coefficients.items() if c != 0 and v in unknowns}
        rhs = Fraction(rhs)
        for var in [v for v in row if v in pivots]:
            coef = row.pop(var)
            other, value = pivots[var]
            rhs -= coef * value
            for v, c in other.items():
                new = row.get(v, 0) - coef * c
                if new:
                    row[v] = new
                else:
                    row.pop(v, None)
        if not row:
            if rhs != 0:
                return None
            continue
        pivot = min(row, key=lambda v: (len(holders.get(v, ())), str(v)))
        scale = row.pop(pivot)
        row = {v: c / scale for v, c in row.items()}
        rhs = rhs / scale
        for holder in list(holders.get(pivot, ())):
            other, value = pivots[holder]
            coef = other.pop(pivot)
            value -= coef * rhs
            for v, c in row.items():
                new = other.get(v, 0) - coef * c
                if new:
                    other[v] = new
                else:
                    other.pop(v, None)
                    holders.get(v, set()).discard(holder)
                if new:
                    holders.setdefault(v, set()).add(holder)
            pivots[holder] = (other, value)
        holders.pop(pivot, None)
        pivots[pivot] = (row, rhs)
        for v in row:
            holders.setdefault(v, set()).add(pivot)
    free = unknowns - set(pivots)
    if free and defaults is None:
        return None
    solution = {v: Fraction(defaults[v]) for v in free}
    for var, (row, rhs) in pivots.items():
        solution[var] = rhs - sum((c * solution[v] for v, c in row.items()), Fraction(0))
    return solution


# ---------------------------------------------------------------------------- the LP
@dataclass(frozen=True)
class TreeLP:
    """The optimal tree verifier's LP for one round (see the module docstring).

    ``value``: the optimum — a Fraction when ``certified`` (exact models, rational certificate
    checked), else the float of the primal solve; ``dual_value``: the float optimum of the dual
    formulation (an independent LP); ``upper_bound``: the exact dual objective of the rational
    prices (a rigorous bound for exact models, equal to ``value`` when certified);
    ``coupling``: {(trie index, emitted string, accepted drafts): probability} of one optimal
    verifier (exact when certified),
    ``tries``: the tries with their probabilities; sizes of the LP.
    """

    value: object
    dual_value: float
    certified: bool
    upper_bound: object
    n_variables: int
    n_constraints: int
    tries: tuple = field(repr=False)
    coupling: dict = field(repr=False)


def _string_probabilities(rows: _Rows, length: int):
    """{u: q(u)} for the strings 1 ≤ |u| ≤ length with q(u) > 0 (from the round's start)."""
    probs = {(): rows.one}
    frontier = [((), rows.context)]
    for depth in range(length):
        following = []
        for string, context in frontier:
            for x, value in enumerate(rows.q(depth, context)):
                if value > 0:
                    probs[(*string, x)] = probs[string] * value
                    following.append(((*string, x), rows.step(context, x)))
        frontier = following
    return probs


def _outputs(marks, vocab: int, qprob):
    """[(emitted string, accepted count)] a verifier may produce on one trie."""
    out = []
    for string, (extra, plain) in marks:
        if extra:
            out.extend(((*string, y), len(string)) for y in range(vocab)
                       if (*string, y) in qprob)
        if plain and string in qprob:
            out.append((string, len(string)))
    return out


def _linprog(*args, **kwargs):
    from scipy.optimize import linprog  # scipy is imported only when an LP is solved

    solution = linprog(*args, method="highs", **kwargs)
    if solution.status != 0:
        raise ValueError(f"the tree verifier LP could not be solved: {solution.message}")
    return solution


def _problem(draft, target, tree, position, context, sampling, bonus, max_variables):
    shape, sampling, bonus = resolve_tree(tree, sampling, bonus)
    rows = _Rows(draft, target, position, context)
    shape = cut_shape(shape, min(shape_depth(shape), rows.horizon - rows.position))
    support = int(max(np.count_nonzero(np.asarray(draft.probs[n]) != 0, axis=-1).max()
                      for n in range(rows.position, rows.horizon)))
    estimate = estimate_variables(shape, sampling, support, rows.vocab)
    if estimate > max_variables:
        raise ValueError(
            f"the optimal tree verifier LP for a shape of {shape_size(shape)} nodes with "
            f"sampling={sampling!r} and {support} draft tokens per row needs up to {estimate} "
            f"variables > max_variables = {max_variables}: use a smaller tree or vocabulary")
    return rows, shape, sampling, bonus


def optimal_tree_lp(draft: MarkovLM, target: MarkovLM, tree, *, position: int = 0,
                    context: int = 0, sampling=None, bonus=None,
                    max_variables: int = DEFAULT_MAX_VARIABLES) -> TreeLP:
    r"""Solve the optimal lossless tree verifier's LP for one round, and certify it.

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible); exact (Fraction) models get a rational certificate.
    tree : tuple or tree algorithm
        A branching ``(k₁, …, k_d)``, a nested-tuple shape, or an algorithm with ``shape`` /
        ``branching``, ``sampling`` and ``bonus`` attributes.
    position, context : int
        The round's start (n, s); the shape is cut at depth min(d, T − n).
    sampling : {"iid", "swor", "topk"}, optional
        Drafting rule (default "iid", or the algorithm's).
    bonus : bool, optional
        Whether an accepted leaf before the horizon emits a bonus token (default True).
    max_variables : int
        Refuse (``ValueError``, with the estimate) when the bound on the LP's variables
        (drafted trees × (nodes + 1) × (V + 1)) exceeds it.

    Returns
    -------
    TreeLP

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM
    >>> from theory.tree_optimal import optimal_tree_lp
    >>> p = MarkovLM.homogeneous([[F(1, 2), F(1, 2)]], 2, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(9, 10), F(1, 10)]], 2, next_context=[[0, 0]])
    >>> lp = optimal_tree_lp(p, q, (2,))  # two i.i.d. drafts: α* = 1 + min_H [q(H) − p(H)²]
    >>> lp.value, lp.certified
    (Fraction(17, 20), True)
    """
    rows, shape, sampling, bonus = _problem(draft, target, tree, position, context, sampling,
                                            bonus, max_variables)
    tries = list(drafted_tries(rows, shape, sampling, bonus).items())
    deepest = max(len(s) + (1 if extra else 0)
                  for marks, _ in tries for s, (extra, _p) in marks)
    qprob = _string_probabilities(rows, deepest)
    outputs = [_outputs(marks, rows.vocab, qprob) for marks, _ in tries]
    length = max(len(s) for options in outputs for s, _ in options)
    strings = [u for u in qprob if 1 <= len(u) <= length]
    row_of = {u: len(tries) + i for i, u in enumerate(strings)}
    columns = [(d, s, c) for d, options in enumerate(outputs) for s, c in options]
    r_strings = [u for u in strings if len(u) < length]
    r_col = {u: len(columns) + i for i, u in enumerate(r_strings)}
    n_vars, n_rows = len(columns) + len(r_strings), len(tries) + len(strings)
    entries = []  # (row, column, coefficient)
    for j, (d, s, _) in enumerate(columns):
        entries += [(d, j, 1.0), (row_of[s], j, 1.0)]
    for u in r_strings:
        entries.append((row_of[u], r_col[u], 1.0))
        for x in range(rows.vocab):
            if (*u, x) in row_of:
                entries.append((row_of[(*u, x)], r_col[u],
                                -float(qprob[(*u, x)] / qprob[u])))
    rhs = [float(prob) for _, prob in tries] + [float(qprob[u]) if len(u) == 1 else 0.0
                                                 for u in strings]
    from scipy.sparse import csr_matrix

    r_idx, c_idx, vals = zip(*entries, strict=True)
    matrix = csr_matrix((vals, (r_idx, c_idx)), shape=(n_rows, n_vars))
    cost = np.zeros(n_vars)
    cost[:len(columns)] = [-c for _, _, c in columns]
    bounds = [(0, None)] * len(columns) + [(None, None)] * len(r_strings)
    primal = _linprog(cost, A_eq=matrix, b_eq=rhs, bounds=bounds)

    # ---- the dual formulation, solved as its own LP: variables λ_D, f(x) for |x| = L
    full = [u for u in strings if len(u) == length]
    f_col = {x: len(tries) + i for i, x in enumerate(full)}
    below = {}  # u -> [(f column, q(x | u))]
    for x in full:
        for k in range(1, length + 1):
            below.setdefault(x[:k], []).append((f_col[x], float(qprob[x] / qprob[x[:k]])))
    d_entries = []
    for i, (d, s, _) in enumerate(columns):
        d_entries.append((i, d, -1.0))
        d_entries += [(i, col, -w) for col, w in below[s]]
    di, dj, dv = zip(*d_entries, strict=True)
    d_matrix = csr_matrix((dv, (di, dj)), shape=(len(columns), len(tries) + len(full)))
    d_cost = np.array([float(prob) for _, prob in tries] + [float(qprob[x]) for x in full])
    dual = _linprog(d_cost, A_ub=d_matrix, b_ub=[-float(c) for _, _, c in columns],
                    bounds=[(None, None)] * (len(tries) + len(full)))
    value, dual_value = -float(primal.fun), float(dual.fun)
    if abs(value - dual_value) > 1e-7 * max(1.0, abs(value)):
        raise ValueError(f"the tree LP and its dual disagree: {value} vs {dual_value}")
    coupling = {columns[j]: float(v) for j, v in enumerate(primal.x[:len(columns)])
                if v > _SUPPORT_TOL}
    certified, exact_value, upper = False, value, dual_value
    if rows.exact:
        exact_value, upper, exact_coupling = _certify(tries, columns, r_strings, strings,
                                                      qprob, full, primal.x, dual.x)
        certified = upper is not None and exact_value == upper
        if certified:
            coupling = exact_coupling
    return TreeLP(exact_value if certified else value, dual_value, certified, upper,
                  n_vars, n_rows, tuple(tries), coupling)


def _certify(tries, columns, r_strings, strings, qprob, full, x, y):
    """(exact primal value, exact dual bound, exact coupling) from the float vertex and prices
    (None where the rational solve fails)."""
    support = [j for j, v in enumerate(x[:len(columns)]) if v > _SUPPORT_TOL]
    equations = [({j: 1 for j in support if columns[j][0] == d}, prob)
                 for d, (_, prob) in enumerate(tries)]
    by_string = {}
    for j in support:
        by_string.setdefault(columns[j][1], []).append(j)
    for u in strings:
        eq = {j: 1 for j in by_string.get(u, ())}
        if len(u) < len(full[0]):
            eq[("r", u)] = 1
        if len(u) > 1:
            eq[("r", u[:-1])] = -qprob[u] / qprob[u[:-1]]
        equations.append((eq, qprob[u] if len(u) == 1 else 0))
    unknowns = support + [("r", u) for u in r_strings]
    solution = _solve_exact(equations, unknowns)
    if solution is None or any(solution[j] < 0 for j in support):
        return None, None, None
    lower = sum((columns[j][2] * solution[j] for j in support), Fraction(0))

    # prices: every support output ties for the maximum of its trie
    f_vars = list(full)

    def mu_terms(s):
        return {x: qprob[x] / qprob[s] for x in full if x[:len(s)] == s}

    ties = []
    first = {}
    for j in support:
        d, s, c = columns[j]
        if d not in first:
            first[d] = (s, c)
            continue
        s0, c0 = first[d]
        eq = dict(mu_terms(s))
        for v, w in mu_terms(s0).items():
            eq[v] = eq.get(v, 0) - w
        ties.append((eq, c - c0))
    defaults = {x: Fraction(float(y[len(tries) + i])).limit_denominator(10 ** 12)
                for i, x in enumerate(f_vars)}
    prices = _solve_exact(ties, f_vars, defaults)
    coupling = {columns[j]: solution[j] for j in support if solution[j] != 0}
    if prices is None:
        return lower, None, coupling
    mu = {}
    for s in {s for _, s, _ in columns}:
        mu[s] = sum((w * prices[v] for v, w in mu_terms(s).items()), Fraction(0))
    best = {}
    for d, s, c in columns:
        best[d] = max(best.get(d, c - mu[s]), c - mu[s])
    upper = sum((prob * best[d] for d, (_, prob) in enumerate(tries)), Fraction(0)) \
        + sum((qprob[v] * prices[v] for v in full), Fraction(0))
    return lower, upper, coupling


def optimal_tree_acceptance(draft: MarkovLM, target: MarkovLM, tree, *, position: int = 0,
                            context=None, sampling=None, bonus=None,
                            max_variables: int = DEFAULT_MAX_VARIABLES):
    r"""The largest expected number of accepted drafts in one round of any lossless verifier
    that sees the drafted tree (the LP of :func:`optimal_tree_lp`).

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    tree : tuple or tree algorithm
        A branching, a nested-tuple shape or a tree algorithm (:func:`resolve_tree`).
    position : int
        n, the round's start position.
    context : int, optional
        The round's start context; ``None`` averages over the model's start law.
    sampling : {"iid", "swor", "topk"}, optional
        Drafting rule (default "iid", or the algorithm's).
    bonus : bool, optional
        Bonus token at an accepted leaf before the horizon (default True).
    max_variables : int
        Refuse larger LPs up front (see :func:`optimal_tree_lp`).

    Returns
    -------
    Fraction or float
        A Fraction when every LP was certified exactly (exact models), else a float.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM
    >>> from theory.tree_optimal import optimal_tree_acceptance
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 3, next_context=[[0, 0]])
    >>> optimal_tree_acceptance(p, q, (1, 1))  # one path of 2: block verification's 11/9
    Fraction(11, 9)
    """
    total = 0
    for start, weight in _start_contexts(target, context):
        lp = optimal_tree_lp(draft, target, tree, position=position, context=start,
                             sampling=sampling, bonus=bonus, max_variables=max_variables)
        total = total + (weight * lp.value if lp.certified else float(weight) * lp.value)
    return total


def match_coupling_acceptance(draft: MarkovLM, target: MarkovLM, tree, *, position: int = 0,
                              context: int = 0, sampling=None, bonus=None,
                              max_variables: int = DEFAULT_MAX_VARIABLES) -> float:
    r"""The looser bound: max over couplings of D and a full target sample X of
    E[longest prefix of X that is a path of D] (no stopping-time condition; float LP).

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    tree : tuple or tree algorithm
        A branching, a nested-tuple shape or a tree algorithm.
    position, context : int
        The round's start (n, s).
    sampling : {"iid", "swor", "topk"}, optional
        Drafting rule (default "iid").
    bonus : bool, optional
        Unused by the bound (the match ignores the extra token); accepted for symmetry.
    max_variables : int
        Refuse larger LPs up front.

    Returns
    -------
    float
        ≥ :func:`optimal_tree_acceptance`; strictly larger when the best coupling looks ahead.
    """
    rows, shape, sampling, bonus = _problem(draft, target, tree, position, context, sampling,
                                            bonus, max_variables)
    tries = list(drafted_tries(rows, shape, sampling, bonus).items())
    depth = shape_depth(shape)
    qprob = _string_probabilities(rows, depth)
    full = [u for u in qprob if len(u) == depth]
    n_vars = len(tries) * len(full)
    if n_vars > max_variables:
        raise ValueError(f"the match coupling needs {n_vars} variables > max_variables = "
                         f"{max_variables}")
    cost = np.zeros(n_vars)
    for d, (marks, _) in enumerate(tries):
        paths = {s for s, _ in marks}
        for i, x in enumerate(full):
            cost[d * len(full) + i] = -max(k for k in range(depth + 1) if x[:k] in paths)
    from scipy.sparse import csr_matrix

    r_idx, c_idx = [], []
    for d in range(len(tries)):
        for i in range(len(full)):
            r_idx += [d, len(tries) + i]
            c_idx += [d * len(full) + i] * 2
    matrix = csr_matrix((np.ones(len(r_idx)), (r_idx, c_idx)),
                        shape=(len(tries) + len(full), n_vars))
    rhs = [float(prob) for _, prob in tries] + [float(qprob[x]) for x in full]
    return -float(_linprog(cost, A_eq=matrix, b_eq=rhs, bounds=(0, None)).fun)
