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

The routines are the readable definition of each algorithm; the vectorized engines
(:mod:`sim.engine`, :mod:`gpu_kernels`) are checked against them through exact laws.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sim.result import SimResult, check_problem
from sim.root_reference import ROOT_PROCEDURES, rooted_rounds
from theory import (
    Autoregressive,
    BatchSpeculative,
    BlockSpeculative,
    MarkovLM,
    Speculative,
    WindowPolicy,
)
from theory._arrays import zeros_like_kind
from theory.onestep import _acceptance, positive_part
from theory.verification import checked_verification

__all__ = [
    "ExactLaw",
    "Outcome",
    "SamplingChooser",
    "enumerate_outcomes",
    "reference_simulate",
    "run_algorithm",
]


class Outcome(NamedTuple):
    """What one run of an algorithm produced."""

    tokens: tuple[int, ...]
    rejections: int
    target_calls: int


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
        return Outcome(tuple(self.tokens), self.rejections, self.target_calls)


# ---------------------------------------------------------------------- the algorithms
@functools.singledispatch
def run_algorithm(algorithm, draft: MarkovLM, target: MarkovLM, choose) -> Outcome:
    """Run ``algorithm`` once, asking ``choose`` for every random choice."""
    raise TypeError(f"the reference engine has no routine for {algorithm!r}")


@run_algorithm.register
def _autoregressive(algorithm: Autoregressive, draft, target, choose) -> Outcome:
    trace = _Trace(target, choose)
    while not trace.done:
        trace.target_calls += 1
        trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
    return trace.outcome()


def _token_wise_round(algorithm, draft, target, trace, choose, window, bonus) -> None:
    """One round of token-wise verification: draft and test up to ``window`` tokens (None: to
    the horizon), (b, 𝒫) from ``algorithm.verification``; when every draft was accepted and
    ``bonus`` holds, one free token from ``algorithm.bonus_law(q)`` (q, or q̂ when truncated)."""
    trace.target_calls += 1
    drafted = 0
    while not trace.done:
        q = target.probs[trace.position, trace.context]
        if window is not None and drafted == window:
            if bonus:  # every draft accepted (or none asked for): one free token
                trace.emit(choose.categorical(algorithm.bonus_law(q)))
            return
        p = draft.probs[trace.position, trace.context]
        accept, rejection_law = checked_verification(
            algorithm, p, q, position=trace.position, context=trace.context)
        draft_token = choose.categorical(p)  # drafted lazily, when verification reads it
        drafted += 1
        if choose.bernoulli(accept[draft_token]):
            trace.emit(draft_token)
        else:
            trace.emit(choose.categorical(rejection_law))
            trace.rejections += 1
            return


@run_algorithm.register
def _speculative(algorithm: Speculative, draft, target, choose) -> Outcome:
    """Algorithm 1 (and its finite-window variants); ``algorithm.verification`` gives (b, 𝒫)."""
    trace = _Trace(target, choose)
    while not trace.done:  # one round per iteration: one target call
        _token_wise_round(algorithm, draft, target, trace, choose, algorithm.window,
                          algorithm.bonus)
    return trace.outcome()


@run_algorithm.register
def _window_policy(algorithm: WindowPolicy, draft, target, choose) -> Outcome:
    """Rounds of ``Speculative(window=table[n, s], bonus=True)``, the window read at each
    round's start; a window of 0 is one plain target step (a token from q)."""
    trace = _Trace(target, choose)
    while not trace.done:  # one round per iteration: one target call
        window = int(algorithm.table[trace.position, trace.context])
        _token_wise_round(algorithm, draft, target, trace, choose, window, True)
    return trace.outcome()


def _try_candidates(algorithm, n_candidates: int, p, q, choose):
    """Try candidate drafts in order against the recursive residuals q¹ = q, q^{m+1}.

    Returns ``(token, index)`` of the first accepted candidate, or ``(token, None)`` with the
    token drawn from the last residual when every candidate failed.
    """
    residual = q
    for index in range(n_candidates):
        token = choose.categorical(p)  # this candidate's token, drawn when it is read
        if choose.bernoulli(_acceptance(p, residual)[token]):
            return token, index
        residual = algorithm.next_residual(p, residual)  # [residual − p]₊, normalized
    return choose.categorical(residual), None


