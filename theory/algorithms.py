r"""The shared base of the decoding algorithms: the two interfaces, :class:`Branch`, the round law.

Every algorithm is a small, immutable specification (a frozen dataclass, docs/architecture.md
§1) of one *family* module — :mod:`theory.speculative` (token-wise verifiers, class ℱ),
:mod:`theory.lossy` and :mod:`theory.lossy_zoo` (lossy verifiers), :mod:`theory.windows`,
:mod:`theory.batch` (multi-draft), :mod:`theory.block` (block verification) — and exposes its
exact law through one of two interfaces, told apart by :attr:`Algorithm.position_synchronous`:

* **Position-level** (``position_synchronous = True``): given the context s and a small
  per-trial *round state* j, the law of what happens at position n — the token emitted,
  whether the position is a rejection, the next round state — depends only on (n, s, j).  The
  algorithm exposes that law as a list of :class:`Branch` objects
  (:meth:`Algorithm.branches`, :meth:`Algorithm.branches_at`),

  .. math::  w_b(s, x) = P(\text{emit } x \text{ and take branch } b \mid \text{context } s,
             \text{ state } j = \mathrm{source}_b),

  which is all the per-position dynamic program of :mod:`theory.exact` needs.  Round state 0
  always means "a new round starts at this position", i.e. one target (oracle) call happens
  there.
* **Round-level** (:class:`RoundLevelAlgorithm`, ``position_synchronous = False``): what a
  round keeps depends on the whole round (block verification, token trees), so the algorithm
  gives the law of a whole round started at (position n, context s),
  :meth:`RoundLevelAlgorithm.round_law` → :class:`RoundLaw`, and the generic round-level
  dynamic program of :mod:`theory.rounds` does the rest.

:mod:`theory.exact` chooses between the two programs through this interface only, so a new
family implements one of them in its own module and adds one export line to
:mod:`theory`.  The engines in :mod:`sim` run the same specifications.
"""

from __future__ import annotations

import abc
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from theory import limits

__all__ = [
    "DEFAULT_MAX_NODES",
    "Algorithm",
    "Branch",
    "RoundLaw",
    "RoundLevelAlgorithm",
]

#: Default limit on the enumerated nodes of one round law (all start contexts together).
DEFAULT_MAX_NODES = 2_000_000


class Branch(NamedTuple):
    """One way a position can unfold.

    ``weights[s, x]`` is the probability, in context s and round state ``source``, of emitting
    token x through this branch; the round state becomes ``destination``.  ``rejected`` marks
    branches that count as a rejection (N_rej); ``from_target`` those whose token is drawn from
    the target with no test (a bonus token, a plain target step).  Every other branch emits an
    accepted draft token (:func:`theory.round_accepted_tokens`).
    """

    source: int
    destination: int
    rejected: bool
    weights: np.ndarray
    from_target: bool = False


