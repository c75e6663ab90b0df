r"""Conformance harness: test any speculative-decoding verifier for losslessness and efficiency.

**The convention** (framework-neutral, batched).  A verifier is a callable

``verifier(draft_tokens, draft_probs, target_probs, rng) -> emitted``

* ``draft_tokens`` int64 (B, γ): the drafted tokens of B independent rounds;
* ``draft_probs`` float64 (B, γ, V): row i is the law ``draft_tokens[:, i]`` was drawn from
  (given the drafts before it);
* ``target_probs`` float64 (B, γ + 1, V): the target q at each drafted position and at the
  bonus position (row γ);
* ``rng``: a numpy ``Generator`` (a verifier with its own RNG should seed it from ``rng``, so
  that a run is reproducible from the harness's seed);
* returns int64 (B, γ + 1): the tokens the round emits — the accepted drafts, then one token
  (a correction, or the bonus when every draft is accepted) — and −1 after the last one.

Rows may hold exact zeros (in p or q), one-hot rows and p = q.  Torch verifiers are wrapped by
:func:`torch_verifier`; Hugging Face transformers' ``_speculative_sampling`` by
:func:`sim.clients.transformers_verifier`.

**What the harness does** (:func:`check_verifier`).  Over a suite of Markov-chain pairs
(:func:`conformance_suite`: non-stationary, zeros and one-hot rows, second-order contexts,
context-free) it runs whole generations of T tokens: each round drafts k = min(γ, T − n)
tokens from p (the package's horizon convention: a round that drafts to the horizon has no
bonus position, and a token the verifier emits there is dropped), calls the verifier on the
batch of all unfinished generations with the same k, and advances every generation by what it
emitted.  A lossless verifier emits sequences with the target's law, so given the prefix, the
token at position n in context s is a draw from qₙ(·|s): the counts per (n, s) are tested by
Pearson's χ² pooled over cells (:func:`sim.stats.cells_check`, the Markov-chain transition
test), one test per pair at level α/K (Bonferroni over K pairs: the whole report has
false-positive level ≤ α, up to the χ² approximation of Pearson's statistic; the calibration
test checks it at 0.05).  A token of target probability 0 fails at once (the **support
check**, reported with its position, context and token).  Conditioning on round offsets is
deliberately *not* done: lossless verifiers such as block verification are exact only for
the sequence, not per offset.  Two assumptions of the test, stated in the convention: the B
rounds of one call are independent (a verifier that shares one uniform across the rows of a
batch makes the counts overdispersed and fails), and at the horizon (no bonus position) the
bonus row is a placeholder (uniform) whose token is dropped — a verifier whose earlier
tokens depend on the bonus row is tested against what it does with the placeholder.

**Efficiency**: accepted draft tokens per round (the common prefix of the emitted tokens and the
drafts, at most the number emitted − 1) summed over rounds, divided by the exact expected
number under standard verification from the same round starts, with drafts from p
(:func:`theory.conformance.expected_accepted`; Theorem 2 makes it the token-wise optimum).
Block verification, which is not token-wise, can exceed 1; so can a lossy verifier.

**Power**: ``min_detectable_tv`` is the per-position TV δ that the run detects with probability
≥ 0.9: a deviation of TV δ at every tested position adds at least 4δ² per token to the
statistic's noncentrality (χ² ≥ 4 TV² by Cauchy–Schwarz), so δ = √(λ*/(4N)) with λ* from
:func:`sim.stats.detectable_noncentrality` and N the tokens in tested cells (the best pair).
δ is a TV between the *binned* laws — the bins the run formed, single tokens wherever a
token expects ≥ 5 counts; a deviation hidden inside a merged bin of rare tokens is not
covered (the support check still catches mass on excluded tokens).
:func:`detection_rounds` gives, for the exactly known law of a bug
(:data:`theory.conformance.FAILURE_MODES`), the rounds needed to catch it with power 0.9.

Examples
--------
>>> from sim.conformance import check_verifier, reference_verifier
>>> report = check_verifier(reference_verifier, window=3, n_rounds=4000, rng=0)
>>> report.passed, round(report.efficiency, 1)
(True, 1.0)
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from sim.stats import (
    DEFAULT_ALPHA,
    cells_check,
    chi2_power,
    counts_check,
    detectable_noncentrality,
    merge_small_bins,
    pooled_pearson,
)
from theory import Speculative
from theory.conformance import (
    FAILURE_MODES,
    FailureMode,
    TooManyDraftPaths,
    deviation,
    expected_accepted,
)
from theory.exact import expected_target_calls
from theory.models import MarkovLM, check_compatible

__all__ = [
    "DEFAULT_ROUNDS",
    "MAX_SEQUENCES",
    "ConformanceReport",
    "PairCheck",
    "SuitePair",
    "VerifierError",
    "assert_lossless",
    "check_verifier",
    "conformance_suite",
    "detection_rounds",
    "failure_table",
    "failure_table_markdown",
    "failure_verifier",
    "floor_detection_rounds",
    "reference_verifier",
    "rule_verifier",
    "sequence_suite",
    "torch_verifier",
]

#: Default number of verifier rounds of :func:`check_verifier` (over the whole suite).
DEFAULT_ROUNDS = 100_000
#: Power at which ``min_detectable_tv`` and :func:`detection_rounds` are stated.
POWER = 0.9
#: Most floats of the arrays passed in one verifier call (B·(γ + 1)·V); larger batches split.
CALL_FLOATS = 1 << 22


class VerifierError(ValueError):
    """The verifier under test raised, or returned something outside the convention."""


# ------------------------------------------------------------------ the suite
@dataclass(frozen=True)
class SuitePair:
    """One (draft, target) pair of the suite, with a name for reports."""

    name: str
    draft: MarkovLM
    target: MarkovLM
    description: str = ""


def _dirichlet(rng, shape, concentration, zero_share=0.0, one_hot_share=0.0):
    """Dirichlet rows along the last axis; a share of entries zeroed (each row keeps ≥ 1) and a
    share of rows made one-hot."""
    rows = rng.dirichlet(np.full(shape[-1], concentration), size=shape[:-1])
    if zero_share:
        mask = rng.random(shape) < zero_share
        keep = rng.integers(shape[-1], size=shape[:-1])
        np.put_along_axis(mask, keep[..., None], False, axis=-1)
        rows = np.where(mask, 0.0, rows)
    if one_hot_share:
        hot = rng.random(shape[:-1]) < one_hot_share
        index = rows.argmax(axis=-1)
        one_hot = np.zeros(shape)
        np.put_along_axis(one_hot, index[..., None], 1.0, axis=-1)
        rows = np.where(hot[..., None], one_hot, rows)
    return rows / rows.sum(axis=-1, keepdims=True)


@functools.lru_cache(maxsize=1)
def conformance_suite() -> tuple[SuitePair, ...]:
    """The harness's default pairs (fixed seeds; T = 8; the prompt is context 0, except for
    ``second_order``, whose start context is uniform over its 9 contexts):

    * ``nonstationary`` — first order, V = 4, a different kernel at every position;
    * ``zeros`` — first order, V = 5, 35% of entries zero in p and in q independently (so q
      has mass where p has none and the reverse), 15% one-hot rows, p = q at position 3;
    * ``second_order`` — V = 3 with S = 9 contexts (the last two tokens): hidden state;
    * ``context_free`` — S = 1, V = 6, non-stationary (the next law depends on the position
      only), peaked rows;
    * ``large_vocab`` — S = 1, V = 10,000, T = 4, 9,000 exact zeros in every target row
      (floors and epsilons show here).

    Examples
    --------
    >>> from sim.conformance import conformance_suite
    >>> [(pair.name, pair.target.vocab_size, pair.target.n_contexts)
    ...  for pair in conformance_suite()]  # doctest: +NORMALIZE_WHITESPACE
    [('nonstationary', 4, 4), ('zeros', 5, 5), ('second_order', 3, 9),
     ('context_free', 6, 1), ('large_vocab', 10000, 1)]
    """
    rng = np.random.default_rng(20241101)
    horizon = 8
    pairs = []
    shape = (horizon, 4, 4)
    pairs.append(SuitePair("nonstationary", MarkovLM(_dirichlet(rng, shape, 1.0)),
                           MarkovLM(_dirichlet(rng, shape, 1.0)),
                           "first order, V = 4, a kernel per position"))
    shape = (horizon, 5, 5)
    p = _dirichlet(rng, shape, 0.8, zero_share=0.35, one_hot_share=0.15)
    q = _dirichlet(rng, shape, 0.8, zero_share=0.35, one_hot_share=0.15)
    p[3] = q[3]
    pairs.append(SuitePair("zeros", MarkovLM(p), MarkovLM(q),
                           "first order, V = 5, zeros, one-hot rows, p = q at n = 3"))
    vocab = 3
    contexts = vocab * vocab
    next_context = (np.arange(contexts)[:, None] % vocab) * vocab + np.arange(vocab)[None, :]
    shape = (horizon, contexts, vocab)
    start = np.full(contexts, 1 / contexts)
    pairs.append(SuitePair(
        "second_order", MarkovLM(_dirichlet(rng, shape, 1.0), next_context, start),
        MarkovLM(_dirichlet(rng, shape, 1.0), next_context, start),
        "V = 3, context = the last two tokens (S = 9)"))
    shape = (horizon, 1, 6)
    free = np.zeros((1, 6), dtype=np.int64)
    pairs.append(SuitePair("context_free", MarkovLM(_dirichlet(rng, shape, 0.5), free),
                           MarkovLM(_dirichlet(rng, shape, 0.5), free),
                           "S = 1, V = 6, position-dependent, peaked"))
    pairs.append(_large_vocab_pair(rng))
    return tuple(pairs)


#: Vocabulary, support of each target row and target support shared by the draft, of the
#: suite's ``large_vocab`` pair.
LARGE_VOCAB, LARGE_SUPPORT, LARGE_SHARED = 10_000, 1_000, 700


def _large_vocab_pair(rng) -> SuitePair:
    """V = 10⁴, S = 1, T = 4: every target row puts Dirichlet(0.5) mass on 1,000 tokens (9,000
    exact zeros); the draft row on 700 of them and 300 others.  Floors and epsilons added to a
    law show here: each exact zero of q is a token a lossless verifier never emits."""
    horizon, vocab = 4, LARGE_VOCAB
    p, q = np.zeros((horizon, 1, vocab)), np.zeros((horizon, 1, vocab))
    for n in range(horizon):
        tokens = rng.permutation(vocab)
        target_support = tokens[:LARGE_SUPPORT]
        draft_support = np.concatenate([target_support[:LARGE_SHARED],
                                        tokens[LARGE_SUPPORT:2 * LARGE_SUPPORT - LARGE_SHARED]])
        q[n, 0, target_support] = rng.dirichlet(np.full(LARGE_SUPPORT, 0.5))
        p[n, 0, draft_support] = rng.dirichlet(np.full(LARGE_SUPPORT, 0.5))
    free = np.zeros((1, vocab), dtype=np.int64)
    return SuitePair("large_vocab", MarkovLM(p, free), MarkovLM(q, free),
                     f"S = 1, V = {vocab}, {vocab - LARGE_SUPPORT} zeros in every target row")


@functools.lru_cache(maxsize=1)
def sequence_suite() -> tuple[SuitePair, ...]:
    """Small pairs for the sequence-level test (``check_verifier(..., level="sequence")``):

    * ``context_free_small`` — S = 1, V = 3, T = 6 (729 sequences): every row depends on the
      position only, so verifiers that re-query models at positions the harness did not draft
      (hierarchical schemes) get exact rows from position-indexed stand-ins;
    * ``binary`` — first order, V = 2, T = 7, random prompt (2 × 128 sequences).

    Examples
    --------
    >>> from sim.conformance import sequence_suite
    >>> [pair.name for pair in sequence_suite()]
    ['context_free_small', 'binary']
    """
    rng = np.random.default_rng(20241102)
    free = np.zeros((1, 3), dtype=np.int64)
    shape = (6, 1, 3)
    small = SuitePair("context_free_small", MarkovLM(_dirichlet(rng, shape, 1.0), free),
                      MarkovLM(_dirichlet(rng, shape, 1.0), free), "S = 1, V = 3, T = 6")
    shape = (7, 2, 2)
    binary = SuitePair("binary", MarkovLM(_dirichlet(rng, shape, 1.0), start=[0.5, 0.5]),
                       MarkovLM(_dirichlet(rng, shape, 1.0), start=[0.5, 0.5]),
                       "first order, V = 2, T = 7, random prompt")
    return small, binary


def _pairs(models) -> tuple[SuitePair, ...]:
    if models is None:
        return conformance_suite()
    if isinstance(models, SuitePair) or (isinstance(models, tuple) and len(models) in (2, 3)
                                         and isinstance(models[-1], MarkovLM)):
        models = [models]
    pairs = []
    for index, item in enumerate(models):
        if isinstance(item, SuitePair):
            pair = item
        elif isinstance(item, tuple) and len(item) == 2:
            pair = SuitePair(f"pair {index}", *item)
        elif isinstance(item, tuple) and len(item) == 3:
            pair = SuitePair(*item)
        else:
            raise TypeError(f"models[{index}] must be a (draft, target) or (name, draft, "
                            f"target) tuple of MarkovLM or a SuitePair; got {item!r}")
        if not isinstance(pair.draft, MarkovLM) or not isinstance(pair.target, MarkovLM):
            raise TypeError(f"models[{index}] must hold MarkovLM models")
        try:
            check_compatible(pair.draft, pair.target)
        except ValueError as error:
            raise ValueError(f"models[{index}] ({pair.name}): {error}") from None
        pairs.append(pair)
    if not pairs:
        raise ValueError("models must hold at least one (draft, target) pair")
    return tuple(pairs)


# ------------------------------------------------------------------ reports
@dataclass(frozen=True)
class PairCheck:
    """The test of one suite pair."""

    name: str
    passed: bool  #: at level alpha / K
    p_value: float
    statistic: float
    degrees_of_freedom: int
    generations: int
    rounds: int
    tokens: int
    accepted: int  #: accepted draft tokens, all rounds
    optimum: float  #: E[accepted] under standard verification from the same round starts
    min_detectable_tv: float
    #: (position, context, token, count) of tokens emitted where q = 0, most frequent first
    #: (at most 10 distinct; ``support_count`` counts them all)
    support_violations: tuple
    support_count: int = 0
    closest_law: str = ""  #: for a failed pair: the best-fitting simple alternative, if any

    @property
    def efficiency(self) -> float:
        return _ratio(self.accepted, self.optimum)


def _ratio(accepted, optimum) -> float:
    if optimum > 0:
        return accepted / optimum
    return 1.0 if accepted == 0 else float("inf")


@dataclass(frozen=True)
class ConformanceReport:
    """Result of :func:`check_verifier`.

    ``passed`` — the emitted-token law equals the target's at false-positive level ``alpha``;
    ``p_value`` — Bonferroni over the pairs (K · the least pair p-value, at most 1);
    ``efficiency`` — accepted drafts ÷ the token-wise optimum, all rounds;
    ``min_detectable_tv`` — per-position TV detected with power ≥ 0.9 at this size;
    ``checks`` — one :class:`PairCheck` per suite pair;
    ``level`` — ``"token"`` (the law of each token given its prefix, pooled per (position,
    context)) or ``"sequence"`` (the law of whole generations; ``min_detectable_tv`` is then a
    TV of whole sequences).
    """

    verifier: str
    window: int
    alpha: float
    passed: bool
    p_value: float
    efficiency: float
    min_detectable_tv: float
    checks: tuple[PairCheck, ...]
    level: str = "token"

    @property
    def rounds(self) -> int:
        return sum(check.rounds for check in self.checks)

    @property
    def support_violations(self) -> tuple:
        return tuple((check.name, *violation) for check in self.checks
                     for violation in check.support_violations)

    def table(self) -> list[dict]:
        """The per-pair table as a list of dicts (for pandas or JSON)."""
        return [{"pair": c.name, "passed": c.passed, "p_value": c.p_value,
                 "statistic": c.statistic, "dof": c.degrees_of_freedom, "rounds": c.rounds,
                 "tokens": c.tokens, "efficiency": c.efficiency,
                 "min_detectable_tv": c.min_detectable_tv,
                 "support_violations": c.support_count, "closest_law": c.closest_law}
                for c in self.checks]

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        relation = "≥" if self.passed else "<"
        lines = [f"{self.verifier}, γ = {self.window}: {verdict} (p = {self.p_value:.3g} "
                 f"{relation} α = {self.alpha:g}); {self.rounds} rounds; efficiency "
                 f"{self.efficiency:.4f} of the token-wise optimum; detects a "
                 f"{'per-position' if self.level == 'token' else 'sequence'} TV "
                 f"≥ {self.min_detectable_tv:.3g} with power {POWER}",
                 f"  {'pair':<14}{'rounds':>8}{'tokens':>8}{'χ²':>10}{'dof':>6}"
                 f"{'p-value':>11}{'efficiency':>11}{'min TV':>8}"]
        for c in self.checks:
            lines.append(f"  {c.name:<14}{c.rounds:>8}{c.tokens:>8}{c.statistic:>10.1f}"
                         f"{c.degrees_of_freedom:>6}{c.p_value:>11.3g}{c.efficiency:>11.4f}"
                         f"{c.min_detectable_tv:>8.3f}")
        for name, position, context, token, count in self.support_violations[:10]:
            lines.append(f"  support: {name}: token {token} emitted at position {position} in "
                         f"context {context} ({count}×), where the target gives it "
                         "probability 0")
        for c in self.checks:
            if c.closest_law:
                lines.append(f"  {c.name}: closest simple law: {c.closest_law}")
        return "\n".join(lines)


# ------------------------------------------------------------------ running generations
def _name(verifier) -> str:
    return getattr(verifier, "__qualname__", None) or getattr(verifier, "__name__", None) \
        or type(verifier).__name__


def _sample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token from each row (rows need not be normalized; all-zero rows are refused
    upstream)."""
    cdf = np.cumsum(rows, axis=1)
    point = rng.random(rows.shape[0]) * cdf[:, -1]
    index = (cdf <= point[:, None]).sum(axis=1)
    last = rows.shape[1] - 1 - np.argmax(rows[:, ::-1] > 0, axis=1)
    return np.minimum(index, last)


