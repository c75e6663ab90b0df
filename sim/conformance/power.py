r"""The power of the conformance harness: how many rounds catch a known bug.

:func:`detection_rounds` computes, from a failure mode's exact law
(:func:`theory.conformance.deviation`), the least ``n_rounds`` at which
:func:`sim.conformance.check_verifier` catches it with probability ≥ 0.9: at the expected visits
of every cell the harness's bins are formed as it forms them, the pair's Pearson statistic is
then approximately noncentral χ², and tokens the target excludes are caught by the support check
(Poisson approximation).  :func:`floor_detection_rounds` does the same for probability floors ε
added to the resampling laws (support check only).  :func:`failure_table` and
:func:`failure_table_markdown` give the README's table of failure modes.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from sim.conformance.harness import _checked_alpha, _positive_int, check_verifier
from sim.conformance.report import POWER
from sim.conformance.suites import _pairs, conformance_suite
from sim.conformance.verifiers import _mode, failure_verifier
from sim.stats import DEFAULT_ALPHA, chi2_power, merge_small_bins
from theory import Speculative
from theory.conformance import FAILURE_MODES, TooManyDraftPaths, deviation
from theory.exact import expected_target_calls
from theory.models import MarkovLM


def _merged_noncentrality(exact, target: MarkovLM, generations: int) -> tuple[float, int]:
    """(noncentrality, degrees of freedom) of a pair's statistic at the expected visits."""
    q = np.asarray(target.probs, dtype=np.float64)
    visits = generations * exact.context_marginals
    noncentrality, dof = 0.0, 0
    for n, s in zip(*np.nonzero(visits), strict=True):
        labels = merge_small_bins(visits[n, s] * q[n, s])
        bins = int(labels.max()) + 1
        if bins < 2:
            continue
        kept = labels >= 0
        merged_q = np.bincount(labels[kept], weights=q[n, s][kept], minlength=bins)
        merged_r = np.bincount(labels[kept], weights=exact.conditional[n, s][kept],
                               minlength=bins)
        noncentrality += visits[n, s] * float(((merged_r - merged_q) ** 2 / merged_q).sum())
        dof += bins - 1
    return noncentrality, dof


