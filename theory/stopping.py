r"""Adaptive draft length: stopping rules that see the drafted tokens, and the optimal one.

SpecDec++ (Huang, Guo, Wang, COLM 2025, arXiv:2405.19715) casts the draft length as a Markov
decision process and stops drafting once the predicted probability that at least one drafted
token is rejected exceeds a threshold; AdaEDL (arXiv:2410.18351) and SVIP (arXiv:2411.18462)
stop on bounds computed from the draft's entropy.  This module gives their exact theory on
Markov-chain models (p = draft, q = target) and the exact optimum they approximate.

**The round** (:class:`AdaptiveSpeculative`).  A round starts at position n in context s; let
W′ = min(W, T − n) (W = ``max_window``).  Before every draft — the first included — the rule
decides *stop* or *continue*, seeing (n, s, (x₁, …, x_k)), the tokens drafted so far; at k = W′
the round stops without asking.  Draft x_{k+1} ∼ p_{n+k}(· | c_k), c₀ = s, c_{k+1} =
next(c_k, x_{k+1}).  With k tokens drafted:

* k = 0: one plain target step (one token from q_n(· | s)), no rejection — window 0 of
  :class:`theory.WindowPolicy`;
* k ≥ 1: verify in order; x_i is accepted with probability a_i = min(1, q(x_i)/p(x_i)) (rows at
  (n + i − 1, c_{i−1})); the first failure emits a token from [q − p]₊ / Σ[q − p]₊ (a
  *rejection*) and ends the round; if all k are accepted, a bonus token from q_{n+k}(· | c_k)
  follows when ``bonus`` and n + k < T.

Every round is one target call and is lossless whatever the rule (the rule only reads tokens
drawn from p, and each verified token is Algorithm 1's), so the output law is q.

**Wall time.**  A target call costs 1 and a drafted token c (:func:`theory.expected_walltime`);
every drafted token counts, also those after the first rejection (drafting precedes
verification).  Given that a round starts at (n, s) its number of drafts k is independent of
the past, so by linearity

.. math::  E[W] = \sum_{n, s} P(\text{round at } (n, s))\,\big(1 + c\, E[k \mid n, s]\big),

which :func:`theory.expected_walltime` computes with E[k | n, s] from
:meth:`AdaptiveSpeculative.expected_draft_lengths`.

**The exact round law** (:meth:`AdaptiveSpeculative.round_law`).  The drafted paths form a tree
(children of zero draft probability pruned); its leaves are the paths where the rule stops.  A
leaf d = (x₁ … x_k) of probability P(d) = Π p(x_i) ends the round after i tokens in a rejection
with mass P(d) A_{i−1}(1 − a_i) [q − p]₊(y)/Σ[q − p]₊, A_i = Π_{j≤i} a_j, and after k (+ 1 with
the bonus) tokens without one with mass P(d) A_k.  The code walks the *accepted* prefixes
instead: with alive(d) = Π_i min(p(x_i), q(x_i)) = P(d) A_k, a prefix that drafts on ends the
round in a rejection at y with mass alive(d) [q − p]₊(y) (summed over the drafted token, since
Σ_x p(x)(1 − a(x)) = Σ[q − p]₊), so paths whose acceptance is 0 are never visited.  The generic
round DP (:mod:`theory.rounds`) does the rest; all exact in rationals for Fraction models.

**The optimal rule** (:func:`optimal_stopping_policy`) is an exact finite-horizon MDP over
(position, round-start context, drafted path).  Let V(n, s) be the least expected wall time to
come when a round starts at (n, s), V(T, ·) = 0.  For a drafted path d with |d| = k,

.. math::  C_{stop}(d) = 1 + c\,k + \sum_{i=1}^{k} A_{i-1}(1 - a_i)\, E_{y \sim r_i}
           V(n + i, \mathrm{next}(c_{i-1}, y)) + A_k\, B(d),

B(d) = E_{y∼q_{n+k}(·|c_k)} V(n + k + 1, next(c_k, y)) for a bonus (``bonus`` and n + k < T,
and always for k = 0), else V(n + k, c_k);

.. math::  C(d) = \min\Big(C_{stop}(d),\ \sum_x p_{n+k}(x \mid c_k)\, C(d + x)\Big)
           \ (|d| < W'),\qquad C(d) = C_{stop}(d)\ (|d| = W'),\qquad V(n, s) = C(\varnothing),

solved backwards in n; ties go to stopping.  The sum over i is carried down the tree, so each
node costs O(V).  A fixed window γ and every :class:`theory.WindowPolicy` are stop/continue
policies that ignore the drafts, so the optimum is never worse than
:func:`theory.optimal_window_policy`, which is never worse than the best fixed window.

**Rules and models.**  A rule is ``rule(position, context, drafted) -> bool`` (True = stop;
``position`` and ``context`` are the round's start).  Rules that need the models
(:class:`ThresholdStopping`, :class:`EntropyStopping`) implement ``bind(draft, target)``
returning such a callable: :class:`AdaptiveSpeculative` calls ``rule.bind(draft, target)`` when
the rule has ``bind``, else uses the rule itself (:meth:`AdaptiveSpeculative.bound_rule`).

**Sizes.**  The tree of one round from (n, s) has Σ_{k≤W′} V^k nodes; the exact functions
refuse up front problems whose trees hold more than :data:`MAX_DRAFTED_PATHS` nodes in all
(:func:`drafted_paths`, an upper bound that ignores pruning), and simulation is the answer
there.  Every rule of this module is deterministic given (n, s, d), as the exact round law
needs (AdaEDL's online adaptation of λ across rounds is not).
"""

