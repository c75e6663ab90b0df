r"""Recursive rejection sampling and Traversal Verification on token trees, by enumeration:
the exact output law of one round and its expected accepted drafts, written from the
definitions below (an independent cross-check of the tree family's round laws).

Notation as in :mod:`theory.tree_optimal`: a round from (n, s) drafts a tree of a fixed shape
cut at depth d′ = min(d, T − n); at a node X of depth i the children c₁ … c_k are drawn from
p(· | X) by "iid", "swor" or "topk"; p_j denotes the law child j was drawn from given
c₁ … c_{j−1} — p itself ("iid"), p without c₁ … c_{j−1} renormalized ("swor"), the point mass
at c_j ("topk").  An accepted leaf emits a bonus token from q(· | leaf) when ``bonus`` and
n + depth < T, else nothing.

**rrs** (SpecInfer's multi-step speculative sampling, Miao et al. 2024; Sequoia's for "swor";
EAGLE's top-k rule for "topk"): at X, q₁ = q(· | X); child c_j is accepted with
min(1, q_j(c_j)/p_j(c_j)), else q_{j+1} = [q_j − p_j]₊ normalized; accepted → descend to c_j;
all k rejected → emit one token from q_{k+1}, the round ends.

**traversal** (Traversal Verification, Weng et al., NeurIPS 2025, arXiv:2505.12398,
Algorithm 1): every node carries a state (π, q̃): the root (1, q(· | root)), a child c of X
(min(1, π_X q̃_X(c)/p_j(c)), q(· | c)) computed when its turn comes.  The tree is visited in
post-order (the first child's subtree first): a node whose children are all deleted is
*accepted* with probability π — the round emits its path and a token from q̃ (the bonus rule
at a leaf of the shape) — or else deleted, and its parent's state is updated with the law p_j
its token was drawn from:

.. math::  r = \sum_x [π\,q̃(x) - p_j(x)]_+,\qquad
           q̃ \leftarrow [π\,q̃ - p_j]_+ / r,\qquad π \leftarrow r / (r + 1 - π)

(π ← 1 when r + 1 − π = 0; the root is never deleted).  On a single path this is block
verification (Sun et al. 2025: π ← r/(r + 1 − π) is their weight h); at a root with one level
it is recursive rejection sampling (π stays 1).  *Lossless by induction*: a node entered
with state (π, q̃) is accepted or has an accepted descendant with probability π, and the next
token of the output given that is q̃-distributed (the rejected mass 1 − π + r of its first
child leaves [π q̃ − p]₊, exactly the mass the next state carries) — the exact output laws below
check this on every tested tree.

Two evaluations of each verifier: :func:`round_output_law` enumerates every drafted tree and
every outcome of the verifier's coins (exact in rationals), and :func:`verifier_value` computes
the expected accepted drafts by a recursion over the shape (sibling draws are enumerated, the
children's values recursed; for traversal through the lemma above) — fast enough for the shape
search of :mod:`theory.tree_shapes`; the tests check the two agree.
"""

from __future__ import annotations

from theory.tree_drafts import (
    _leaf_plain,
    _Rows,
    _start_contexts,
    cut_shape,
    drafted_trees,
    resolve_tree,
    shape_depth,
    sibling_draws,
)

__all__ = [
    "VERIFIERS",
    "expected_accepted",
    "is_lossless",
    "round_output_law",
    "verifier_value",
]

#: The verifiers evaluated here.
VERIFIERS = ("rrs", "traversal")


def _draw_law(p_row, used, token, sampling):
    """p_j: the law child j was drawn from, given the earlier siblings ``used``."""
    if sampling == "iid":
        return p_row
    if sampling == "topk":
        return tuple((1 if x == token else 0) * (1 + 0 * v) for x, v in enumerate(p_row))
    left = 1 - sum((p_row[x] for x in used), 0 * p_row[0])
    return tuple(0 * v if x in used else v / left for x, v in enumerate(p_row))


def _ratio_accept(scale, target, draft):
    """min(1, scale · target/draft) (draft > 0)."""
    value = scale * target / draft
    return value if value < 1 else 1 + 0 * value