class Algorithm(abc.ABC):
    """Base class of every decoding algorithm (see the module docstring for the two kinds).

    A *position-level* algorithm (``position_synchronous = True``, the default) implements
    :meth:`n_round_states` and :meth:`branches`; a *round-level* one derives from
    :class:`RoundLevelAlgorithm` and implements :meth:`RoundLevelAlgorithm.round_law`.
    """

    #: Whether the algorithm reads the draft model at all.
    uses_draft: bool = True
    #: Whether its branches depend on the position itself, not only on the rows (p, q) there
    #: (e.g. :class:`theory.WindowPolicy`); the DPs then never share positions.
    position_dependent: bool = False
    #: Whether the law of a position depends only on (n, s, round state) (see the module
    #: docstring): the one switch between the two kinds.  Algorithms that are not
    #: (:class:`RoundLevelAlgorithm`, e.g. :class:`theory.BlockSpeculative`) are computed round
    #: by round (:mod:`theory.rounds`).
    position_synchronous: bool = True

    @abc.abstractmethod
    def n_round_states(self) -> int:
        """Number of round states (state 0 = a round, i.e. a target call, starts here)."""

    @abc.abstractmethod
    def branches(self, p: np.ndarray, q: np.ndarray) -> list[Branch]:
        """The branches at one position for draft rows ``p`` and target rows ``q`` (S, V)."""

    def branches_at(self, position: int, p: np.ndarray, q: np.ndarray) -> list[Branch]:
        """The branches at ``position``: :meth:`branches` unless the algorithm depends on it."""
        return self.branches(p, q)

    def check_models(self, draft, target) -> None:
        """Raise ``ValueError`` if the algorithm cannot run on these models (default: it can)."""
        return None

    def draft_lengths(self, horizon: int, n_contexts: int) -> np.ndarray:
        """Tokens drafted by a round that starts at position n in context s, shape (T, S).

        min(window, T − n) (T − n without a window; 0 when the draft is never read): the
        draft cost of :func:`theory.expected_walltime`.
        """
        remaining = horizon - np.arange(horizon)
        window = getattr(self, "window", None)
        if not self.uses_draft:
            remaining = 0 * remaining
        elif window is not None:
            remaining = np.minimum(window, remaining)
        return np.repeat(remaining[:, None], n_contexts, axis=1)

    def expected_draft_lengths(self, draft, target) -> np.ndarray:
        """E[tokens drafted by a round that starts at (n, s)], shape (T, S).

        The draft cost of :func:`theory.expected_walltime` (by linearity, only its mean
        matters).  The default is :meth:`draft_lengths`, for algorithms whose rounds draft a
        fixed number of tokens; algorithms whose draft length is random and depends on the
        models (:class:`theory.AdaptiveSpeculative`) override this method.
        """
        return self.draft_lengths(target.horizon, target.n_contexts)

    def check_cost(self, draft, target, consumer: str) -> None:
        """Raise ``ValueError`` (or ``MemoryError``) when running on this pair would be
        absurdly large (the work model, :mod:`theory.limits`).

        Called once per problem by the exact DP (``consumer='dp'``; the position-level DP
        then sizes each pass itself) and by the engines' table builder (``consumer='engine'``).
        The default refuses engine tables whose per-round-state entries (≈ 48 bytes and one
        Python call per state: ``Speculative(window=10**9)`` has 10⁹ + 2 states) would not fit.
        """
        if consumer != "engine":
            return
        states = float(self.n_round_states())
        what = f"the round-state tables of {self!r} ({states:.3g} round states)"
        window = getattr(self, "window", None)
        advice = (f"a window beyond the horizon T = {target.horizon} drafts to the horizon as "
                  f"window = {target.horizon} does" if isinstance(window, numbers.Integral)
                  and window > target.horizon else "use a smaller algorithm")
        limits.check_memory(48 * states, what, advice)
        limits.check_work(states * limits.ARRAY_CALL_STEPS, what, advice)



@dataclass(frozen=True)
class RoundLaw:
    """The law of one round of a round-level algorithm started at ``position``.

    ``accepted[k, s, s']`` (``rejected[k, s, s']``) is the probability, for a round starting
    in context s, that it emits k tokens, ends in context s' and does not end (does end) in a
    rejection (a residual draw); k = 0 … K, K the most tokens a round emits (γ + 1 for block
    verification).  Rows sum to 1 over (k, s', accepted/rejected).  ``from_target[k, s, s']``
    is the part of ``accepted`` whose last token came from the target with no test (a bonus
    token, or the plain target step of a round that drafts nothing), so that a round's accepted
    draft tokens are k minus its final token (:func:`theory.round_accepted_tokens`); None when
    the family does not say.
    """

    position: int
    accepted: np.ndarray
    rejected: np.ndarray
    from_target: np.ndarray | None = None

    @property
    def total(self) -> np.ndarray:
        """accepted + rejected: the law of (k, s') per start context s."""
        return self.accepted + self.rejected


def _check_max_nodes(max_nodes) -> int:
    if not isinstance(max_nodes, numbers.Integral) or isinstance(max_nodes, bool) \
            or max_nodes < 1:
        raise ValueError(f"max_nodes must be a positive integer; got {max_nodes!r}")
    return int(max_nodes)


class RoundLevelAlgorithm(Algorithm):
    """Base class of the round-level families: the exact law comes a whole round at a time.

    A subclass implements :meth:`round_law` (and may refine :meth:`round_key`); the generic
    round-level DP (:class:`theory.rounds.RoundProblem`) runs every exact quantity of
    :mod:`theory.exact` from it.  There are no per-position branches and one round state.
    """

    position_synchronous = False

    def n_round_states(self) -> int:
        return 1

    def branches(self, p, q):
        raise TypeError(
            f"{type(self).__name__} is not position-synchronous and has no per-position "
            "branches; its exact laws are computed round by round (theory.rounds)"
        )

    @abc.abstractmethod
    def round_law(self, draft, target, position: int, *,
                  max_nodes: int = DEFAULT_MAX_NODES) -> RoundLaw:
        """The exact law of one round started at ``position``, for every start context.

        Parameters
        ----------
        draft, target : MarkovLM
            p and q (compatible).
        position : int
            n, 0 ≤ n < T.
        max_nodes : int
            Limit on the enumeration of one round; beyond it ``ValueError`` (simulate).

        Returns
        -------
        RoundLaw
        """

    def round_key(self, position: int, horizon: int):
        """A key such that, for time-homogeneous models, rounds started at positions with
        equal keys have equal laws (the DP then computes one law per key).

        The default, ``position``, shares nothing.
        """
        return position
