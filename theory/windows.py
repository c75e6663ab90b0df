r"""Draft-length policies: how many tokens a round drafts, chosen per (position, context).

A :class:`WindowPolicy` drafts ``table[n, s]`` tokens in a round that starts at position n in
context s, and verifies them token-wise with a bonus token — the conventions of
``Speculative(window=γ, bonus=True)`` with γ chosen anew at every round start (truncated at the
horizon; ``table[n, s] = 0`` is one plain target step emitting a token from q).  The output law
is q whatever the table (every round is lossless).

**The optimal policy is an exact finite-horizon Markov decision problem.**  With a target call
costing 1 and each drafted token costing c (:func:`theory.expected_walltime`), let J(n, s) be
the least expected wall time still to come when a round starts at position n in context s
(J(T, ·) = 0).  A round with window w from (n, s) costs 1 + c·min(w, T − n) and ends at a
random (n + k, s'), so Bellman's equation is

.. math::  J(n, s) = \min_{0 \le w \le W} \Big[1 + c \min(w, T - n)
           + \sum_{k, s'} P_w\big(k, s' \mid n, s\big)\, J(n + k, s')\Big],

solved backwards in n (:func:`optimal_window_policy`).  The round law P_w is a short forward
recursion: let a_i(s, ·) be the law of the context after the round's first i drafts were all
accepted (a_0 = δ_s).  With A_m, R_m, Q_m the (S, S) context transitions of the accepted,
rejected and target-drawn tokens at position m (:func:`theory.context_transition`),
a_{i+1} = a_i A_{n+i}; the round ends after i + 1 tokens with the rejection mass a_i R_{n+i}
(i < w), after w + 1 tokens with the bonus mass a_w Q_{n+w}, or at the horizon.  Only the
expectation of J at the round's end is needed, so it is computed right to left with
matrix-vector products: O(W²) of them per position, O(T · W² · S²) in all — exact in
rationals for Fraction models and a Fraction ``cost_ratio``.

Round states of the policy (for the DP of :mod:`theory.exact` and the engines): 0 = a round
starts (the window is read from the table), r = 1 … W = r drafts still to verify, W + 1 = the
bonus position.
"""

from __future__ import annotations

import numbers

import numpy as np

from theory._arrays import zeros_like_kind
from theory.algorithms import Branch
from theory.models import MarkovLM, check_compatible, context_transition
from theory.onestep import _rejection_mass
from theory.speculative import Speculative
from theory.verification import checked_verification

__all__ = ["WindowPolicy", "optimal_window_policy"]


