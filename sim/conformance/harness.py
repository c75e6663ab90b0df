r"""The public checks of the conformance harness: :func:`check_verifier` and
:func:`assert_lossless`.

Per suite pair the harness runs whole generations (:mod:`sim.conformance.rounds`) and tests
them against the target: at ``level="token"`` the counts of each token per (position, context)
by Pearson's χ² pooled over cells (:func:`sim.stats.cells_check`), at ``level="sequence"`` the
counts of whole (prompt, x₁ … x_T) by one multinomial test; each pair at level α/K (Bonferroni
over K pairs), and a token of target probability 0 fails the pair at once.  The smallest
per-position TV δ detected with power 0.9 is δ = √(λ*/(4N)) (χ² ≥ 4 TV²), λ* from
:func:`sim.stats.detectable_noncentrality` and N the tokens in tested cells; the verdict
(passed, failed, inconclusive) is :mod:`sim.conformance.verdicts`'s.  A failed pair is located
(:mod:`sim.conformance.deviations`: its most significant cells and a TV per position with a
bootstrap interval) and, with a small vocabulary, gets as a hint the mixture
w·q + (1 − w)·p that fits it — only if one fits.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
from scipy.stats import chi2

from sim.conformance.calls import (
    DEFAULT_THREADS,
    DEFAULT_TIMEOUT,
    bounded_threads,
    checked_threads,
    checked_timeout,
)
from sim.conformance.deviations import MAX_DEVIATIONS, cell_deviations, position_tv
from sim.conformance.report import POWER, ConformanceReport, PairCheck, _ratio
from sim.conformance.rounds import (
    CALL_FLOATS,
    PathRounds,
    _name,
    _PairRun,
    _run_pair,
    processed_rows,
)
from sim.conformance.suites import SuitePair, _pairs, sequence_suite
from sim.conformance.trees import TreeRounds, bfs_layout, checked_tree
from sim.conformance.verdicts import (
    DEFAULT_MIN_TV,
    _Design,
    generations_for,
    rounds_needed,
    rounds_per_generation,
    verdict_of,
)
from sim.stats import (
    DEFAULT_ALPHA,
    cells_check,
    counts_check,
    detectable_noncentrality,
    pooled_pearson,
)
from theory.models import MarkovLM

#: Default number of verifier rounds of :func:`check_verifier` (over the whole suite).
DEFAULT_ROUNDS = 100_000

#: Largest estimated work of one :func:`check_verifier` run, Σ rounds · ((2γ + 1) · V + 64)
#: over the pairs (floats handed to the verifier, plus per-token bookkeeping): ≈ 35 times the
#: default run at γ = 3 (≈ 1.4·10⁹).
MAX_WORK = 5e10


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def _checked_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1); got {alpha!r}")
    return float(alpha)


def _checked_min_tv(min_tv) -> float:
    if isinstance(min_tv, bool) or not isinstance(min_tv, numbers.Real) or not 0 < min_tv <= 1:
        raise ValueError(f"min_tv must be a number in (0, 1]; got {min_tv!r}")
    return float(min_tv)


def check_verifier(verifier, *, window: int | None = None, n_rounds: int = DEFAULT_ROUNDS,
                   models=None,
                   rng=None, alpha: float = DEFAULT_ALPHA, level: str = "token",
                   draft_processor=None, name: str | None = None,
                   batch_floats: int = CALL_FLOATS,
                   min_tv: float = DEFAULT_MIN_TV, timeout: float | None = DEFAULT_TIMEOUT,
                   threads: int | None = DEFAULT_THREADS,
                   max_work: float = MAX_WORK, tree=None) -> ConformanceReport:
    """Test ``verifier`` (the convention, package doc) for losslessness and efficiency.

    Parameters
    ----------
    verifier : callable
        ``verifier(draft_tokens, draft_probs, target_probs, rng) -> emitted`` (package doc),
        or with ``tree=`` a tree verifier ``verifier(tree_tokens, parents, draft_probs,
        target_probs, rng) -> emitted`` (:mod:`sim.conformance.trees`).
    window : int >= 1
        γ, drafts per round (fewer near the horizon).  Exactly one of ``window`` and ``tree``.
    tree : theory.TreeSpeculative, optional
        Test a *tree* verifier: every round drafts this tree (its ``tree`` shape, cut at the
        horizon, and its ``sampling``); its ``verifier`` field is ignored (the verifier under
        test is ``verifier``).  Token level only, no ``draft_processor``.
    n_rounds : int
        Verifier rounds to run, split evenly over the pairs (whole generations: each pair runs
        ⌈n_rounds / K / E[rounds per generation]⌉ generations, E under standard verification).
    models : sequence of (draft, target), (name, draft, target) or SuitePair, optional
        The pairs to test on; default :func:`conformance_suite` (``level="token"``) or
        :func:`sequence_suite` (``level="sequence"``).
    rng : int seed, numpy Generator or None
        Seeds the drafts and the ``rng`` handed to the verifier (two independent streams).
    alpha : float in (0, 1)
        False-positive level of the whole report (each of K pairs is tested at alpha / K).
    level : "token" or "sequence"
        ``"token"``: the law of each token given its prefix (valid for every verifier that is
        lossless for whole sequences; pooled per (position, context)).  ``"sequence"``: the
        law of whole generations, one multinomial over every (prompt, x₁ … x_T) — for
        verifiers whose rounds are exact only jointly; pairs need S · V^T ≤
        :data:`MAX_SEQUENCES` categories.
    draft_processor : callable, optional
        Draw the drafts from ``draft_processor(p_rows)`` while still handing the verifier p —
        reproduces a serving stack that drafts with top-k/temperature and passes raw
        probabilities (:func:`theory.conformance.top_k` …); None draws from p.
    name : str, optional
        The verifier's name in the report (default: its ``__qualname__``).
    batch_floats : int
        Split a verifier call whose arrays would hold more floats than this.
    min_tv : float in (0, 1]
        The per-position TV (a sequence TV at ``level="sequence"``) every pair held to it must
        detect with power 0.9 for the verdict "passed"; a run that finds no deviation but
        cannot detect ``min_tv`` is "inconclusive" and states the rounds needed
        (:mod:`sim.conformance.verdicts`).
    timeout : float or None
        Seconds one verifier call may take (default 60); a hung call ends the run with a
        :class:`VerifierTimeout` (the call keeps running in a daemon thread: Python cannot stop
        a thread; :mod:`sim.conformance.calls`).  None: no limit, calls in this thread.
    threads : int or None
        Bound on torch's intra-op threads (and BLAS's, if ``threadpoolctl`` is installed) for
        the run, restored afterwards (default 1; None leaves them alone).
    max_work : float
        Refuse, before any work, a run whose estimated work Σ rounds · ((2γ + 1) · V + 64)
        over the pairs exceeds this (default :data:`MAX_WORK`, ≈ 35 times the default run at
        γ = 3) or whose arrays would not fit in ``sim.engine.MEMORY_LIMIT``.

    Returns
    -------
    ConformanceReport
        ``verdict`` "passed", "failed" or "inconclusive"; ``passed`` is true only for
        "passed".

    Raises
    ------
    VerifierError
        The verifier raised (any exception but ``KeyboardInterrupt``, ``sys.exit`` included),
        or returned a wrong shape, dtype, out-of-range token (in any integer dtype) or padding.
    VerifierTimeout
        A verifier call took longer than ``timeout`` (a :class:`VerifierError`).
    ValueError, TypeError
        Invalid arguments (named), ``draft_processor`` output that is not finite,
        non-negative weights, or a run over ``max_work`` (with the estimate) — before any
        verifier call.

    Examples
    --------
    >>> from sim.conformance import check_verifier, failure_verifier
    >>> report = check_verifier(failure_verifier("resample_from_target"), window=2,
    ...                         n_rounds=8000, rng=1)
    >>> report.verdict, report.passed
    ('failed', False)
    """
    if not callable(verifier):
        raise TypeError(f"verifier must be callable (the module's convention); got "
                        f"{verifier!r}")
    if (window is None) == (tree is None):
        raise TypeError("give exactly one of window= (a path of drafts) and tree= (a "
                        "theory.TreeSpeculative whose tree is drafted)")
    if tree is not None:
        tree = checked_tree(tree)
        if level != "token" or draft_processor is not None:
            raise ValueError("tree= runs at level='token' without a draft_processor")
        window = int(bfs_layout(tree.tree)[1].max())
    window = _positive_int(window, "window")
    alpha = _checked_alpha(alpha)
    if level not in ("token", "sequence"):
        raise ValueError(f"level must be 'token' or 'sequence'; got {level!r}")
    pairs = _pairs(sequence_suite() if models is None and level == "sequence" else models)
    n_rounds = _positive_int(n_rounds, "n_rounds")
    batch_floats = _positive_int(batch_floats, "batch_floats")
    min_tv = _checked_min_tv(min_tv)
    timeout, threads = checked_timeout(timeout), checked_threads(threads)
    if draft_processor is not None and not callable(draft_processor):
        raise TypeError(f"draft_processor must be callable or None; got {draft_processor!r}")
    if isinstance(rng, bool):
        raise TypeError("rng must be an int seed, a numpy Generator or None; got a bool")
    if level == "sequence":
        for pair in pairs:
            _sequence_categories(pair)
    name = _name(verifier) if name is None else str(name)
    # γ ≥ T drafts to the horizon: the same run as γ = T, and the exact DPs stay small
    windows = [min(window, pair.target.horizon) for pair in pairs]
    per_generation = [rounds_per_generation(pair, gamma if tree is None else tree)
                      for pair, gamma in zip(pairs, windows, strict=True)]
    sizes = [generations_for(-(-n_rounds // len(pairs)), rounds) for rounds in per_generation]
    widths = windows if tree is None else [bfs_layout(tree.tree)[0].size] * len(pairs)
    _check_work(pairs, widths, sizes, per_generation, n_rounds, window, max_work)
    if draft_processor is not None:  # blame the processor, before any verifier call
        for pair in pairs:
            p = np.asarray(pair.draft.probs, dtype=np.float64)
            processed_rows(draft_processor, p.reshape(-1, p.shape[-1]), pair.name)
    seed = np.random.default_rng(rng).integers(2 ** 63)
    pair_level = alpha / len(pairs)
    checks, designs, deviations = [], [], []
    with bounded_threads(threads):
        for index, pair in enumerate(pairs):
            check, located = _check_pair(verifier, name, pair, index, seed, windows[index],
                                         sizes[index], level, pair_level, draft_processor,
                                         batch_floats, timeout, designs, tree)
            checks.append(check)
            deviations.extend(located)
    p_value = min(1.0, len(pairs) * min(check.p_value for check in checks))
    if not any(c.powered for c in checks):  # only unpowered pairs: hold them all to min_tv
        checks = [dataclasses.replace(c, powered=True) for c in checks]
    held = [c.powered for c in checks]
    verdict = verdict_of(not all(c.passed for c in checks),
                         [c.design_tv for c in checks if c.powered], min_tv)
    needed = None
    if verdict == "inconclusive":
        needed = rounds_needed([d for d, keep in zip(designs, held, strict=True) if keep],
                               [r for r, keep in zip(per_generation, held, strict=True) if keep],
                               min_tv, pair_level, POWER, len(pairs))
    return ConformanceReport(
        name, window, alpha, verdict == "passed", p_value,
        _ratio(sum(c.accepted for c in checks), sum(c.optimum for c in checks)),
        min(check.min_detectable_tv for check in checks), tuple(checks), level, verdict,
        min_tv, needed, tuple(sorted(deviations, key=lambda d: d.p_value)[:MAX_DEVIATIONS]))


def _check_pair(verifier, name, pair, index, seed, window, generations, level, pair_level,
                draft_processor, batch_floats, timeout, designs, tree=None):
    """Run and test one pair: (PairCheck, its most significant cells if it failed); its design
    is appended to ``designs``."""
    draft_rng, verify_rng = (np.random.default_rng(s) for s in
                             np.random.SeedSequence([int(seed), index]).spawn(2))
    designs.append(_Design(pair, level, _sequence_law(pair) if level == "sequence" else None))
    if tree is None:
        player = PathRounds(verifier, name, pair, window, draft_rng, verify_rng,
                            draft_processor, timeout)
    else:
        player = TreeRounds(verifier, name, pair, tree, draft_rng, verify_rng, timeout)
    run = _run_pair(pair, generations, draft_rng, player,
                    batch_floats // pair.target.vocab_size)
    if level == "token":
        result, tested = _token_check(run, pair, pair_level)
    else:
        result, tested = _sequence_check(run, pair, pair_level)
    if result.degrees_of_freedom and tested:
        lam = detectable_noncentrality(result.degrees_of_freedom, pair_level, POWER)
        detectable = math.sqrt(lam / (4 * tested))
    else:
        detectable = float("inf")
    violations = sorted(run.violations.items(), key=lambda item: (-item[1], item[0]))
    passed = result.passed and not violations
    located, estimates = (), ()
    if not passed and level == "token":
        q = np.asarray(pair.target.probs, dtype=np.float64)
        located = cell_deviations(pair.name, run.counts, q)
        estimates = position_tv(run.counts, q, np.random.default_rng([int(seed), index, 7]))
    return PairCheck(
        pair.name, passed, 0.0 if violations else result.p_value, result.statistic,
        result.degrees_of_freedom, generations, run.rounds, int(run.counts.sum()),
        run.accepted, run.optimum, detectable,
        tuple((*key, count) for key, count in violations[:10]),
        sum(run.violations.values()),
        "" if passed or level != "token" else _closest_law(run, pair, pair_level),
        designs[-1].detectable_tv(generations, pair_level, POWER), pair.powered,
        estimates), located


def _check_work(pairs, windows, sizes, per_generation, n_rounds, window, max_work) -> None:
    """Refuse, before any work, a run over ``max_work`` or over the memory limit."""
    from sim.engine import check_memory

    if isinstance(max_work, bool) or not isinstance(max_work, numbers.Real) or not max_work > 0:
        raise ValueError(f"max_work must be a positive number; got {max_work!r}")
    work = sum(size * rounds * ((2 * gamma + 1) * pair.target.vocab_size + 64)
               for pair, gamma, size, rounds in zip(pairs, windows, sizes, per_generation,
                                                    strict=True))
    if work > max_work:
        raise ValueError(f"n_rounds = {n_rounds:,} with window = {window} is an estimated "
                         f"{work:.3g} units of work (Σ over pairs of rounds · ((2γ + 1) · V + "
                         f"64)), over max_work = {max_work:.3g}: lower n_rounds (the report of "
                         "a smaller run states the rounds it needs) or raise max_work")
    check_memory(sum(size * (pair.target.horizon + 4) * 8.0 for pair, size in
                     zip(pairs, sizes, strict=True)),
                 f"n_rounds = {n_rounds:,}", "lower n_rounds")


def _token_check(run: _PairRun, pair: SuitePair, level: float):
    """(check, tokens in cells that were tested: ≥ 2 bins)."""
    counts = run.counts.reshape(-1, pair.target.vocab_size)
    laws = np.asarray(pair.target.probs, dtype=np.float64).reshape(counts.shape)
    tested = pooled_pearson(counts, laws)[3]
    return cells_check(counts, laws, alpha=level, name=pair.name), tested


#: Largest vocabulary for which a failed pair is fitted to a mixture (a hint in the report).
MAX_FIT_VOCAB = 64
#: Most categories (prompt × V^T) of a pair in the sequence-level test.
MAX_SEQUENCES = 100_000


def _sequence_categories(pair: SuitePair) -> int:
    target = pair.target
    count = target.n_contexts * target.vocab_size ** target.horizon
    if count > MAX_SEQUENCES:
        raise ValueError(f"pair {pair.name!r} has S·V^T = {count} whole sequences, over "
                         f"MAX_SEQUENCES = {MAX_SEQUENCES}: the sequence-level test needs a "
                         "smaller pair (sim.conformance.sequence_suite)")
    return count


def _sequence_law(pair: SuitePair) -> np.ndarray:
    """The target's law of whole (prompt, x₁ … x_T), flat: index prompt · V^T + the sequence
    in base V."""
    target = pair.target
    vocab, horizon = target.vocab_size, target.horizon
    sequences = np.array(np.meshgrid(*[range(vocab)] * horizon, indexing="ij"))
    sequences = sequences.reshape(horizon, -1).T  # (V^T, T), lexicographic
    start = np.asarray(target.start_distribution, dtype=np.float64)
    next_context = None if target.is_first_order else target.next_context
    law = np.zeros((target.n_contexts, sequences.shape[0]))
    for context in np.flatnonzero(start > 0):
        started = MarkovLM(target.probs, next_context, int(context))
        law[context] = start[context] * np.asarray(started.sequence_probability(sequences),
                                                   dtype=np.float64)
    return law.ravel() / law.sum()


def _sequence_check(run: _PairRun, pair: SuitePair, level: float):
    """Counts of whole (prompt, x₁ … x_T) against the target's law of sequences."""
    law = _sequence_law(pair)
    vocab, horizon = pair.target.vocab_size, pair.target.horizon
    index = run.sequences @ (vocab ** np.arange(horizon - 1, -1, -1))
    counts = np.bincount(run.starts * vocab ** horizon + index, minlength=law.size)
    result = counts_check(counts, law, alpha=level, name=f"{pair.name} (sequences)")
    return result, int(run.sequences.shape[0])