def _checked_output(emitted, rows: int, k: int, vocab: int, where: str) -> np.ndarray:
    if hasattr(emitted, "detach"):  # a torch tensor
        emitted = emitted.detach().cpu().numpy()
    try:
        array = np.asarray(emitted)
    except Exception as error:
        raise VerifierError(f"{where}: returned {type(emitted).__name__}, which is not an "
                            f"array ({error})") from None
    if array.dtype.kind not in "iu":
        raise VerifierError(f"{where}: returned dtype {array.dtype}; expected integer tokens "
                            "(int64)")
    if array.shape != (rows, k + 1):
        raise VerifierError(f"{where}: returned shape {array.shape}; expected (B, drafts + 1) "
                            f"= {(rows, k + 1)}")
    array = array.astype(np.int64)
    bad = (array < -1) | (array >= vocab)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise VerifierError(f"{where}: token {array[row, column]} at row {row}, column "
                            f"{column} is outside [0, {vocab}) (−1 only pads after the last "
                            "token)")
    padded = array == -1
    if padded[:, 0].any():
        raise VerifierError(f"{where}: row {np.flatnonzero(padded[:, 0])[0]} emits no token; "
                            "a round emits at least one")
    after = np.diff(padded.astype(np.int8), axis=1) < 0
    if after.any():
        raise VerifierError(f"{where}: row {np.argwhere(after)[0][0]} has a token after the "
                            "−1 padding")
    return array


