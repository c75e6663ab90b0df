r"""Tree shapes for a node budget: the exact optimum per sampling × verifier, Sequoia's
positional-acceptance DP, and the search for rounds where Traversal Verification is not optimal.

**Exact optimal shape** (:func:`optimal_tree_shape`).  Over the rooted ordered trees with N
drafted nodes and depth ≤ T − n, maximize the expected accepted drafts of one round from
(n, s).  For "rrs" the value is linear in the children's values,

.. math::  W_δ(T)(s) = \sum_j \sum_x w_{δ,s,j}(x)\,\big(1 + W_{δ+1}(T_j)(\mathrm{next}(s, x))\big),

w_{δ,s,j}(x) = P(the rank-j child of a depth-δ node in context s is x and accepted); the weights
depend on the rank, not on the sibling subtrees, so a dynamic program over (depth, rank, nodes
left) keeps, per state, the Pareto front of value vectors over the contexts (a subtree whose
vector is dominated is never better anywhere) — exact, and fast enough for N = 16 on small
chains.  "traversal" and "optimal" (the LP of :mod:`theory.tree_optimal`) are searched by
enumerating shapes (ordered; unordered for "optimal" with "iid", whose value does not depend on
the order of siblings), refused above ``max_shapes``/``max_variables`` with the count.

**Sequoia** (Chen et al. 2024, arXiv:2402.12374, §3.1): the positional acceptance assumption —
a child of rank j is accepted with a probability P_j that depends on its rank only — gives the
value Σ_v Π_{u on the path to v} P_{rank(u)} of a shape, maximized by their DP.  We estimate
P_j exactly from the pair: P_j = P(the rank-j child of the *root* is the accepted one), rrs with
the given sampling and N children at the root (:func:`positional_acceptance`).
:func:`sequoia_tree_shape` returns Sequoia's shape; the gap to the exact optimum is the exact
value of each shape under the true verifier.

**Is Traversal Verification optimal?** (:func:`traversal_optimality_search`): over a list of
exact instances and shapes, the largest gap between the LP optimum and traversal (and rrs),
and the smallest instance where it is positive; :func:`exact_instance_grid` builds a
deterministic grid of small context-free and first-order instances.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

from theory.models import MarkovLM
from theory.tree_drafts import SAMPLINGS, _Rows, shape_size
from theory.tree_enumeration import _draw_law, _ratio_accept, _residual, verifier_value
from theory.tree_optimal import DEFAULT_MAX_VARIABLES, optimal_tree_lp

__all__ = [
    "DEFAULT_MAX_SHAPES",
    "SHAPE_VERIFIERS",
    "canonical_shape",
    "enumerate_shapes",
    "exact_instance_grid",
    "optimal_tree_shape",
    "positional_acceptance",
    "sequoia_gap",
    "sequoia_tree_shape",
    "shape_value",
    "traversal_optimality_search",
]

#: The verifiers a shape search can optimize for.
SHAPE_VERIFIERS = ("rrs", "traversal", "optimal")
#: Largest number of shapes an enumerating search evaluates.
DEFAULT_MAX_SHAPES = 20_000


def enumerate_shapes(n_nodes: int, max_depth: int, *, ordered: bool = True):
    """Every shape with ``n_nodes`` drafted nodes and depth ≤ ``max_depth`` (a list).

    ``ordered=False`` keeps one representative per unordered tree (children sorted).

    Examples
    --------
    >>> from theory.tree_shapes import enumerate_shapes
    >>> len(enumerate_shapes(3, 3)), len(enumerate_shapes(3, 3, ordered=False))  # Catalan 5
    (5, 4)
    """
    memo = {}

    def forests(n, depth):
        if (n, depth) in memo:
            return memo[(n, depth)]
        out = [()] if n == 0 else []
        if n > 0 and depth > 0:
            for m in range(n):
                for first in forests(m, depth - 1):
                    for rest in forests(n - 1 - m, depth):
                        if ordered or not rest or _key(first) >= _key(rest[0]):
                            out.append((first, *rest))
        memo[(n, depth)] = out
        return out

    return forests(n_nodes, max_depth)


def _key(shape):
    return (shape_size(shape), tuple(_key(c) for c in shape))


def canonical_shape(shape) -> tuple:
    """The unordered representative of ``shape`` (children sorted, largest first)."""
    children = sorted((canonical_shape(c) for c in shape), key=_key, reverse=True)
    return tuple(children)


# ---------------------------------------------------------------------------- rrs weights
def _rank_weights(rows, depth, context, sampling, ranks):
    """w[j][x] for j < ranks: P(rank-j child is x, accepted, earlier siblings rejected)."""
    p_row, q_row = rows.p(depth, context), rows.q(depth, context)
    zero = 0 * q_row[0]
    weights = [[zero] * len(p_row) for _ in range(ranks)]
    states = {((), q_row): rows.one}  # (used tokens, residual) -> reach
    for j in range(ranks):
        following = {}
        for (used, q_j), reach in states.items():
            if sampling == "topk":
                order = sorted((x for x, v in enumerate(p_row) if v > 0),
                               key=lambda x: (-p_row[x], x))
                draws = [(order[j], 1)] if j < len(order) else []
            else:
                law = _draw_law(p_row, used, None, sampling) if len(used) < sum(
                    1 for v in p_row if v > 0) or sampling == "iid" else None
                draws = [] if law is None else [(x, v) for x, v in enumerate(law) if v > 0]
            for token, prob in draws:
                p_j = _draw_law(p_row, used, token, sampling)
                accept = _ratio_accept(1, q_j[token], p_j[token])
                weights[j][token] += reach * prob * accept
                gap, mass = _residual(1, q_j, p_j)
                if accept != 1 and mass != 0:  # mass 0: float rounding of accept ≈ 1
                    key = ((*used, token) if sampling != "iid" else (),
                           tuple(g / mass for g in gap))
                    following[key] = following.get(key, zero) + reach * prob * (1 - accept)
        states = following
    return weights


def positional_acceptance(draft: MarkovLM, target: MarkovLM, n_children: int, *,
                          sampling: str = "iid", position: int = 0, context: int = 0):
    r"""Sequoia's positional acceptance vector, exactly: P_j = P(the rank-j child of the root
    is accepted), rrs with ``n_children`` children drawn by ``sampling``, j = 1 … n_children.

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    n_children : int
        Children drafted at the root.
    sampling : {"iid", "swor", "topk"}
        Drafting rule.
    position, context : int
        The round's start (n, s).

    Returns
    -------
    list
        P_1 … P_k (Fractions for exact models); Σ_j P_j = P(the root accepts a child).

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM
    >>> from theory.tree_shapes import positional_acceptance
    >>> p = MarkovLM.homogeneous([[F(1, 2), F(1, 2)]], 1, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(3, 4), F(1, 4)]], 1, next_context=[[0, 0]])
    >>> [str(v) for v in positional_acceptance(p, q, 2)]  # 3/4, then 1/4 · 1/2
    ['3/4', '1/8']
    """
    rows = _Rows(draft, target, position, context)
    return [sum(w, 0 * rows.one) for w in
            _rank_weights(rows, 0, rows.context, sampling, n_children)]


def _pareto(items, exact):
    """Items (vector, shape) not dominated by another (vectors over the same contexts)."""
    items = sorted(items, key=lambda it: [-float(v) for v in it[0]])
    kept = []
    for vector, shape in items:
        if any(all(a >= b for a, b in zip(other, vector, strict=True)) for other, _ in kept):
            continue
        kept.append((vector, shape))
    return kept


def _rrs_search(rows, n_nodes, sampling, max_depth):
    contexts = {0: [rows.context]}
    for depth in range(1, max_depth + 1):
        contexts[depth] = sorted({rows.step(s, x) for s in contexts[depth - 1]
                                  for x in range(rows.vocab)})
    weights = {}

    def w(depth, context):
        if (depth, context) not in weights:
            weights[(depth, context)] = _rank_weights(rows, depth, context, sampling, n_nodes)
        return weights[(depth, context)]

    memo = {}

    def forest(depth, rank, nodes):
        """Pareto front of (values over contexts[depth], children shapes)."""
        key = (depth, rank, nodes)
        if key in memo:
            return memo[key]
        zero = tuple(0 * rows.one for _ in contexts[depth])
        if nodes == 0:
            memo[key] = [(zero, ())]
            return memo[key]
        if depth >= max_depth:
            memo[key] = []
            return []
        out = []
        index = {s: i for i, s in enumerate(contexts[depth + 1])}
        for below in range(nodes):
            subs = forest(depth + 1, 0, below)
            rests = forest(depth, rank + 1, nodes - 1 - below)
            for sub_values, sub_shape in subs:
                gain = tuple(sum((w(depth, s)[rank][x]
                                  * (1 + sub_values[index[rows.step(s, x)]])
                                  for x in range(rows.vocab)), 0 * rows.one)
                             for s in contexts[depth])
                for rest_values, rest_shape in rests:
                    out.append((tuple(a + b for a, b in zip(gain, rest_values, strict=True)),
                                (sub_shape, *rest_shape)))
        memo[key] = _pareto(out, rows.exact)
        return memo[key]

    best = forest(0, 0, n_nodes)
    values, shape = max(best, key=lambda it: it[0][0])
    return shape, values[0]


def shape_value(draft, target, shape, *, verifier: str, sampling: str = "iid",
                position: int = 0, context: int = 0, bonus: bool = True,
                max_variables: int = DEFAULT_MAX_VARIABLES, memo=None):
    """E[accepted drafts] of one round with ``shape`` under ``verifier`` (exact for exact models).

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    shape : tuple
        A nested-tuple shape.
    verifier : {"rrs", "traversal", "optimal"}
        The verifier ("optimal": the certified LP value, float if not certified).
    sampling : {"iid", "swor", "topk"}
        Drafting rule.
    position, context : int
        The round's start (n, s).
    bonus : bool
        Bonus token at an accepted leaf before the horizon.
    max_variables : int
        LP size limit for "optimal".
    memo : dict, optional
        Cache shared between calls ("rrs", "traversal").

    Returns
    -------
    Fraction or float
    """
    if verifier == "optimal":
        lp = optimal_tree_lp(draft, target, shape, position=position, context=context,
                             sampling=sampling, bonus=bonus, max_variables=max_variables)
        return lp.value
    if verifier not in SHAPE_VERIFIERS:
        raise ValueError(f"verifier must be one of {SHAPE_VERIFIERS}; got {verifier!r}")
    return verifier_value(draft, target, shape, verifier, position=position, context=context,
                          sampling=sampling, bonus=bonus, memo=memo)


def optimal_tree_shape(draft: MarkovLM, target: MarkovLM, n_nodes: int, *, sampling: str,
                       verifier: str, position: int = 0, context: int = 0,
                       max_shapes: int = DEFAULT_MAX_SHAPES,
                       max_variables: int = DEFAULT_MAX_VARIABLES):
    r"""The exact best shape with ``n_nodes`` drafted nodes for one round: (shape, value).

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    n_nodes : int >= 1
        The node budget N (drafted nodes; the root is the round's context).
    sampling : {"iid", "swor", "topk"}
        Drafting rule.
    verifier : {"rrs", "traversal", "optimal"}
        "rrs" by the Pareto DP (module docstring); the others by enumerating shapes.
    position, context : int
        The round's start (n, s); depth is limited to T − n.
    max_shapes : int
        Refuse an enumerating search over more shapes (``ValueError`` with the count).
    max_variables : int
        LP size limit per shape for "optimal".

    Returns
    -------
    (tuple, Fraction or float)
        A best shape (ties: the first found) and its value.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM
    >>> from theory.tree_shapes import optimal_tree_shape
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 3, next_context=[[0, 0]])
    >>> optimal_tree_shape(p, q, 2, sampling="swor", verifier="rrs")  # a path beats 2 children
    ((((),),), Fraction(10, 9))
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}; got {sampling!r}")
    if verifier not in SHAPE_VERIFIERS:
        raise ValueError(f"verifier must be one of {SHAPE_VERIFIERS}; got {verifier!r}")
    if not isinstance(n_nodes, int) or isinstance(n_nodes, bool) or n_nodes < 1:
        raise ValueError(f"n_nodes must be an integer >= 1; got {n_nodes!r}")
    rows = _Rows(draft, target, position, context)
    max_depth = rows.horizon - rows.position
    if verifier == "rrs":
        return _rrs_search(rows, n_nodes, sampling, max_depth)
    ordered = not (verifier == "optimal" and sampling == "iid")
    count = _count_shapes(n_nodes, max_depth, ordered)
    if count > max_shapes:
        raise ValueError(f"the {verifier!r} shape search would evaluate {count} shapes of "
                         f"{n_nodes} nodes > max_shapes = {max_shapes}: use fewer nodes")
    memo, best = {}, None
    for shape in enumerate_shapes(n_nodes, max_depth, ordered=ordered):
        value = shape_value(draft, target, shape, verifier=verifier, sampling=sampling,
                            position=position, context=context, max_variables=max_variables,
                            memo=memo)
        if best is None or value > best[1]:
            best = (shape, value)
    return best


