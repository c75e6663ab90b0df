r"""The generic round-level dynamic program: exact laws of any round-level algorithm.

A round-level algorithm (:class:`theory.algorithms.RoundLevelAlgorithm`, e.g.
:class:`theory.BlockSpeculative`) gives the law of one round started at position n,
:meth:`~theory.algorithms.RoundLevelAlgorithm.round_law`: the joint law
:math:`L_n(k, s' \mid s)` of the number k of tokens the round emits, the context s' it ends in
and whether it ends in a rejection (:class:`theory.algorithms.RoundLaw`).  With
:math:`m_n(s)` the probability that a round starts at position n in context s,

.. math::  m_{n+k}(s') \mathrel{+}= \sum_s m_n(s)\, L_n(k, s' \mid s),

from which E[target calls] = Σₙ Σ_s m_n(s), the rejection profile (a rejected round from n
emitting k tokens rejects at position n + k − 1) and, with a count axis, the full pmfs.
:class:`RoundProblem` runs this program; :mod:`theory.exact` dispatches to it for every
algorithm that is not position-synchronous.  For time-homogeneous models it computes one
round law per :meth:`~theory.algorithms.RoundLevelAlgorithm.round_key`.
"""

from __future__ import annotations

import numpy as np

from theory._arrays import zeros_like_kind
from theory.algorithms import (
    DEFAULT_MAX_NODES,
    RoundLaw,
    RoundLevelAlgorithm,
    _check_max_nodes,
)
from theory.models import MarkovLM, check_compatible
from theory.threads import with_bounded_blas

__all__ = ["RoundProblem"]


class RoundProblem:
    """A validated (draft, target, round-level algorithm) triple: round laws and the round DP.

    It offers the methods :mod:`theory.exact` dispatches to for algorithms that are not
    position-synchronous: :meth:`mean_pass`, :meth:`count_pass`, :meth:`first_round_pmf`.
    """

    def __init__(self, draft: MarkovLM, target: MarkovLM, algorithm: RoundLevelAlgorithm,
                 max_nodes: int = DEFAULT_MAX_NODES):
        check_compatible(draft, target)
        algorithm.check_models(draft, target)
        algorithm.check_cost(draft, target, "dp")
        self.draft, self.target, self.algorithm = draft, target, algorithm
        self.horizon = target.horizon
        self.n_contexts = target.n_contexts
        self.exact = target.is_exact
        self.max_nodes = _check_max_nodes(max_nodes)
        self._homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
        self._cache: dict = {}

    def law(self, position: int) -> RoundLaw:
        # time-homogeneous models: the law depends on n only through the algorithm's key
        key = self.algorithm.round_key(position, self.horizon) if self._homogeneous \
            else position
        if key not in self._cache:
            self._cache[key] = self.algorithm.round_law(self.draft, self.target, position,
                                                        max_nodes=self.max_nodes)
        return self._cache[key]

    def zeros(self, *shape) -> np.ndarray:
        return zeros_like_kind(shape, self.exact)

    @with_bounded_blas
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

    @with_bounded_blas
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

    def round_accepted(self, position: int, start: np.ndarray):
        """E[accepted draft tokens of the round from ``position``], start contexts ~ ``start``:
        E[k] minus P(the round ends with a residual or a target token)."""
        law = self.law(position)
        if law.from_target is None:
            raise TypeError(f"the round law of {self.algorithm!r} does not say which rounds end "
                            "with a token from the target (RoundLaw.from_target)")
        counts = np.arange(law.accepted.shape[0])
        emitted = np.tensordot(counts, law.total.sum(axis=2), axes=1)  # E[k | s]
        final = (law.rejected + law.from_target).sum(axis=(0, 2))
        return (start * (emitted - final)).sum()

    @with_bounded_blas
    def first_round_pmf(self) -> np.ndarray:
        """P(the first round emits k tokens), k = 0 … T."""
        pmf = self.zeros(self.horizon + 1)
        per_k = self.target.start_distribution @ self.law(0).total.sum(axis=2).T
        for k in range(1, min(per_k.size, self.horizon + 1)):
            pmf[k] = per_k[k]
        return pmf