@dataclass
class _PairRun:
    counts: np.ndarray  #: (T, S, V) tokens per (position, context)
    sequences: np.ndarray  #: (G, T) the generations
    starts: np.ndarray  #: (G,) their start contexts
    rounds: int = 0
    accepted: int = 0
    optimum: float = 0.0
    violations: dict = None  #: (position, context, token) → count, tokens with q = 0


def _run_pair(verifier, name, pair: SuitePair, window: int, generations: int, draft_rng,
              verify_rng, draft_processor, batch_rows) -> _PairRun:
    draft, target = pair.draft, pair.target
    horizon, vocab = target.horizon, target.vocab_size
    p_all = np.asarray(draft.probs, dtype=np.float64)
    q_all = np.asarray(target.probs, dtype=np.float64)
    following = target.next_context
    draft_cdf = _RowSampler(p_all)
    optimum_table = expected_accepted(draft, target, window)
    start = np.asarray(target.start_distribution, dtype=np.float64)
    context = draft_rng.choice(start.size, size=generations, p=start)
    position = np.zeros(generations, dtype=np.int64)
    run = _PairRun(np.zeros((horizon, target.n_contexts, vocab), dtype=np.int64),
                   np.full((generations, horizon), -1, dtype=np.int64), context.copy(),
                   violations={})
    while True:
        active = np.flatnonzero(position < horizon)
        if active.size == 0:
            return run
        windows = np.minimum(window, horizon - position[active])
        for k in np.unique(windows):
            rows = active[windows == k]
            size = max(1, batch_rows // int(k + 1))
            for first in range(0, rows.size, size):
                chunk = rows[first:first + size]
                start_n, start_s = position[chunk], context[chunk]
                emitted, drafts = _one_round(verifier, name, pair, int(k), start_n, start_s,
                                             p_all, q_all, following, draft_rng, verify_rng,
                                             draft_processor, draft_cdf, window)
                length = (emitted >= 0).sum(axis=1)
                usable = np.minimum(length, horizon - start_n)
                state = start_s.copy()
                for i in range(int(k) + 1):
                    live = np.flatnonzero(i < usable)
                    if live.size == 0:
                        break
                    token, at, here = emitted[live, i], start_n[live] + i, state[live]
                    for j in np.flatnonzero(q_all[at, here, token] == 0):
                        key = (int(at[j]), int(here[j]), int(token[j]))
                        run.violations[key] = run.violations.get(key, 0) + 1
                    np.add.at(run.counts, (at, here, token), 1)
                    run.sequences[chunk[live], at] = token
                    state[live] = following[here, token]
                position[chunk] = start_n + usable
                context[chunk] = state
                same = np.cumprod(emitted[:, :int(k)] == drafts, axis=1).sum(axis=1)
                run.accepted += int(np.minimum(same, length - 1).sum())
                run.optimum += float(optimum_table[start_n, start_s].sum())
                run.rounds += chunk.size


class _RowSampler:
    """Draws from the rows of a (T, S, V) table in O(log(T·S·V)) per draw: the CDFs of all rows
    laid end to end, row r's shifted by r, so one ``searchsorted`` finds every token."""

    def __init__(self, probs: np.ndarray):
        rows = probs.reshape(-1, probs.shape[-1])
        self.vocab, self.n_contexts = probs.shape[-1], probs.shape[1]
        cdf = np.cumsum(rows, axis=1)
        self.ends = cdf[:, -1].copy()
        self.flat = (cdf + np.arange(rows.shape[0])[:, None]).ravel()
        self.last = rows.shape[1] - 1 - np.argmax(rows[:, ::-1] > 0, axis=1)

    def sample(self, positions, contexts, rng) -> np.ndarray:
        row = positions * self.n_contexts + contexts
        point = row + rng.random(row.size) * self.ends[row]
        token = np.searchsorted(self.flat, point, side="right") - row * self.vocab
        return np.minimum(token, self.last[row])


def _one_round(verifier, name, pair, k, start_n, start_s, p_all, q_all, following, draft_rng,
               verify_rng, draft_processor, draft_cdf, window):
    rows, horizon, vocab = start_n.size, pair.target.horizon, pair.target.vocab_size
    along = np.empty((rows, k + 1), dtype=np.int64)
    along[:, 0] = start_s
    drafts = np.empty((rows, k), dtype=np.int64)
    p_rows = np.empty((rows, k, vocab))
    q_rows = np.empty((rows, k + 1, vocab))
    for i in range(k):
        p_rows[:, i] = p_all[start_n + i, along[:, i]]
        q_rows[:, i] = q_all[start_n + i, along[:, i]]
        if draft_processor is None:
            drafts[:, i] = draft_cdf.sample(start_n + i, along[:, i], draft_rng)
        else:
            drafts[:, i] = _sample(draft_processor(p_rows[:, i]), draft_rng)
        along[:, i + 1] = following[along[:, i], drafts[:, i]]
    bonus = start_n + k
    inside = bonus < horizon
    q_rows[:, k] = 1.0 / vocab  # no bonus position at the horizon: a placeholder row
    q_rows[inside, k] = q_all[bonus[inside], along[inside, k]]
    cut = "" if int(start_n.max()) + window <= horizon else f", γ = {window} cut at the horizon"
    where = (f"verifier {name} on suite pair {pair.name!r} (B = {rows}, {k} drafts{cut}, "
             f"V = {vocab})")
    try:
        emitted = verifier(drafts.copy(), p_rows, q_rows, verify_rng)
    except Exception as error:
        raise VerifierError(f"{where} raised {type(error).__name__}: {error}") from error
    return _checked_output(emitted, rows, k, vocab, where), drafts


# ------------------------------------------------------------------ the public checks
def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def _checked_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1); got {alpha!r}")
    return float(alpha)


