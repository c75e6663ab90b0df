r"""Token trees in the compiled engine: :class:`TreeTables` and :func:`tree_kernel`.

The rules are :mod:`theory.tree`'s (:class:`theory.TreeSpeculative`): draft a tree of
continuations ("iid", "swor" or "topk" children), verify it in one target call by recursive
rejection sampling ("rrs") or Traversal Verification ("traversal").  The readable reference
routine and the registration live in :mod:`sim.engine.tree`; this module holds what the
compiled and torch engines share.

**The flattened tree.**  The nodes of ``algorithm.tree`` are numbered in breadth-first order,
node 0 the root: ``parent``, ``first_child``, ``n_children`` and ``depth`` per node, the
children of a node consecutive and in drafted order, and ``cut_sizes[k]`` the number of nodes
of depth ≤ k — a round at position n with depth d′ = min(d, T − n) uses nodes
0 … ``cut_sizes[d′]`` − 1.  N = ``algorithm.n_nodes``.

**Counter slots** (every uniform of a round uses the round's START position n as its counter
position, as block verification does): slot 2(v − 1): the draft token of node v (unused for
"topk"); 2(v − 1) + 1: the test of node v (rrs: v's acceptance; traversal: v's test as a
leaf); 2N: the round's final token (a residual or bonus draw).  Each node is tested at most
once per round, so every slot is read at most once.

**Drafting.**  Node v's token is drawn from the draft row of its parent u, at position
n + depth(u) in u's context.  "iid": an alias draw from p, *lazily*, when verification first
reaches v (a pure function of its slot, so when it is drawn changes nothing; the drafted count
is the cut tree's size).  "swor" and "topk" are drafted eagerly in breadth-first order, since
how many children a node gets (its drafted count) depends on its context: "swor" draws the
j-th child by inverse CDF over p restricted to the tokens its earlier siblings did not take —
the mass m = Σ p(x) over those tokens in order x = 0 … V − 1, and no further child once
m = 0; p_j = p/m off the taken tokens.  "topk" reads the j-th most probable token of positive
mass from a table built on the exact rows (ties to the lower index, as
:func:`theory.multidraft.draft_order`), −1 when there is none.

**Verification state.**  The target law a node verifies against (rrs: q_j; traversal: M_b)
is kept per depth level as an unnormalized vector G and the inverse 1/S of its sum (law =
G · (1/S)): the target row itself (a flag) until the first update, after which
G = [a · law − p_j]₊ (a = 1 for rrs, p_α of the node for traversal) and S = Σ_x G(x) summed in
order x = 0 … V − 1.  If that sum is 0 (probability 0 in exact arithmetic, or a node that
p_α = 0 dooms anyway) the law falls back to q, as block verification's residual does.  The
arithmetic, in float64, that the torch engine repeats operation by operation (p_j(x) = p(x)
for "iid", 0 on the taken tokens and p(x)/m elsewhere for "swor", [x = c] for "topk"):

* rrs: child c (token x) of node u passes when u_c < law_u(x) / p_j(x);
* traversal: p_α(c) = min(1, p_α(u) · (law_u(x) / p_j(x))) when c is first reached; a leaf
  c ≠ root is kept when u_c < p_α(c), else deleted: its parent w's level is updated with
  a = p_α(w) and p_α(w) ← S / (S + (1 − p_α(w))), 1 when that denominator is 0; the root is
  kept without a test (p_α = 1);
* the final token: when the node where the round ends has drafted children (all rejected or
  deleted), a draw by :func:`sim.engine.compiled.inverse_cdf` over its level's G (or q), a
  rejection; else a bonus alias draw from q when ``bonus`` and a position remains.

On a chain (``branching=(1,)*d``) traversal makes exactly block verification's operations with
its slots, so ``TreeSpeculative((1,)*d, verifier="traversal")`` returns the arrays of
``BlockSpeculative(d)`` bit for bit (tested).

**Negative controls** (:data:`TREE_RULES`, read from a subclass's ``_engine_rule``; see
``tests/mutants.py``): "stale_residual" (rrs) tests every child against q itself and, all
rejected, draws from [q − p_k]₊ normalized (the reference routine's ``StaleResidualTree``);
"stale_traversal" never updates M_b (it stays q) while p_α is updated as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from sim.engine.compiled import (
    BLOCK,
    _start_context,
    alias_draw,
    inverse_cdf,
    uniform_pair,
)
from sim.engine.core import Layout, check_memory
from sim.engine.tables import AliasTable, build_alias, read_only
from theory import MarkovLM
from theory.multidraft import draft_order
from theory.onestep import _acceptance, _residual

__all__ = ["TREE_RULES", "FlatTree", "TreeTables", "flatten_tree", "tree_kernel"]

#: Rules of :func:`tree_kernel` → (code, the verifier it applies to): "tree" is the algorithm;
#: the others are known-wrong rules kept as negative controls (a subclass's ``_engine_rule``,
#: ``tests/mutants.py``; module docstring).
TREE_RULES = {"tree": (0, None), "stale_residual": (1, "rrs"),
              "stale_traversal": (1, "traversal")}
SAMPLING_CODES = {"iid": 0, "swor": 1, "topk": 2}
#: The round's Philox pairs are computed in one loop padded to a multiple of this many
#: (the SIMD lanes of 64-bit words): a loop with a scalar remainder costs about four times
#: as much per pair.
_LANES = 8
#: The residual table's stand-in when it is computed in the kernel: read-only like the
#: tables, so the kernel compiles once.
_NO_RESIDUAL = read_only(np.zeros(0, dtype=np.uint64))
VERIFIER_CODES = {"rrs": 0, "traversal": 1}


@dataclass(frozen=True)
class FlatTree:
    """A tree in breadth-first order (module docstring): int64 arrays over nodes 0 … N."""

    parent: np.ndarray  # −1 for the root
    first_child: np.ndarray
    n_children: np.ndarray
    depth: np.ndarray
    cut_sizes: np.ndarray  # (d + 1,): nodes of depth ≤ k, root included

    @property
    def size(self) -> int:
        return int(self.parent.size)


def flatten_tree(tree: tuple) -> FlatTree:
    """Breadth-first arrays of a nested-tuple tree (a node = the tuple of its children).

    Examples
    --------
    >>> from sim.engine.tree_kernel import flatten_tree
    >>> flat = flatten_tree((((), ()), ()))
    >>> flat.parent.tolist(), flat.first_child.tolist(), flat.cut_sizes.tolist()
    ([-1, 0, 0, 1, 1], [1, 3, 5, 5, 5], [1, 3, 5])
    """
    nodes = [(tree, -1, 0)]
    first_child = []
    for shape, _, level in nodes:  # grows while read: breadth-first
        first_child.append(len(nodes))
        nodes.extend((child, len(first_child) - 1, level + 1) for child in shape)
    depth = np.array([level for _, _, level in nodes], dtype=np.int64)
    return FlatTree(np.array([parent for _, parent, _ in nodes], dtype=np.int64),
                    np.array(first_child, dtype=np.int64),
                    np.array([len(shape) for shape, _, _ in nodes], dtype=np.int64), depth,
                    np.cumsum(np.bincount(depth)).astype(np.int64))


def top_tokens(rows: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` most probable tokens of positive mass of each row (ties to the lower
    index), −1 where a row has fewer; int64 (R·width,).  Exact for ``Fraction`` rows."""
    order = draft_order(rows)[:, :width]
    positive = np.take_along_axis(rows, order, axis=1) != 0
    tops = np.full((rows.shape[0], width), -1, dtype=np.int64)  # width may exceed V
    tops[:, :order.shape[1]] = np.where(positive, order, -1)
    return tops.ravel()