class WindowPolicy(Speculative):
    r"""Speculative decoding whose draft length is ``table[n, s]`` for a round starting at (n, s).

    Parameters
    ----------
    table : int array (T, S)
        Non-negative draft lengths; 0 means the round is one plain target step (one token
        from q, no draft).  A window that runs past the horizon is truncated there, and the
        bonus token (drawn from q when all drafts were accepted) needs a position left.

    Notes
    -----
    Rejections and target calls count as for ``Speculative(window=γ, bonus=True)``; a plain
    target step (window 0) is a target call and no rejection.  The wall-time cost of a round
    from (n, s) is 1 + c·min(table[n, s], T − n) (:func:`theory.expected_walltime`).

    Examples
    --------
    >>> import numpy as np
    >>> from theory import MarkovLM, Speculative, WindowPolicy, expected_target_calls
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 4, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 4, next_context=[[0, 0]])
    >>> fixed = WindowPolicy(np.full((4, 1), 2))  # the same as a fixed window of 2
    >>> bool(expected_target_calls(p, q, fixed) == expected_target_calls(p, q, Speculative(2)))
    True
    """

    position_dependent = True

    def __init__(self, table):
        try:
            array = np.array(table)
        except (TypeError, ValueError) as error:
            raise TypeError(f"table must be an integer array (T, S); {error}") from None
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(f"table must be a non-empty 2-d array (T, S) of draft lengths; got "
                             f"shape {array.shape}")
        if array.dtype.kind not in "iu":
            if array.dtype.kind == "f" and np.isfinite(array).all() and \
                    (array == np.round(array)).all():
                array = array.astype(np.int64)
            else:
                raise TypeError(f"table must hold integers; got dtype {array.dtype}")
        negative = np.argwhere(array < 0)
        if negative.size:
            n, s = negative[0]
            raise ValueError(f"table[{n}, {s}] = {array[n, s]}; draft lengths must be >= 0")
        array = array.astype(np.int64)
        array.flags.writeable = False
        object.__setattr__(self, "window", None)
        object.__setattr__(self, "bonus", True)
        object.__setattr__(self, "table", array)

    def __repr__(self) -> str:
        return f"WindowPolicy(table of shape {self.table.shape}, max {self.max_window})"

    def __hash__(self):
        return hash((self.table.shape, self.table.tobytes()))

    def __eq__(self, other):
        return type(other) is type(self) and np.array_equal(self.table, other.table)

    @property
    def max_window(self) -> int:
        return int(self.table.max())

    def check_models(self, draft: MarkovLM, target: MarkovLM) -> None:
        expected = (target.horizon, target.n_contexts)
        if self.table.shape != expected:
            raise ValueError(f"table must have shape (T, S) = {expected} for these models; got "
                             f"{self.table.shape}")

    # -- round structure (see the module docstring for the states) ------------------------
    @property
    def has_bonus_state(self) -> bool:
        return True

    @property
    def bonus_state(self) -> int:
        return self.max_window + 1

    def n_round_states(self) -> int:
        return self.max_window + 2

    def after_accept(self, state: int) -> int:
        """After an accepted draft with ``state`` drafts left: one fewer, or the bonus."""
        return state - 1 if state >= 2 else self.bonus_state

    def round_start_states(self) -> np.ndarray:
        """The state a round starting at (n, s) is in at its first position, (T, S): the
        window when it is ≥ 1, else the bonus state (one token straight from q)."""
        return np.where(self.table >= 1, self.table, self.bonus_state)

    def draft_lengths(self, horizon: int, n_contexts: int) -> np.ndarray:
        return np.minimum(self.table, (horizon - np.arange(horizon))[:, None])

    def branches(self, p, q):
        raise TypeError("WindowPolicy's branches depend on the position: use branches_at")

    def branches_at(self, position, p, q):
        p, q = np.asarray(p), np.asarray(q)
        accept, law = checked_verification(self, p, q)  # the DP adds the position to errors
        accepted = accept * p
        rejected = _rejection_mass(p, accept)[..., None] * law
        bonus = self.bonus_state
        out = []
        for state in range(1, bonus):
            out.append(Branch(state, self.after_accept(state), False, accepted))
            out.append(Branch(state, 0, True, rejected))
        out.append(Branch(bonus, 0, False, self.bonus_law(q), from_target=True))
        # round starts: the branches of the state the table puts each context in
        for state in range(1, bonus + 1):
            starts_here = (self.round_start_states()[position] == state)[:, None]
            if not starts_here.any():
                continue
            if state == bonus:
                out.append(Branch(0, 0, False, self.bonus_law(q) * starts_here,
                                  from_target=True))
            else:
                out.append(Branch(0, self.after_accept(state), False, accepted * starts_here))
                out.append(Branch(0, 0, True, rejected * starts_here))
        return out


def optimal_window_policy(draft: MarkovLM, target: MarkovLM, *, cost_ratio,
                          max_window: int) -> WindowPolicy:
    r"""The draft-length table minimizing expected wall time, by backward induction.

    Parameters
    ----------
    draft, target : MarkovLM
        Compatible models (exact when both hold Fractions).
    cost_ratio : real >= 0
        c, the cost of one drafted token in units of one target call.
    max_window : int >= 0
        Largest draft length considered (0 gives autoregressive decoding).

    Returns
    -------
    WindowPolicy
        Its :func:`theory.expected_walltime` is the optimal value Σ_s start(s) J(0, s) of
        Bellman's equation (module docstring).  Ties go to the shortest window.

    Notes
    -----
    Cost O(T · W² · S²) time (W = min(``max_window``, T): longer windows draft to the horizon
    and never win a tie) with dense (S, S) context transitions per position: seconds for S up
    to a few hundred contexts.

    Examples
    --------
    >>> from sim.models import fig2_pair
    >>> from theory import Speculative, expected_walltime, optimal_window_policy
    >>> draft, target = fig2_pair()
    >>> policy = optimal_window_policy(draft, target, cost_ratio=0.2, max_window=8)
    >>> best_fixed = min(expected_walltime(draft, target, Speculative(w), cost_ratio=0.2)
    ...                  for w in range(1, 9))
    >>> bool(expected_walltime(draft, target, policy, cost_ratio=0.2) <= best_fixed)
    True
    """
    return WindowPolicy(_bellman(draft, target, cost_ratio, max_window)[0])


