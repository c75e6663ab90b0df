r"""Token-tree speculative decoding: :class:`TreeSpeculative` and its exact round law.

Production speculative decoding drafts a *tree* of continuations and verifies it in one target
call (SpecInfer, Sequoia, EAGLE, Medusa).  On a Markov-chain pair (p = draft, q = target) a
round's outcome depends on the whole drafted tree, so trees are a round-level family
(:class:`theory.algorithms.RoundLevelAlgorithm`, like :mod:`theory.block`): this module gives
the exact law of one round, and the generic round DP (:mod:`theory.rounds`) does the rest.

**Shapes.**  A node is the tuple of its children's subtrees in drafted order; a leaf is ``()``.
``branching=(k₁, …, k_d)`` is the regular tree whose nodes at depth i (the root, depth 0, is
the round's current context) have k_{i+1} children.  A round at position n uses the tree cut at
depth d′ = min(d, T − n).

**Drafting** (sampling).  At a node at depth i, in context c, the children are drafted from the
draft row p = p_{n+i}(· | c), the j-th child with law p_j given the earlier siblings c₁ … c_{j−1}:

* ``"iid"``: p_j = p;
* ``"swor"``: p_j = p without c₁ … c_{j−1}, renormalized (fewer children when its mass runs
  out);
* ``"topk"``: c_j is the j-th most probable token of p with positive mass (ties to the lowest
  index, :func:`theory.multidraft.draft_order`); p_j is the point mass at c_j.

The j-th drafted child gets the subtree ``shape[j]``.

**Recursive rejection sampling** (``verifier="rrs"``; SpecInfer's multi-step speculative
sampling for "iid", Sequoia's for "swor", EAGLE's top-k rule for "topk").  From the root, at a
node with target row q: q₁ = q; child c_j is accepted with probability
min(1, q_j(c_j)/p_j(c_j)); on rejection q_{j+1} = [q_j − p_j]₊ / Σ[q_j − p_j]₊.  An accepted child
is descended into; if every child is rejected one token is drawn from q_{k+1} and the round ends
(a *rejection*, one per round as for :class:`theory.BlockSpeculative`); an accepted node without
children emits a bonus token from q there when ``bonus`` and a position remains.

**Traversal Verification** (``verifier="traversal"``; Weng, Hu, Chen, Liu, Mei, Qiu, Tian, Shi,
NeurIPS 2025, arXiv:2505.12398, Algorithm 3).  Every node carries a sequence-level acceptance
p_α, a target row M_b and the draft law M_s of its next child.  Initially M_b = q at the node,
M_s = p₁ and, top-down,

.. math::  p_α(\text{root}) = 1,\qquad
           p_α(c) = \min\Big(1,\ p_α(X)\,\frac{M_b(c \mid X)}{M_s(c \mid X)}\Big)
           \quad (c \text{ a child of } X).

The tree is then traversed leaf to root in post-order: the first remaining leaf X_γ (follow the
first remaining child from the root) is accepted with probability p_α(X_γ) — the round emits
the path root → X_γ and a token Y ∼ M_b(· | X_γ) — or deleted.  Deleting X_γ updates its
parent X (the paper's residual updates):

.. math::  S = \sum_x \big[p_α(X)\, M_b(x \mid X) - M_s(x \mid X)\big]_+,\quad
           M_b' = \frac{[p_α(X) M_b - M_s]_+}{S},\quad
           p_α'(X) = \frac{S}{S + 1 - p_α(X)},

M_s′ = the law of X's next child (here: p_{j+1}, the conventions above), and p_α of the
remaining descendants of X is recomputed top-down from the updated values.  A node whose
children are all deleted becomes a leaf; its Y comes from its residual M_b′ (a rejection).  The
root keeps p_α = 1, so a round always ends.  On a single path (``branching=(1,)*d``) this is
block verification (:class:`theory.BlockSpeculative`: p_α = π_i, p_α′ = h_i); with one level
(``branching=(k,)``) it is recursive rejection sampling.

*Sources and conventions.*  The text of arXiv:2505.12398 was not at hand when this module was
written: the rule above follows the paper's Algorithm 3 and its residual updates as quoted by
public re-implementations of it, and is checked here by what the paper claims of it — exact
losslessness in rationals for every sampling (tests/theory/test_tree.py), block verification on
a single chain, rrs at one level.  The paper drafts siblings without replacement; we define
M_s for every sampling as the law of the next child given the earlier ones (p for "iid", the
renormalized remainder for "swor", the point mass for "topk"), the same convention as "rrs".
Ties: a 0/0 in p_α′ (S = 0 and p_α = 1) is 1, as block verification's h.  Bonus: an accepted
original leaf emits Y ∼ q (no test, not a rejection) when ``bonus`` and a position remains,
else nothing.

**The exact round law.**  Subtrees of distinct children are drafted independently given their
tokens, so the law of a round is a recursion over the tree: at a node, enumerate its children's
tokens one at a time (with their drafting laws), recurse into each child's subtree and carry
the verifier's state between siblings — (q_j) for rrs; (p_α, M_b) for traversal, where a
child's subtree depends on p_α(child) too (a path-dependent number, as for block
verification).  For "iid" the state after a rejected or deleted child does not depend on its
token, so rejected branches merge; for "swor" it does (the removed set).  Cost, per start
context: rrs caches subtrees by (shape, context, position) and costs Σ_nodes Σ_j b_j, traversal
Σ_j b_j (1 + cost(child j)), where b_j = 1 ("topk"), V ("iid") or V!/(V − j)! ("swor");
:meth:`TreeSpeculative.check_cost` refuses estimates above ``max_nodes`` up front.  Exact in
rationals for Fraction models.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from theory._arrays import zeros_like_kind
from theory.algorithms import (
    DEFAULT_MAX_NODES,
    RoundLaw,
    RoundLevelAlgorithm,
    _check_max_nodes,
)
from theory.models import MarkovLM, check_compatible
from theory.multidraft import draft_order
from theory.onestep import positive_part

__all__ = [
    "MAX_TREE_NODES",
    "SAMPLINGS",
    "VERIFIERS",
    "TreeSpeculative",
    "child_draft_law",
    "cut_tree",
    "round_law",
    "tree_nodes",
]

#: Largest number of drafted (non-root) nodes a tree may have.
MAX_TREE_NODES = 128
SAMPLINGS = ("iid", "swor", "topk")
VERIFIERS = ("rrs", "traversal", "optimal")

# final token of a round: none, from the target with no test (bonus), from a residual
_NO_TOKEN, _FROM_TARGET, _RESIDUAL = 0, 1, 2


def tree_nodes(shape) -> int:
    """Number of non-root nodes of a nested-tuple tree."""
    return sum(1 + tree_nodes(child) for child in shape)


def _depth(shape) -> int:
    return 1 + max(_depth(child) for child in shape) if shape else 0


def cut_tree(shape, depth: int):
    """The tree cut at ``depth`` (nodes deeper than ``depth`` removed).

    Examples
    --------
    >>> from theory.tree import cut_tree
    >>> cut_tree(((((),),), ()), 2)
    (((),), ())
    """
    if depth <= 0:
        return ()
    return tuple(cut_tree(child, depth - 1) for child in shape)


def _canonical(shape, limit: int):
    if not isinstance(shape, tuple):
        raise TypeError(f"shape must be a nested tuple (a node is the tuple of its children, a "
                        f"leaf is ()); found {shape!r}")
    if tree_nodes_capped(shape, limit) > limit:
        raise ValueError(f"shape has more than MAX_TREE_NODES = {limit} nodes")
    return tuple(_canonical(child, limit) for child in shape)


def tree_nodes_capped(shape, limit: int) -> int:
    """Node count, stopping early past ``limit`` (validation of huge shapes)."""
    count = 0
    for child in shape:
        if not isinstance(child, tuple):
            raise TypeError(f"shape must be a nested tuple (a node is the tuple of its "
                            f"children, a leaf is ()); found {child!r}")
        count += 1 + tree_nodes_capped(child, limit - count)
        if count > limit:
            break
    return count


def _from_branching(branching) -> tuple:
    shape: tuple = ()
    for k in reversed(branching):
        shape = (shape,) * k
    return shape


def child_draft_law(p, sampling: str, drawn, index: int):
    """The law p_j of the ``index``-th child (0-based) of a node with draft row ``p``, given its
    earlier siblings ``drawn``; None when the node has no such child ("swor" out of mass, "topk"
    out of tokens with mass).

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> import numpy as np
    >>> from theory.tree import child_draft_law
    >>> p = np.array([F(1, 2), F(1, 4), F(1, 4)], dtype=object)
    >>> [str(v) for v in child_draft_law(p, "swor", (0,), 1)]
    ['0', '1/2', '1/2']
    >>> [str(v) for v in child_draft_law(p, "topk", (0, 1), 2)]  # the 3rd most probable
    ['0', '0', '1']
    """
    p = np.asarray(p)
    if sampling == "iid":
        return p
    if sampling == "swor":
        rest = p.copy()
        rest[list(drawn)] = 0 * rest[list(drawn)]
        mass = rest.sum()
        return rest / mass if mass != 0 else None
    order = [int(x) for x in draft_order(p) if p[x] != 0]
    if index >= len(order):
        return None
    law = 0 * p
    law[order[index]] = 1 if p.dtype == object else 1.0
    return law


@dataclass(frozen=True)
class TreeSpeculative(RoundLevelAlgorithm):
    r"""Token-tree speculative decoding: draft a tree, verify it in one target call.

    See the module docstring (:mod:`theory.tree`) for the drafting rules, the two verifiers and
    the conventions.  One target call per round; "rrs" and "traversal" emit exactly the law q
    (tested exactly in rationals).  Reductions (exact): ``branching=(1,)*d`` with rrs is
    ``Speculative(window=d)`` for "iid" and "swor", and for "topk" it is
    ``Speculative(window=d)`` run on the *greedy* draft (the one-hot model of p's most probable
    token); ``branching=(k,)`` with rrs has the root law of ``BatchSpeculative(k, v)`` with v =
    "paper" ("iid"), "swor", "topk", and ``(k,) + (1,)*(T − 1)`` with "iid" ("swor") is
    ``BatchSpeculative(k, "paper")`` (``"swor"``) exactly; traversal on a single path is
    ``BlockSpeculative(d)`` (on the greedy draft for "topk") and at one level it is rrs.

    Parameters
    ----------
    branching : tuple of positive ints, optional
        (k₁, …, k_d): nodes at depth i have k_{i+1} children.
    shape : nested tuple, optional (keyword)
        The general tree: a node is the tuple of its children's subtrees, a leaf is ``()``;
        ``shape=(((), ()), ())`` is a root with two children, the first with two leaf children.
        Exactly one of ``branching`` and ``shape``; at most :data:`MAX_TREE_NODES` nodes.
    sampling : {"iid", "swor", "topk"}
    verifier : {"rrs", "traversal", "optimal"}
        "optimal" (the best lossless verifier of a drafted tree) is not unique: it names the
        problem, but :meth:`round_law`, the DPs and the engines refuse it.
    bonus : bool
        Whether an accepted leaf emits a bonus token from q (when a position remains).

    Examples
    --------
    The toy of Sun et al. (q = (1/3, 2/3), p = (2/3, 1/3)) with two i.i.d. chains of two:
    expected accepted drafts per round, rrs versus traversal.

    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM, TreeSpeculative, round_accepted_tokens
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 4, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 4, next_context=[[0, 0]])
    >>> [str(round_accepted_tokens(p, q, TreeSpeculative((2, 1), verifier=v)))
    ...  for v in ("rrs", "traversal")]
    ['35/27', '38/27']
    >>> TreeSpeculative((2, 2)).tree
    (((), ()), ((), ()))
    """

    branching: tuple | None = None
    shape: tuple | None = field(default=None, kw_only=True)
    sampling: str = field(default="iid", kw_only=True)
    verifier: str = field(default="rrs", kw_only=True)
    bonus: bool = field(default=True, kw_only=True)

    def __post_init__(self):
        if (self.branching is None) == (self.shape is None):
            raise TypeError("give exactly one of branching=(k1, ..., kd) and shape=<nested "
                            f"tuple>; got branching={self.branching!r}, shape={self.shape!r}")
        if self.branching is not None:
            if not isinstance(self.branching, (tuple, list)) or not self.branching:
                raise TypeError(f"branching must be a non-empty tuple of positive integers; "
                                f"got {self.branching!r}")
            for k in self.branching:
                if not isinstance(k, numbers.Integral) or isinstance(k, bool):
                    raise TypeError(f"branching must hold positive integers; got {k!r} in "
                                    f"{self.branching!r}")
                if k < 1:
                    raise ValueError(f"branching must hold integers >= 1; got {k} in "
                                     f"{self.branching!r}")
            branching = tuple(int(k) for k in self.branching)
            size = sum(math.prod(branching[:i + 1]) for i in range(len(branching)))
            if size > MAX_TREE_NODES:
                raise ValueError(f"branching {branching} has {size} nodes > MAX_TREE_NODES = "
                                 f"{MAX_TREE_NODES}")
            object.__setattr__(self, "branching", branching)
            tree = _from_branching(branching)
        else:
            tree = _canonical(self.shape, MAX_TREE_NODES)
            if not tree:
                raise ValueError("shape must have at least one node besides the root; got ()")
            object.__setattr__(self, "shape", tree)
        object.__setattr__(self, "_tree", tree)
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}; got {self.sampling!r}")
        if self.verifier not in VERIFIERS:
            raise ValueError(f"verifier must be one of {VERIFIERS}; got {self.verifier!r}")
        if not isinstance(self.bonus, (bool, np.bool_)):
            raise TypeError(f"bonus must be a bool; got {self.bonus!r}")

    def __repr__(self) -> str:
        tree = f"{self.branching!r}" if self.branching is not None else f"shape={self.shape!r}"
        return (f"TreeSpeculative({tree}, sampling={self.sampling!r}, "
                f"verifier={self.verifier!r}, bonus={self.bonus!r})")

    @property
    def tree(self) -> tuple:
        """The canonical nested tuple of the drafted tree (before the horizon cut)."""
        return self._tree

    @property
    def depth(self) -> int:
        """d, the depth of the tree."""
        return _depth(self._tree)

    @property
    def n_nodes(self) -> int:
        """Number of drafted (non-root) nodes of the full tree."""
        return tree_nodes(self._tree)

    def round_tree(self, position: int, horizon: int) -> tuple:
        """The tree a round at ``position`` drafts: cut at depth min(d, T − n)."""
        return cut_tree(self._tree, horizon - position)

    def round_key(self, position: int, horizon: int):
        """(d′, a position remains after depth d′): the round law's dependence on n for
        time-homogeneous models (leaves above depth d′ always have a position left)."""
        depth = min(self.depth, horizon - position)
        return (depth, position + depth < horizon)

    # -- cost ---------------------------------------------------------------------------
    def estimated_nodes(self, vocab_size: int, n_contexts: int, position: int,
                        horizon: int) -> int:
        """Upper estimate of the recursion steps of :meth:`round_law` at ``position``."""
        def branches(j):  # token prefixes the recursion tells apart before child j + 1
            if self.sampling == "topk":
                return 1
            if self.sampling == "iid":
                return vocab_size
            return math.perm(vocab_size, j + 1) if j < vocab_size else 0

        def cached(shape):  # rrs: every node once per context
            return sum(branches(j) for j in range(len(shape))) \
                + sum(cached(child) for child in shape)

        def uncached(shape):
            return sum(branches(j) * (1 + uncached(child)) for j, child in enumerate(shape))

        tree = self.round_tree(position, horizon)
        return n_contexts * (cached(tree) if self.verifier == "rrs" else uncached(tree))

    def check_cost(self, draft, target, consumer: str) -> None:
        """The exact DP refuses trees whose round law needs over ``DEFAULT_MAX_NODES`` steps
        (the estimate of :meth:`estimated_nodes`, at the round with the deepest cut)."""
        if consumer == "dp":
            self._check_supported()
            estimate = self.estimated_nodes(target.vocab_size, target.n_contexts, 0,
                                            target.horizon)
            if estimate > DEFAULT_MAX_NODES:
                raise ValueError(f"the exact law of {self!r} needs about {estimate} recursion "
                                 f"steps per round > {DEFAULT_MAX_NODES}; simulate instead")

    def _check_supported(self) -> None:
        if self.verifier == "optimal":
            raise ValueError(
                "TreeSpeculative(verifier='optimal') has no round law: the optimal lossless "
                "tree verifier (a linear program over couplings of drafted trees and output "
                "paths) is not unique, so its law of tokens and target calls is not defined "
                "until one optimal coupling is stated; its value per round is the LP's")

    # -- draft lengths ------------------------------------------------------------------
    def draft_lengths(self, horizon: int, n_contexts: int) -> np.ndarray:
        """Nodes of the cut tree, (T, S): the draft length of "iid" (for "swor" and "topk"
        it depends on the models: :meth:`expected_draft_lengths`)."""
        if self.sampling != "iid":
            raise TypeError(f"TreeSpeculative(sampling={self.sampling!r}) drafts a number of "
                            "tokens that depends on the models; use "
                            "expected_draft_lengths(draft, target)")
        sizes = [tree_nodes(self.round_tree(n, horizon)) for n in range(horizon)]
        return np.repeat(np.array(sizes, dtype=np.int64)[:, None], n_contexts, axis=1)

    def expected_draft_lengths(self, draft, target) -> np.ndarray:
        """E[drafted nodes of a round started at (n, s)], (T, S), exact for Fraction models
        ("swor" drafts fewer children where p has fewer tokens with mass, "topk" where it has
        fewer than k)."""
        check_compatible(draft, target)
        horizon = target.horizon
        if self.sampling == "iid":
            lengths = self.draft_lengths(horizon, target.n_contexts)
            return lengths.astype(object) if target.is_exact else lengths.astype(np.float64)
        out = zeros_like_kind((horizon, target.n_contexts), target.is_exact)
        cache: dict = {}

        def expected(shape, context, row):
            key = (shape, context, row)
            if not shape:
                return 0 * out[0, 0]
            if key not in cache:
                total = 0 * out[0, 0]
                for tokens, prob in _children(draft.probs[row, context], self.sampling,
                                              len(shape)):
                    for token, child in zip(tokens, shape, strict=False):
                        total = total + prob * (1 + expected(
                            child, int(target.next_context[context, token]), row + 1))
                cache[key] = total
            return cache[key]

        for n in range(horizon):
            for s in range(target.n_contexts):
                out[n, s] = expected(self.round_tree(n, horizon), s, n)
        return out

    def round_law(self, draft, target, position: int, *,
                  max_nodes: int = DEFAULT_MAX_NODES) -> RoundLaw:
        """The exact law of one round from ``position``: :func:`round_law`."""
        return round_law(draft, target, self, position, max_nodes=max_nodes)


def _children(p, sampling, count):
    """Every full drafted sequence of a node's (at most ``count``) children: (tokens, prob)."""
    one = 1 if np.asarray(p).dtype == object else 1.0
    stack = [((), one)]
    while stack:
        tokens, prob = stack.pop()
        law = None if len(tokens) == count else child_draft_law(p, sampling, tokens,
                                                                 len(tokens))
        if law is None:
            yield tokens, prob
            continue
        stack.extend(((*tokens, x), prob * law[x]) for x in np.nonzero(law != 0)[0])