@dataclass(frozen=True)
class TreeTables:
    """Tables of tree speculative decoding: alias tables and float rows of p and q, the
    flattened tree, for "topk" the per-row table of the most probable tokens, and for rrs with
    "iid" or "topk" children the tabulated residual chain (module docstring)."""

    algorithm: object  # theory.TreeSpeculative
    layout: Layout
    draft: AliasTable
    target: AliasTable
    draft_probs: np.ndarray  # (R·V,)
    target_probs: np.ndarray  # (R·V,)
    tree: FlatTree
    top_tokens: np.ndarray  # (R·K,) "topk", K = the most children of a node; empty otherwise
    top_width: int
    acceptance: np.ndarray  # (K·R·V,) tabulated rrs: min(1, q_{j+1}/p_{j+1}); else empty
    residual: AliasTable | None  # K·R rows, tabulated rrs: q_{k+1} after k rejections
    sampling: int  # SAMPLING_CODES
    verifier: int  # VERIFIER_CODES
    rule: int  # TREE_RULES

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> TreeTables:
        if algorithm.verifier not in VERIFIER_CODES:
            raise TypeError(f"the compiled engines have no kernel for {algorithm!r}: the "
                            "optimal tree verifier is not unique, so it defines no law to "
                            "sample (its value per round is a linear program's, in theory)")
        rule = getattr(algorithm, "_engine_rule", "tree")
        code, applies_to = TREE_RULES.get(rule, (None, None))
        if code is None or applies_to not in (None, algorithm.verifier):
            raise TypeError(f"the engines have no tree rule {rule!r} for {algorithm!r}")
        layout = Layout.of(draft, target)
        p, q = layout.rows(draft), layout.rows(target)
        tree = flatten_tree(algorithm.tree)
        width = int(tree.n_children.max())
        exact_p = layout.exact_rows(draft)
        tops = top_tokens(exact_p, width) if algorithm.sampling == "topk" \
            else np.zeros(0, dtype=np.int64)
        acceptance, residual = np.zeros(0), None
        if algorithm.verifier == "rrs" and algorithm.sampling != "swor":
            check_memory(80.0 * width * p.size, f"the residual tables of {algorithm!r} on "
                         f"{target!r}", "use a smaller model or fewer children per node")
            acceptance, residual = _residual_tables(exact_p, layout.exact_rows(target), tops,
                                                    width, stale=rule != "tree")
        return cls(algorithm, layout, build_alias(p), build_alias(q), p.ravel(), q.ravel(),
                   tree, tops, width, acceptance, residual,
                   SAMPLING_CODES[algorithm.sampling], VERIFIER_CODES[algorithm.verifier],
                   code)

    @property
    def drafts_per_round(self) -> int:
        """N: a round drafts at most the tree's nodes (:func:`sim.engine.core.drafted_dtype`)."""
        return self.tree.size - 1

    @classmethod
    def steps_per_position(cls, algorithm, target: MarkovLM) -> float:
        """At most N drafts and tests per round, each with a sum over the vocabulary (V / 32
        steps) — an upper bound per position."""
        return algorithm.n_nodes * (1.0 + target.vocab_size / 32)

    def run(self, key, first_trial, rejections, target_calls, drafted, tokens) -> None:
        tree = self.tree
        residual = self.residual.entries if self.residual is not None else _NO_RESIDUAL
        tree_kernel(
            key[0], key[1], first_trial, *self.layout.common_arguments(), tree.parent,
            tree.first_child, tree.n_children, tree.depth, tree.cut_sizes, self.top_tokens,
            self.top_width, self.sampling, self.verifier, self.rule,
            bool(self.algorithm.bonus), self.draft.entries, self.target.entries,
            self.draft_probs, self.target_probs, self.acceptance, residual, rejections,
            target_calls, drafted, tokens)


