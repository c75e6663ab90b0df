r"""Drafted token trees for the tree verifiers' exact computations: shapes, the drafting
rules, the law of the drafted tree and of its trie (:mod:`theory.tree_optimal`).

A *shape* is a nested tuple: a node is the tuple of its children's subtrees in drafted order,
a leaf is ``()``; ``branching=(k₁, …, k_d)`` gives every node at depth i − 1 k_i children.  A
round from (position n, context s) cuts the shape at depth d′ = min(d, T − n).  At a node the
children's tokens are drawn from the draft row p(· | node): "iid" i.i.d.; "swor" sequentially
without replacement (p renormalized after each removal, fewer children when the draft has fewer
tokens with mass); "topk" the k most probable tokens with p > 0 (ties to the lower index).
A drafted tree is a tuple of (token, subtree) pairs; its *trie* is the set of its root-to-node
token strings with, for each, whether an extra token (correction or bonus) or a plain stop (an
accepted leaf with no bonus due) may follow it.
"""

from __future__ import annotations

import itertools
import math
import numbers
from fractions import Fraction

import numpy as np

from theory.models import MarkovLM, check_compatible

__all__ = [
    "SAMPLINGS",
    "cut_shape",
    "drafted_trees",
    "drafted_tries",
    "estimate_variables",
    "resolve_tree",
    "shape_depth",
    "shape_from_branching",
    "shape_size",
    "sibling_draws",
    "trie_of",
]

#: The drafting rules of a tree's children.
SAMPLINGS = ("iid", "swor", "topk")


# ---------------------------------------------------------------------------- shapes
def shape_from_branching(branching) -> tuple:
    """The nested-tuple shape of ``branching=(k₁, …, k_d)``.

    Examples
    --------
    >>> from theory.tree_drafts import shape_from_branching
    >>> shape_from_branching((2, 1))
    (((),), ((),))
    """
    branching = tuple(branching)
    for k in branching:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"branching must hold integers >= 1; got {branching!r}")
    if not branching:
        raise ValueError("branching must have at least one level")
    shape = ()
    for k in reversed(branching):
        shape = (shape,) * int(k)
    return shape


def _check_shape(shape) -> tuple:
    if not isinstance(shape, tuple) or any(not isinstance(c, tuple) for c in shape):
        raise ValueError(f"shape must be a nested tuple of tuples (a leaf is ()); got {shape!r}")
    for child in shape:
        _check_shape(child)
    return shape


def shape_size(shape) -> int:
    """Number of drafted nodes (the root, the round's context, not counted)."""
    return sum(1 + shape_size(child) for child in shape)


def shape_depth(shape) -> int:
    return 1 + max(map(shape_depth, shape)) if shape else 0


def cut_shape(shape, depth: int) -> tuple:
    """``shape`` without its nodes deeper than ``depth``."""
    if depth <= 0:
        return ()
    return tuple(cut_shape(child, depth - 1) for child in shape)


def resolve_tree(tree, sampling=None, bonus=None):
    """(shape, sampling, bonus) from a branching tuple, a shape or a tree algorithm.

    ``tree`` may be a tuple of ints (a branching), a nested tuple (a shape) or any object with
    ``shape``/``branching``, ``sampling`` and ``bonus`` attributes (the tree algorithm); the
    keyword values, when given, must agree with an algorithm's.
    """
    if hasattr(tree, "sampling"):
        shape = getattr(tree, "shape", None)
        if shape is None:
            shape = shape_from_branching(tree.branching)
        own = (tree.sampling, getattr(tree, "bonus", True))
        for name, given, value in (("sampling", sampling, own[0]), ("bonus", bonus, own[1])):
            if given is not None and given != value:
                raise ValueError(f"{name}={given!r} disagrees with the algorithm's {value!r}")
        sampling, bonus = own
    elif isinstance(tree, tuple) and tree and all(isinstance(k, numbers.Integral)
                                                  for k in tree):
        shape = shape_from_branching(tree)
    else:
        shape = _check_shape(tree)
    sampling = "iid" if sampling is None else sampling
    bonus = True if bonus is None else bonus
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}; got {sampling!r}")
    if not shape:
        raise ValueError("the tree must have at least one drafted node")
    return _check_shape(shape), sampling, bool(bonus)


