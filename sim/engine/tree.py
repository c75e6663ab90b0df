r"""Token-tree speculative decoding in the engines (:class:`theory.TreeSpeculative`).

The compiled kernel and its tables are in :mod:`sim.engine.tree_kernel` (registered here;
the torch run is :mod:`gpu_kernels.tree`); the readable routine below is the definition they
and the exact round law of :mod:`theory.tree` are checked against: it shares none of that
module's recursion, only the tree's shape and the theory's statement of the rules.

A round from position n drafts the tree cut at depth min(d, T − n) *lazily*: a node's j-th
child is drawn (``choose.categorical``; "topk" needs no draw) the first time verification
reads it, after its earlier siblings.  Recursive rejection sampling walks down from the root;
Traversal Verification (Weng et al., NeurIPS 2025, Algorithm 3) repeatedly takes the first
remaining leaf in post-order, accepts it with its p_α or deletes it and updates its parent
(:mod:`theory.tree` states both rules and their conventions).

Draft count (``Outcome.drafted``): every node of the round's tree counts, read or not (drafting
precedes verification).  For "iid" every node has all its children, and "topk" trees are
deterministic; for "swor" a node's number of children depends on its context, so after
verification the routine drafts the unread *internal* nodes it needs to count them (their
tokens are never emitted).
"""

from __future__ import annotations

import numpy as np

from sim.engine.core import register_family
from sim.engine.reference import Outcome, _Trace
from sim.engine.tree_kernel import TreeTables
from theory import MarkovLM, TreeSpeculative
from theory.multidraft import draft_order
from theory.onestep import positive_part

__all__ = ["tree_rounds"]


class _Node:
    """A node of the drafted tree: its token, context, row (position of its children's
    tokens) and children, drafted on first read; Traversal Verification's p_α and M_b."""

    def __init__(self, shape, token, context, row, draft, target, sampling, choose):
        self.shape, self.token, self.context, self.row = shape, token, context, row
        self.draft, self.target, self.sampling, self.choose = draft, target, sampling, choose
        self.children: list[_Node] = []
        self.laws: list = []  # the law each child was drafted from (p_j)
        self.exhausted = False  # no further child ("swor": no mass left; "topk": no token)
        self.alpha = None
        self.target_row = target.probs[row, context] if row < target.horizon else None
        self.deleted_children = 0

    def _next_law(self):
        p = np.asarray(self.draft.probs[self.row, self.context])
        drawn = [child.token for child in self.children]
        if self.sampling == "iid":
            return p
        if self.sampling == "swor":  # p without the drawn tokens, renormalized
            rest = p.copy()
            for token in drawn:
                rest[token] = 0 * rest[token]
            return rest / rest.sum() if rest.sum() != 0 else None
        ranked = [int(x) for x in draft_order(p) if p[x] != 0]  # "topk": next most probable
        if len(drawn) == len(ranked):
            return None
        law = 0 * p
        law[ranked[len(drawn)]] = 1
        return law

    def child(self, j):
        """The j-th child (drafting it and its earlier siblings if needed), or None."""
        while len(self.children) <= j and not self.exhausted and \
                len(self.children) < len(self.shape):
            law = self._next_law()
            if law is None:
                self.exhausted = True
                break
            token = int(np.nonzero(law)[0][0]) if self.sampling == "topk" \
                else self.choose.categorical(law)
            context = int(self.target.next_context[self.context, token])
            self.children.append(_Node(self.shape[len(self.children)], token, context,
                                       self.row + 1, self.draft, self.target, self.sampling,
                                       self.choose))
            self.laws.append(law)
        return self.children[j] if j < len(self.children) else None

    def count(self) -> int:
        """Drafted nodes below this one (drafting unread internal "swor" nodes to count)."""
        if self.sampling == "iid":  # every node has all its children
            return tree_size(self.shape)
        support = int(np.count_nonzero(np.asarray(self.draft.probs[self.row, self.context])))
        total = 0
        for j, shape in enumerate(self.shape[:support]):  # "swor", "topk": ≤ |supp p| children
            total += 1 + (self.child(j).count() if shape else 0)
        return total