def _residual_tables(p, q, tops, width: int, stale: bool):
    """rrs with "iid" or "topk" children: the chain q_1 = q, q_{j+1} = [q_j − p_j]₊ normalized
    depends on the row alone (p_j = p, or the point mass at the row's j-th top token), so it is
    tabulated on the exact rows: acceptances min(1, q_{j+1}/p_{j+1}) (K·R·V) and the alias
    table of q_{k+1}, k = 1 … K (K·R rows).  ``stale``: every child is tested against q and
    q_{k+1} = [q − p_k]₊ normalized."""
    laws = [p] * width
    if tops.size:
        ranked = tops.reshape(-1, width)
        laws = [np.where(np.arange(p.shape[1]) == ranked[:, [j]], 1 + 0 * p, 0 * p)
                for j in range(width)]
    chain = [q]
    for law in laws:
        chain.append(_residual(law, q if stale else chain[-1]))
    tested = [q] * width if stale else chain[:-1]
    acceptance = np.concatenate([_acceptance(law, current).ravel()
                                 for law, current in zip(laws, tested, strict=True)])
    return (np.ascontiguousarray(acceptance, dtype=np.float64),
            build_alias(np.ascontiguousarray(np.concatenate(chain[1:]), dtype=np.float64)))


@njit(inline="always", cache=True)
def _level_value(levels, inverse, is_target, level, target_probs, offset, vocab_size, x):
    """The law a level holds at token x: q itself, or G · (1/S)."""
    if is_target[level]:
        return target_probs[offset + x]
    return levels[level * vocab_size + x] * inverse[level]