def _closest_law(run: _PairRun, pair: SuitePair, level: float) -> str:
    """A hint for a failed pair with V ≤ :data:`MAX_FIT_VOCAB`: :func:`closest_mixture` of its
    counts."""
    if pair.target.vocab_size > MAX_FIT_VOCAB:
        return ""
    counts = run.counts.reshape(-1, pair.target.vocab_size)
    q = np.asarray(pair.target.probs, dtype=np.float64).reshape(counts.shape)
    p = np.asarray(pair.draft.probs, dtype=np.float64).reshape(counts.shape)
    return closest_mixture(counts, q, p, level)


def closest_mixture(counts: np.ndarray, q: np.ndarray, p: np.ndarray, level: float) -> str:
    """The best mixture w·q + (1 − w)·p of the (cells, V) laws q (target) and p (draft) for
    (cells, V) counts (w on a grid of 0.02) — only when the counts are consistent with it at
    ``level`` (its goodness-of-fit test passes; p-value not corrected for the fit), else ""
    (a resample-from-q bug is no mixture: its best w is not a law that fits)."""
    weights = np.linspace(0, 1, 51)
    fits = [pooled_pearson(counts, w * q + (1 - w) * p) for w in weights]
    scores = [statistic if not impossible else np.inf for statistic, _, impossible, _ in fits]
    best = int(np.argmin(scores))
    statistic, dof, _, _ = fits[best]
    if not np.isfinite(scores[best]) or dof == 0:
        return ""
    p_value = float(chi2.sf(statistic, dof))
    if p_value < level:  # the best mixture does not fit either: no hint
        return ""
    return (f"w·q + (1 − w)·p with w = {weights[best]:.2f} fits (χ² = {statistic:.1f}, "
            f"dof {dof}, p = {p_value:.3g} ≥ the pair's level; not corrected for the fit)")