def _generations(pair: SuitePair, window: int, rounds: int) -> int:
    """Whole generations that give ≈ ``rounds`` rounds under standard verification."""
    expected = float(expected_target_calls(pair.draft, pair.target, Speculative(window=window)))
    return max(1, math.ceil(rounds / expected))


def check_verifier(verifier, *, window: int, n_rounds: int = DEFAULT_ROUNDS, models=None,
                   rng=None, alpha: float = DEFAULT_ALPHA, level: str = "token",
                   draft_processor=None, name: str | None = None,
                   batch_floats: int = CALL_FLOATS) -> ConformanceReport:
    """Test ``verifier`` (the module's convention) for losslessness and efficiency.

    Parameters
    ----------
    verifier : callable
        ``verifier(draft_tokens, draft_probs, target_probs, rng) -> emitted`` (module doc).
    window : int >= 1
        γ, drafts per round (fewer near the horizon).
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

    Returns
    -------
    ConformanceReport

    Raises
    ------
    VerifierError
        The verifier raised, or returned a wrong shape, dtype, out-of-range token or padding.
    ValueError, TypeError
        Invalid arguments (named).

    Examples
    --------
    >>> from sim.conformance import check_verifier, failure_verifier
    >>> report = check_verifier(failure_verifier("resample_from_target"), window=2,
    ...                         n_rounds=8000, rng=1)
    >>> report.passed
    False
    """
    if not callable(verifier):
        raise TypeError(f"verifier must be callable (the module's convention); got "
                        f"{verifier!r}")
    window = _positive_int(window, "window")
    alpha = _checked_alpha(alpha)
    if level not in ("token", "sequence"):
        raise ValueError(f"level must be 'token' or 'sequence'; got {level!r}")
    pairs = _pairs(sequence_suite() if models is None and level == "sequence" else models)
    n_rounds = _positive_int(n_rounds, "n_rounds")
    batch_floats = _positive_int(batch_floats, "batch_floats")
    if draft_processor is not None and not callable(draft_processor):
        raise TypeError(f"draft_processor must be callable or None; got {draft_processor!r}")
    if isinstance(rng, bool):
        raise TypeError("rng must be an int seed, a numpy Generator or None; got a bool")
    if level == "sequence":
        for pair in pairs:
            _sequence_categories(pair)
    name = _name(verifier) if name is None else str(name)
    seed = np.random.default_rng(rng).integers(2 ** 63)
    pair_level = alpha / len(pairs)
    checks = []
    for index, pair in enumerate(pairs):
        draft_rng, verify_rng = (np.random.default_rng(s) for s in
                                 np.random.SeedSequence([int(seed), index]).spawn(2))
        generations = _generations(pair, window, -(-n_rounds // len(pairs)))
        run = _run_pair(verifier, name, pair, window, generations, draft_rng, verify_rng,
                        draft_processor, batch_floats // pair.target.vocab_size)
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
        checks.append(PairCheck(
            pair.name, passed, 0.0 if violations else result.p_value, result.statistic,
            result.degrees_of_freedom, generations, run.rounds, int(run.counts.sum()),
            run.accepted, run.optimum, detectable,
            tuple((*key, count) for key, count in violations[:10]),
            sum(run.violations.values()),
            "" if passed or level != "token" else _closest_law(run, pair, pair_level)))
    p_value = min(1.0, len(pairs) * min(check.p_value for check in checks))
    return ConformanceReport(
        name, window, alpha, all(check.passed for check in checks), p_value,
        _ratio(sum(c.accepted for c in checks), sum(c.optimum for c in checks)),
        min(check.min_detectable_tv for check in checks), tuple(checks), level)


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


def _sequence_check(run: _PairRun, pair: SuitePair, level: float):
    """Counts of whole (prompt, x₁ … x_T) against the target's law of sequences."""
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
    index = run.sequences @ (vocab ** np.arange(horizon - 1, -1, -1))
    counts = np.bincount(run.starts * sequences.shape[0] + index, minlength=law.size)
    result = counts_check(counts, law.ravel() / law.sum(), alpha=level,
                          name=f"{pair.name} (sequences)")
    return result, int(run.sequences.shape[0])


def _closest_law(run: _PairRun, pair: SuitePair, level: float) -> str:
    """A hint for a failed pair with V ≤ :data:`MAX_FIT_VOCAB`: the best mixture
    w·q + (1 − w)·p (w on a grid of 0.02), and
    whether the counts are consistent with it at the pair's level (p-value not corrected for
    the fit)."""
    if pair.target.vocab_size > MAX_FIT_VOCAB:
        return ""
    counts = run.counts.reshape(-1, pair.target.vocab_size)
    q = np.asarray(pair.target.probs, dtype=np.float64).reshape(counts.shape)
    p = np.asarray(pair.draft.probs, dtype=np.float64).reshape(counts.shape)
    weights = np.linspace(0, 1, 51)
    fits = [pooled_pearson(counts, w * q + (1 - w) * p) for w in weights]
    scores = [statistic if not impossible else np.inf for statistic, _, impossible, _ in fits]
    best = int(np.argmin(scores))
    statistic, dof, _, _ = fits[best]
    if not np.isfinite(scores[best]) or dof == 0:
        return ""
    p_value = float(chi2.sf(statistic, dof))
    verdict = "consistent" if p_value >= level else "not consistent either"
    return (f"w·q + (1 − w)·p with w = {weights[best]:.2f} fits best (χ² = {statistic:.1f}, "
            f"dof {dof}, p = {p_value:.3g}: {verdict})")


def assert_lossless(verifier, *, window: int, n_rounds: int = DEFAULT_ROUNDS, models=None,
                    rng=0, alpha: float = DEFAULT_ALPHA, **options) -> ConformanceReport:
    """:func:`check_verifier` for a pytest suite: raise ``AssertionError`` with the report
    when the verifier is not lossless, return the report otherwise (seed 0 by default, so the
    test is deterministic).

    Parameters
    ----------
    verifier, window, n_rounds, models, rng, alpha :
        As for :func:`check_verifier`.
    options :
        Further keywords of :func:`check_verifier` (``level``, ``draft_processor``, ``name``).

    Examples
    --------
    >>> from sim.conformance import assert_lossless, reference_verifier
    >>> assert_lossless(reference_verifier, window=2, n_rounds=2000).passed
    True
    """
    report = check_verifier(verifier, window=window, n_rounds=n_rounds, models=models, rng=rng,
                            alpha=alpha, **options)
    if not report.passed:
        raise AssertionError(f"verifier is not lossless:\n{report}")
    return report


# ------------------------------------------------------------------ verifiers
def reference_verifier(draft_tokens, draft_probs, target_probs, rng):
    """Standard speculative verification in numpy — the convention's worked example.

    Draft i is kept iff uᵢ · p(dᵢ) < q(dᵢ) (i.e. uᵢ < min(1, q/p)); at the first failure the
    round emits a token from [q − p]₊ normalized; if every draft is kept, a bonus token from
    the last target row.

    Parameters
    ----------
    draft_tokens, draft_probs, target_probs, rng :
        The convention (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from sim.conformance import reference_verifier
    >>> p = np.array([[[0.5, 0.5]]]); q = np.array([[[0.0, 1.0], [0.3, 0.7]]])
    >>> reference_verifier(np.array([[0]]), p, q, np.random.default_rng(0))  # 0 is rejected
    array([[ 1, -1]])
    """
    draft_tokens = np.asarray(draft_tokens, dtype=np.int64)
    rows, k = draft_tokens.shape
    p_x = np.take_along_axis(draft_probs, draft_tokens[..., None], axis=-1)[..., 0]
    q_x = np.take_along_axis(target_probs[:, :k], draft_tokens[..., None], axis=-1)[..., 0]
    kept = rng.random((rows, k)) * p_x < q_x
    accepted = np.where(kept.all(axis=1), k, np.argmin(kept, axis=1))
    everything = accepted == k
    law = np.empty((rows, draft_probs.shape[-1]))
    law[everything] = target_probs[everything, k]
    failed = np.flatnonzero(~everything)
    at = accepted[failed]
    law[failed] = np.maximum(target_probs[failed, at] - draft_probs[failed, at], 0.0)
    emitted = np.full((rows, k + 1), -1, dtype=np.int64)
    columns = np.arange(k)[None, :]
    emitted[:, :k] = np.where(columns < accepted[:, None], draft_tokens, -1)
    emitted[np.arange(rows), accepted] = _sample(law, rng)
    return emitted


def rule_verifier(rule, name: str | None = None):
    """A verifier in the convention that samples the exact round law of ``rule``
    (:mod:`theory.conformance`): E[j, v] = P(emit d₁ … d_j, then v).

    Parameters
    ----------
    rule : callable
        A round rule (:func:`theory.conformance.standard_rule`, a failure mode's rule, …).
    name : str, optional
        The verifier's name in reports.

    Examples
    --------
    >>> from sim.conformance import check_verifier, rule_verifier
    >>> from theory.conformance import block_rule
    >>> check_verifier(rule_verifier(block_rule), window=3, n_rounds=4000, rng=2).passed
    True
    """
    def verifier(draft_tokens, draft_probs, target_probs, rng):
        draft_tokens = np.asarray(draft_tokens, dtype=np.int64)
        rows, k = draft_tokens.shape
        law = np.asarray(rule(draft_tokens, np.asarray(draft_probs, dtype=np.float64),
                              np.asarray(target_probs, dtype=np.float64)))
        vocab = law.shape[-1]
        outcome = _sample(law.reshape(rows, -1), rng)
        accepted, token = np.divmod(outcome, vocab)
        emitted = np.full((rows, k + 1), -1, dtype=np.int64)
        emitted[:, :k] = np.where(np.arange(k)[None, :] < accepted[:, None], draft_tokens, -1)
        emitted[np.arange(rows), accepted] = token
        return emitted

    verifier.__qualname__ = name or f"rule_verifier({getattr(rule, '__qualname__', rule)})"
    return verifier


def _mode(failure) -> FailureMode:
    if isinstance(failure, FailureMode):
        return failure
    if failure not in FAILURE_MODES:
        raise ValueError(f"failure must be one of {sorted(FAILURE_MODES)} or a FailureMode; "
                         f"got {failure!r}")
    return FAILURE_MODES[failure]


def failure_verifier(failure):
    """A verifier with a known bug (:data:`theory.conformance.FAILURE_MODES`), sampled from its
    exact law.  A mode whose bug is in the drafting (``drafter``) returns the correct verifier:
    run it with ``check_verifier(..., draft_processor=mode.drafter)``.

    Parameters
    ----------
    failure : str or FailureMode
        A key of :data:`theory.conformance.FAILURE_MODES`, or a mode.
    """
    mode = _mode(failure)
    return rule_verifier(mode.rule, name=f"failure_verifier({mode.name!r})")


def torch_verifier(function, *, device=None):
    """Adapt a torch verifier ``function(draft_tokens, draft_probs, target_probs, generator)``
    (tensors of the convention's shapes on ``device``, float64; a ``torch.Generator`` seeded
    from the harness's rng) to the convention.

    Parameters
    ----------
    function : callable
        The torch verifier; returns an integer tensor (B, γ + 1).
    device : str or torch.device, optional
        Where the tensors go (default: the CPU).

    Examples
    --------
    >>> import torch
    >>> from sim.conformance import check_verifier, torch_verifier
    >>> def greedy_bonus(tokens, p, q, generator):  # not lossless: always emits argmax q
    ...     return torch.cat([q[:, :1].argmax(-1), torch.full_like(tokens, -1)], dim=1)
    >>> check_verifier(torch_verifier(greedy_bonus), window=2, n_rounds=2000, rng=0).passed
    False
    """
    import torch

    def verifier(draft_tokens, draft_probs, target_probs, rng):
        generator = torch.Generator(device=device or "cpu")
        generator.manual_seed(int(rng.integers(2 ** 63)))
        tensors = (torch.as_tensor(draft_tokens, device=device),
                   torch.as_tensor(draft_probs, device=device),
                   torch.as_tensor(target_probs, device=device))
        return function(*tensors, generator)

    verifier.__qualname__ = f"torch_verifier({_name(function)})"
    return verifier


# ------------------------------------------------------------------ power of the harness
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
                not check_verifier(failure_verifier(mode), window=gamma, models=small,
                                   n_rounds=row["rounds_small"], rng=seed,
                                   draft_processor=mode.drafter).passed
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