class _Recursion:
    """The exact law of a round's subtrees (module docstring), one verifier.

    ``law(shape, context, row, alpha)`` returns (outcomes, deleted): outcomes maps
    (accepted depth below the node, final token kind, end context) to its probability, and
    ``deleted`` is the probability that the whole subtree is deleted (traversal; 0 for rrs).
    """

    def __init__(self, draft, target, algorithm, budget):
        self.draft, self.target, self.algorithm = draft, target, algorithm
        self.horizon = target.horizon
        self.following = target.next_context
        self.one = 1 if target.is_exact else 1.0
        self.budget = budget
        self.cache: dict = {}

    def spend(self):
        self.budget -= 1
        if self.budget < 0:
            raise ValueError(f"the exact round law of {self.algorithm!r} needs more recursion "
                             "steps than max_nodes; simulate instead")

    def final(self, context, law, kind, weight, out):
        """Add the node's last token y ∼ ``law`` (normalized) with mass ``weight``."""
        total = law.sum()
        for y in np.nonzero(law != 0)[0]:
            key = (0, kind, int(self.following[context, y]))
            out[key] = out.get(key, 0) + weight * law[y] / total

    def leaf(self, context, row, weight, out):
        """An accepted leaf: the bonus token from q, or nothing."""
        if self.algorithm.bonus and row < self.horizon:
            self.final(context, np.asarray(self.target.probs[row, context]),
                       _FROM_TARGET, weight, out)
        else:
            out[(0, _NO_TOKEN, context)] = out.get((0, _NO_TOKEN, context), 0) + weight

    def law(self, shape, context, row, alpha):
        key = (shape, context, row, alpha)
        if key not in self.cache:
            self.spend()
            out: dict = {}
            if not shape:
                deleted = self.one - alpha
                if alpha != 0:
                    self.leaf(context, row, alpha, out)
            else:
                deleted = self.siblings(shape, context, row, alpha, out)
            self.cache[key] = (out, deleted)
        return self.cache[key]

    def descend(self, child, token, context, row, alpha, weight, out):
        """Add child ``token``'s subtree outcomes (one token deeper) with mass ``weight``."""
        inner, deleted = self.law(child, int(self.following[context, token]), row + 1, alpha)
        for (depth, kind, end), prob in inner.items():
            key = (depth + 1, kind, end)
            out[key] = out.get(key, 0) + weight * prob
        return deleted


