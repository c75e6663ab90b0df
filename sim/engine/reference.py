r"""Reference engine: each algorithm written once, as the paper's pseudo-code, with two drivers.

An algorithm routine reads the models and asks a *chooser* for every random choice:

* ``choose.categorical(probs)`` — an index drawn from the (normalized) weights ``probs``;
* ``choose.bernoulli(prob)`` — True with probability ``prob``.

Two drivers run the same routine:

* :func:`reference_simulate` — Monte Carlo, with a numpy Generator (:class:`SamplingChooser`);
* :func:`enumerate_outcomes` — the exact joint law of (emitted sequence, N_rej, target calls),
  obtained by re-running the routine along every sequence of choices (depth-first, replaying
  a prefix of choices and branching at the first new one) and multiplying the probabilities of
  the choices taken.  Zero-probability options are never followed; with ``Fraction`` models
  the probabilities are exact.  Draft tokens are drawn lazily — only when verification reads
  them — so small cases (V ≤ 3, T ≤ 5) have few branches.

The routines are the readable definition of each algorithm.  Each lives in its family's engine
module beside the compiled kernel it defines (:mod:`sim.engine.token`, :mod:`sim.engine.batch`,
:mod:`sim.engine.multidraft`, :mod:`sim.engine.block`) and is registered for its algorithm class
by :func:`sim.engine.core.register_family`; :func:`run_algorithm` dispatches on the class (its
nearest registered base).  The vectorized engines (:mod:`sim.engine`, :mod:`gpu_kernels`) are
checked against the routines through exact laws.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sim.engine.result import SimResult, check_problem
from theory import MarkovLM
from theory._arrays import zeros_like_kind

__all__ = [
    "ExactLaw",
    "Outcome",
    "SamplingChooser",
    "enumerate_outcomes",
    "reference_simulate",
    "run_algorithm",
]


class Outcome(NamedTuple):
    """What one run of an algorithm produced.

    ``drafted`` counts the draft tokens of every round, also those after a rejection
    (:attr:`sim.SimResult.drafted`).
    """

    tokens: tuple[int, ...]
    rejections: int
    target_calls: int
    drafted: int = 0


class _Trace:
    """Emitted tokens, the running context and the counters of one run."""

    def __init__(self, target: MarkovLM, choose):
        self.target = target
        if isinstance(target.start, int):
            self.context = target.start
        else:  # the prompt is random: draw the start context first
            self.context = choose.categorical(target.start_distribution)
        self.tokens: list[int] = []
        self.rejections = 0
        self.target_calls = 0
        self.drafted = 0

    @property
    def position(self) -> int:
        return len(self.tokens)

    @property
    def done(self) -> bool:
        return len(self.tokens) == self.target.horizon

    def emit(self, token: int) -> None:
        self.tokens.append(int(token))
        self.context = int(self.target.next_context[self.context, token])

    def outcome(self) -> Outcome:
        return Outcome(tuple(self.tokens), self.rejections, self.target_calls, self.drafted)


# ---------------------------------------------------------------------- the algorithms
@functools.singledispatch
def run_algorithm(algorithm, draft: MarkovLM, target: MarkovLM, choose) -> Outcome:
    """Run ``algorithm`` once, asking ``choose`` for every random choice (the routine
    registered for its class, :func:`sim.engine.core.register_family`)."""
    raise TypeError(f"the reference engine has no routine for {algorithm!r}")


# ---------------------------------------------------------------------- Monte Carlo driver
class SamplingChooser:
    """Random choices from a numpy Generator, one uniform per choice (inverse CDF)."""

    def __init__(self, rng):
        self.rng = np.random.default_rng(rng)

    def categorical(self, probs) -> int:
        cdf = np.cumsum(np.asarray(probs, dtype=np.float64))
        index = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        return min(index, len(cdf) - 1)

    def bernoulli(self, prob) -> bool:
        return bool(self.rng.random() < float(prob))


def reference_simulate(draft: MarkovLM, target: MarkovLM, algorithm, *, n_trials: int,
                       rng=None, record_tokens: bool = False) -> SimResult:
    """Monte Carlo with the reference routines (slow, readable; for cross-checks).

    Same signature and result as :func:`sim.simulate`, but a different stream of random
    numbers, so results agree in law, not trial by trial.

    Examples
    --------
    >>> from sim.models import bernoulli_pair
    >>> from sim.reference import reference_simulate
    >>> from theory import Speculative
    >>> draft, target = bernoulli_pair(0.5, 0.5, horizon=3)
    >>> reference_simulate(draft, target, Speculative(), n_trials=4, rng=0).rejections.tolist()
    [0, 0, 0, 0]
    """
    n_trials = check_problem(draft, target, algorithm, n_trials)
    chooser = SamplingChooser(rng)
    outcomes = [run_algorithm(algorithm, draft, target, chooser) for _ in range(n_trials)]
    return SimResult(
        rejections=np.array([o.rejections for o in outcomes], dtype=np.int64),
        target_calls=np.array([o.target_calls for o in outcomes], dtype=np.int64),
        tokens=(np.array([o.tokens for o in outcomes], dtype=np.int64).reshape(n_trials, -1)
                if record_tokens else None),
        drafted=np.array([o.drafted for o in outcomes], dtype=np.int64),
    )


# ---------------------------------------------------------------------- exact driver
class _ReplayChooser:
    """Replays a prefix of option indices, then takes option 0 at every new choice point."""

    def __init__(self, prefix: list[int], one):
        self.choices = list(prefix)
        self.arity: list[int] = []
        self.probability = one

    def _choose(self, options):
        depth = len(self.arity)
        if depth == len(self.choices):
            self.choices.append(0)
        self.arity.append(len(options))
        value, weight = options[self.choices[depth]]
        self.probability = self.probability * weight
        return value

    def categorical(self, probs):
        total = sum(probs)
        return self._choose([(k, w / total) for k, w in enumerate(probs) if w != 0])

    def bernoulli(self, prob):
        return self._choose([(value, w) for value, w in ((True, prob), (False, 1 - prob))
                             if w != 0])


@dataclass(frozen=True)
class ExactLaw:
    """The exact joint law of (emitted sequence, N_rej, target calls) of one algorithm.

    ``outcomes`` maps each :class:`Outcome` to its probability (Fraction for exact models).
    """

    outcomes: dict
    horizon: int

    def _marginal(self, field: str) -> np.ndarray:
        exact = any(not isinstance(p, float) for p in self.outcomes.values())
        pmf = zeros_like_kind(self.horizon + 1, exact)
        for outcome, probability in self.outcomes.items():
            pmf[getattr(outcome, field)] = pmf[getattr(outcome, field)] + probability
        return pmf

    def rejection_pmf(self) -> np.ndarray:
        """P(N_rej = k), k = 0..T."""
        return self._marginal("rejections")

    def target_calls_pmf(self) -> np.ndarray:
        """P(target calls = k), k = 0..T."""
        return self._marginal("target_calls")

    def sequence_law(self) -> dict:
        """P(emitted sequence = x₁:T) for every reachable sequence."""
        law: dict = defaultdict(int)
        for outcome, probability in self.outcomes.items():
            law[outcome.tokens] = law[outcome.tokens] + probability
        return dict(law)

    def total(self):
        """Total probability (1, exactly for exact models)."""
        return sum(self.outcomes.values())


def enumerate_outcomes(draft: MarkovLM, target: MarkovLM, algorithm, *,
                       max_runs: int = 200_000) -> ExactLaw:
    """The exact law of the reference routine, by walking every branch of its choices.

    Parameters
    ----------
    max_runs : int
        Guard against enumerating a case that is too large (each run costs O(T)).

    Examples
    --------
    >>> from fractions import Fraction as F
    >>> from sim.models import bernoulli_pair
    >>> from sim.reference import enumerate_outcomes
    >>> from theory import Speculative
    >>> draft, target = bernoulli_pair(F(1, 2), F(1, 4), horizon=2)
    >>> law = enumerate_outcomes(draft, target, Speculative())
    >>> [str(p) for p in law.rejection_pmf()]  # Binomial(2, 1/4)
    ['9/16', '3/8', '1/16']
    """
    check_problem(draft, target, algorithm, 1)
    one = 1 if target.is_exact else 1.0
    outcomes: dict = defaultdict(int)
    prefix: list[int] = []
    for _ in range(max_runs):
        chooser = _ReplayChooser(prefix, one)
        outcome = run_algorithm(algorithm, draft, target, chooser)
        outcomes[outcome] = outcomes[outcome] + chooser.probability
        choices, arity = chooser.choices, chooser.arity
        depth = len(arity) - 1
        while depth >= 0 and choices[depth] + 1 == arity[depth]:
            depth -= 1
        if depth < 0:
            return ExactLaw(dict(outcomes), target.horizon)
        prefix = [*choices[:depth], choices[depth] + 1]
    raise ValueError(
        f"enumeration needs more than max_runs = {max_runs} runs; use a smaller case"
    )