def tree_size(shape) -> int:
    return sum(1 + tree_size(child) for child in shape)


def _normalized(weights):
    return weights / weights.sum()


def _rrs(root, algorithm, choose):
    """Recursive rejection sampling: (accepted path, last node or residual, kind) of a round."""
    node, path = root, []
    while node.shape:
        residual, accepted = np.asarray(node.target_row), None
        for j in range(len(node.shape)):
            child = node.child(j)
            if child is None:  # "swor" out of mass, "topk" out of tokens
                break
            law = node.laws[j]  # p_j
            if choose.bernoulli(min(1, residual[child.token] / law[child.token])):
                accepted = child
                break
            residual = _normalized(positive_part(residual - law))  # q_{j+1}
        if accepted is None:  # every child rejected: a token from the last residual
            return path, residual, "residual"
        path.append(accepted.token)
        node = accepted
    return path, node, "bonus"


def _first_leaf(root):
    """The first remaining leaf in post-order and the path of nodes to it; p_α is computed
    when a node is first reached (after its earlier siblings were deleted)."""
    nodes = [root]
    while True:
        node = nodes[-1]
        child = node.child(node.deleted_children)
        if child is None:
            return nodes
        if child.alpha is None:
            law = node.laws[node.deleted_children]
            child.alpha = min(1, node.alpha * node.target_row[child.token] / law[child.token])
        nodes.append(child)


def _traversal(root, algorithm, choose):
    """Traversal Verification: (accepted path, final token law, kind) of one round."""
    root.alpha = 1
    root.target_row = np.asarray(root.target_row)
    while True:
        nodes = _first_leaf(root)
        leaf = nodes[-1]
        if choose.bernoulli(leaf.alpha):
            path = [node.token for node in nodes[1:]]
            if leaf.shape:  # its drafted children were all deleted: a residual token
                return path, leaf.target_row, "residual"
            return path, leaf, "bonus"
        parent = nodes[-2]  # the root has p_α = 1: never deleted
        law = parent.laws[parent.deleted_children]
        gap = positive_part(parent.alpha * np.asarray(parent.target_row) - law)
        total = gap.sum()  # S
        denominator = total + 1 - parent.alpha
        if total != 0:
            parent.target_row = gap / total
        parent.alpha = total / denominator if denominator != 0 else 1
        parent.deleted_children += 1


def tree_rounds(algorithm: TreeSpeculative, draft: MarkovLM, target: MarkovLM, choose,
                verify) -> Outcome:
    """Run tree rounds to the horizon with ``verify(root, algorithm, choose)`` → (accepted
    tokens, the last node or a residual law, "bonus" or "residual")."""
    trace = _Trace(target, choose)
    while not trace.done:  # one round per iteration: one target call
        trace.target_calls += 1
        root = _Node(algorithm.round_tree(trace.position, target.horizon), None,
                     trace.context, trace.position, draft, target, algorithm.sampling, choose)
        path, last, kind = verify(root, algorithm, choose)
        trace.drafted += root.count()
        for token in path:
            trace.emit(token)
        if kind == "residual":  # a correction drawn from a residual: the round's rejection
            trace.emit(choose.categorical(last))
            trace.rejections += 1
        elif algorithm.bonus and not trace.done:
            trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
    return trace.outcome()


def _tree_speculative(algorithm: TreeSpeculative, draft: MarkovLM, target: MarkovLM,
                      choose) -> Outcome:
    """Tree speculative decoding: draft a tree lazily, verify it (rrs or traversal)."""
    if algorithm.verifier not in ("rrs", "traversal"):
        raise ValueError(f"the reference engine runs tree verifiers 'rrs' and 'traversal'; "
                         f"{algorithm!r}: the optimal tree verifier is not unique, so it "
                         "defines no law of tokens to sample")
    verify = _rrs if algorithm.verifier == "rrs" else _traversal
    return tree_rounds(algorithm, draft, target, choose, verify)


register_family(TreeSpeculative, TreeTables, _tree_speculative)