def _count_shapes(n_nodes, max_depth, ordered):
    """Ordered shapes of ``n_nodes`` nodes and depth ≤ ``max_depth`` (counted, not built);
    the unordered ones are built (small budgets only) or bounded by the ordered count."""
    memo = {}

    def forests(n, depth):
        if n == 0:
            return 1
        if depth == 0:
            return 0
        if (n, depth) not in memo:
            memo[(n, depth)] = sum(forests(m, depth - 1) * forests(n - 1 - m, depth)
                                   for m in range(n))
        return memo[(n, depth)]

    count = forests(n_nodes, max_depth)
    if not ordered and count <= 100_000:
        return len(enumerate_shapes(n_nodes, max_depth, ordered=False))
    return count


def sequoia_tree_shape(draft: MarkovLM, target: MarkovLM, n_nodes: int, *,
                       sampling: str = "iid", position: int = 0, context: int = 0,
                       max_depth=None):
    r"""Sequoia's DP shape for ``n_nodes`` nodes from the exact positional acceptance vector.

    Maximizes Σ_v Π_{u on the path to v} P_{rank(u)} (Chen et al. 2024, §3.1) with
    P = :func:`positional_acceptance` (N children at the root), depth ≤ ``max_depth``
    (default T − n).

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    n_nodes : int >= 1
        The node budget.
    sampling : {"iid", "swor", "topk"}
        Drafting rule of the acceptance vector.
    position, context : int
        The round's start (n, s).
    max_depth : int, optional
        Depth limit (default T − n).

    Returns
    -------
    (tuple, value)
        Sequoia's shape and its value under the positional model (not the true value: see
        :func:`shape_value`).
    """
    rows = _Rows(draft, target, position, context)
    depth_limit = rows.horizon - rows.position if max_depth is None else int(max_depth)
    accept = positional_acceptance(draft, target, n_nodes, sampling=sampling,
                                   position=position, context=context)
    memo = {}

    def forest(rank, nodes, depth):
        key = (rank, nodes, depth)
        if key in memo:
            return memo[key]
        if nodes == 0:
            return (0 * rows.one, ())
        if depth == 0 or rank >= len(accept):
            return (None, None)
        best = (None, None)
        for below in range(nodes):
            sub_value, sub_shape = forest(0, below, depth - 1)
            rest_value, rest_shape = forest(rank + 1, nodes - 1 - below, depth)
            if sub_value is None or rest_value is None:
                continue
            value = accept[rank] * (1 + sub_value) + rest_value
            if best[0] is None or value > best[0]:
                best = (value, (sub_shape, *rest_shape))
        memo[key] = best
        return best

    value, shape = forest(0, n_nodes, depth_limit)
    return shape, value