@njit(inline="always", cache=True)
def _law_value(draft_probs, offset, x, sampling, token, mass, taken):
    """p_j(x) of a child with ``token`` drafted with remaining mass ``mass``."""
    if sampling == 0:
        return draft_probs[offset + x]
    if sampling == 2:
        return 1.0 if x == token else 0.0
    return 0.0 if taken[x] else draft_probs[offset + x] / mass


@njit(inline="always", cache=True)
def _update_level(levels, inverse, is_target, level, target_probs, draft_probs, offset,
                  vocab_size, factor, sampling, token, mass, taken, frozen):
    """G ← [factor · law − p_j]₊ in place, S ← its ordered sum (the law falls back to q if
    that sum is 0); nothing changes when ``frozen``.  Returns the sum."""
    base = level * vocab_size
    total = 0.0
    for x in range(vocab_size):
        gap = factor * _level_value(levels, inverse, is_target, level, target_probs, offset,
                                    vocab_size, x) \
            - _law_value(draft_probs, offset, x, sampling, token, mass, taken)
        kept = gap if gap > 0.0 else 0.0
        if not frozen:
            levels[base + x] = kept
        total += kept
    if not frozen:
        is_target[level] = not total > 0.0
        inverse[level] = 1.0 / total if total > 0.0 else 1.0
    return total


@njit(inline="always", cache=True)
def _mark_siblings(taken, tokens, first, last, value):
    """Set ``taken`` at the tokens of nodes first … last − 1 (earlier "swor" siblings)."""
    for sibling in range(first, last):
        taken[tokens[sibling]] = value


@njit(inline="always", cache=True)
def _swor_token(draft_probs, offset, vocab_size, taken, mass, u):
    """Inverse CDF of p off the taken tokens (mass ``mass`` > 0); the last such positive token
    if rounding leaves none."""
    goal = u * mass
    running = 0.0
    chosen = 0
    for x in range(vocab_size):
        weight = draft_probs[offset + x]
        if weight > 0.0 and not taken[x]:
            running += weight
            chosen = x
            if running > goal:
                return x
    return chosen


@njit(inline="always", cache=True)
def _children(kids, n_children, depth, node, cut, sampling):
    """Drafted children of ``node`` in a round cut at depth ``cut``."""
    if sampling != 0:
        return kids[node]
    return n_children[node] if depth[node] < cut else 0