class _RRS(_Recursion):
    """Recursive rejection sampling: q_{j+1} = [q_j − p_j]₊ normalized after a rejection."""

    def siblings(self, shape, context, row, alpha, out):
        p = np.asarray(self.draft.probs[row, context])
        # stack of (j, residual q_j, drawn tokens, mass of reaching child j)
        stack = [(0, np.asarray(self.target.probs[row, context]), (), self.one)]
        sampling = self.algorithm.sampling
        while stack:
            j, residual, drawn, reach = stack.pop()
            law = child_draft_law(p, sampling, drawn, j) if j < len(shape) else None
            if law is None:  # every child rejected: a token from the last residual
                self.final(context, residual, _RESIDUAL, reach, out)
                continue
            rejected_mass = 0 * reach
            for x in np.nonzero(law != 0)[0]:
                accept = min(self.one, residual[x] / law[x])
                if accept != 0:  # descended into: accepted for good (p_α = 1)
                    self.descend(shape[j], x, context, row, self.one, reach * law[x] * accept,
                                 out)
                if accept != 1:
                    if sampling == "swor":
                        rest = positive_part(residual - law)
                        stack.append((j + 1, rest / rest.sum(), (*drawn, int(x)),
                                      reach * law[x] * (1 - accept)))
                    else:  # the residual does not depend on x: merge
                        rejected_mass = rejected_mass + law[x] * (1 - accept)
            if rejected_mass != 0:  # "iid", "topk": ``drawn`` is read by "swor" only
                rest = positive_part(residual - law)
                stack.append((j + 1, rest / rest.sum(), drawn, reach * rejected_mass))
        return 0 * self.one