def assert_lossless(verifier, *, window: int, n_rounds: int = DEFAULT_ROUNDS, models=None,
                    rng=0, alpha: float = DEFAULT_ALPHA, **options) -> ConformanceReport:
    """:func:`check_verifier` for a pytest suite: raise ``AssertionError`` with the report
    unless the verdict is "passed" — a verifier that is not lossless ("failed"), or a run too
    small to detect ``min_tv`` ("inconclusive": the message states the rounds needed) — and
    return the report otherwise (seed 0 by default, so the test is deterministic).

    Parameters
    ----------
    verifier, window, n_rounds, models, rng, alpha :
        As for :func:`check_verifier`.
    options :
        Further keywords of :func:`check_verifier` (``min_tv``, ``level``, ``draft_processor``,
        ``name``, ``timeout``, ``threads``).

    Examples
    --------
    >>> from sim.conformance import assert_lossless, reference_verifier
    >>> assert_lossless(reference_verifier, window=2, n_rounds=4000, min_tv=0.2).verdict
    'passed'
    """
    report = check_verifier(verifier, window=window, n_rounds=n_rounds, models=models, rng=rng,
                            alpha=alpha, **options)
    if report.verdict == "failed":
        raise AssertionError(f"verifier is not lossless:\n{report}")
    if report.verdict == "inconclusive":
        raise AssertionError(f"inconclusive: n_rounds = {n_rounds} cannot detect min_tv = "
                             f"{report.min_tv:g} on every pair; raise n_rounds to "
                             f"{report.rounds_needed} (or min_tv):\n{report}")
    return report