@njit(parallel=True, cache=True)
def tree_kernel(key0, key1, first_trial, horizon, n_contexts, vocab_size, row_stride, start,
                start_cdf, next_context, parent, first_child, n_children, depth, cut_sizes,
                top_tokens, top_width, sampling, verifier, rule, bonus, draft, target,
                draft_probs, target_probs, acceptance, residual, rejections, target_calls,
                drafted_counts, tokens):
    """Tree speculative decoding, one round at a time per trial (the module docstring gives
    the slots and the arithmetic).  ``sampling``/``verifier``/``rule``: the codes of
    :data:`SAMPLING_CODES`, :data:`VERIFIER_CODES`, :data:`TREE_RULES`; ``acceptance`` and
    ``residual`` the tabulated rrs chain (empty: computed in the kernel); the trial's
    ``drafted_counts`` grows by the drafted nodes of each round."""
    record = tokens.shape[0] > 0
    first_order = next_context.size == 0
    k0, k1 = np.uint64(key0), np.uint64(key1)
    size = parent.size
    last = size - 1  # pair N: slot 2N, the final token
    padded = (size + _LANES - 1) // _LANES * _LANES
    max_depth = cut_sizes.size - 1
    n_rows = target_probs.size // vocab_size
    tabulated = acceptance.size > 0
    stale = rule == 1
    n_trials = rejections.size
    for block in prange((n_trials + BLOCK - 1) // BLOCK):
        lo = block * BLOCK
        count = min(BLOCK, n_trials - lo)
        first = first_trial + lo
        even, odd = np.zeros(padded), np.zeros(padded)
        token = np.zeros(size, dtype=np.int64)
        context = np.zeros(size, dtype=np.int64)
        alpha = np.ones(size)
        mass = np.ones(size)
        kids = np.zeros(size, dtype=np.int64)
        done = np.zeros(size, dtype=np.int64)
        present = np.zeros(size, dtype=np.bool_)
        levels = np.zeros((max_depth + 1) * vocab_size)
        inverse = np.ones(max_depth + 1)
        is_target = np.ones(max_depth + 1, dtype=np.bool_)
        taken = np.zeros(vocab_size, dtype=np.bool_)
        for j in range(count):
            trial = np.uint64(first + j)
            current = _start_context(k0, k1, trial, start, start_cdf)
            position, rejected, calls, drafts = 0, 0, 0, 0
            while position < horizon:
                calls += 1
                n = np.uint64(position)
                for i in range(padded):  # every pair of the round at once, branch-free
                    even[i], odd[i] = uniform_pair(k0, k1, trial, n, np.uint64(i))
                cut = min(max_depth, horizon - position)
                nodes = cut_sizes[cut]
                context[0] = current
                if sampling == 0:  # iid: every node of the cut tree, drafted when reached
                    drafts += nodes - 1
                else:  # swor, topk: drafted now, parents first
                    for v in range(nodes):
                        present[v] = v == 0
                        kids[v] = 0
                    for v in range(nodes):
                        if not present[v] or depth[v] >= cut:
                            continue
                        row = (position + depth[v]) * row_stride + context[v]
                        offset = row * vocab_size
                        for i in range(n_children[v]):
                            c = first_child[v] + i
                            if sampling == 2:
                                x = top_tokens[row * top_width + i]
                                if x < 0:
                                    break
                            else:
                                m = 0.0
                                for y in range(vocab_size):
                                    if draft_probs[offset + y] > 0.0 and not taken[y]:
                                        m += draft_probs[offset + y]
                                if not m > 0.0:
                                    break
                                x = _swor_token(draft_probs, offset, vocab_size, taken, m,
                                                even[c - 1])
                                mass[c] = m
                                taken[x] = True
                            token[c] = x
                            context[c] = x if first_order else \
                                next_context[context[v] * vocab_size + x]
                            present[c] = True
                            kids[v] += 1
                        if sampling == 1:
                            _mark_siblings(taken, token, first_child[v],
                                           first_child[v] + kids[v], False)
                        drafts += kids[v]
                # verification: a walk over the tree from the root
                u = 0
                done[0] = 0
                alpha[0] = 1.0
                is_target[0] = True
                inverse[0] = 1.0
                while tabulated:  # rrs, iid or topk: the chain's acceptances, no state
                    row = (position + depth[u]) * row_stride + context[u]
                    kept = 0
                    for i in range(_children(kids, n_children, depth, u, cut, sampling)):
                        c = first_child[u] + i
                        if sampling == 0:
                            x = alias_draw(draft, row, vocab_size, even[c - 1])
                            token[c] = x
                            context[c] = x if first_order else \
                                next_context[context[u] * vocab_size + x]
                        if odd[c - 1] < acceptance[(i * n_rows + row) * vocab_size + token[c]]:
                            kept = c
                            break
                    if kept == 0:
                        break  # no child, or every child rejected
                    u = kept
                while not tabulated:
                    level = depth[u]
                    row = (position + level) * row_stride + context[u]
                    offset = row * vocab_size
                    i = done[u]
                    if i < _children(kids, n_children, depth, u, cut, sampling):
                        c = first_child[u] + i  # the next child: reach it (rrs: test it)
                        if sampling == 0:
                            x = alias_draw(draft, row, vocab_size, even[c - 1])
                            token[c] = x
                            context[c] = x if first_order else \
                                next_context[context[u] * vocab_size + x]
                        x = token[c]
                        ratio = _level_value(levels, inverse, is_target, level, target_probs,
                                             offset, vocab_size, x) \
                            / _law_value(draft_probs, offset, x, sampling, x, mass[c], taken)
                        if verifier == 1:  # traversal: p_α(c), then descend
                            product = alpha[u] * ratio
                            alpha[c] = product if product < 1.0 else 1.0
                        elif not odd[c - 1] < ratio:  # rrs: rejected, q_j updated
                            last_child = i + 1 == _children(kids, n_children, depth, u, cut,
                                                            sampling)
                            if last_child or not stale:
                                if sampling == 1:
                                    _mark_siblings(taken, token, first_child[u], c, True)
                                _update_level(levels, inverse, is_target, level, target_probs,
                                              draft_probs, offset, vocab_size, 1.0, sampling,
                                              x, mass[c], taken, False)
                                if sampling == 1:
                                    _mark_siblings(taken, token, first_child[u], c, False)
                            done[u] = i + 1
                            continue
                        u = c
                        done[c] = 0
                        is_target[level + 1] = True
                        inverse[level + 1] = 1.0
                        continue
                    if verifier == 0 or u == 0 or odd[u - 1] < alpha[u]:
                        break  # rrs: no child left; traversal: the leaf (or root) is kept
                    w = parent[u]  # traversal: u deleted, its parent updated
                    offset = ((position + level - 1) * row_stride + context[w]) * vocab_size
                    if sampling == 1:
                        _mark_siblings(taken, token, first_child[w], u, True)
                    total = _update_level(levels, inverse, is_target, level - 1, target_probs,
                                          draft_probs, offset, vocab_size, alpha[w], sampling,
                                          token[u], mass[u], taken, stale)
                    if sampling == 1:
                        _mark_siblings(taken, token, first_child[w], u, False)
                    denominator = total + (1.0 - alpha[w])
                    alpha[w] = total / denominator if denominator > 0.0 else 1.0
                    done[w] += 1
                    u = w
                # the round ends at node u: emit the path, then the final token
                level = depth[u]
                if record:
                    v = u
                    while v > 0:
                        tokens[lo + j, position + depth[v] - 1] = token[v]
                        v = parent[v]
                position += level
                current = context[u]
                row = position * row_stride + current
                k = _children(kids, n_children, depth, u, cut, sampling)
                final = -1
                if k > 0:  # every drafted child rejected or deleted: a residual, a rejection
                    if tabulated:
                        final = alias_draw(residual, (k - 1) * n_rows + row, vocab_size,
                                           even[last])
                    elif is_target[level]:
                        final = inverse_cdf(target_probs, row * vocab_size, vocab_size,
                                            even[last])
                    else:
                        final = inverse_cdf(levels, level * vocab_size, vocab_size, even[last])
                    rejected += 1
                elif bonus and position < horizon:
                    final = alias_draw(target, row, vocab_size, even[last])
                if final >= 0:
                    if record:
                        tokens[lo + j, position] = final
                    current = final if first_order else \
                        next_context[current * vocab_size + final]
                    position += 1
            rejections[lo + j] = rejected
            target_calls[lo + j] = calls
            drafted_counts[lo + j] = drafts