def detection_rounds(failure, *, window: int | None = None, models=None,
                     alpha: float = DEFAULT_ALPHA, power: float = POWER) -> int:
    """The least ``n_rounds`` at which :func:`check_verifier` catches a failure mode with
    probability ≥ ``power``, from its exact law (:func:`theory.conformance.deviation`).

    Each pair k runs Gₖ generations (as :func:`check_verifier` allocates them).  At the
    expected visits Nₙₛ = Gₖ μₙ(s) of every cell the harness's bins are formed as it forms them
    (:func:`sim.stats.merge_small_bins` on Nₙₛ qₙ(·|s)); the pair's Pearson statistic is then
    approximately noncentral χ² with the merged bins' degrees of freedom and noncentrality
    Σ Nₙₛ χ²(merged law ‖ merged qₙ(·|s)), and the run catches the bug unless every pair misses:
    P = 1 − Πₖ (1 − powerₖ).  A bug that emits tokens the target excludes is also caught when
    one is emitted (Poisson approximation: 1 − exp(−Gₖ mₖ), mₖ the expected number per
    generation).  A pair whose draft paths are too many to enumerate (``large_vocab``) is
    counted as never detecting — conservative.  The README lists, beside each stated size, the
    detection rate observed at it.

    Parameters
    ----------
    failure : str or FailureMode
        A key of :data:`theory.conformance.FAILURE_MODES`, or a mode.
    window : int, optional
        γ (default: the mode's own, else 3).
    models : optional
        The pairs, as for :func:`check_verifier` (default: the default suite).
    alpha : float in (0, 1)
        The report's false-positive level.
    power : float in (0, 1)
        Required probability of catching the bug.

    Examples
    --------
    >>> from sim.conformance import detection_rounds
    >>> 1000 < detection_rounds("resample_from_target", window=3) < 20000
    True
    """
    mode = _mode(failure)
    window = _positive_int(window if window is not None else (mode.window or 3), "window")
    alpha = _checked_alpha(alpha)
    pairs = _pairs(models)
    level = alpha / len(pairs)
    parts = []
    for pair in pairs:
        try:
            exact = deviation(pair.draft, pair.target, window, mode.rule,
                              drafter=mode.drafter, max_sequences=0)
        except TooManyDraftPaths:  # too many to enumerate: counted as never detecting
            exact = None
        rounds = float(expected_target_calls(pair.draft, pair.target,
                                             Speculative(window=window)))
        parts.append((exact, rounds))

    def caught(n_rounds: int) -> float:
        share = -(-n_rounds // len(pairs))
        miss = 1.0
        for pair, (exact, rounds) in zip(pairs, parts, strict=True):
            if exact is None:
                continue
            generations = max(1, math.ceil(share / rounds))
            if exact.zero_target_tokens > 0:
                miss *= math.exp(-generations * exact.zero_target_tokens)
            noncentrality, dof = _merged_noncentrality(exact, pair.target, generations)
            miss *= 1 - chi2_power(dof, noncentrality, level)
        return 1 - miss

    if caught(10 ** 12) < power:
        skipped = [pair.name for pair, (exact, _) in zip(pairs, parts, strict=True)
                   if exact is None]
        raise ValueError(f"{mode.name} is not detectable on these pairs: its output law equals "
                         f"the target's on every pair that could be enumerated"
                         + (f" (too large to enumerate: {skipped})" if skipped else ""))
    return _least_rounds(lambda n_rounds: caught(n_rounds) >= power, len(pairs))


def _least_rounds(enough, start: int) -> int:
    """The least n (to 0.1%) with ``enough(n)``, for a monotone ``enough``: doubling from
    ``start``, then bisection."""
    low, high = 0, start
    while not enough(high):
        low, high = high, high * 2
    while high - low > max(1, high // 1000):
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def floor_detection_rounds(floor: float, *, window: int = 3, models=None,
                           power: float = POWER) -> int:
    r"""Rounds after which :func:`check_verifier` catches, with probability ≥ ``power``, a
    verifier that adds ``floor`` to every entry of its resampling and bonus laws
    (renormalized) — the probability floors and epsilons of real implementations.

    Every round but at most the last of a generation ends with a draw from such a law; a law
    with no mass where q = 0 puts Z·ε / (1 + V·ε) there once floored (Z the zeros of the target
    row), and one such token fails the support check.  With Gₖ generations of pair k, Rₖ its
    expected rounds under standard verification and Zₖ its fewest zeros in a target row, the
    number of such tokens is ≈ Poisson(Σₖ Gₖ (Rₖ − 1) Zₖ ε / (1 + Vₖ ε)) — a lower bound on
    its mean, so the size is conservative.  Only the support check is counted.

    Parameters
    ----------
    floor : float > 0
        ε added to every entry of the laws.
    window : int
        γ.
    models : optional
        The pairs, as for :func:`check_verifier`.
    power : float in (0, 1)
        Required probability of catching the floor.

    Examples
    --------
    >>> from sim.conformance import DEFAULT_ROUNDS, floor_detection_rounds
    >>> floor_detection_rounds(1e-7) < DEFAULT_ROUNDS < floor_detection_rounds(1e-9)
    True
    """
    if isinstance(floor, bool) or not isinstance(floor, numbers.Real) or not floor > 0:
        raise ValueError(f"floor must be a positive number; got {floor!r}")
    window = _positive_int(window, "window")
    pairs = _pairs(models)
    rates = []
    for pair in pairs:
        q = np.asarray(pair.target.probs, dtype=np.float64)
        zeros = int((q == 0).sum(axis=-1).min())
        vocab = pair.target.vocab_size
        rounds = float(expected_target_calls(pair.draft, pair.target,
                                             Speculative(window=window)))
        rates.append((rounds, max(rounds - 1, 0.0) * zeros * floor / (1 + vocab * floor)))
    if not any(rate for _, rate in rates):
        raise ValueError("no pair has target zeros: a floor cannot be caught by the support "
                         "check on these models")
    needed = -math.log(1 - power)

    def mean(n_rounds):
        share = -(-n_rounds // len(pairs))
        return sum(max(1, math.ceil(share / rounds)) * rate for rounds, rate in rates)

    return _least_rounds(lambda n_rounds: mean(n_rounds) >= needed, len(pairs))


def failure_table(*, window: int = 3, seeds: int = 0) -> list[dict]:
    """The README's table of failure modes: for each of
    :data:`theory.conformance.FAILURE_MODES`, its exact largest per-position TV over the four
    small suite pairs, its exact sequence TV on ``second_order`` (prompt averaged), the rounds
    :func:`check_verifier` needs to catch it with power 0.9 on the default suite and on the
    four small pairs, and — with ``seeds`` > 0 — how many of ``seeds`` runs at the small-pair
    size caught it (rounding modes, which need ≥ 10⁷ rounds, are not run).

    Parameters
    ----------
    window : int
        γ of the modes that do not fix their own.
    seeds : int
        Runs per mode for the observed detection rate (0: none).
    """
    small = conformance_suite()[:4]
    rows = []
    for name, mode in FAILURE_MODES.items():
        gamma = mode.window or window
        exact = [deviation(pair.draft, pair.target, gamma, mode.rule, drafter=mode.drafter,
                           max_sequences=10 ** 5 if pair.name == "second_order" else 0)
                 for pair in small]
        row = {"mode": name, "description": mode.description, "window": gamma,
               "max_tv": max(e.max_tv for e in exact),
               "sequence_tv": next(e.sequence_tv for e in exact if e.sequence_tv is not None),
               "rounds": detection_rounds(mode, window=gamma),
               "rounds_small": detection_rounds(mode, window=gamma, models=small)}
        if seeds and row["rounds_small"] <= 10 ** 6:
            row["caught"] = sum(
                check_verifier(failure_verifier(mode), window=gamma, models=small,
                               n_rounds=row["rounds_small"], rng=seed,
                               draft_processor=mode.drafter).verdict == "failed"
                for seed in range(seeds))
            row["seeds"] = seeds
        rows.append(row)
    return rows


def failure_table_markdown(rows: list[dict]) -> str:
    """:func:`failure_table`'s rows as the README's Markdown table.

    Parameters
    ----------
    rows : list of dict
        From :func:`failure_table`.
    """
    lines = ["| failure mode | max per-position TV | sequence TV (second_order) | rounds for "
             "power 0.9 | on the 4 small pairs | caught there |", "|---|---|---|---|---|---|"]
    for row in rows:
        caught = f"{row['caught']}/{row['seeds']}" if "caught" in row else "not run"
        lines.append(f"| `{row['mode']}`: {row['description']} | {row['max_tv']:.3g} | "
                     f"{row['sequence_tv']:.3g} | {row['rounds']:,} | {row['rounds_small']:,} | "
                     f"{caught} |")
    return "\n".join(lines)
