r"""Token trees in the conformance harness: the tree convention, its round runner, and the
reference tree verifiers (SpecInfer's and EAGLE's rules) with known-wrong mutants.

**The tree convention** (framework-neutral, batched, like the path convention of
:mod:`sim.conformance`).  A tree verifier is a callable

``verifier(tree_tokens, parents, draft_probs, target_probs, rng) -> emitted``

* the tree has nodes 0 … N in breadth-first order, node 0 the root (the round's current
  context, no token); ``parents`` int64 (N,): ``parents[v − 1]`` is the parent of node v (< v);
  siblings appear in drafted order;
* ``tree_tokens`` int64 (B, N): the token of node v in column v − 1, or −1 where the node was
  not drafted (sampling without replacement or top-k ran out of tokens with draft mass; the
  node's subtree is then −1 too);
* ``draft_probs`` float64 (B, N + 1, V): row v is the law the children of node v were drafted
  from, p(· | the path to v) — *before* any removal: a verifier of trees drafted without
  replacement renormalizes itself (that is its rule);
* ``target_probs`` float64 (B, N + 1, V): row v is q(· | the path to v) — the target at the
  position after node v.  Where that position is beyond the horizon (a leaf at the horizon)
  and for nodes that were not drafted the rows are placeholders (uniform), as the path
  convention's bonus row is;
* ``rng``: a numpy ``Generator``;
* returns int64 (B, D + 1), D the tree's depth: the tokens the round emits — the accepted
  path's tokens, then one token (a correction, or the bonus at an accepted leaf) — and −1 after
  the last one.

The harness (:func:`sim.conformance.check_verifier` with ``tree=``) drafts the tree of
:class:`theory.TreeSpeculative`'s ``shape`` and ``sampling`` from p at every round (cut at the
horizon: a round at position n drafts the depths ≤ min(d, T − n)), calls the verifier on the
batch, advances each generation by the emitted tokens and tests the token counts per (position,
context) against the target exactly as for paths: a lossless tree verifier's output, continued,
follows the target.  Efficiency is the accepted drafted tokens per round (the longest prefix of
the emitted tokens that is a path of drafted nodes, at most the number emitted − 1) over the
exact expected number under recursive rejection sampling on the same tree and sampling
(:func:`theory.round_accepted_tokens` with ``verifier="rrs"``; NaN on a pair where that exact
value is too large to compute, e.g. "swor" at V = 10⁴).

**Reference verifiers** (:func:`tree_verifier`): recursive rejection sampling down the tree
(:class:`theory.TreeSpeculative`'s ``"rrs"``): at a node with drafted children c₁ … c_k and
target row q, q₁ = q; c_j is accepted with probability min(1, q_j(c_j)/p_j(c_j)), p_j = p
(``"iid"``, SpecInfer's multi-step speculative sampling), p without c₁ … c_{j−1} renormalized
(``"swor"``, Sequoia's), the point mass at c_j (``"topk"``, EAGLE's top-k trees); on rejection
q_{j+1} = normalize([q_j − p_j]₊); all rejected: one token from q_{k+1}; an accepted leaf: a
bonus token from its target row.  Known-wrong mutants (``mutation=``), negative controls of the
harness: ``"stale_residual"`` (every sibling is tested against q itself, the residual is not
updated between siblings) and ``"rows_by_depth"`` (every node is verified with the rows of the
first node at its depth — a tree flattened as if it were a path).
"""

from __future__ import annotations

import functools

import numpy as np

from sim.conformance.calls import call_verifier
from sim.conformance.rounds import _checked_output, _sample
from theory import TreeSpeculative, round_accepted_tokens
from theory.tree import cut_tree

__all__ = ["TREE_MUTATIONS", "TREE_SAMPLINGS", "TreeRounds", "eagle_verifier",
           "specinfer_verifier", "tree_verifier"]

#: Drafting rules of a tree (:class:`theory.TreeSpeculative`'s ``sampling``).
TREE_SAMPLINGS = ("iid", "swor", "topk")
#: Known-wrong rules of :func:`tree_verifier` (negative controls).
TREE_MUTATIONS = ("stale_residual", "rows_by_depth")