def _bellman(draft, target, cost_ratio, max_window):
    """(optimal table (T, S), J (T + 1, S)) of Bellman's equation (module docstring)."""
    from theory.exact import _checked_cost_ratio

    check_compatible(draft, target)
    cost_ratio = _checked_cost_ratio(cost_ratio)
    if not isinstance(max_window, numbers.Integral) or isinstance(max_window, bool) \
            or max_window < 0:
        raise ValueError(f"max_window must be an integer >= 0; got {max_window!r}")
    horizon, n_contexts = target.horizon, target.n_contexts
    # a window w >= T - n drafts to the horizon: every such w costs what T - n costs, and
    # ties go to the shortest, so windows beyond T never win (max_window = 10**6 is T's work)
    max_window = min(int(max_window), horizon)
    exact = target.is_exact
    transitions = _Transitions(draft, target)
    value = zeros_like_kind((horizon + 1, n_contexts), exact)  # J(n, s); J(T) = 0
    table = np.zeros((horizon, n_contexts), dtype=np.int64)
    for n in range(horizon - 1, -1, -1):
        costs = _window_costs(n, horizon, max_window, cost_ratio, transitions, value, exact)
        # the first minimum: ties go to the shortest window (exact comparisons for Fractions)
        best = [min(range(max_window + 1), key=lambda w, s=s: (costs[w][s], w))
                for s in range(n_contexts)]
        table[n] = best
        value[n] = np.array([costs[w][s] for s, w in enumerate(best)],
                            dtype=object if exact else np.float64)
    return table, value


class _Transitions:
    """The (S, S) context transitions of accepted, rejected and target tokens per position."""

    def __init__(self, draft: MarkovLM, target: MarkovLM):
        self.draft, self.target = draft, target
        self._cache: dict[int, tuple] = {}
        self.homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous

    def at(self, position: int):
        key = 0 if self.homogeneous else position
        if key not in self._cache:
            p, q = self.draft.probs[position], self.target.probs[position]
            accept, law = Speculative().verification(p, q)
            first_order = self.target.is_first_order
            next_context = self.target.next_context

            def matrix(weights):
                return context_transition(np.asarray(weights), next_context,
                                          first_order=first_order)

            self._cache[key] = (matrix(accept * p),
                                matrix(_rejection_mass(p, accept)[..., None] * law),
                                matrix(q))
        return self._cache[key]


def _window_costs(n, horizon, max_window, cost_ratio, transitions, value, exact):
    """cost[w][s]: expected wall time from a round with window w at (n, s), w = 0 … W.

    Right to left along the round: with v the expected J at the round's end, v = Q_{n+w} J_{n+w+1}
    after w accepted drafts (0 at the horizon), then v ← R_{n+i} J_{n+i+1} + A_{n+i} v for
    i = w − 1 … 0 — matrix-vector products only.
    """
    n_contexts = value.shape[1]
    rejected_end = {}  # R_{n+i} J_{n+i+1}: the expected J after a rejection at draft i
    costs = []
    for w in range(max_window + 1):
        drafted = min(w, horizon - n)
        if n + w < horizon:
            v = transitions.at(n + w)[2] @ value[n + w + 1]  # the bonus token
        else:
            v = zeros_like_kind(n_contexts, exact)  # the horizon ends the round
        for i in range(drafted - 1, -1, -1):
            accepted, rejected, _ = transitions.at(n + i)
            if i not in rejected_end:
                rejected_end[i] = rejected @ value[n + i + 1]
            v = rejected_end[i] + accepted @ v
        costs.append(1 + cost_ratio * drafted + v)
    return costs
