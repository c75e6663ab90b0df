r"""Block verification: :class:`BlockSpeculative` and its exact round law, :func:`round_law`.

Block verification (Sun et al., "Block Verification Accelerates Speculative Decoding",
ICLR 2025, arXiv:2403.10444) is not position-synchronous: whether drafted token i is kept
depends on the weights h_j of the *later* drafts j > i.  So the unit of the exact computation
is the round: :class:`BlockSpeculative` is a round-level algorithm
(:class:`theory.algorithms.RoundLevelAlgorithm`) whose **law of one round** from
(position n, context s) (:func:`round_law`) is the joint law of the number k of tokens the
round emits, the context s' it ends in and whether it ends in a rejection (a residual draw);
the generic dynamic program over rounds (:mod:`theory.rounds`) does the rest.

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
from theory.algorithms import (
    DEFAULT_MAX_NODES,
    RoundLaw,
    RoundLevelAlgorithm,
    _check_max_nodes,
)
from theory.models import MarkovLM, check_compatible
from theory.onestep import positive_part

__all__ = ["DEFAULT_MAX_NODES", "BlockSpeculative", "RoundLaw", "round_law"]


_BLOCK_SELECTION = "block"


@dataclass(frozen=True)
class BlockSpeculative(RoundLevelAlgorithm):
    r"""Block verification (Sun, Mendlovic, Leviathan, Aharoni, Ro, Beirami, Suresh, ICLR 2025).

    A round starting at position n in context s drafts γ' = min(γ, T − n) tokens
    X₁ … X_γ' from p (p = draft, q = target) and verifies them *jointly* (Sun et al.,
    arXiv:2403.10444, Algorithm 2).  With

    .. math::  π_0 = 1,\quad π_i = \min\Big(1, π_{i-1}\,
               \frac{q(X_i \mid X_{<i})}{p(X_i \mid X_{<i})}\Big),\qquad
               r_i = \sum_x \big[π_i\, q(x \mid X_{\le i}) - p(x \mid X_{\le i})\big]_+,

    :math:`h_i = r_i / (r_i + 1 - π_i)` for 1 ≤ i < γ' (h_i = 1 when the denominator is 0) and
    :math:`h_{γ'} = π_{γ'}`, independent η_i ∼ U(0, 1) give
    τ = max{i ≥ 1 : η_i ≤ h_i} (0 if none).  The round emits X₁ … X_τ and then one token Y:

    * τ < γ': Y ∼ [π_τ q(·|X≤τ) − p(·|X≤τ)]₊ / r_τ — the round ends in a *rejection*
      (one per round, the convention of ``Speculative``'s N_rej);
    * τ = γ', ``bonus=True`` and a position remains (n + γ' < T): Y ∼ q(·|X≤γ'), no rejection;
    * τ = γ' otherwise (horizon reached, or ``bonus=False``): no Y.

    One target call per round.  The output law is exactly q, and the expected number of
    accepted drafts per round is the largest among verifiers of a single drafted block (Sun
    et al., Theorems 1–2); ``window=1`` is ``Speculative(window=1)`` exactly.

    Conventions.  A residual with r_τ = 0 is reached with probability 0: if r_i = 0 and
    π_i < 1 then h_i = 0; if r_i = 0 and π_i = 1 then q = p in that context, so π_{i+1} = 1
    and h_{i+1} = 1, which rules out τ = i (for i = 0 too: π₀ = 1).  The exact code skips such
    zero-mass outcomes; the engines' float guard is described in :mod:`sim.engine.block`.

    Block verification is not position-synchronous (τ depends on the whole block), so it has
    no per-position :meth:`branches`: it is a round-level algorithm whose :meth:`round_law` is
    :func:`theory.block.round_law`, and the dynamic program over rounds of :mod:`theory.rounds`,
    to which :func:`theory.expected_target_calls` and the other exact functions dispatch, does
    the rest.

    Parameters
    ----------
    window : int >= 1
        γ, draft tokens per round (required: a block needs a length).
    bonus : bool
        Whether a round whose whole block is accepted emits Y ∼ q (when a position remains).

    Examples
    --------
    The paper's toy (Sun et al., §3): q = (1/3, 2/3), p = (2/3, 1/3), γ = 2; expected accepted
    drafts per round are 10/9 token-wise and 11/9 block-wise.

    >>> from fractions import Fraction as F
    >>> import numpy as np
    >>> from theory import BlockSpeculative, MarkovLM, Speculative, round_length_pmf
    >>> p = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], 3, next_context=[[0, 0]])
    >>> [str(np.arange(4) @ round_length_pmf(p, q, a) - 1)
    ...  for a in (Speculative(window=2), BlockSpeculative(2))]
    ['10/9', '11/9']
    """

    window: int
    bonus: bool = True

    #: How τ is selected from (η, h); only "block" is correct.  The negative controls of the
    #: test suite (known-wrong rules that implementations have shipped) override it.
    selection = _BLOCK_SELECTION

    def __post_init__(self):
        if not isinstance(self.window, numbers.Integral) or isinstance(self.window, bool):
            raise TypeError(f"window must be a positive integer; got {self.window!r}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1; got {self.window}")
        object.__setattr__(self, "window", int(self.window))
        if not isinstance(self.bonus, (bool, np.bool_)):
            raise TypeError(f"bonus must be a bool; got {self.bonus!r}")

    def branches(self, p, q):
        raise TypeError(
            "BlockSpeculative is not position-synchronous and has no per-position branches; "
            "its exact laws are computed round by round (theory.block)"
        )

    def round_law(self, draft, target, position: int, *,
                  max_nodes: int = DEFAULT_MAX_NODES) -> RoundLaw:
        """The exact law of one round from ``position``: :func:`round_law`."""
        return round_law(draft, target, self, position, max_nodes=max_nodes)

    def round_key(self, position: int, horizon: int):
        """(γ', a position remains after the block): for time-homogeneous models the round
        law depends on n only through these."""
        window = min(self.window, horizon - position)
        return (window, position + window < horizon)


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
    from_target = zeros_like_kind(shape, exact)  # the bonus rounds
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
            for out in (accepted, from_target):
                _scatter(out[window + 1], level["start"][live], level["context"][live],
                         mass[live, None] * q_rows, following, exact)
        else:  # the whole block, no further token
            flat = level["start"][live] * n_contexts + level["context"][live]
            accepted[window] = accepted[window] + _sum_by(
                flat, mass[live], n_contexts * n_contexts, exact).reshape(n_contexts, -1)
    return RoundLaw(position, accepted, rejected, from_target)


def _scatter(out, start, context, weights, following, exact):
    """out[start, next(context, y)] += weights[node, y] for every node and token y."""
    n_contexts = out.shape[0]
    flat = (start[:, None] * n_contexts + following[context]).ravel()
    out += _sum_by(flat, weights.ravel(), n_contexts * n_contexts, exact).reshape(out.shape)