from __future__ import annotations

import math
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

__all__ = [
    "MAX_DRAFTED_PATHS",
    "AdaptiveSpeculative",
    "EntropyStopping",
    "StoppingTable",
    "ThresholdStopping",
    "drafted_paths",
    "optimal_stopping_policy",
]

#: Most drafted-path nodes (all rounds of a problem, :func:`drafted_paths`) that the exact
#: functions of this module enumerate; beyond it they raise ``ValueError`` up front.
MAX_DRAFTED_PATHS = 1_000_000


def drafted_paths(vocab_size: int, n_contexts: int, horizon: int, max_window: int) -> int:
    r"""Upper bound on the drafted-path nodes of every round of a problem.

    S · Σ_{n<T} Σ_{k=0}^{W′_n} V^k with W′_n = min(W, T − n): every round start (n, s) and every
    path of at most W′_n drafted tokens (zero-probability drafts are pruned in practice).  When
    that exceeds ~10⁶⁰ the count of the trees cut at depth 60 / log₁₀ V is returned instead (a
    lower bound, still far over any limit), so the estimate stays instant.

    Examples
    --------
    >>> from theory.stopping import drafted_paths
    >>> drafted_paths(2, 1, 3, 2)  # n = 0, 1: 1 + 2 + 4 paths; n = 2: 1 + 2
    17
    """
    longest = min(max_window, horizon)

    def tree(window):  # 1 + V + … + V^window
        return window + 1 if vocab_size == 1 else (vocab_size ** (window + 1) - 1) \
            // (vocab_size - 1)

    if vocab_size > 1 and longest * math.log10(vocab_size) > 60:  # astronomical: a lower bound
        return n_contexts * tree(int(60 / math.log10(vocab_size)))
    total = (longest - 1) * (longest + 2) // 2 if vocab_size == 1 \
        else sum(tree(window) for window in range(1, longest))
    return n_contexts * (total + (horizon - longest + 1) * tree(longest))


def _checked_size(draft: MarkovLM, target: MarkovLM, max_window: int, what: str) -> None:
    paths = drafted_paths(target.vocab_size, target.n_contexts, target.horizon, max_window)
    if paths > MAX_DRAFTED_PATHS:
        raise ValueError(
            f"{what} enumerates up to {paths:.3g} drafted paths (S·Σₙ Σ_(k≤min(W, T−n)) V^k "
            f"with V={target.vocab_size}, S={target.n_contexts}, T={target.horizon}, "
            f"W={max_window}) > theory.stopping.MAX_DRAFTED_PATHS = {MAX_DRAFTED_PATHS}; "
            "use a smaller problem or simulate (sim.reference.reference_simulate)")


def _check_window(max_window) -> int:
    if not isinstance(max_window, numbers.Integral) or isinstance(max_window, bool):
        raise TypeError(f"max_window must be a positive integer; got {max_window!r}")
    if max_window < 1:
        raise ValueError(f"max_window must be >= 1; got {max_window}")
    return int(max_window)