class _Traversal(_Recursion):
    """Traversal Verification: post-order deletions update (p_α, M_b) of the parent."""

    def siblings(self, shape, context, row, alpha, out):
        p = np.asarray(self.draft.probs[row, context])
        stack = [(0, alpha, np.asarray(self.target.probs[row, context]), (), self.one)]
        sampling = self.algorithm.sampling
        deleted = 0 * self.one
        while stack:
            j, pi, residual, drawn, reach = stack.pop()
            law = child_draft_law(p, sampling, drawn, j) if j < len(shape) else None
            if law is None:  # every child deleted: this node is a leaf with p_α = pi
                if pi != 0:
                    self.final(context, residual, _RESIDUAL, reach * pi, out)
                deleted = deleted + reach * (1 - pi)
                continue
            gap = positive_part(pi * residual - law)
            total = gap.sum()  # S
            denominator = total + 1 - pi
            updated = total / denominator if denominator != 0 else self.one
            rest = gap / total if total != 0 else residual  # unused when updated == 0
            merged = 0 * reach
            for x in np.nonzero(law != 0)[0]:
                child_alpha = min(self.one, pi * residual[x] / law[x])
                gone = self.descend(shape[j], x, context, row, child_alpha, reach * law[x],
                                    out)
                if gone != 0:
                    if sampling == "swor":
                        stack.append((j + 1, updated, rest, (*drawn, int(x)),
                                      reach * law[x] * gone))
                    else:
                        merged = merged + law[x] * gone
            if merged != 0:  # "iid", "topk": ``drawn`` is read by "swor" only
                stack.append((j + 1, updated, rest, drawn, reach * merged))
        return deleted


