r"""Exact laws of block verification (:class:`theory.BlockSpeculative`), round by round.

Block verification (Sun et al., "Block Verification Accelerates Speculative Decoding",
ICLR 2025, arXiv:2403.10444) is not position-synchronous: whether drafted token i is kept
depends on the weights h_j of the *later* drafts j > i.  So the unit of the exact computation
is the round.  This module computes

1. **the law of one round** from (position n, context s) (:func:`round_law`): the joint law of
   the number k of tokens the round emits, the context s' it ends in and whether it ends in a
   rejection (a residual draw);
2. **a dynamic program over rounds**: with :math:`m_n(s)` the probability that a round starts
   at position n in context s,

   .. math::  m_{n+k}(s') \mathrel{+}= \sum_s m_n(s)\, L_n(k, s' \mid s),

   from which E[target calls] = Σₙ Σ_s m_n(s), the rejection profile (a rejected round from n
   emitting k tokens rejects at position n + k − 1) and, with a count axis, the full pmfs.

**The round law, exactly.**  Drafts are enumerated depth-first as a tree, level by level and
vectorized over the nodes: a node at depth i is a drafted prefix X≤i with probability
P(X≤i) = Π p(X_j | X<j), its running π_i and context; children of zero draft probability
are pruned.  For τ (the number of accepted drafts, see :class:`theory.BlockSpeculative`),
with independent η's,

.. math::  P(τ = i,\ X_{\le i}) = P(X_{\le i})\, h_i(X_{\le i})\, G_i(X_{\le i}),\qquad
           G_i = \sum_x p(x \mid X_{\le i})\, \big(1 - h_{i+1}(X_{\le i}, x)\big)\,
                 G_{i+1}(X_{\le i}, x),

G_{γ'} = 1 and h₀ = 1 (τ = 0 has probability G₀ at the root): G is one backward sweep over the
tree, so each node costs O(V) and the whole round law costs O(S · V^γ' · V) per position —
exact in rationals for Fraction models.  The tree has up to S · V^γ' leaves; beyond
``max_nodes`` nodes per position :func:`round_law` raises ``ValueError`` and the answer is
simulation (:func:`sim.simulate` runs block verification in every engine).  No finite-state
reduction exists in general: π_i is a path-dependent real number.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from theory._arrays import zeros_like_kind
from theory.algorithms import BlockSpeculative
from theory.models import MarkovLM, check_compatible
from theory.onestep import positive_part

__all__ = ["DEFAULT_MAX_NODES", "RoundLaw", "round_law"]

#: Default limit on the draft-tree nodes of one round law (all start contexts together).
DEFAULT_MAX_NODES = 2_000_000


@dataclass(frozen=True)
class RoundLaw:
    """The law of one block-verification round started at ``position``.

    ``accepted[k, s, s']`` (``rejected[k, s, s']``) is the probability, for a round starting
    in context s, that it emits k tokens, ends in context s' and does not end (does end) in a
    residual draw; k = 0 … γ + 1.  Rows sum to 1 over (k, s', accepted/rejected).
    """

    position: int
    accepted: np.ndarray
    rejected: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """accepted + rejected: the law of (k, s') per start context s."""
        return self.accepted + self.rejected


def _check_max_nodes(max_nodes) -> int:
    if not isinstance(max_nodes, numbers.Integral) or isinstance(max_nodes, bool) \
            or max_nodes < 1:
        raise ValueError(f"max_nodes must be a positive integer; got {max_nodes!r}")
    return int(max_nodes)


def _sum_by(index: np.ndarray, values: np.ndarray, size: int, exact: bool) -> np.ndarray:
    """out[j] = Σ_{i : index[i] = j} values[i] (Fractions stay exact)."""
    if not exact:
        return np.bincount(index, weights=values, minlength=size)
    out = zeros_like_kind(size, True)
    np.add.at(out, index, values)
    return out


def _weights(pi, r, at_last: bool, exact: bool):
    """h at one depth: π at the block's last draft, else r / (r + 1 − π) (1 if 0 / 0)."""
    if at_last:
        return pi
    denominator = r + (1 - pi)
    zero = denominator == 0
    safe = np.where(zero, 1, denominator) if exact else np.where(zero, 1.0, denominator)
    return np.where(zero, 1 if exact else 1.0, r / safe)


def round_law(draft: MarkovLM, target: MarkovLM, algorithm: BlockSpeculative, position: int,
              *, max_nodes: int = DEFAULT_MAX_NODES) -> RoundLaw:
    r"""The exact law of one block-verification round from ``position``, for every context.

    Parameters
    ----------
    draft, target : MarkovLM
        p and q (compatible).
    algorithm : BlockSpeculative
    position : int
        n, 0 ≤ n < T: the round drafts γ' = min(γ, T − n) tokens.
    max_nodes : int
        Limit on the nodes of the draft tree at one depth (over all start contexts); the
        tree has up to S · V^γ' leaves.  Beyond it a ``ValueError`` says to simulate.

    Returns
    -------
    RoundLaw
        Fractions for exact models.  See the module docstring for the recursion.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import BlockSpeculative, MarkovLM
    >>> from theory.block import round_law
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 3, next_context=[[0, 0]])
    >>> law = round_law(p, q, BlockSpeculative(2), 0)
    >>> [str(law.total[k, 0, 0]) for k in range(4)]  # P(1 + τ tokens): τ = 0, 1, 2
    ['0', '1/3', '1/9', '5/9']
    """
    check_compatible(draft, target)
    if not isinstance(algorithm, BlockSpeculative):
        raise TypeError(f"algorithm must be a BlockSpeculative; got {algorithm!r}")
    if algorithm.selection != "block":  # the recursion below holds for independent η's only
        raise ValueError(f"the exact round law is derived for block verification's selection "
                         f"of τ only; {type(algorithm).__name__} selects by "
                         f"{algorithm.selection!r} (theory.conformance.block_rule has one "
                         "shared uniform; sim.reference.enumerate_outcomes any selection)")
    horizon = target.horizon
    if not isinstance(position, numbers.Integral) or isinstance(position, bool) \
            or not 0 <= position < horizon:
        raise ValueError(f"position must be an integer in [0, T) = [0, {horizon}); "
                         f"got {position!r}")
    max_nodes = _check_max_nodes(max_nodes)
    exact = target.is_exact
    n_contexts = target.n_contexts
    following = np.asarray(target.next_context)
    window = min(algorithm.window, horizon - position)
    one = 1 if exact else 1.0

    # ---- forward: the draft tree, level by level (depth i drafts at position n + i)
    start = np.arange(n_contexts)
    context = np.arange(n_contexts)
    prob = np.array([one] * n_contexts, dtype=object if exact else np.float64)
    pi = prob.copy()
    levels = []
    for depth in range(window + 1):
        level = {"start": start, "context": context, "prob": prob, "pi": pi}
        if depth < window:
            p_rows = np.asarray(draft.probs[position + depth])[context]
            q_rows = np.asarray(target.probs[position + depth])[context]
            gap = positive_part(pi[:, None] * q_rows - p_rows)  # [π q − p]₊
            level.update(gap=gap, r=gap.sum(axis=1), q=q_rows)
            parent, token = np.nonzero(p_rows != 0)  # prune zero-probability drafts
            if parent.size > max_nodes:
                raise ValueError(
                    f"the exact round law of BlockSpeculative(window={algorithm.window}) at "
                    f"position {position} needs {parent.size} draft-tree nodes at depth "
                    f"{depth + 1} > max_nodes = {max_nodes}; simulate instead (sim.simulate)"
                )
            conditional = p_rows[parent, token]
            ratio = q_rows[parent, token] / conditional
            product = pi[parent] * ratio
            level.update(parent=parent, conditional=conditional)
            start, context = start[parent], following[context[parent], token]
            prob = prob[parent] * conditional
            pi = np.where(product < 1, product, one)
        levels.append(level)
    for depth, level in enumerate(levels):
        level["h"] = (np.array([one] * level["pi"].size, dtype=level["pi"].dtype)
                      if depth == 0 else
                      _weights(level["pi"], level.get("r"), depth == window, exact))

    # ---- backward: G_i = Σ_children p (1 − h_child) G_child, then P(τ = i, node)
    survive = np.array([one] * levels[window]["pi"].size, dtype=levels[window]["pi"].dtype)
    for depth in range(window - 1, -1, -1):
        level, child = levels[depth], levels[depth + 1]
        child["G"] = survive
        survive = _sum_by(level["parent"], level["conditional"] * (1 - child["h"]) * survive,
                          level["pi"].size, exact)
    levels[0]["G"] = survive
    if window == 0:  # pragma: no cover - position < T guarantees window >= 1
        raise ValueError("empty round")

    shape = (algorithm.window + 2, n_contexts, n_contexts)
    accepted, rejected = zeros_like_kind(shape, exact), zeros_like_kind(shape, exact)
    for depth, level in enumerate(levels):
        mass = level["prob"] * level["h"] * level["G"]  # P(τ = depth, this prefix)
        live = np.nonzero(mass != 0)[0]
        if depth < window:  # residual draw: depth + 1 tokens, a rejection
            gap, r = level["gap"][live], level["r"][live]
            if exact:
                law = gap / r[:, None]  # r > 0 wherever τ = depth has mass (class docstring)
            else:  # float guard of the engines: a zero residual falls back to q
                law = np.where((r > 0)[:, None], gap / np.where(r > 0, r, 1.0)[:, None],
                               level["q"][live])
            _scatter(rejected[depth + 1], level["start"][live], level["context"][live],
                     mass[live, None] * law, following, exact)
        elif algorithm.bonus and position + window < horizon:  # bonus token from q
            q_rows = np.asarray(target.probs[position + window])[level["context"][live]]
            _scatter(accepted[window + 1], level["start"][live], level["context"][live],
                     mass[live, None] * q_rows, following, exact)
        else:  # the whole block, no further token
            flat = level["start"][live] * n_contexts + level["context"][live]
            accepted[window] = accepted[window] + _sum_by(
                flat, mass[live], n_contexts * n_contexts, exact).reshape(n_contexts, -1)
    return RoundLaw(position, accepted, rejected)


def _scatter(out, start, context, weights, following, exact):
    """out[start, next(context, y)] += weights[node, y] for every node and token y."""
    n_contexts = out.shape[0]
    flat = (start[:, None] * n_contexts + following[context]).ravel()
    out += _sum_by(flat, weights.ravel(), n_contexts * n_contexts, exact).reshape(out.shape)


class RoundProblem:
    """A validated (draft, target, BlockSpeculative) triple: round laws and the round DP.

    It offers the methods :mod:`theory.exact` dispatches to for algorithms that are not
    position-synchronous: :meth:`mean_pass`, :meth:`count_pass`, :meth:`first_round_pmf`.
    """

    def __init__(self, draft: MarkovLM, target: MarkovLM, algorithm: BlockSpeculative,
                 max_nodes: int = DEFAULT_MAX_NODES):
        check_compatible(draft, target)
        self.draft, self.target, self.algorithm = draft, target, algorithm
        self.horizon = target.horizon
        self.n_contexts = target.n_contexts
        self.exact = target.is_exact
        self.max_nodes = _check_max_nodes(max_nodes)
        self._homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
        self._cache: dict = {}

    def law(self, position: int) -> RoundLaw:
        window = min(self.algorithm.window, self.horizon - position)
        # time-homogeneous models: the law depends on n only through γ' and "a position
        # remains after the block"
        key = (window, position + window < self.horizon) if self._homogeneous else position
        if key not in self._cache:
            self._cache[key] = round_law(self.draft, self.target, self.algorithm, position,
                                         max_nodes=self.max_nodes)
        return self._cache[key]

    def zeros(self, *shape) -> np.ndarray:
        return zeros_like_kind(shape, self.exact)

    def mean_pass(self):
        """(P(position n is a rejection), (T,); P(a round starts at n in context s), (T, S))."""
        horizon = self.horizon
        mass = self.zeros(horizon + 1, self.n_contexts)
        mass[0] = self.target.start_distribution
        rejection = self.zeros(horizon)
        round_start = self.zeros(horizon, self.n_contexts)
        for n in range(horizon):
            round_start[n] = mass[n]
            law = self.law(n)
            for k in range(1, min(law.accepted.shape[0], horizon - n + 1)):
                rejected = mass[n] @ law.rejected[k]
                rejection[n + k - 1] = rejection[n + k - 1] + rejected.sum()
                mass[n + k] = mass[n + k] + mass[n] @ law.accepted[k] + rejected
        return rejection, round_start

    def count_pass(self, count: str) -> np.ndarray:
        """pmf of the number of rejections (``count='rejections'``) or of target calls."""
        horizon = self.horizon
        mass = self.zeros(horizon + 1, horizon + 1, self.n_contexts)  # position, count, s
        mass[0, 0] = self.target.start_distribution
        for n in range(horizon):
            law = self.law(n)
            here = mass[n]
            if count == "calls":
                here = np.roll(here, 1, axis=0)
            for k in range(1, min(law.accepted.shape[0], horizon - n + 1)):
                rejected = here @ law.rejected[k]
                if count == "rejections":
                    rejected = np.roll(rejected, 1, axis=0)
                mass[n + k] = mass[n + k] + here @ law.accepted[k] + rejected
        return mass[horizon].sum(axis=1)

    def first_round_pmf(self) -> np.ndarray:
        """P(the first round emits k tokens), k = 0 … T."""
        pmf = self.zeros(self.horizon + 1)
        per_k = self.target.start_distribution @ self.law(0).total.sum(axis=2).T
        for k in range(1, min(per_k.size, self.horizon + 1)):
            pmf[k] = per_k[k]
        return pmf