def sequoia_gap(draft: MarkovLM, target: MarkovLM, n_nodes: int, *, sampling: str,
                verifier: str, position: int = 0, context: int = 0,
                max_shapes: int = DEFAULT_MAX_SHAPES,
                max_variables: int = DEFAULT_MAX_VARIABLES) -> dict:
    r"""The exact optimal shape against Sequoia's, both valued exactly under ``verifier``.

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    n_nodes : int >= 1
        The node budget.
    sampling : {"iid", "swor", "topk"}
        Drafting rule (also of Sequoia's acceptance vector).
    verifier : {"rrs", "traversal", "optimal"}
        The verifier both shapes are valued under.
    position, context : int
        The round's start (n, s).
    max_shapes, max_variables : int
        Limits of :func:`optimal_tree_shape`.

    Returns
    -------
    dict
        ``optimal_shape``, ``optimal_value``, ``sequoia_shape``, ``sequoia_value`` and
        ``gap`` = optimal − Sequoia (≥ 0; exact for exact models).

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM
    >>> from theory.tree_shapes import sequoia_gap
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 3, next_context=[[0, 0]])
    >>> sequoia_gap(p, q, 3, sampling="iid", verifier="rrs")["gap"]
    Fraction(0, 1)
    """
    shape, value = optimal_tree_shape(draft, target, n_nodes, sampling=sampling,
                                      verifier=verifier, position=position, context=context,
                                      max_shapes=max_shapes, max_variables=max_variables)
    sequoia, _ = sequoia_tree_shape(draft, target, n_nodes, sampling=sampling,
                                    position=position, context=context)
    sequoia_value = shape_value(draft, target, sequoia, verifier=verifier, sampling=sampling,
                                position=position, context=context,
                                max_variables=max_variables)
    return {"optimal_shape": shape, "optimal_value": value, "sequoia_shape": sequoia,
            "sequoia_value": sequoia_value, "gap": value - sequoia_value}