def round_law(draft: MarkovLM, target: MarkovLM, algorithm: TreeSpeculative, position: int,
              *, max_nodes: int = DEFAULT_MAX_NODES) -> RoundLaw:
    r"""The exact law of one tree round from ``position``, for every start context.

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    algorithm : TreeSpeculative
        verifier "rrs" or "traversal" ("optimal" raises ``ValueError``).
    position : int
        n, 0 ≤ n < T: the round drafts the tree cut at depth min(d, T − n).
    max_nodes : int
        Limit on the recursion steps (:meth:`TreeSpeculative.estimated_nodes`, checked up front
        and while running); beyond it ``ValueError`` says to simulate.

    Returns
    -------
    RoundLaw
        With ``from_target`` (the rounds ending in a bonus token); Fractions for exact models.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM, TreeSpeculative
    >>> from theory.tree import round_law
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 3, next_context=[[0, 0]])
    >>> law = round_law(p, q, TreeSpeculative((2,)), 0)  # two i.i.d. drafts, one level
    >>> [str(law.total[k, 0, 0]) for k in range(3)], str(law.rejected[1, 0, 0])
    (['0', '2/9', '7/9'], '2/9')

    (The first draft fails w.p. 1/3; then the residual is (0, 1) and the second draft,
    token 1 w.p. 1/3, passes: both fail w.p. 1/3 · 2/3 = 2/9, a rejection of one token.)
    """
    check_compatible(draft, target)
    if not isinstance(algorithm, TreeSpeculative):
        raise TypeError(f"algorithm must be a TreeSpeculative; got {algorithm!r}")
    algorithm._check_supported()
    horizon = target.horizon
    if not isinstance(position, numbers.Integral) or isinstance(position, bool) \
            or not 0 <= position < horizon:
        raise ValueError(f"position must be an integer in [0, T) = [0, {horizon}); "
                         f"got {position!r}")
    max_nodes = _check_max_nodes(max_nodes)
    n_contexts = target.n_contexts
    estimate = algorithm.estimated_nodes(target.vocab_size, n_contexts, position, horizon)
    if estimate > max_nodes:
        raise ValueError(f"the exact round law of {algorithm!r} at position {position} needs "
                         f"about {estimate} recursion steps > max_nodes = {max_nodes}; "
                         "simulate instead")
    exact = target.is_exact
    tree = algorithm.round_tree(position, horizon)
    shape = (_depth(tree) + 2, n_contexts, n_contexts)
    accepted, rejected = zeros_like_kind(shape, exact), zeros_like_kind(shape, exact)
    from_target = zeros_like_kind(shape, exact)
    kind = _RRS if algorithm.verifier == "rrs" else _Traversal
    recursion = kind(draft, target, algorithm, max_nodes)
    one = 1 if exact else 1.0
    for s in range(n_contexts):
        outcomes, _ = recursion.law(tree, s, position, one)  # the root is never deleted
        for (depth, final, end), prob in outcomes.items():
            k = depth + (final != _NO_TOKEN)
            if final == _RESIDUAL:
                rejected[k, s, end] += prob
            else:
                accepted[k, s, end] += prob
                if final == _FROM_TARGET:
                    from_target[k, s, end] += prob
    return RoundLaw(position, accepted, rejected, from_target)