def _residual(scale, q_row, p_row):
    """([scale·q − p]₊, its mass)."""
    gap = [scale * a - b for a, b in zip(q_row, p_row, strict=True)]
    gap = [g if g > 0 else 0 * g for g in gap]
    return gap, sum(gap, 0 * q_row[0])


def _emit(rows, weight, prefix, depth, law, count):
    return [(weight * v, (*prefix, y), count) for y, v in enumerate(law) if v != 0]


def _leaf_outputs(rows, weight, prefix, depth, context, bonus):
    if _leaf_plain(rows, depth, bonus):
        return [(weight, prefix, depth)]
    return _emit(rows, weight, prefix, depth, rows.q(depth, context), depth)


def _rrs(rows, nodes, prefix, depth, context, sampling, bonus):
    """[(probability, emitted string, accepted drafts)] of rrs below the node ``prefix``."""
    p_row, q_j = rows.p(depth, context), rows.q(depth, context)
    reach, used, out = rows.one, [], []
    for token, sub in nodes:
        p_j = _draw_law(p_row, used, token, sampling)
        accept = _ratio_accept(1, q_j[token], p_j[token])
        if accept != 0:
            child = rows.step(context, token)
            inner = (_rrs(rows, sub, (*prefix, token), depth + 1, child, sampling, bonus)
                     if sub else
                     _leaf_outputs(rows, 1, (*prefix, token), depth + 1, child, bonus))
            out += [(reach * accept * w, s, c) for w, s, c in inner]
        reach = reach * (1 - accept)
        gap, mass = _residual(1, q_j, p_j)
        if reach == 0 or mass == 0:  # mass 0 only with float rounding (accept ≈ 1): no mass left
            return out
        q_j = tuple(g / mass for g in gap)
        used.append(token)
    return out + _emit(rows, reach, prefix, depth, q_j, depth)


def _traversal(rows, nodes, prefix, depth, context, pi, q_tilde, sampling, bonus, leaf):
    """Outputs of traversal verification inside the subtree of ``prefix`` entered with
    state (π, q̃); the root (depth 0) is accepted when its children are all deleted."""
    p_row = rows.p(depth, context) if nodes else None
    used, reach, out = [], rows.one, []
    for token, sub in nodes:
        p_j = _draw_law(p_row, used, token, sampling)
        child = rows.step(context, token)
        pi_child = _ratio_accept(pi, q_tilde[token], p_j[token])
        inner = _traversal(rows, sub, (*prefix, token), depth + 1, child, pi_child,
                           rows.q(depth + 1, child) if rows.position + depth + 1 < rows.horizon
                           else None, sampling, bonus, not sub)
        out += [(reach * w, s, c) for w, s, c in inner]
        reach = reach * (1 - sum((w for w, _, _ in inner), 0 * reach))
        if reach == 0:
            return out
        gap, mass = _residual(pi, q_tilde, p_j)
        denominator = mass + 1 - pi
        pi = mass / denominator if denominator != 0 else 1 + 0 * mass
        if mass != 0:
            q_tilde = tuple(g / mass for g in gap)
        used.append(token)
    accept = 1 + 0 * pi if depth == 0 else pi
    if accept == 0:
        return out
    if leaf:
        return out + [(reach * w, s, c) for w, s, c in
                      _leaf_outputs(rows, accept, prefix, depth, context, bonus)]
    return out + _emit(rows, reach * accept, prefix, depth, q_tilde, depth)