# ---------------------------------------------------------------------------- rows
class _Rows:
    """Draft and target rows along strings from one start (position n, context s)."""

    def __init__(self, draft: MarkovLM, target: MarkovLM, position: int, context: int):
        check_compatible(draft, target)
        horizon = target.horizon
        if not isinstance(position, numbers.Integral) or isinstance(position, bool) \
                or not 0 <= position < horizon:
            raise ValueError(f"position must be an integer in [0, T) = [0, {horizon}); "
                             f"got {position!r}")
        if not isinstance(context, numbers.Integral) or not 0 <= context < target.n_contexts:
            raise ValueError(f"context must be an integer in [0, S) = [0, "
                             f"{target.n_contexts}); got {context!r}")
        self.draft, self.target = draft, target
        self.position, self.context = int(position), int(context)
        self.exact = target.is_exact and draft.is_exact
        self.horizon = horizon
        self.vocab = target.vocab_size
        self._next = np.asarray(target.next_context)
        self._cache = {}

    def _row(self, model, depth, context):
        key = (id(model), depth, context)
        if key not in self._cache:
            row = model.probs[self.position + depth, context]
            self._cache[key] = tuple(Fraction(v) if self.exact else float(v) for v in row)
        return self._cache[key]

    def p(self, depth, context):
        return self._row(self.draft, depth, context)

    def q(self, depth, context):
        return self._row(self.target, depth, context)

    def step(self, context, token):
        return int(self._next[context, token])

    def string_context(self, string):
        context = self.context
        for token in string:
            context = self.step(context, token)
        return context

    @property
    def one(self):
        return Fraction(1) if self.exact else 1.0


def sibling_draws(p_row, k: int, sampling: str):
    """[(tokens, probability)]: the laws of k children drawn from ``p_row`` by ``sampling``.

    "swor" and "topk" draw min(k, support) children.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory.tree_drafts import sibling_draws
    >>> [(t, str(w)) for t, w in sibling_draws((F(1, 2), F(1, 2)), 2, "swor")]
    [((0, 1), '1/2'), ((1, 0), '1/2')]
    """
    support = [x for x, v in enumerate(p_row) if v > 0]
    if sampling == "iid":
        out = []
        for tokens in itertools.product(support, repeat=k):
            weight = 1
            for x in tokens:
                weight = weight * p_row[x]
            out.append((tokens, weight))
        return out
    if sampling == "topk":
        order = sorted(support, key=lambda x: (-p_row[x], x))
        return [(tuple(order[:k]), 1 + 0 * p_row[order[0]])]
    out = []
    for tokens in itertools.permutations(support, min(k, len(support))):
        weight, used = 1, 0
        for x in tokens:
            weight = weight * p_row[x] / (1 - used)
            used = used + p_row[x]
        out.append((tokens, weight))
    return out


def drafted_trees(rows: _Rows, shape, sampling: str, depth: int = 0, context=None):
    """[(tree, probability)]: every drafted tree of ``shape`` from one start, with its law.

    A drafted tree is a tuple of (token, subtree) pairs in drafted order (zero-probability
    drafts are left out).
    """
    context = rows.context if context is None else context
    if not shape:
        return [((), rows.one)]
    out = []
    for tokens, weight in sibling_draws(rows.p(depth, context), len(shape), sampling):
        options = [drafted_trees(rows, shape[j], sampling, depth + 1, rows.step(context, x))
                   for j, x in enumerate(tokens)]
        for combo in itertools.product(*options):
            prob = weight
            for _, sub_prob in combo:
                prob = prob * sub_prob
            tree = tuple((x, sub) for x, (sub, _) in zip(tokens, combo, strict=True))
            out.append((tree, prob))
    return out


def _leaf_plain(rows: _Rows, depth: int, bonus: bool) -> bool:
    """Whether an accepted leaf at ``depth`` stops without an extra token."""
    return not (bonus and rows.position + depth < rows.horizon)


def trie_of(rows: _Rows, tree, bonus: bool):
    """The trie of a drafted tree: {string: (extra allowed, plain stop allowed)} (sorted)."""
    marks = {(): (True, False)}

    def walk(nodes, prefix):
        for token, sub in nodes:
            string = (*prefix, token)
            extra, plain = marks.get(string, (False, False))
            if sub:
                extra = True
            elif _leaf_plain(rows, len(string), bonus):
                plain = True
            else:
                extra = True
            marks[string] = (extra, plain)
            walk(sub, string)

    walk(tree, ())
    return tuple(sorted(marks.items()))


def drafted_tries(rows: _Rows, shape, sampling: str, bonus: bool):
    """{trie: P(D has this trie)} for one start."""
    out = {}
    for tree, prob in drafted_trees(rows, shape, sampling):
        key = trie_of(rows, tree, bonus)
        out[key] = out.get(key, 0) + prob
    return out


def _tree_count_bound(shape, sampling: str, support: int) -> int:
    """An upper bound on the number of drafted trees of ``shape``."""
    if not shape:
        return 1
    k = len(shape)
    draws = {"iid": support ** k, "topk": 1,
             "swor": math.perm(support, min(k, support))}[sampling]
    return draws * math.prod(_tree_count_bound(c, sampling, support) for c in shape)


def estimate_variables(shape, sampling: str, vocab_support: int, vocab: int) -> int:
    """Upper bound on the LP's variables: drafted trees × (nodes + 1) × (V + 1)."""
    return (_tree_count_bound(shape, sampling, vocab_support)
            * (shape_size(shape) + 1) * (vocab + 1))


def _start_contexts(target: MarkovLM, context):
    if context is not None:
        return [(int(context), 1)]
    law = target.start_distribution
    return [(s, law[s]) for s in range(target.n_contexts) if law[s] != 0]