# ---------------------------------------------------------------------------- the search
def exact_instance_grid(denominator: int = 4, *, vocab_size: int = 2, horizon: int = 2,
                        first_order: bool = False):
    r"""A deterministic grid of small exact pairs (p, q): every pair of rows with entries in
    {0, 1/D, …, 1} (first-order chains: the same row pair in every context, rotated by the
    context so that the chain is not context-free), p ≠ q.

    Parameters
    ----------
    denominator : int
        D, the common denominator of the entries.
    vocab_size : int
        V.
    horizon : int
        T.
    first_order : bool
        First-order chains (S = V) instead of one context.

    Returns
    -------
    list of (MarkovLM, MarkovLM)
    """
    rows = [tuple(Fraction(c, denominator) for c in combo)
            for combo in itertools.product(range(denominator + 1), repeat=vocab_size)
            if sum(combo) == denominator]
    pairs = []
    for p_row, q_row in itertools.product(rows, repeat=2):
        if p_row == q_row:
            continue
        if first_order:
            kernels = [[p_row[-s:] + p_row[:-s] if s else p_row for s in range(vocab_size)],
                       [q_row[-s:] + q_row[:-s] if s else q_row for s in range(vocab_size)]]
            pairs.append(tuple(MarkovLM.homogeneous(k, horizon) for k in kernels))
        else:
            context_map = [[0] * vocab_size]
            pairs.append((MarkovLM.homogeneous([p_row], horizon, next_context=context_map),
                          MarkovLM.homogeneous([q_row], horizon, next_context=context_map)))
    return pairs