# ------------------------------------------------------------------ the tree's layout
@functools.lru_cache(maxsize=256)
def bfs_layout(shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(parents (N,), depths (N + 1,)) of a nested-tuple tree in breadth-first order.

    A node is the tuple of its children's subtrees (a leaf is ``()``), node 0 the root.

    Examples
    --------
    >>> from sim.conformance.trees import bfs_layout
    >>> parents, depths = bfs_layout(((( ), ()), ()))
    >>> parents.tolist(), depths.tolist()
    ([0, 0, 1, 1], [0, 1, 1, 2, 2])
    """
    parents, depths, queue = [], [0], [(shape, 0)]
    for index, (node, depth) in enumerate(queue):  # the queue grows while it is read
        for child in node:
            parents.append(index)
            depths.append(depth + 1)
            queue.append((child, depth + 1))
    return np.asarray(parents, dtype=np.int64), np.asarray(depths, dtype=np.int64)


def _children(parents: np.ndarray) -> list[list[int]]:
    children = [[] for _ in range(parents.size + 1)]
    for node, parent in enumerate(parents.tolist(), start=1):
        children[parent].append(node)
    return children


# ------------------------------------------------------------------ drafting a batch of trees
def _top_tokens(rows: np.ndarray, k: int) -> np.ndarray:
    """The k most probable tokens of each row with positive mass (ties to the lowest index),
    −1 where a row has fewer."""
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    mass = np.take_along_axis(rows, order, axis=1)
    top = np.full((rows.shape[0], k), -1, dtype=np.int64)
    top[:, :order.shape[1]] = np.where(mass > 0, order, -1)
    return top


def draft_trees(shape: tuple, sampling: str, p_rows, rng) -> np.ndarray:
    """Tokens (B, N) of B trees drafted by ``sampling`` (−1: not drafted).

    ``p_rows(v, tokens) -> (B, V)`` gives the draft law of node v's children in every row; it
    is called once per internal node, parents first, with the tokens drafted so far (None
    before the root's children).
    """
    parents, _ = bfs_layout(shape)
    children = _children(parents)
    tokens = None
    for node, kids in enumerate(children):
        if not kids:
            continue
        rows = p_rows(node, tokens)
        if tokens is None:
            tokens = np.full((rows.shape[0], parents.size), -1, dtype=np.int64)
        alive = np.ones(rows.shape[0], dtype=bool) if node == 0 else tokens[:, node - 1] >= 0
        if sampling == "topk":
            top = _top_tokens(rows, len(kids))
            for j, child in enumerate(kids):
                tokens[:, child - 1] = np.where(alive, top[:, j], -1)
            continue
        left = rows.copy()
        for child in kids:
            live = alive & (left.sum(axis=1) > 0)
            if live.any():
                drawn = _sample(left[live], rng)
                tokens[live, child - 1] = drawn
                if sampling == "swor":
                    left[np.flatnonzero(live), drawn] = 0.0
            alive = live
    return tokens


# ------------------------------------------------------------------ one round of a pair
def tree_round(verifier, name, pair, shape, sampling, start_n, start_s, p_all, q_all,
               following, draft_rng, verify_rng, timeout):
    """Draft one cut tree per row, call the verifier, check its output: (emitted, accepted).

    ``shape`` is already cut at this round's depth (every row of the batch has the same
    depth).  ``accepted[b]`` is the longest prefix of row b's emitted tokens that is a path of
    drafted nodes, at most the number emitted − 1.
    """
    rows, horizon, vocab = start_n.size, pair.target.horizon, pair.target.vocab_size
    parents, depths = bfs_layout(shape)
    n_nodes = parents.size
    contexts = np.zeros((rows, n_nodes + 1), dtype=np.int64)
    contexts[:, 0] = start_s
    placeholder = np.full(vocab, 1.0 / vocab)
    p_rows = np.empty((rows, n_nodes + 1, vocab))
    q_rows = np.empty((rows, n_nodes + 1, vocab))

    def fill(node, tokens):
        """Rows of ``node`` (its context is known: parents come first)."""
        if node:
            parent, token = parents[node - 1], tokens[:, node - 1]
            drafted = token >= 0
            contexts[:, node] = np.where(drafted, following[contexts[:, parent],
                                                            np.maximum(token, 0)], 0)
        at = start_n + depths[node]
        inside = at < horizon
        live = inside if not node else inside & (tokens[:, node - 1] >= 0)
        p_rows[:, node], q_rows[:, node] = placeholder, placeholder
        p_rows[live, node] = p_all[at[live], contexts[live, node]]
        q_rows[live, node] = q_all[at[live], contexts[live, node]]
        return p_rows[:, node]

    tokens = draft_trees(shape, sampling, fill, draft_rng)
    if tokens is None:  # a tree of the root alone cannot be drafted: refused by TreeRounds
        raise AssertionError("a tree round needs at least one node")
    for node, kids in enumerate(_children(parents)):  # the leaves' rows (fill ran for the
        if not kids:                                    # internal nodes while drafting)
            fill(node, tokens)
    depth = int(depths.max())
    where = (f"tree verifier {name} on suite pair {pair.name!r} (B = {rows}, {n_nodes} nodes "
             f"of depth {depth}, V = {vocab})")
    emitted = call_verifier(verifier, (tokens.copy(), parents.copy(), p_rows, q_rows,
                                       verify_rng), timeout, where)
    emitted = _checked_output(emitted, rows, depth, vocab, where)
    return emitted, _accepted_along(emitted, tokens, parents)


def _accepted_along(emitted: np.ndarray, tokens: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Per row, the longest prefix of ``emitted`` that is a path of drafted nodes, capped at
    the number of tokens emitted − 1."""
    children = _children(parents)
    rows = emitted.shape[0]
    node = np.zeros(rows, dtype=np.int64)
    accepted = np.zeros(rows, dtype=np.int64)
    going = np.ones(rows, dtype=bool)
    length = (emitted >= 0).sum(axis=1)
    for i in range(emitted.shape[1] - 1):
        going &= i < length - 1
        found = np.zeros(rows, dtype=np.int64)
        for v in range(parents.size + 1):
            for child in children[v]:
                hit = going & (node == v) & (found == 0) & (tokens[:, child - 1] >= 0) \
                    & (tokens[:, child - 1] == emitted[:, i])
                found[hit] = child
        going &= found > 0
        node = np.where(going, found, node)
        accepted += going
    return accepted


class TreeRounds:
    """Rounds of the tree convention for one pair (the strategy :func:`sim.conformance.rounds.
    _run_pair` plays): a round at position n drafts ``algorithm``'s tree cut at depth
    min(d, T − n) with its ``sampling``; the optimum per round is recursive rejection
    sampling's expected accepted tokens on that tree from the round's start
    (:func:`theory.round_accepted_tokens`)."""

    def __init__(self, verifier, name, pair, algorithm, draft_rng, verify_rng, timeout=None):
        self.verifier, self.name, self.pair, self.timeout = verifier, name, pair, timeout
        self.draft_rng, self.verify_rng = draft_rng, verify_rng
        self.shape, self.sampling = algorithm.tree, algorithm.sampling
        self.depth = int(bfs_layout(self.shape)[1].max())
        self.rrs = TreeSpeculative(shape=self.shape, sampling=self.sampling, verifier="rrs")
        self.p_all = np.asarray(pair.draft.probs, dtype=np.float64)
        self.q_all = np.asarray(pair.target.probs, dtype=np.float64)
        self._optimum: dict = {}

    def span(self, positions: np.ndarray) -> np.ndarray:
        return np.minimum(self.depth, self.pair.target.horizon - positions)

    def width(self, k: int) -> int:
        """Rows of V floats per round handed to the verifier: p and q per node."""
        return 2 * (bfs_layout(cut_tree(self.shape, k))[0].size + 1)

    def optimum(self, position: int, context: int) -> float:
        key = (position, context)
        if key not in self._optimum:
            try:
                self._optimum[key] = float(round_accepted_tokens(
                    self.pair.draft, self.pair.target, self.rrs, position=position,
                    context=context))
            except ValueError:  # too large to compute exactly: no efficiency for this pair
                self._optimum[key] = float("nan")
        return self._optimum[key]

    def play(self, k: int, start_n, start_s):
        emitted, accepted = tree_round(
            self.verifier, self.name, self.pair, cut_tree(self.shape, k), self.sampling,
            start_n, start_s, self.p_all, self.q_all, self.pair.target.next_context,
            self.draft_rng, self.verify_rng, self.timeout)
        optimum = sum(self.optimum(int(n), int(s)) for n, s in zip(start_n, start_s,
                                                                      strict=True))
        return emitted, accepted, optimum


def checked_tree(tree):
    """``tree`` if it is a :class:`theory.TreeSpeculative` (the harness reads its ``tree``
    shape and ``sampling``; its verifier is the one under test), else ``TypeError``."""
    if not isinstance(tree, TreeSpeculative):
        raise TypeError(f"tree must be a theory.TreeSpeculative (its shape and sampling say how "
                        f"the harness drafts); got {tree!r}")
    return tree


# ------------------------------------------------------------------ reference verifiers
def tree_verifier(sampling: str = "iid", *, mutation: str | None = None):
    """Recursive rejection sampling down a token tree, in the tree convention (module doc).

    Parameters
    ----------
    sampling : "iid", "swor" or "topk"
        How the trees it verifies were drafted (the p_j of the module doc).
    mutation : None, "stale_residual" or "rows_by_depth"
        A known-wrong variant (negative controls; module doc).

    Examples
    --------
    >>> import numpy as np
    >>> from sim.conformance.trees import tree_verifier
    >>> p = np.full((1, 3, 2), 0.5); q = np.array([[[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]])
    >>> tokens = np.array([[0, 1]]); parents = np.array([0, 0])  # two root children, 0 and 1
    >>> # 0 has q = 0: rejected; 1 is then p's only token left and q₂ = (0, 1): accepted;
    >>> # node 2 is a leaf: the bonus comes from its target row (1, 0)
    >>> tree_verifier("swor")(tokens, parents, p, q, np.random.default_rng(0))
    array([[1, 0]])
    """
    if sampling not in TREE_SAMPLINGS:
        raise ValueError(f"sampling must be one of {TREE_SAMPLINGS}; got {sampling!r}")
    if mutation is not None and mutation not in TREE_MUTATIONS:
        raise ValueError(f"mutation must be None or one of {TREE_MUTATIONS}; got {mutation!r}")

    def verifier(tree_tokens, parents, draft_probs, target_probs, rng):
        tree_tokens = np.asarray(tree_tokens, dtype=np.int64)
        parents = np.asarray(parents, dtype=np.int64)
        children = _children(parents)
        depths = np.zeros(parents.size + 1, dtype=np.int64)
        for node, parent in enumerate(parents.tolist(), start=1):
            depths[node] = depths[parent] + 1
        row_of = np.arange(parents.size + 1)
        if mutation == "rows_by_depth":  # the first node of each depth stands for all of it
            row_of = np.searchsorted(depths, depths)
        emitted = np.full((tree_tokens.shape[0], int(depths.max()) + 1), -1, dtype=np.int64)
        for b in range(tree_tokens.shape[0]):
            node, i = 0, 0
            while True:
                p, q = draft_probs[b, row_of[node]], target_probs[b, row_of[node]]
                kids = [c for c in children[node] if tree_tokens[b, c - 1] >= 0]
                accepted = _verify_children(tree_tokens[b], kids, p, q, sampling, mutation,
                                            rng)
                if isinstance(accepted, int):
                    emitted[b, i] = tree_tokens[b, accepted - 1]
                    node, i = accepted, i + 1
                    continue
                emitted[b, i] = _sample(accepted[None, :], rng)[0]
                break
        return emitted

    label = sampling if mutation is None else f"{sampling}, mutation={mutation!r}"
    verifier.__qualname__ = f"tree_verifier({label})"
    return verifier


def _verify_children(tokens, kids, p, q, sampling, mutation, rng):
    """The accepted child (an int), or the law (V,) of the round's last token."""
    residual = q.astype(np.float64).copy()
    left = p.astype(np.float64).copy()
    for child in kids:
        x = tokens[child - 1]
        if sampling == "topk":
            p_j = np.zeros_like(left)
            p_j[x] = 1.0
        else:
            p_j = left / left.sum()
        if rng.random() * p_j[x] < residual[x]:
            return child
        if mutation == "stale_residual":
            continue
        gap = np.maximum(residual - p_j, 0.0)
        residual = gap / gap.sum() if gap.sum() > 0 else q.astype(np.float64)
        if sampling == "swor":
            left[x] = 0.0
    return residual


_SPECINFER, _EAGLE = tree_verifier("iid"), tree_verifier("topk")


def specinfer_verifier(tree_tokens, parents, draft_probs, target_probs, rng):
    """SpecInfer's multi-step speculative sampling (Miao et al., ASPLOS 2024): recursive
    rejection sampling of i.i.d. drafted children — :func:`tree_verifier` ("iid").

    Parameters
    ----------
    tree_tokens, parents, draft_probs, target_probs, rng :
        The tree convention (module doc).
    """
    return _SPECINFER(tree_tokens, parents, draft_probs, target_probs, rng)


def eagle_verifier(tree_tokens, parents, draft_probs, target_probs, rng):
    """EAGLE's rule for top-k trees (Li et al., 2024): each drafted child is the point mass at
    its token — :func:`tree_verifier` ("topk").

    Parameters
    ----------
    tree_tokens, parents, draft_probs, target_probs, rng :
        The tree convention (module doc).
    """
    return _EAGLE(tree_tokens, parents, draft_probs, target_probs, rng)
