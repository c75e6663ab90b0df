r"""Verdicts of the conformance harness: passed, failed, or inconclusive — and the rounds needed.

A run that finds no deviation has only *passed* if it could have found one: a run of 300 rounds
finds nothing wrong with almost any verifier.  The harness therefore states, before looking at
the data, what each suite pair can detect at the run's size, and calls the run
**inconclusive** when some pair cannot detect a per-position TV of ``min_tv`` with power 0.9.

**The design power of a pair.**  Pair k runs Gₖ generations.  A lossless verifier visits the
cell (position n, context s) Nₙₛ = Gₖ μₙ(s) times in expectation (μₙ the target's context
marginals, :meth:`theory.models.MarkovLM.context_marginals`).  At those visits the harness's
bins are formed as the test forms them (:func:`sim.stats.merge_small_bins` on Nₙₛ qₙ(·|s): a
single token wherever it expects ≥ 5 counts); a cell with ≥ 2 bins is tested, contributes its
bins − 1 degrees of freedom d and its Nₙₛ tokens to N.  A deviation of TV δ at every tested
position adds ≥ 4δ² per token to the noncentrality (χ² ≥ 4 TV², Cauchy–Schwarz), so the pair
detects

    δₖ = √(λ*(d, α/K, 0.9) / (4 N))

with λ* from :func:`sim.stats.detectable_noncentrality`; δₖ = ∞ when no cell has two bins
(d = 0: *too few counts*).  At ``level="sequence"`` the one "cell" is the pair's law of whole
(prompt, x₁ … x_T), visited Gₖ times, and δₖ is a TV of whole sequences.

δₖ depends only on the models, γ, ``n_rounds``, α and K — never on the verifier's output or the
seed — so the line between "passed" and "inconclusive" is deterministic given the sizes: a CI
job does not flip between exit 0 and 3 from one seed to the next.  (The report's
``min_detectable_tv`` is the same bound computed from the observed counts; it differs from the
design value by sampling noise only.)

**Verdict.**  ``"failed"`` when some pair's test rejects at α/K or the support check fires
(whatever the power); otherwise ``"inconclusive"`` when some δₖ > ``min_tv``; otherwise
``"passed"``.  :func:`rounds_needed` is the least ``n_rounds`` (to 0.1%) at which every
δₖ ≤ ``min_tv``: running :func:`sim.conformance.check_verifier` with that ``n_rounds`` (same
models, γ, α, ``min_tv``) cannot be inconclusive.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from sim.stats import detectable_noncentrality, merge_small_bins
from theory import Speculative
from theory.exact import expected_target_calls

#: Default of ``min_tv``: the per-position TV every pair must detect with power 0.9 for a run to
#: pass.
DEFAULT_MIN_TV = 0.05
#: The largest ``n_rounds`` :func:`rounds_needed` searches; beyond it the pairs cannot reach
#: ``min_tv`` at any size the harness can run.
MAX_NEEDED_ROUNDS = 10 ** 12


def rounds_per_generation(pair, window) -> float:
    """E[rounds of one generation] under standard verification with ``window`` drafts (how the
    harness sizes runs); ``window`` may instead be an algorithm (a tree: recursive rejection
    sampling on it), whose expected rounds are used."""
    if isinstance(window, numbers.Integral):
        return float(expected_target_calls(pair.draft, pair.target, Speculative(window=window)))
    try:
        return float(expected_target_calls(pair.draft, pair.target,
                                           dataclasses.replace(window, verifier="rrs")))
    except ValueError:  # too large to compute exactly (swor trees at V = 10⁴): size the run
        return float(expected_target_calls(   # by a path of the tree's depth instead
            pair.draft, pair.target, Speculative(window=window.depth)))


def generations_for(share: int, per_generation: float) -> int:
    """Whole generations that give ≈ ``share`` rounds."""
    return max(1, math.ceil(share / per_generation))


class _Design:
    """The expected visits of one pair's cells, ready to be scaled by a number of generations.

    ``cells`` holds, per (position, context) the target reaches, (visit share μ, law row): at
    level "token" the target's rows; at level "sequence" one row, the law of whole sequences.
    """

    def __init__(self, pair, level: str, sequence_law=None):
        if level == "sequence":
            self.cells = [(1.0, np.asarray(sequence_law, dtype=np.float64))]
            return
        q = np.asarray(pair.target.probs, dtype=np.float64)
        shares = np.asarray(pair.target.context_marginals(), dtype=np.float64)
        self.cells = [(float(shares[n, s]), q[n, s]) for n, s in zip(*np.nonzero(shares > 0),
                                                                     strict=True)]

    def dof_and_tokens(self, generations: int) -> tuple[int, float]:
        dof, tokens = 0, 0.0
        for share, row in self.cells:
            visits = generations * share
            bins = int(merge_small_bins(visits * row).max()) + 1
            if bins >= 2:
                dof += bins - 1
                tokens += visits
        return dof, tokens

    def detectable_tv(self, generations: int, pair_level: float, power: float) -> float:
        dof, tokens = self.dof_and_tokens(generations)
        if dof == 0 or tokens <= 0:
            return math.inf
        return math.sqrt(detectable_noncentrality(dof, pair_level, power) / (4 * tokens))


def least_rounds(enough, start: int, limit: int = MAX_NEEDED_ROUNDS) -> int | None:
    """The least n (to 0.1%) with ``enough(n)``, for a monotone ``enough``: doubling from
    ``start``, then bisection; None when even ``limit`` is not enough."""
    low, high = 0, max(1, start)
    while not enough(high):
        if high >= limit:
            return None
        low, high = high, min(high * 2, limit)
    while high - low > max(1, high // 1000):
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def rounds_needed(designs, per_generation, min_tv: float, pair_level: float,
                  power: float, n_pairs: int) -> int | None:
    """The least ``n_rounds`` at which every given pair's design δₖ ≤ ``min_tv`` (module doc),
    the rounds split evenly over ``n_pairs`` pairs (all the run's pairs, also those not held
    to ``min_tv``)."""

    def enough(n_rounds: int) -> bool:
        share = -(-n_rounds // n_pairs)
        return all(design.detectable_tv(generations_for(share, rounds), pair_level, power)
                   <= min_tv for design, rounds in zip(designs, per_generation, strict=True))

    return least_rounds(enough, n_pairs)


def verdict_of(failed: bool, design_tvs, min_tv: float) -> str:
    """``"failed"``, ``"inconclusive"`` or ``"passed"`` (module doc)."""
    if failed:
        return "failed"
    return "inconclusive" if any(not tv <= min_tv for tv in design_tvs) else "passed"