def _context_after(target: MarkovLM, context: int, drafted) -> int:
    following = target.next_context
    for token in drafted:
        context = int(following[context, token])
    return context


@dataclass(frozen=True)
class AdaptiveSpeculative(RoundLevelAlgorithm):
    r"""Token-wise speculative decoding whose draft length a stopping rule decides as it drafts.

    See the module docstring for the round, its exact law and its wall time.

    Parameters
    ----------
    rule : callable or object with ``bind``
        ``rule(position, context, drafted) -> bool``, True = stop drafting; asked before every
        draft of a round (the first included, not at ``max_window`` drafts or the horizon),
        with the round's start position and context and the tuple of tokens drafted so far.
        A rule with a method ``bind(draft, target)`` (:class:`ThresholdStopping`,
        :class:`EntropyStopping`) is replaced by what it returns (:meth:`bound_rule`);
        :class:`StoppingTable` is a plain callable.  It must be deterministic: the exact laws
        enumerate it.  It is asked only on drafted paths the draft can produce.
    max_window : int >= 1
        W, the most tokens a round drafts.
    bonus : bool
        Whether a round whose k ≥ 1 drafts are all accepted emits a bonus token from q (when a
        position remains).  A round with no draft is one plain target step either way.

    Notes
    -----
    Rejections and target calls count as for ``Speculative(window=γ)``: one target call per
    round, one rejection per round that ends on a failed test.  Exact laws come round by round
    (:mod:`theory.rounds`); :meth:`expected_draft_lengths` gives E[k | round at (n, s)], the draft
    cost of :func:`theory.expected_walltime`.

    Examples
    --------
    A rule that never stops is ``Speculative(window=max_window)``:

    >>> from fractions import Fraction as F
    >>> from theory import AdaptiveSpeculative, MarkovLM, Speculative, expected_target_calls
    >>> p = MarkovLM.homogeneous([[F(1, 2), F(1, 2)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(3, 4), F(1, 4)]], 3, next_context=[[0, 0]])
    >>> never = AdaptiveSpeculative(lambda position, context, drafted: False, 2)
    >>> expected_target_calls(p, q, never) == expected_target_calls(p, q, Speculative(2))
    True
    """

    rule: object
    max_window: int
    bonus: bool = True

    def __post_init__(self):
        if not (callable(self.rule) or callable(getattr(self.rule, "bind", None))):
            raise TypeError("rule must be a callable rule(position, context, drafted) -> bool "
                            f"or have a bind(draft, target) method; got {self.rule!r}")
        object.__setattr__(self, "max_window", _check_window(self.max_window))
        if not isinstance(self.bonus, (bool, np.bool_)):
            raise TypeError(f"bonus must be a bool; got {self.bonus!r}")

    def bound_rule(self, draft: MarkovLM, target: MarkovLM):
        """The rule as ``callable(position, context, drafted) -> bool`` on these models:
        ``rule.bind(draft, target)`` when the rule has ``bind``, else the rule itself."""
        bind = getattr(self.rule, "bind", None)
        return bind(draft, target) if callable(bind) else self.rule

    def branches(self, p, q):
        raise TypeError("AdaptiveSpeculative is not position-synchronous (its rule sees the "
                        "drafted path) and has no per-position branches; its exact laws are "
                        "computed round by round (theory.rounds)")

    def check_cost(self, draft, target, consumer: str) -> None:
        """Refuse exact computations over more than :data:`MAX_DRAFTED_PATHS` drafted paths
        (:func:`drafted_paths`) up front; the engines' reference routine is per trial."""
        if consumer == "dp":
            _checked_size(draft, target, self.max_window, f"the exact law of {self!r}")

    def draft_lengths(self, horizon: int, n_contexts: int) -> np.ndarray:
        raise TypeError("AdaptiveSpeculative drafts a random number of tokens that depends on "
                        "the models; use expected_draft_lengths(draft, target)")

    def expected_draft_lengths(self, draft: MarkovLM, target: MarkovLM) -> np.ndarray:
        """E[k | a round starts at (n, s)], the expected number of drafted tokens, (T, S).

        Every drafted token counts, also those after the first rejection.  Exact for Fraction
        models.
        """
        check_compatible(draft, target)
        self.check_cost(draft, target, "dp")
        rule = self.bound_rule(draft, target)
        horizon, n_contexts = target.horizon, target.n_contexts
        out = zeros_like_kind((horizon, n_contexts), target.is_exact)
        for n in range(horizon):
            window = min(self.max_window, horizon - n)
            for s in range(n_contexts):
                total = 0 * out[n, s]
                for drafted, _, prob in _leaves(rule, draft, target, n, s, window, None):
                    total = total + prob * len(drafted)
                out[n, s] = total
        return out

    def round_law(self, draft, target, position: int, *,
                  max_nodes: int = DEFAULT_MAX_NODES) -> RoundLaw:
        """The exact law of one round from ``position``, every start context: by enumerating
        the drafted paths (module docstring).  More than ``max_nodes`` nodes: ``ValueError``."""
        check_compatible(draft, target)
        horizon = target.horizon
        if not isinstance(position, numbers.Integral) or isinstance(position, bool) \
                or not 0 <= position < horizon:
            raise ValueError(f"position must be an integer in [0, T) = [0, {horizon}); "
                             f"got {position!r}")
        budget = _check_max_nodes(max_nodes)
        rule = self.bound_rule(draft, target)
        window = min(self.max_window, horizon - position)
        exact = target.is_exact
        n_contexts = target.n_contexts
        following = target.next_context
        shape = (window + 2, n_contexts, n_contexts)
        accepted, rejected = zeros_like_kind(shape, exact), zeros_like_kind(shape, exact)
        one = 1 if exact else 1.0
        from_target = zeros_like_kind(shape, exact)  # plain target steps and bonus tokens
        for s in range(n_contexts):
            # Depth-first over the *accepted* drafted prefixes d, with alive = P(d drafted and
            # every token of it accepted).  A prefix that drafts on adds, summed over the
            # drafted token x, alive · [q − p]₊(y) to the rejections at depth |d| + 1 (the
            # rejected mass Σ_x p(x)(1 − min(1, q(x)/p(x))) times the residual's law), and goes
            # on to the children x with alive · min(p(x), q(x)) > 0.
            stack = [((), s, one)]
            while stack:
                drafted, context, alive = stack.pop()
                budget -= 1
                if budget < 0:
                    raise ValueError(f"the exact round law at position {position} needs more "
                                     "drafted-path nodes than max_nodes; simulate instead "
                                     "(sim.reference.reference_simulate)")
                k = len(drafted)
                if k == window or _asks_stop(rule, position, s, drafted):
                    if k == 0:  # a plain target step
                        _add_row(accepted[1, s], following[s], one,
                                 target.probs[position, s])
                        _add_row(from_target[1, s], following[s], one,
                                 target.probs[position, s])
                    elif self.bonus and position + k < horizon:
                        _add_row(accepted[k + 1, s], following[context], alive,
                                 target.probs[position + k, context])
                        _add_row(from_target[k + 1, s], following[context], alive,
                                 target.probs[position + k, context])
                    else:
                        accepted[k, s, context] += alive
                    continue
                p = draft.probs[position + k, context]
                q = target.probs[position + k, context]
                _add_row(rejected[k + 1, s], following[context], alive, positive_part(q - p))
                kept = np.minimum(p, q)
                for token in range(len(p) - 1, -1, -1):  # pushed in reverse: popped in order
                    if kept[token] != 0:
                        stack.append(((*drafted, token), int(following[context, token]),
                                      alive * kept[token]))
        return RoundLaw(position, accepted, rejected, from_target)