def round_output_law(draft, target, tree, verifier: str, *, position: int = 0,
                     context: int = 0, sampling=None, bonus=None):
    r"""The exact law of one round's output: {(emitted string, accepted drafts): probability}.

    Enumerates every drafted tree of the shape (:func:`theory.tree_optimal.drafted_trees`)
    and every outcome of the verifier's coins; exact in rationals for Fraction models.

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    tree : tuple or tree algorithm
        A branching, a nested-tuple shape or a tree algorithm
        (:func:`theory.tree_optimal.resolve_tree`).
    verifier : {"rrs", "traversal"}
        The verification rule (module docstring).
    position, context : int
        The round's start (n, s).
    sampling : {"iid", "swor", "topk"}, optional
        Drafting rule (default "iid", or the algorithm's).
    bonus : bool, optional
        Bonus token at an accepted leaf before the horizon (default True).

    Returns
    -------
    dict

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM
    >>> from theory.tree_enumeration import round_output_law
    >>> p = MarkovLM.homogeneous([[F(1, 2), F(1, 2)]], 1, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(3, 4), F(1, 4)]], 1, next_context=[[0, 0]])
    >>> {k: str(v) for k, v in round_output_law(p, q, (1,), "rrs").items()}
    {((0,), 1): '1/2', ((1,), 1): '1/4', ((0,), 0): '1/4'}
    """
    if verifier not in VERIFIERS:
        raise ValueError(f"verifier must be one of {VERIFIERS}; got {verifier!r}")
    shape, sampling, bonus = resolve_tree(tree, sampling, bonus)
    rows = _Rows(draft, target, position, context)
    shape = cut_shape(shape, min(shape_depth(shape), rows.horizon - rows.position))
    law = {}
    for drafted, prob in drafted_trees(rows, shape, sampling):
        if verifier == "rrs":
            outputs = _rrs(rows, drafted, (), 0, rows.context, sampling, bonus)
        else:
            outputs = _traversal(rows, drafted, (), 0, rows.context, rows.one,
                                 rows.q(0, rows.context), sampling, bonus, False)
        for weight, string, count in outputs:
            law[(string, count)] = law.get((string, count), 0) + prob * weight
    return law


def expected_accepted(law):
    """E[accepted drafts] of an output law of :func:`round_output_law`."""
    return sum((weight * count for (_, count), weight in law.items()), 0)


def is_lossless(draft, target, law, *, position: int = 0, context: int = 0,
                tolerance: float = 0.0) -> bool:
    r"""Whether an output law, continued by the target, has the target's law.

    Checks A(w·x) = q(x | w) (A(w) − m(w)) for every string, A(u) = P(output starts with
    u), m(u) = P(output = u), A(∅) − m(∅) = 1 (exactly for Fractions; within ``tolerance``
    otherwise).

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    law : dict
        {(emitted string, accepted drafts): probability}.
    position, context : int
        The round's start (n, s).
    tolerance : float
        Allowed absolute error per string (0 for exact laws).

    Returns
    -------
    bool
    """
    rows = _Rows(draft, target, position, context)
    stop, starts = {}, {}
    for (string, _), weight in law.items():
        stop[string] = stop.get(string, 0) + weight
        for k in range(len(string) + 1):
            starts[string[:k]] = starts.get(string[:k], 0) + weight
    if abs(starts.get((), 0) - 1) > tolerance or stop.get((), 0) != 0:
        return False
    pending = [((), rows.context)]
    while pending:
        prefix, ctx = pending.pop()
        beyond = starts.get(prefix, 0) - stop.get(prefix, 0)
        if prefix == ():
            beyond = 1
        if len(prefix) + rows.position >= rows.horizon or (beyond == 0 and prefix != ()):
            if abs(beyond) > tolerance:
                return False
            continue
        for x, value in enumerate(rows.q(len(prefix), ctx)):
            if abs(starts.get((*prefix, x), 0) - value * beyond) > tolerance:
                return False
            if starts.get((*prefix, x), 0) != 0:
                pending.append(((*prefix, x), rows.step(ctx, x)))
    return True


# ---------------------------------------------------------------------------- recursions
def _rrs_value(rows, shape, depth, context, sampling, memo):
    key = ("rrs", shape, depth, context)
    if key in memo:
        return memo[key]
    p_row, q_row = rows.p(depth, context), rows.q(depth, context)
    child_values = {}
    total = 0 * q_row[0]
    for tokens, weight in sibling_draws(p_row, len(shape), sampling):
        reach, q_j, used = weight, q_row, []
        for j, token in enumerate(tokens):
            p_j = _draw_law(p_row, used, token, sampling)
            accept = _ratio_accept(1, q_j[token], p_j[token])
            if accept != 0:
                if (j, token) not in child_values:
                    child_values[(j, token)] = 1 + (_rrs_value(
                        rows, shape[j], depth + 1, rows.step(context, token), sampling, memo)
                        if shape[j] else 0)
                total = total + reach * accept * child_values[(j, token)]
            reach = reach * (1 - accept)
            gap, mass = _residual(1, q_j, p_j)
            if reach == 0 or mass == 0:  # mass 0: float rounding of accept ≈ 1
                break
            q_j = tuple(g / mass for g in gap)
            used.append(token)
    memo[key] = total
    return total