@run_algorithm.register
def _batch_speculative(algorithm: BatchSpeculative, draft, target, choose) -> Outcome:
    """Algorithm 4 ("paper") and the trie verifier, with M i.i.d. drafts per round; the root
    verifiers of :mod:`sim.root_reference` ("swor", "spectr", …) by their literal routines."""
    trace = _Trace(target, choose)
    if algorithm.verifier in ROOT_PROCEDURES:
        root = functools.partial(ROOT_PROCEDURES[algorithm.verifier],
                                 n_drafts=algorithm.n_drafts)
        return rooted_rounds(draft, target, choose, lambda p, q, c: root(p, q, choose=c), trace)
    while not trace.done:  # one round per iteration: one target call, M fresh drafts
        trace.target_calls += 1
        live = algorithm.n_drafts  # drafts whose prefix equals the accepted prefix
        while not trace.done:
            p = draft.probs[trace.position, trace.context]
            q = target.probs[trace.position, trace.context]
            token, winner = _try_candidates(algorithm, live, p, q, choose)
            trace.emit(token)
            if winner is None:  # every candidate failed: rejection, new round
                trace.rejections += 1
                break
            if algorithm.verifier == "paper":
                live = 1  # Algorithm 4 follows the accepted draft alone
            else:  # trie: the untried candidates whose token here is also `token` stay
                untried = live - winner - 1
                live = 1 + sum(choose.bernoulli(p[token]) for _ in range(untried))
    return trace.outcome()


def _block_selection(rule: str, h: list, choose) -> int:
    """τ from the weights h[1 … γ'] (h[0] unused) under a selection rule.

    ``"block"`` is block verification: τ = max{i : η_i ≤ h_i} with independent η's, read
    downward (η_i ≤ h_i is a Bernoulli(h_i) choice; the first success from the top is the
    maximum).  The other rules are known-wrong ones kept as negative controls
    (``tests/mutants.py``): one η shared by every i, and an upward scan that stops at the first
    failure.
    """
    span = len(h) - 1
    if rule == "block":
        return next((i for i in range(span, 0, -1) if choose.bernoulli(h[i])), 0)
    if rule == "first_failure":
        return next((i - 1 for i in range(1, span + 1) if not choose.bernoulli(h[i])), span)
    if rule == "shared_uniform":  # one η: τ = max{i : η < h_i}, η's interval chosen
        edges = sorted({0, 1, *h[1:]})
        intervals = [(low, high) for low, high in itertools.pairwise(edges) if high > low]
        _, high = intervals[choose.categorical([b - a for a, b in intervals])]
        return max((i for i in range(1, span + 1) if h[i] >= high), default=0)
    raise TypeError(f"the reference engine has no selection rule {rule!r}")


@run_algorithm.register
def _block_speculative(algorithm: BlockSpeculative, draft, target, choose) -> Outcome:
    """Block verification (Sun et al. 2025, Algorithm 2): draft γ' tokens, weigh, select τ."""
    trace = _Trace(target, choose)
    while not trace.done:  # one round per iteration: one target call
        trace.target_calls += 1
        start = trace.position
        span = min(algorithm.window, target.horizon - start)
        contexts, drafts, pi = [trace.context], [], [1]
        for i in range(span):  # draft X_{i+1} ~ p(· | X≤i), update π
            p = draft.probs[start + i, contexts[i]]
            q = target.probs[start + i, contexts[i]]
            token = choose.categorical(p)
            drafts.append(token)
            pi.append(min(1, pi[i] * q[token] / p[token]))
            contexts.append(int(target.next_context[contexts[i], token]))

        def gap(i, start=start, contexts=contexts, pi=pi):  # [π_i q(·|X≤i) − p(·|X≤i)]₊
            return positive_part(pi[i] * target.probs[start + i, contexts[i]]
                                 - draft.probs[start + i, contexts[i]])

        h = [1]
        for i in range(1, span):
            r = sum(gap(i))
            denominator = r + 1 - pi[i]
            h.append(r / denominator if denominator != 0 else 1)
        h.append(pi[span])
        accepted = _block_selection(algorithm.selection, h, choose)
        for token in drafts[:accepted]:
            trace.emit(token)
        if accepted < span:  # residual draw: a rejection
            law = gap(accepted)  # r_τ > 0 whenever reached exactly; engines' float guard: q
            if sum(law) == 0:
                law = target.probs[trace.position, trace.context]
            trace.emit(choose.categorical(law))
            trace.rejections += 1
        elif algorithm.bonus and not trace.done:
            trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
    return trace.outcome()


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