def _add_row(out, destinations, scale, weights) -> None:
    """out[destinations[y]] += scale · weights[y] for every y with weights[y] ≠ 0 (exact for
    Fractions: no products with zero weights are formed)."""
    for y, weight in enumerate(weights):
        if weight != 0:
            out[destinations[y]] += scale * weight


def _leaves(rule, draft, target, position, context, window, budget):
    """The drafted paths where a round from (``position``, ``context``) stops: yields (tokens,
    contexts c₀ … c_k, P(tokens)).  ``budget``: a one-item list of nodes still allowed."""
    one = 1 if target.is_exact else 1.0
    following = target.next_context
    stack = [((), [context], one)]
    while stack:
        drafted, contexts, prob = stack.pop()
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise ValueError(f"the exact round law at position {position} needs more "
                                 "drafted-path nodes than max_nodes; simulate instead "
                                 "(sim.reference.reference_simulate)")
        if len(drafted) == window or _asks_stop(rule, position, context, drafted):
            yield drafted, contexts, prob
            continue
        row = draft.probs[position + len(drafted), contexts[-1]]
        for token in range(len(row) - 1, -1, -1):  # pushed in reverse: popped in order
            if row[token] != 0:
                stack.append(((*drafted, token),
                              [*contexts, int(following[contexts[-1], token])],
                              prob * row[token]))