def _traversal_value(rows, children, depth, context, pi, q_tilde, used, sampling, memo):
    """E[accepted drafts below the node] for the remaining ``children`` subtrees, the node in
    state (π, q̃) after the siblings ``used`` were deleted (the lemma of the docstring)."""
    if not children:
        return 0 * pi
    key = ("trav", children, depth, context, pi, q_tilde, tuple(used))
    if key in memo:
        return memo[key]
    p_row = rows.p(depth, context)
    first, rest = children[0], children[1:]
    total = 0 * pi
    if sampling == "topk":
        order = sorted((x for x, v in enumerate(p_row) if v > 0), key=lambda x: (-p_row[x], x))
        draws = [(order[len(used)], 1 + 0 * pi)] if len(used) < len(order) else []
    elif sampling == "swor" and all(p_row[x] == 0 or x in used for x in range(len(p_row))):
        draws = []  # the draft's mass ran out: no more children
    else:
        law = _draw_law(p_row, used, None, sampling)
        draws = [(x, v) for x, v in enumerate(law) if v > 0]
    following = {}
    for token, prob in draws:
        p_j = _draw_law(p_row, used, token, sampling)
        pi_child = _ratio_accept(pi, q_tilde[token], p_j[token])
        child = rows.step(context, token)
        inner = 0 * pi
        if first and pi_child != 0:
            inner = _traversal_value(rows, first, depth + 1, child, pi_child,
                                     rows.q(depth + 1, child), [], sampling, memo)
        total = total + prob * (pi_child + inner)
        gap, mass = _residual(pi, q_tilde, p_j)
        if rest and pi_child != 1:
            denominator = mass + 1 - pi
            new_pi = mass / denominator if denominator != 0 else 1 + 0 * mass
            new_q = tuple(g / mass for g in gap) if mass != 0 else q_tilde
            after = [*used, token] if sampling != "iid" else used
            state = (new_pi, new_q, tuple(after))
            following[state] = following.get(state, 0 * pi) + prob * (1 - pi_child)
    for (new_pi, new_q, after), weight in following.items():
        total = total + weight * _traversal_value(rows, rest, depth, context, new_pi, new_q,
                                                  list(after), sampling, memo)
    memo[key] = total
    return total


def verifier_value(draft, target, tree, verifier: str, *, position: int = 0, context=None,
                   sampling=None, bonus=None, memo=None):
    r"""E[accepted drafts] of one round by the recursion over the shape (no tree enumeration).

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    tree : tuple or tree algorithm
        A branching, a nested-tuple shape or a tree algorithm.
    verifier : {"rrs", "traversal"}
        The verification rule.
    position : int
        n, the round's start position.
    context : int, optional
        The start context; ``None`` averages over the model's start law.
    sampling : {"iid", "swor", "topk"}, optional
        Drafting rule (default "iid", or the algorithm's).
    bonus : bool, optional
        Accepted for symmetry: the bonus token is never counted.
    memo : dict, optional
        A cache shared between calls on the same pair (shape searches pass one).

    Returns
    -------
    Fraction or float

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM
    >>> from theory.tree_enumeration import verifier_value
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 3, next_context=[[0, 0]])
    >>> [verifier_value(p, q, (1, 1), v) for v in ("rrs", "traversal")]  # token-wise, block
    [Fraction(10, 9), Fraction(11, 9)]
    """
    if verifier not in VERIFIERS:
        raise ValueError(f"verifier must be one of {VERIFIERS}; got {verifier!r}")
    shape, sampling, bonus = resolve_tree(tree, sampling, bonus)
    memo = {} if memo is None else memo
    total = 0
    for start, weight in _start_contexts(target, context):
        rows = memo.setdefault(("rows", id(draft), id(target), position, start),
                               _Rows(draft, target, position, start))
        cut = cut_shape(shape, min(shape_depth(shape), rows.horizon - rows.position))
        if verifier == "rrs":
            value = _rrs_value(rows, cut, 0, rows.context, sampling, memo)
        else:
            value = _traversal_value(rows, cut, 0, rows.context, rows.one,
                                     rows.q(0, rows.context), [], sampling, memo)
        total = total + (weight * value if rows.exact else float(weight) * value)
    return total
