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
from collections import OrderedDict

import numpy as np

from sim.conformance.harness import (
    DEFAULT_ROUNDS,
    _checked_alpha,
    _positive_int,
    check_verifier,
)
from sim.conformance.report import POWER
from sim.conformance.suites import _pairs, conformance_suite, precision_suite
from sim.conformance.verdicts import MAX_NEEDED_ROUNDS, least_rounds
from sim.conformance.verifiers import _mode, failure_verifier
from sim.stats import DEFAULT_ALPHA, chi2_power, merge_small_bins
from theory import Speculative
from theory.conformance import (
    FAILURE_MODES,
    PRECISION_FAILURES,
    TooManyDraftPaths,
    deviation,
)
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


def _first_position(model: MarkovLM) -> MarkovLM:
    """The model cut to its first position (same contexts, start law and vocabulary)."""
    return MarkovLM(np.asarray(model.probs)[:1], model.next_context, model.start)


def _dof_bound(target: MarkovLM, generations: int) -> int:
    """An upper bound on the degrees of freedom of a pair's statistic after G generations:
    per position, Σₛ (|supp qₙ(·|s)| − 1) over every context, and at most G/5 (each merged
    bin expects ≥ 5 of the position's G tokens)."""
    support = (np.asarray(target.probs, dtype=np.float64) > 0).sum(axis=-1) - 1  # (T, S)
    return int(np.minimum(support.clip(min=0).sum(axis=-1), generations // 5).sum())


class _PairPower:
    """The exact law of a failure mode on one pair, as the power computation needs it.

    ``exact`` is :func:`theory.conformance.deviation` on the whole chain.  When its draft
    paths are too many to enumerate (``large_vocab`` at γ ≥ 2) and the rule is token-wise
    (its ``token_wise`` attribute: the first token of a round depends on the first draft
    only), it is computed on the chain cut to its first position (``partial``): a round starts
    there, so the first token has the same law in the cut chain; its cell alone gives a lower
    bound on the noncentrality and :func:`_dof_bound` an upper bound on the degrees of freedom
    — a lower bound on the power.  Otherwise (``exact`` None) the pair counts as never
    detecting.
    """

    def __init__(self, pair, mode, window: int):
        self.pair, self.partial, self.exact = pair, False, None
        try:
            self.exact = deviation(pair.draft, pair.target, window, mode.rule,
                                   drafter=mode.drafter, max_sequences=0)
        except TooManyDraftPaths:
            if getattr(mode.rule, "token_wise", False):
                self.partial = True
                self.exact = deviation(_first_position(pair.draft),
                                       _first_position(pair.target), window, mode.rule,
                                       drafter=mode.drafter, max_sequences=0)
        self.rounds = float(expected_target_calls(pair.draft, pair.target,
                                                  Speculative(window=window)))

    def miss(self, generations: int, level: float) -> float:
        """P(the pair's test and its support check both miss) after ``generations``."""
        if self.exact is None:
            return 1.0
        target = _first_position(self.pair.target) if self.partial else self.pair.target
        miss = math.exp(-generations * self.exact.zero_target_tokens)
        noncentrality, dof = _merged_noncentrality(self.exact, target, generations)
        if self.partial:
            dof = _dof_bound(self.pair.target, generations)
        return miss * (1 - chi2_power(dof, noncentrality, level))


#: Recent :class:`_PairPower` objects by (pair, mode, window) identity: the exact laws are
#: deterministic and the tables ask for the same ones many times (the default suite's pairs and
#: the failure modes are long-lived objects).  Each entry keeps its pair and mode alive, so an
#: id is never reused while its entry stands.
_PAIR_POWERS: OrderedDict = OrderedDict()
_PAIR_POWERS_SIZE = 128


def _pair_power(pair, mode, window: int) -> _PairPower:
    key = (id(pair), id(mode), window)
    if key in _PAIR_POWERS:
        _PAIR_POWERS.move_to_end(key)
        return _PAIR_POWERS[key][2]
    part = _PairPower(pair, mode, window)
    _PAIR_POWERS[key] = (pair, mode, part)
    if len(_PAIR_POWERS) > _PAIR_POWERS_SIZE:
        _PAIR_POWERS.popitem(last=False)
    return part


def _caught(parts: list[_PairPower], n_rounds: int, level: float) -> float:
    """P(the run catches the bug) = 1 − Πₖ P(pair k misses), the rounds split over the pairs
    as :func:`check_verifier` splits them."""
    share = -(-n_rounds // len(parts))
    miss = 1.0
    for part in parts:
        miss *= part.miss(max(1, math.ceil(share / part.rounds)), level)
    return 1 - miss


def _arguments(failure, window, models, alpha):
    mode = _mode(failure)
    window = _positive_int(window if window is not None else (mode.window or 3), "window")
    pairs = _pairs(models)
    return mode, window, _checked_alpha(alpha) / len(pairs), [
        _pair_power(pair, mode, window) for pair in pairs]


def detection_power(failure, n_rounds: int, *, window: int | None = None, models=None,
                    alpha: float = DEFAULT_ALPHA) -> float:
    """The probability that :func:`check_verifier` with ``n_rounds`` catches a failure mode,
    from its exact law (the approximation is :func:`detection_rounds`'); a lower bound when a
    pair is too large to enumerate (counted by its first position).

    Parameters
    ----------
    failure : str or FailureMode
        A key of :data:`theory.conformance.FAILURE_MODES`, or a mode.
    n_rounds : int
        The run's size.
    window, models, alpha :
        As for :func:`detection_rounds`.

    Examples
    --------
    >>> from sim.conformance import detection_power, precision_suite
    >>> pair = precision_suite()[:1]  # bfloat16_ties: caught with power 0.9 at 17,648 rounds
    >>> [round(detection_power("bfloat16", n, models=pair), 2) for n in (10_000, 20_000)]
    [0.26, 0.96]
    """
    n_rounds = _positive_int(n_rounds, "n_rounds")
    _, _, level, parts = _arguments(failure, window, models, alpha)
    return _caught(parts, n_rounds, level)


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
    generation).  A pair whose draft paths are too many to enumerate (``large_vocab``) counts
    by its first position only — a round starts there, so for a token-wise rule the chain cut
    to that position gives its law exactly — with an upper bound on its degrees of freedom
    (conservative); for other rules it counts as never detecting.  The README lists, beside
    each stated size, the detection rate observed at it.

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

    Raises
    ------
    ValueError
        If even 10¹² rounds do not reach ``power``.

    Examples
    --------
    >>> from sim.conformance import detection_rounds
    >>> 1000 < detection_rounds("resample_from_target", window=3) < 20000
    True
    """
    mode, _, level, parts = _arguments(failure, window, models, alpha)
    rounds = _least_detecting(parts, level, power)
    if rounds is None:
        skipped = [part.pair.name for part in parts if part.exact is None]
        raise ValueError(f"{mode.name} is not detectable on these pairs with power {power} "
                         f"within {MAX_NEEDED_ROUNDS:.0e} rounds"
                         + (f" (too large to enumerate: {skipped})" if skipped else ""))
    return rounds


def _least_detecting(parts: list[_PairPower], level: float, power: float) -> int | None:
    return least_rounds(lambda n_rounds: _caught(parts, n_rounds, level) >= power, len(parts))


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

    rounds = least_rounds(lambda n_rounds: mean(n_rounds) >= needed, len(pairs))
    if rounds is None:
        raise ValueError(f"a floor of {floor:g} is not caught with power {power} within "
                         f"{MAX_NEEDED_ROUNDS:.0e} rounds")
    return rounds


def failure_table(*, window: int = 3, seeds: int = 0) -> list[dict]:
    """The README's table of failure modes: for each of
    :data:`theory.conformance.FAILURE_MODES` but the precision bugs (:func:`precision_table`),
    its exact largest per-position TV over the four
    small suite pairs, its exact sequence TV on ``second_order`` (prompt averaged), the rounds
    :func:`check_verifier` needs to catch it with power 0.9 on the default suite and on the
    four small pairs, and — with ``seeds`` > 0 — how many of ``seeds`` runs at the small-pair
    size caught it (modes that need more than 10⁶ rounds are not run).

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
        if name in PRECISION_FAILURES:
            continue
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


def precision_table(*, window: int = 3) -> list[dict]:
    """The README's precision table: for each precision bug
    (:data:`theory.conformance.PRECISION_FAILURES`), how far it moves the output law and how
    many rounds catch it, on the default suite and on :func:`precision_suite`.

    Each row holds the exact largest per-position TV on the default suite's four small pairs
    (``tv_small``), on its ``large_vocab`` pair at the first position (``tv_large``: its draft
    paths are too many to enumerate beyond it) and on the precision suite (``tv_precision``);
    the rounds :func:`check_verifier` needs to catch it with power 0.9 on each suite
    (:func:`detection_rounds`; None when 10¹² rounds do not suffice); and the power at the
    default size, 100,000 rounds, on each (:func:`detection_power`).  On the default suite
    ``large_vocab`` counts by its first position only, so its sizes are upper bounds and its
    powers lower bounds.

    Parameters
    ----------
    window : int
        γ.
    """
    rows = []
    for name in PRECISION_FAILURES:
        mode = FAILURE_MODES[name]
        row = {"mode": name, "description": mode.description, "window": window}
        for suite, pairs in (("default", conformance_suite()), ("precision", precision_suite())):
            parts = [_pair_power(pair, mode, window) for pair in pairs]
            level = DEFAULT_ALPHA / len(parts)
            row[f"rounds_{suite}"] = _least_detecting(parts, level, POWER)
            row[f"power_{suite}"] = _caught(parts, DEFAULT_ROUNDS, level)
            if suite == "default":
                row["tv_small"] = max(part.exact.max_tv for part in parts[:4])
                row["tv_large"] = float(parts[4].exact.per_position_tv[0])
            else:
                row["tv_precision"] = max(part.exact.max_tv for part in parts)
        rows.append(row)
    return rows


def precision_table_markdown(rows: list[dict]) -> str:
    """:func:`precision_table`'s rows as the README's Markdown table.

    Parameters
    ----------
    rows : list of dict
        From :func:`precision_table`.
    """
    def size(value):
        return "> 10¹²" if value is None else f"{value:,}"

    def chance(power):
        return f"{power:.3f}" if power >= 0.001 else "< 0.001"

    lines = ["| precision bug | TV: default suite, 4 small pairs | TV: `large_vocab`, n = 0 | "
             "TV: precision suite | rounds for power 0.9: default suite | precision suite | "
             f"power at {DEFAULT_ROUNDS:,} rounds: default suite | precision suite |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row['mode']}`: {row['description']} | {row['tv_small']:.2g} | "
                     f"{row['tv_large']:.2g} | {row['tv_precision']:.2g} | "
                     f"{size(row['rounds_default'])} | {size(row['rounds_precision'])} | "
                     f"{chance(row['power_default'])} | {chance(row['power_precision'])} |")
    return "\n".join(lines)