def _asks_stop(rule, position, context, drafted) -> bool:
    decision = rule(position, context, drafted)
    if not isinstance(decision, (bool, np.bool_)):
        raise TypeError(f"a stopping rule must return a bool (True = stop); rule({position}, "
                        f"{context}, {drafted}) returned {decision!r}")
    return bool(decision)


# ---------------------------------------------------------------------- rules
def _check_unit(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a real number in [0, 1]; got {value!r}")
    return value


@dataclass(frozen=True)
class ThresholdStopping:
    r"""SpecDec++'s rule with the chains' exact acceptance probabilities.

    After drafting x₁ … x_k (rows p_i, q_i at position n + i − 1 along the drafted path), stop
    iff

    .. math::  1 - \prod_{i \le k} \min\Big(1, \frac{q_i(x_i)}{p_i(x_i)}\Big) > h,

    the probability that at least one drafted token is rejected exceeds the threshold h
    (Huang, Guo, Wang, COLM 2025, arXiv:2405.19715, who predict this probability with a trained
    head; here it is exact).  The empty product is 1, so a round always drafts at least once;
    h = 1 never stops before ``max_window``.  Comparisons are exact for Fraction models.

    Parameters
    ----------
    threshold : real in [0, 1]
        h.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import AdaptiveSpeculative, MarkovLM, ThresholdStopping
    >>> p = MarkovLM.homogeneous([[F(1, 2), F(1, 2)]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(3, 4), F(1, 4)]], 3, next_context=[[0, 0]])
    >>> rule = ThresholdStopping(F(1, 3)).bind(p, q)
    >>> rule(0, 0, ()), rule(0, 0, (0,)), rule(0, 0, (1,))  # 1 − 1/2 > 1/3 after token 1
    (False, False, True)
    """

    threshold: object

    def __post_init__(self):
        _check_unit("threshold", self.threshold)

    def bind(self, draft: MarkovLM, target: MarkovLM):
        """``rule(position, context, drafted) -> bool`` on these models."""
        check_compatible(draft, target)
        threshold = self.threshold

        def rule(position, context, drafted):
            accepted = 1
            for i, token in enumerate(drafted):
                p = draft.probs[position + i, context, token]
                q = target.probs[position + i, context, token]
                accepted = accepted * min(1, q / p)
                context = int(target.next_context[context, token])
            return bool(1 - accepted > threshold)

        return rule


@dataclass(frozen=True)
class EntropyStopping:
    r"""A draft-only entropy rule in the spirit of AdaEDL and SVIP.

    Before drafting token k + 1 (the first included), with p_{k+1} = p_{n+k}(· | c_k) the draft
    law it would be drawn from and H its Shannon entropy in nats, stop iff

    .. math::  1 - \sqrt{γ\, H(p_{k+1})} < λ.

    AdaEDL (Agrawal, Ahn, Rao, Tummala, arXiv:2410.18351) stops drafting when an entropy-based
    lower bound on the acceptance probability of the next draft falls below a threshold λ; we
    implement that criterion in the form 1 − √(γ H) < λ, read from the paper's description,
    with γ (``scale``) and λ (``threshold``) fixed.  What we could not verify against the paper
    itself: the exact constant and form of its bound, whether it is evaluated on the
    distribution of the next draft (as here) or of the token just drafted, and the online
    adaptation of λ, which is left out (a rule must be a fixed function of (n, s, d) for the
    exact laws).  SVIP (arXiv:2411.18462) also stops when a function of the draft entropy
    crosses a threshold; every such rule is "stop iff H > h*" for some h*, here
    h* = (1 − λ)² / γ when λ ≤ 1.  The rule reads only the draft; the entropy is float64 (log),
    the decision a boolean, so the laws stay exact for Fraction models.

    Parameters
    ----------
    threshold : real
        λ.
    scale : real > 0
        γ.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import EntropyStopping, MarkovLM
    >>> p = MarkovLM([[[F(1, 2), F(1, 2)], [1, 0]]] * 2, next_context=[[0, 1], [0, 1]])
    >>> rule = EntropyStopping(F(1, 2)).bind(p, p)  # stop iff H > 1/4 nats
    >>> rule(0, 0, ()), rule(0, 1, ()), rule(0, 0, (1,))  # H = log 2, 0, 0
    (True, False, False)
    """

    threshold: object
    scale: object = 1.0

    def __post_init__(self):
        if not isinstance(self.threshold, numbers.Real) or isinstance(self.threshold, bool) \
                or not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite real number; got {self.threshold!r}")
        if not isinstance(self.scale, numbers.Real) or isinstance(self.scale, bool) \
                or not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite real number > 0; got {self.scale!r}")

    def bind(self, draft: MarkovLM, target: MarkovLM):
        """``rule(position, context, drafted) -> bool`` on these models."""
        check_compatible(draft, target)
        threshold, scale = float(self.threshold), float(self.scale)

        def rule(position, context, drafted):
            row = draft.probs[position + len(drafted), _context_after(target, context, drafted)]
            entropy = -sum(float(w) * math.log(float(w)) for w in row if w != 0)
            return bool(1 - math.sqrt(scale * max(entropy, 0.0)) < threshold)

        return rule


@dataclass(frozen=True)
class StoppingTable:
    """A stopping rule given by its decisions: continue exactly at the keys of ``continue_at``.

    Keys are (round-start position, round-start context, drafted tuple); every other decision
    node stops.  :func:`optimal_stopping_policy` returns one, with ``walltime`` its exact
    expected wall time (Σ_s start(s) V(0, s)).

    Examples
    --------
    >>> from theory.stopping import StoppingTable
    >>> table = StoppingTable(frozenset({(0, 0, ()), (0, 0, (1,))}))
    >>> table(0, 0, ()), table(0, 0, (1,)), table(0, 0, (0,)), table(1, 0, ())
    (False, False, True, True)
    """

    continue_at: frozenset
    walltime: object = None

    def __call__(self, position, context, drafted) -> bool:
        return (position, context, tuple(drafted)) not in self.continue_at

    def __repr__(self) -> str:
        return (f"StoppingTable({len(self.continue_at)} continue decisions, "
                f"walltime={self.walltime})")


# ---------------------------------------------------------------------- the optimum
def optimal_stopping_policy(draft: MarkovLM, target: MarkovLM, *, cost_ratio,
                            max_window: int, bonus: bool = True) -> AdaptiveSpeculative:
    r"""The stopping rule minimizing expected wall time, by backward induction (Bellman).

    Parameters
    ----------
    draft, target : MarkovLM
        Compatible models (exact when both hold Fractions and ``cost_ratio`` is rational).
    cost_ratio : real >= 0
        c, the cost of one drafted token in units of one target call.
    max_window : int >= 1
        W, the most tokens a round drafts.
    bonus : bool
        As in :class:`AdaptiveSpeculative`.

    Returns
    -------
    AdaptiveSpeculative
        Its rule is a :class:`StoppingTable` of the optimal decisions for every round start
        (n, s) and drafted path of positive draft probability (ties go to stopping); its
        ``rule.walltime`` is the optimal value Σ_s start(s) V(0, s), which
        :func:`theory.expected_walltime` of the returned algorithm reproduces.

    Raises
    ------
    ValueError
        Bad ``cost_ratio`` or ``max_window``, or more than :data:`MAX_DRAFTED_PATHS` drafted
        paths (:func:`drafted_paths`), refused before any work.

    Notes
    -----
    The equations are in the module docstring.  One pass over the drafted-path tree of every
    round start, O(V) per node: O(T · S · V^{W+1}) time.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import (MarkovLM, expected_walltime, optimal_stopping_policy,
    ...                     optimal_window_policy)
    >>> p = MarkovLM([[[F(9, 10), F(1, 10)], [F(1, 2), F(1, 2)]]] * 3)
    >>> q = MarkovLM([[[F(4, 5), F(1, 5)], [F(1, 10), F(9, 10)]]] * 3)
    >>> best = optimal_stopping_policy(p, q, cost_ratio=F(1, 4), max_window=2)
    >>> window = optimal_window_policy(p, q, cost_ratio=F(1, 4), max_window=2)
    >>> best.rule.walltime == expected_walltime(p, q, best, cost_ratio=F(1, 4))
    True
    >>> best.rule.walltime <= expected_walltime(p, q, window, cost_ratio=F(1, 4))
    True
    """
    from theory.exact import _checked_cost_ratio

    check_compatible(draft, target)
    cost_ratio = _checked_cost_ratio(cost_ratio)
    max_window = _check_window(max_window)
    if not isinstance(bonus, (bool, np.bool_)):
        raise TypeError(f"bonus must be a bool; got {bonus!r}")
    _checked_size(draft, target, max_window, "optimal_stopping_policy")
    horizon, n_contexts = target.horizon, target.n_contexts
    exact = target.is_exact
    following = target.next_context
    value = zeros_like_kind((horizon + 1, n_contexts), exact)  # V(n, s); V(T) = 0
    after_target = zeros_like_kind((horizon, n_contexts), exact)  # E_q V(m + 1, ·) at (m, c)
    after_residual = zeros_like_kind((horizon, n_contexts), exact)  # E_r V(m + 1, ·)
    continue_at = set()
    for n in range(horizon - 1, -1, -1):
        for c in range(n_contexts):
            ahead = value[n + 1][following[c]]  # V(n + 1, next(c, y)) for every y
            q, p = target.probs[n, c], draft.probs[n, c]
            after_target[n, c] = (q * ahead).sum()
            residual = positive_part(q - p)
            mass = residual.sum()
            after_residual[n, c] = (residual * ahead).sum() / mass if mass != 0 else 0 * mass
        window = min(max_window, horizon - n)
        for s in range(n_contexts):
            value[n, s] = _bellman_round(
                draft, target, n, s, window, cost_ratio, bonus, value, after_target,
                after_residual, continue_at)
    walltime = (target.start_distribution * value[0]).sum()
    return AdaptiveSpeculative(StoppingTable(frozenset(continue_at), walltime), max_window,
                               bonus=bonus)


def _bellman_round(draft, target, n, s, window, cost_ratio, bonus, value, after_target,
                   after_residual, continue_at):
    """C(∅) for the round from (n, s) by a post-order walk of its drafted-path tree (module
    docstring); records the paths where continuing is strictly better in ``continue_at``."""
    horizon = target.horizon
    one = 1 if target.is_exact else 1.0
    following = target.next_context

    def stop_cost(drafted, context, alive, rejected_part):
        k = len(drafted)
        if k == 0:
            return 1 + after_target[n, s]
        tail = after_target[n + k, context] if bonus and n + k < horizon \
            else value[n + k, context]
        return 1 + cost_ratio * k + rejected_part + alive * tail

    def children(drafted, context, alive, rejected_part):
        if len(drafted) == window:
            return []
        m = n + len(drafted)
        p, q = draft.probs[m, context], target.probs[m, context]
        out = []
        for token, weight in enumerate(p):
            if weight != 0:
                accept = min(1, q[token] / weight)
                out.append((weight, ((*drafted, token), int(following[context, token]),
                                     alive * accept,
                                     rejected_part + alive * (1 - accept)
                                     * after_residual[m, context])))
        return out

    # frames: [node, its stop cost, pending children, Σ weight · C(child) so far]
    root = ((), s, one, 0 * one)
    stack = [[root, stop_cost(*root), children(*root), 0 * one]]
    while True:
        frame = stack[-1]
        if frame[2]:
            weight, child = frame[2].pop()
            stack.append([child, stop_cost(*child), children(*child), 0 * one, weight])
            continue
        node, stopping, _, continuing = frame[:4]
        best = stopping
        if len(node[0]) < window and continuing < stopping:  # ties go to stopping
            best = continuing
            continue_at.add((n, s, node[0]))
        stack.pop()
        if not stack:
            return best
        stack[-1][3] = stack[-1][3] + frame[4] * best
