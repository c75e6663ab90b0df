r"""Exact laws of rejections and target calls by dynamic programming.

The design is described in docs/architecture.md §1.

Each position-level algorithm (:mod:`theory.algorithms`) is a Markov chain on (position n,
context s, round state j).  Let :math:`m_n(j, s)` be the probability of reaching position n in
context s and round state j.  A branch b of position n moves mass as

.. math::  m_{n+1}(j', s') \mathrel{+}= \sum_{s} m_n(j_b, s)\, M_b(s, s'),\qquad
           M_b(s, s') = \sum_{x:\ \mathrm{next}(s, x) = s'} w_b(s, x),

where :math:`j' = \mathrm{destination}_b`.  Then

* :math:`E[N_{rej}] = \sum_n \sum_{b\ \text{rejected}} \sum_s m_n(j_b, s)\, w_b(s, \cdot)` and
  :math:`E[\text{target calls}] = \sum_n \sum_s m_n(0, s)` (state 0 = a round starts);
* the full pmf follows by carrying a count axis in m (shifted by one on a rejection branch, or
  on entering state 0 for target calls).

The cost is O(T · B · S²) per count value (B branches), linear in T, and exact in rationals
when the models hold Fractions.

:func:`theorem1_rejections` evaluates the paper's Theorem 1 directly,

.. math::  E[N_{rej}] = \sum_{n=1}^{T} E_{x_{1:n-1} \sim q}\big[\mathrm{TV}(p_n, q_n)\big]
           = \sum_n \sum_s μ^q_n(s)\, \mathrm{TV}(p_n(\cdot|s), q_n(\cdot|s)),

with :math:`μ^q_n` the target's context marginals; it must equal the DP for ``Speculative()``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from theory import limits
from theory._arrays import as_scalar, compact, zeros_like_kind
from theory.algorithms import Algorithm
from theory.models import MarkovLM, check_compatible, context_transition
from theory.onestep import _tv_distance
from theory.rounds import RoundProblem
from theory.speculative import Speculative
from theory.threads import with_bounded_blas
from theory.verification import InvalidVerification

__all__ = [
    "expected_rejections",
    "expected_speedup",
    "expected_target_calls",
    "expected_walltime",
    "rejection_pmf",
    "rejection_profile",
    "round_accepted_tokens",
    "round_length_pmf",
    "target_calls_pmf",
    "theorem1_rejections",
    "walltime_components",
]


@dataclass(frozen=True)
class _Move:
    """A branch prepared for the DP: its context transition and per-context mass."""

    source: int
    destination: int
    rejected: bool
    transition: np.ndarray  # (S, S)
    mass: np.ndarray  # (S,) total weight of the branch in each context
    from_target: bool = False  # its token is not an accepted draft (Branch.from_target)


class _Problem:
    """A validated (draft, target, algorithm) triple with per-position moves, cached."""

    def __init__(self, draft: MarkovLM, target: MarkovLM, algorithm: Algorithm):
        check_compatible(draft, target)
        if not isinstance(algorithm, Algorithm):
            raise TypeError(
                f"algorithm must be a theory Algorithm (e.g. Speculative()); got {algorithm!r}"
            )
        algorithm.check_models(draft, target)
        self.draft, self.target, self.algorithm = draft, target, algorithm
        algorithm.check_cost(draft, target, "dp")
        self.horizon = target.horizon
        self.n_contexts = target.n_contexts
        self.n_states = algorithm.n_round_states()
        self.exact = target.is_exact
        homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous \
            and not algorithm.position_dependent
        self._homogeneous = homogeneous
        self._key = (lambda n: 0) if homogeneous else (lambda n: n)
        self._cache: dict[int, list[_Move]] = {}

    def moves(self, position: int) -> list[_Move]:
        key = self._key(position)
        if key not in self._cache:
            p, q = self.draft.probs[position], self.target.probs[position]
            moves = []
            try:
                branches = self.algorithm.branches_at(position, p, q)
            except InvalidVerification as error:
                raise error.at_position(position) from None
            for branch in branches:
                weights = np.asarray(branch.weights)
                transition = context_transition(weights, self.target.next_context,
                                                first_order=self.target.is_first_order)
                moves.append(_Move(branch.source, branch.destination, bool(branch.rejected),
                                   transition, weights.sum(axis=-1), bool(branch.from_target)))
            self._cache[key] = moves
        return self._cache[key]

    def zeros(self, *shape) -> np.ndarray:
        return zeros_like_kind(shape, self.exact)

    def check_size(self, counts: int) -> None:
        """Refuse, before any work, a pass that would not fit in memory or would run for hours
        (the work model, :mod:`theory.limits`); ``counts`` is the length of the count axis
        (1 for means, T + 1 for laws).

        B ≈ 2J + 1 branches per position (J round states: an accept and a reject branch per
        state, and a bonus), each an (S, S) transition built from (S, V) weights at T' positions
        (T' = 1 for time-homogeneous pairs); the pass then moves a (counts, S) mass through
        every branch at each of the T positions.
        """
        horizon, contexts, vocab = self.horizon, self.n_contexts, self.target.vocab_size
        branches = 2.0 * self.n_states + 1
        built = 1 if self._homogeneous else horizon
        entry_bytes = 120 if self.exact else 8  # a Fraction is a Python object
        entry_steps = limits.EXACT_ENTRY_STEPS if self.exact else limits.ENTRY_STEPS
        what = (f"the exact DP of {self.algorithm!r} on T = {horizon}, S = {contexts}, "
                f"V = {vocab}" + (f" ({counts} count values)" if counts > 1 else ""))
        window = getattr(self.algorithm, "window", None)
        advice = ("a window beyond the horizon drafts to the horizon as window = T does; "
                  if isinstance(window, numbers.Integral) and window > horizon else "") \
            + "use a smaller problem, or simulate (sim.simulate)"
        limits.check_memory(entry_bytes * (built * branches * (contexts * contexts + contexts
                                                               + contexts * vocab)
                                           + 3.0 * self.n_states * counts * contexts),
                            what, advice)
        limits.check_work(built * branches * (4 * limits.ARRAY_CALL_STEPS
                                              + contexts * (vocab + contexts) * entry_steps)
                          + horizon * branches * (4 * limits.ARRAY_CALL_STEPS  # product,
                                                  # shift, sum and allocation of (counts, S)
                                                  + counts * contexts * (contexts + 4)
                                                  * entry_steps),
                          what, advice)

    def initial_mass(self) -> np.ndarray:
        """m_0: all mass in round state 0, contexts by the start law; shape (J, S)."""
        mass = self.zeros(self.n_states, self.n_contexts)
        mass[0] = self.target.start_distribution
        return mass

    @with_bounded_blas
    def mean_pass(self):
        """Per-position rejection probability (T,) and round-start probability per context
        (T, S)."""
        self.check_size(1)
        mass = self.initial_mass()
        rejection = self.zeros(self.horizon)
        round_start = self.zeros(self.horizon, self.n_contexts)
        for n in range(self.horizon):
            round_start[n] = mass[0]
            following = self.zeros(self.n_states, self.n_contexts)
            for move in self.moves(n):
                if move.rejected:
                    rejection[n] = rejection[n] + (mass[move.source] * move.mass).sum()
                following[move.destination] = (following[move.destination]
                                               + mass[move.source] @ move.transition)
            mass = following
        return rejection, round_start

    @with_bounded_blas
    def count_pass(self, count: str) -> np.ndarray:
        """pmf of the number of rejections (``count='rejections'``) or of target calls."""
        self.check_size(self.horizon + 1)
        horizon = self.horizon
        mass = self.zeros(self.n_states, horizon + 1, self.n_contexts)
        mass[:, 0] = self.initial_mass()
        for n in range(horizon):
            if count == "calls":  # a round starts: one more target call
                mass[0] = np.roll(mass[0], 1, axis=0)
            following = self.zeros(*mass.shape)
            for move in self.moves(n):
                carried = mass[move.source] @ move.transition
                if count == "rejections" and move.rejected:
                    carried = np.roll(carried, 1, axis=0)
                following[move.destination] = following[move.destination] + carried
            mass = following
        return mass.sum(axis=(0, 2))

    @with_bounded_blas
    def first_round_pmf(self) -> np.ndarray:
        """P(the first round emits k tokens), k = 0 … T."""
        self.check_size(1)
        pmf = self.zeros(self.horizon + 1)
        mass = self.initial_mass()
        for n in range(self.horizon):
            following = self.zeros(self.n_states, self.n_contexts)
            for move in self.moves(n):
                following[move.destination] = (following[move.destination]
                                               + mass[move.source] @ move.transition)
            pmf[n + 1] = following[0].sum()  # back in state 0: the round ended after n + 1
            following[0] = 0 * following[0]
            mass = following
        pmf[self.horizon] = pmf[self.horizon] + mass.sum()
        return pmf

    def round_accepted(self, position: int, start: np.ndarray):
        """E[accepted drafts of a round from ``position``, contexts ~ ``start``]: to state 0."""
        mass = self.zeros(self.n_states, self.n_contexts)
        mass[0] = start
        total = 0 * mass.sum()
        for n in range(position, self.horizon):
            following = self.zeros(self.n_states, self.n_contexts)
            for move in self.moves(n):
                if not move.rejected and not move.from_target:
                    total = total + (mass[move.source] * move.mass).sum()
                if move.destination != 0:
                    following[move.destination] = (following[move.destination]
                                                   + mass[move.source] @ move.transition)
            mass = following
        return total


def _problem(draft, target, algorithm):
    """The DP of ``algorithm``: the one place where algorithm kinds are dispatched.

    Position-level algorithms (``position_synchronous``) run the per-position DP
    (:class:`_Problem`); round-level ones (:class:`theory.algorithms.RoundLevelAlgorithm`, e.g.
    :class:`theory.BlockSpeculative`) the round-level DP of :mod:`theory.rounds`.  Both offer
    ``mean_pass``, ``count_pass`` and ``first_round_pmf``.
    """
    algorithm = Speculative() if algorithm is None else algorithm
    if not isinstance(algorithm, Algorithm):
        raise TypeError(
            f"algorithm must be a theory Algorithm (e.g. Speculative()); got {algorithm!r}"
        )
    if not algorithm.position_synchronous:
        return RoundProblem(draft, target, algorithm)
    return _Problem(draft, target, algorithm)


def round_accepted_tokens(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm | None = None,
                          *, position: int = 0, context: int | None = None):
    r"""Expected number of accepted draft tokens in one round started at (position, context).

    The round's final token (a residual's correction, a bonus, a plain target step) is not
    counted.  Position-level algorithms run this module's DP from round state 0 until the round
    ends (branches neither ``rejected`` nor ``from_target`` emit accepted drafts); round-level
    ones read their round law: E[k] − P(a final token) (:class:`theory.algorithms.RoundLaw`).

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``
    position, context : int, int or None
        The round's start (n, s), 0 ≤ n < T; ``context=None`` is the model's start law.

    Returns
    -------
    float, or Fraction for exact models.

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from theory import MarkovLM, Speculative, round_accepted_tokens
    >>> p = MarkovLM.homogeneous([[F(1, 2), F(1, 2)]], 5, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[F(9, 10), F(1, 10)]], 5, next_context=[[0, 0]])
    >>> str(round_accepted_tokens(p, q, Speculative(window=2)))  # α + α², α = 3/5
    '24/25'
    """
    problem = _problem(draft, target, algorithm)
    horizon, n_contexts = problem.horizon, problem.n_contexts
    if not isinstance(position, numbers.Integral) or isinstance(position, bool) \
            or not 0 <= position < horizon:
        raise ValueError(f"position must be an integer in [0, T) = [0, {horizon}); "
                         f"got {position!r}")
    start = problem.target.start_distribution if context is None else problem.zeros(n_contexts)
    if isinstance(context, numbers.Integral) and not isinstance(context, bool) \
            and 0 <= context < n_contexts:
        start[int(context)] = 1 if problem.exact else 1.0
    elif context is not None:
        raise ValueError(f"context must be None or an integer in [0, S) = [0, {n_contexts}); "
                         f"got {context!r}")
    return as_scalar(problem.round_accepted(int(position), start))


def rejection_profile(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm | None = None):
    """P(position n is a rejection) for n = 0..T−1, shape (T,).

    Sums to :func:`expected_rejections`.  Exact for exact models.

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``
        Any algorithm of :mod:`theory` (custom verifiers are validated:
        :mod:`theory.verification`).

    Returns
    -------
    ndarray, shape (T,)
        P(position n is a rejection), n = 0 … T − 1.

    Raises
    ------
    ValueError, TypeError
        If the models are incompatible or the algorithm is not an :class:`Algorithm`.

    Examples
    --------
    >>> from theory import MarkovLM, rejection_profile
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 2, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 2, next_context=[[0, 0]])
    >>> rejection_profile(p, q).round(12).tolist()
    [0.4, 0.4]
    """
    return _problem(draft, target, algorithm).mean_pass()[0]


def expected_rejections(draft: MarkovLM, target: MarkovLM,
                        algorithm: Algorithm | None = None):
    r"""E[N_rej], the expected number of rejected positions, by exact dynamic programming.

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``

    Returns
    -------
    float, or Fraction for exact models.

    Notes
    -----
    **What N_rej counts.**  N_rej is the number of positions whose token comes from a rejection:
    a draft was tested there, failed (probability 1 − b(x̃)), and the token was drawn from the
    rejection law 𝒫 (for batch verifiers: all live candidates failed and the token came from
    the last residual).  Every rejection ends its round, so a round holds at most one.  A
    round can also end without a rejection, and those endings are *not* counted:

    * ``window=None`` (the paper's K = ∞): only the last round, when it reaches the horizon T
      with every draft accepted;
    * ``window=γ, bonus=False``: a round whose γ drafts were all accepted;
    * ``window=γ, bonus=True``: the same round then emits one *bonus* token drawn from q with
      no test — a target-model token, but never a rejection.

    Hence target calls = N_rej + (rounds that ended without a rejection), and with or without
    bonus N_rej ≤ number of target calls ≤ T.  Positions of a lossy verifier
    (``LossySpeculative``) count the same way.

    With Theorem 1's rule this is, for every window without bonus and for ``window=None``,

    .. math::  E[N_{rej}] = \sum_{n=1}^{T} E_{x_{1:n-1} \sim q}\big[\mathrm{TV}(p_n, q_n)\big]

    (:func:`theorem1_rejections`): each position is tested exactly once, whatever the round
    structure.  A bonus token replaces the test of its position, so ``bonus=True`` gives
    no more rejections than Theorem 1.

    Examples
    --------
    >>> from theory import MarkovLM, expected_rejections
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 3, next_context=[[0, 0]])
    >>> round(expected_rejections(p, q), 12)
    1.2
    """
    return as_scalar(rejection_profile(draft, target, algorithm).sum())


def expected_target_calls(draft: MarkovLM, target: MarkovLM,
                          algorithm: Algorithm | None = None):
    """E[number of target calls] = E[number of rounds], by exact dynamic programming.

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``
        Any algorithm of :mod:`theory` (custom verifiers are validated:
        :mod:`theory.verification`).

    Returns
    -------
    float or Fraction
        Σₙ P(a round starts at position n).

    Raises
    ------
    ValueError, TypeError
        If the models are incompatible or the algorithm is not an :class:`Algorithm`.

    Examples
    --------
    >>> from theory import MarkovLM, Speculative, expected_target_calls
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 3, next_context=[[0, 0]])
    >>> round(expected_target_calls(p, q, Speculative()), 12)  # 1 + 0.4 + 0.4
    1.8
    """
    return as_scalar(_problem(draft, target, algorithm).mean_pass()[1].sum())


def rejection_pmf(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm | None = None):
    """The exact law of N_rej: array of length T + 1, entry k = P(N_rej = k).

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``
        Any algorithm of :mod:`theory` (custom verifiers are validated:
        :mod:`theory.verification`).

    Returns
    -------
    ndarray, shape (T + 1,)
        P(N_rej = k) for k = 0 … T (Fractions for exact models); N_rej as in
        :func:`expected_rejections`.

    Raises
    ------
    ValueError, TypeError
        If the models are incompatible or the algorithm is not an :class:`Algorithm`.

    Examples
    --------
    >>> from theory import MarkovLM, rejection_pmf
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 2, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 2, next_context=[[0, 0]])
    >>> rejection_pmf(p, q).round(12).tolist()  # Binomial(2, 0.4)
    [0.36, 0.48, 0.16]
    """
    return _problem(draft, target, algorithm).count_pass("rejections")


def target_calls_pmf(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm | None = None):
    """The exact law of the number of target calls: length T + 1, entry k = P(calls = k).

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``
        Any algorithm of :mod:`theory` (custom verifiers are validated:
        :mod:`theory.verification`).

    Returns
    -------
    ndarray, shape (T + 1,)
        P(target calls = k) for k = 0 … T; entry 0 is 0 for T ≥ 1.

    Raises
    ------
    ValueError, TypeError
        If the models are incompatible or the algorithm is not an :class:`Algorithm`.
    """
    return _problem(draft, target, algorithm).count_pass("calls")


def round_length_pmf(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm | None = None):
    r"""Law of the number of tokens the first round (first target call) emits; length T + 1.

    Entry k is P(the first round emits k tokens); entry 0 is always 0.  For a context-free
    pair with constant acceptance α = 1 − TV(p, q), ``Speculative(window=γ)`` and T > γ,
    the mean is Leviathan et al.'s (1 − α^{γ+1}) / (1 − α).

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``
        Any algorithm of :mod:`theory` (custom verifiers are validated:
        :mod:`theory.verification`).

    Returns
    -------
    ndarray, shape (T + 1,)
        P(the first round emits k tokens), k = 0 … T.

    Raises
    ------
    ValueError, TypeError
        If the models are incompatible or the algorithm is not an :class:`Algorithm`.

    Examples
    --------
    >>> import numpy as np
    >>> from theory import MarkovLM, Speculative, round_length_pmf
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 5, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 5, next_context=[[0, 0]])
    >>> pmf = round_length_pmf(p, q, Speculative(window=2))
    >>> round(float(np.arange(6) @ pmf), 12)  # 1 + 0.6 + 0.36
    1.96
    """
    return _problem(draft, target, algorithm).first_round_pmf()


def expected_walltime(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm | None = None,
                      *, cost_ratio):
    r"""Expected wall time in units of one target call, with a draft token costing ``cost_ratio``.

    A round starting at position n in context s costs 1 (the target call) plus c·d(n, s) for
    the d(n, s) tokens it drafts (:meth:`Algorithm.draft_lengths`: min(γ, T − n) for a window
    γ, T − n without one, 0 for ``Autoregressive``, min(table[n, s], T − n) for a
    :class:`theory.WindowPolicy`; for a random draft length, its mean E[k | n, s] by linearity,
    :meth:`Algorithm.expected_draft_lengths`, e.g. :class:`theory.AdaptiveSpeculative`):

    .. math::  E[W] = \sum_{n, s} P(\text{round starts at } (n, s))\,(1 + c\, d(n, s)).

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``
        Any algorithm of :mod:`theory` (custom verifiers are validated:
        :mod:`theory.verification`).
    cost_ratio : real >= 0
        c, the cost of one draft token in units of one target call.

    Returns
    -------
    float or Fraction
        E[W] in units of one target call.

    Raises
    ------
    ValueError, TypeError
        If the models are incompatible, the algorithm is not an :class:`Algorithm`, or
        ``cost_ratio`` is negative, NaN or not a real number.
    """
    cost_ratio = _checked_cost_ratio(cost_ratio)
    calls, drafted = walltime_components(draft, target, algorithm)
    return calls + cost_ratio * drafted


def walltime_components(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm | None = None):
    r"""(E[target calls], E[drafted tokens]) in one DP pass: E[W] = calls + c · drafted.

    Wall time is linear in the cost ratio c, so one pass serves every c.

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q.
    algorithm : Algorithm, default ``Speculative()``

    Returns
    -------
    (calls, drafted) : floats, or Fractions for exact models

    Examples
    --------
    >>> from theory import MarkovLM, Speculative, expected_walltime
    >>> from theory.exact import walltime_components
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 4, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 4, next_context=[[0, 0]])
    >>> calls, drafted = walltime_components(p, q, Speculative(window=2))
    >>> bool(abs(calls + 0.3 * drafted - expected_walltime(p, q, Speculative(2), cost_ratio=0.3))
    ...      < 1e-12)
    True
    """
    problem = _problem(draft, target, algorithm)
    round_start = problem.mean_pass()[1]
    drafted = problem.algorithm.expected_draft_lengths(problem.draft, problem.target)
    return as_scalar(round_start.sum()), as_scalar((round_start * drafted).sum())


def _checked_cost_ratio(cost_ratio):
    """``cost_ratio`` as a real number >= 0 (booleans and NaN rejected)."""
    if not isinstance(cost_ratio, numbers.Real) or isinstance(cost_ratio, bool) \
            or not cost_ratio >= 0:
        raise ValueError(f"cost_ratio must be a real number >= 0; got {cost_ratio!r}")
    return cost_ratio


def expected_speedup(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm | None = None,
                     *, cost_ratio):
    r"""Expected walltime factor T / E[W]: autoregressive time over the algorithm's time.

    For context-free models and T → ∞ this tends to Leviathan et al.'s
    (1 − α^{γ+1}) / ((1 − α)(γ c + 1)).

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm, default ``Speculative()``
        Any algorithm of :mod:`theory` (custom verifiers are validated:
        :mod:`theory.verification`).
    cost_ratio : float >= 0
        c, the cost of one draft token in units of one target call.

    Returns
    -------
    float or Fraction
        T / E[W] (:func:`expected_walltime`); > 1 means faster than autoregressive decoding.

    Raises
    ------
    ValueError, TypeError
        If the models are incompatible or the algorithm is not an :class:`Algorithm`.
    """
    walltime = expected_walltime(draft, target, algorithm, cost_ratio=cost_ratio)
    return target.horizon / walltime


def theorem1_rejections(draft: MarkovLM, target: MarkovLM):
    r"""Theorem 1: E[N_rej] = Σₙ Σ_s μ^q_n(s) TV(pₙ(·|s), qₙ(·|s)), evaluated directly.

    μ^q are the target's context marginals (the prefix x₁:ₙ₋₁ ∼ q).  Equal to
    ``expected_rejections(draft, target, Speculative(window=w, bonus=False))`` for every w,
    and a lower bound over the class ℱ of unbiased rejection-based verifiers (Theorem 2).

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).

    Returns
    -------
    float or Fraction
        Σₙ E_q[TV(pₙ, qₙ)].

    Raises
    ------
    ValueError, TypeError
        If the models are incompatible.

    Examples
    --------
    >>> from theory import MarkovLM, theorem1_rejections
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 3, next_context=[[0, 0]])
    >>> round(theorem1_rejections(p, q), 12)
    1.2
    """
    check_compatible(draft, target)
    marginals = target.context_marginals()
    if draft.is_time_homogeneous and target.is_time_homogeneous:
        distances = _tv_distance(compact(draft.probs)[0], compact(target.probs)[0])
        return as_scalar((marginals.sum(axis=0) * distances).sum())
    distances = _tv_distance(draft.probs, target.probs)  # (T, S)
    return as_scalar((marginals * distances).sum())