def traversal_optimality_search(pairs, shapes, *, samplings=("swor",), position: int = 0,
                                context: int = 0, max_variables: int = DEFAULT_MAX_VARIABLES):
    r"""LP optimum − traversal and LP optimum − rrs over instances × shapes × samplings.

    Parameters
    ----------
    pairs : iterable of (MarkovLM, MarkovLM)
        Exact (certified, rational gaps) or float instances.
    shapes : iterable of tuple
        Branchings or nested-tuple shapes, tried in this order (put small ones first: the
        first positive gap found among the smallest shapes is the reported counterexample).
    samplings : tuple of str
        Drafting rules.
    position, context : int
        The round's start (n, s).
    max_variables : int
        LP size limit.

    Returns
    -------
    dict
        ``largest_traversal_gap`` / ``largest_rrs_gap``: (gap, record) of the largest gaps;
        ``smallest_counterexample``: the first record (fewest nodes, then vocabulary, then the
        order given) with a positive traversal gap, or None; ``n_rounds``; ``uncertified``;
        ``records``: every (pair index, shape, sampling, optimum, traversal, rrs).

    Examples
    --------
    The smallest counterexample on the grid of :func:`exact_instance_grid` (V = 2, one
    context, entries in quarters): on a path traversal is block verification and optimal; on
    branching (2, 1) with drafts without replacement it is not.

    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM
    >>> from theory.tree_shapes import traversal_optimality_search
    >>> p = MarkovLM.homogeneous([[F(1, 4), F(3, 4)]], 2, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 2), F(1, 2)]], 2, next_context=[[0, 0]])
    >>> found = traversal_optimality_search([(p, q)], [(1, 1), (2, 1)])
    >>> [(r["shape"], str(r["optimum"]), str(r["traversal"])) for r in found["records"]]
    [((1, 1), '11/8', '11/8'), ((2, 1), '31/16', '29/16')]
    """
    records, uncertified = [], 0
    pairs = list(pairs)
    for shape in shapes:
        for sampling in samplings:
            for index, (draft, target) in enumerate(pairs):
                lp = optimal_tree_lp(draft, target, shape, position=position, context=context,
                                     sampling=sampling, max_variables=max_variables)
                uncertified += not lp.certified
                values = [verifier_value(draft, target, shape, v, position=position,
                                         context=context, sampling=sampling)
                          for v in ("traversal", "rrs")]
                records.append({"pair": index, "shape": shape, "sampling": sampling,
                                "vocab_size": target.vocab_size, "optimum": lp.value,
                                "certified": lp.certified, "traversal": values[0],
                                "rrs": values[1]})
    tolerance = 1e-9

    def gap(record, name):
        return record["optimum"] - record[name]

    positive = [r for r in records if gap(r, "traversal") > (0 if r["certified"] else tolerance)]
    positive.sort(key=lambda r: (_nodes(r["shape"]), r["vocab_size"]))
    return {
        "largest_traversal_gap": max(((gap(r, "traversal"), r) for r in records),
                                     key=lambda t: t[0], default=None),
        "largest_rrs_gap": max(((gap(r, "rrs"), r) for r in records),
                               key=lambda t: t[0], default=None),
        "smallest_counterexample": positive[0] if positive else None,
        "n_rounds": len(records),
        "uncertified": uncertified,
        "records": records,
    }


def _nodes(shape):
    if shape and all(isinstance(k, int) for k in shape):
        return sum(math.prod(shape[:i + 1]) for i in range(len(shape)))
    return shape_size(shape)
