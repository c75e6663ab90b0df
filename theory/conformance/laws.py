r"""Exact laws of a round rule (:mod:`theory.conformance.rules`) run over a Markov chain: the
joint law of (context, token) at every position, the deviation from the target that sets the
conformance harness's power (:mod:`sim.conformance`), whole-sequence laws and the token-wise
optimum of accepted drafts.

:func:`round_laws` runs a rule over a chain exactly: a round starting at position n in context
s drafts k = min(γ, T − n) tokens (the package's horizon convention, as in
:class:`theory.Speculative`), enumerates the V^k drafts (weighted by the law they are *drawn*
from, which a ``drafter`` may make differ from the law the verifier is told), and pushes the
round-start mass on; tokens that would fall at position T or later are not emitted (a round
that drafts to the horizon has no bonus).  It returns the joint law of (context, token) at
every position, from which :func:`deviation` computes the exact per-position TV from q, the
χ² divergence that sets the harness's power, and — for small chains — the exact TV of whole
sequences (:func:`sequence_law`).

:func:`expected_accepted` is the closed form of the token-wise optimum: the expected number of
accepted drafts of standard verification from every round start (Theorem 2 of the paper: no
unbiased token-wise verifier accepts more), the harness's efficiency denominator.

Everything is float64 and exact up to rounding (the rules are products and sums of the rows);
the enumeration costs O(S · V^γ) per position, refused beyond ``max_nodes``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from theory.conformance.rules import RoundRule, standard_rule
from theory.lossy import _given_start
from theory.models import MarkovLM, check_compatible
from theory.onestep import _tv_distance, safe_ratio

__all__ = [
    "DEFAULT_MAX_NODES",
    "MAX_ROW_FLOATS",
    "Deviation",
    "RoundLaws",
    "TooManyDraftPaths",
    "deviation",
    "expected_accepted",
    "round_laws",
    "sequence_law",
]

#: Largest number of enumerated draft paths of one position (all start contexts together).
DEFAULT_MAX_NODES = 1_000_000
#: Largest number of floats of the rows of one position's enumerated paths (paths·(k + 1)·V).
MAX_ROW_FLOATS = 50_000_000


class TooManyDraftPaths(ValueError):
    """The exact enumeration of a round's drafts would exceed its size limits."""


# ------------------------------------------------------------------ exact laws on a chain
def _check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an integer >= 1; got {window!r}")
    return int(window)


def _drafts_at(draft: MarkovLM, target: MarkovLM, position: int, contexts: np.ndarray,
               k: int, drafter, max_nodes: int):
    """Every draft path of length k from (position, contexts): (origin index into contexts,
    drafts (N, k), path probability (N,), contexts along the path (N, k + 1), p rows (N, k, V),
    q rows (N, k + 1, V)); the bonus row is uniform when position + k = T (never emitted)."""
    vocab = target.vocab_size
    support = max(int((np.asarray(draft.probs[position + i]) > 0).sum(axis=-1).max())
                  for i in range(k))
    if contexts.size * float(support) ** k > 64 * max_nodes:
        raise TooManyDraftPaths(f"up to {contexts.size} × {support}^{k} draft paths at position "
                         f"{position} exceed max_nodes = {max_nodes}; use a smaller window or "
                         "vocabulary")
    origin = np.arange(contexts.size)
    path = np.ones(contexts.size)
    along = contexts[:, None]
    drafts = np.zeros((contexts.size, 0), dtype=np.int64)
    for i in range(k):
        current = along[:, -1]
        if path.size * vocab > 64 * max_nodes:  # refuse before building the (paths, V) array
            raise TooManyDraftPaths(f"{path.size} draft paths × V = {vocab} at position {position} "
                             f"exceed max_nodes = {max_nodes}; use a smaller window or "
                             "vocabulary")
        law = np.asarray(draft.probs[position + i], dtype=np.float64)[current]
        drawn = law if drafter is None else drafter(law)
        weights = (path[:, None] * drawn).ravel()
        keep = np.flatnonzero(weights > 0)
        if keep.size > max_nodes or keep.size * (k + 1) * vocab > MAX_ROW_FLOATS:
            raise TooManyDraftPaths(
                f"{keep.size} draft paths at position {position} exceed max_nodes = "
                f"{max_nodes} (or their rows, {keep.size}·{k + 1}·{vocab} floats, exceed "
                f"MAX_ROW_FLOATS = {MAX_ROW_FLOATS}); use a smaller window or vocabulary")
        parent, token = np.divmod(keep, vocab)
        origin, path = origin[parent], weights[keep]
        drafts = np.concatenate([drafts[parent], token[:, None]], axis=1)
        following = target.next_context[along[parent, -1], token]
        along = np.concatenate([along[parent], following[:, None]], axis=1)
    p_rows = np.stack([np.asarray(draft.probs[position + i], dtype=np.float64)[along[:, i]]
                       for i in range(k)], axis=1)
    q_rows = np.empty((path.size, k + 1, vocab))
    for i in range(k + 1):
        if position + i < target.horizon:
            q_rows[:, i] = np.asarray(target.probs[position + i], dtype=np.float64)[along[:, i]]
        else:
            q_rows[:, i] = 1.0 / vocab
    return origin, drafts, path, along, p_rows, q_rows


@dataclass(frozen=True)
class RoundLaws:
    """Exact laws of a round rule run over a chain (see :func:`round_laws`)."""

    joint: np.ndarray  #: (T, S, V): P(context at n is s and token n is v)
    round_starts: np.ndarray  #: (T, S): P(a round starts at n in context s)
    accepted: np.ndarray  #: (T, S): E[accepted drafts | a round starts at (n, s)]; 0 where
    #: no round starts

    @property
    def context_marginals(self) -> np.ndarray:
        """(T, S): P(context at n is s)."""
        return self.joint.sum(axis=-1)

    @property
    def rounds_per_generation(self) -> float:
        """E[rounds of one generation of T tokens]."""
        return float(self.round_starts.sum())


def round_laws(draft: MarkovLM, target: MarkovLM, window: int, rule: RoundRule = standard_rule,
               *, drafter=None, max_nodes: int = DEFAULT_MAX_NODES) -> RoundLaws:
    r"""Run ``rule`` over the chain (draft, target) exactly, round by round.

    With :math:`m_n(s)` the probability that a round starts at position n in context s, each
    round drafts k = min(window, T − n) tokens from p (or from ``drafter(p)``), and

    .. math::  m_{n+j+1}(\mathrm{ctx}(d_{1:j}, v)) \mathrel{+}= m_n(s)\, P(d)\, E[j, v],

    while the emitted tokens d₁ … d_j, v add to the joint law of (context, token) at positions
    n … n + j (a token at position ≥ T is dropped; the generation ends).

    Parameters
    ----------
    draft, target : MarkovLM
        Compatible models (:func:`theory.check_compatible`).
    window : int >= 1
        γ, the drafts per round.
    rule : callable
        A round rule (:func:`standard_rule`, :func:`block_rule`, a failure mode's rule).
    drafter : callable, optional
        Maps draft rows to the law the drafts are really drawn from (the verifier is still
        given the unprocessed rows); None draws from p.
    max_nodes : int
        Refuse positions with more draft paths than this.

    Returns
    -------
    RoundLaws

    Examples
    --------
    >>> import numpy as np
    >>> from sim.models import random_pair
    >>> from theory.conformance import round_laws
    >>> draft, target = random_pair(3, 4, rng=0)
    >>> laws = round_laws(draft, target, window=2)
    >>> marginal = laws.joint / laws.joint.sum(-1, keepdims=True)
    >>> bool(np.allclose(marginal, target.probs))  # standard verification is lossless
    True
    """
    check_compatible(draft, target)
    window = _check_window(window)
    horizon, n_contexts, vocab = target.horizon, target.n_contexts, target.vocab_size
    joint = np.zeros((horizon, n_contexts, vocab))
    starts = np.zeros((horizon, n_contexts))
    accepted = np.zeros((horizon, n_contexts))
    starts[0] = np.asarray(target.start_distribution, dtype=np.float64)
    for n in range(horizon):
        contexts = np.flatnonzero(starts[n] > 0)
        if contexts.size == 0:
            continue
        k = min(window, horizon - n)
        origin, drafts, path, along, p_rows, q_rows = _drafts_at(
            draft, target, n, contexts, k, drafter, max_nodes)
        law = np.asarray(rule(drafts, p_rows, q_rows), dtype=np.float64)
        if law.shape != (path.size, k + 1, vocab):
            raise ValueError(f"rule returned shape {law.shape}; expected "
                             f"{(path.size, k + 1, vocab)}")
        reach = starts[n][contexts][origin] * path  # mass of each draft path
        per_j = law.sum(axis=-1)  # (N, k + 1)
        accepted[n, contexts] = np.bincount(origin, weights=path * (per_j @ np.arange(k + 1)),
                                            minlength=contexts.size)
        kept_beyond = np.cumsum(per_j[:, ::-1], axis=1)[:, ::-1]  # P(j ≥ i)
        for i in range(k):  # draft i + 1 emitted when j ≥ i + 1
            np.add.at(joint[n + i], (along[:, i], drafts[:, i]), reach * kept_beyond[:, i + 1])
        for j in range(k + 1):
            if n + j >= horizon:
                continue
            weights = reach[:, None] * law[:, j]  # (N, V)
            np.add.at(joint[n + j], along[:, j], weights)
            if n + j + 1 < horizon:
                following = target.next_context[along[:, j]]  # (N, V)
                np.add.at(starts[n + j + 1], following.ravel(), weights.ravel())
    return RoundLaws(joint, starts, accepted)


def expected_accepted(draft: MarkovLM, target: MarkovLM, window: int) -> np.ndarray:
    r"""E[accepted drafts of one round of standard verification] from every round start.

    A round at position n drafts k = min(γ, T − n) tokens, and

    .. math::  A_k(n, s) = \sum_x \min(p_n, q_n)(x \mid s)\,
               \big(1 + A_{k-1}(n + 1, \mathrm{next}(s, x))\big),\qquad A_0 = 0.

    By Theorem 2 of the paper no unbiased token-wise verifier accepts more from any state
    (block verification, which is not token-wise, can: Sun et al.).

    Parameters
    ----------
    draft, target : MarkovLM
        Compatible models.
    window : int >= 1
        γ.

    Returns
    -------
    ndarray (T, S)
        A_{min(γ, T − n)}(n, s).

    Examples
    --------
    >>> import numpy as np
    >>> from theory import MarkovLM
    >>> from theory.conformance import expected_accepted
    >>> p = MarkovLM.homogeneous([[0.5, 0.5]], 3, next_context=[[0, 0]])
    >>> q = MarkovLM.homogeneous([[0.9, 0.1]], 3, next_context=[[0, 0]])
    >>> expected_accepted(p, q, 2).round(4).tolist()  # β = 0.6: β + β², …, then β at the end
    [[0.96], [0.96], [0.6]]
    """
    check_compatible(draft, target)
    window = _check_window(window)
    horizon, n_contexts = target.horizon, target.n_contexts
    overlap = np.minimum(np.asarray(draft.probs, dtype=np.float64),
                         np.asarray(target.probs, dtype=np.float64))  # (T, S, V)
    following = target.next_context
    # table[k][n] = A_k(n, ·); positions ≥ T contribute 0
    table = np.zeros((window + 1, horizon + 1, n_contexts))
    for k in range(1, window + 1):
        for n in range(horizon - 1, -1, -1):
            table[k, n] = (overlap[n] * (1 + table[k - 1, n + 1][following])).sum(axis=-1)
    return np.stack([table[min(window, horizon - n), n] for n in range(horizon)])


def sequence_law(draft: MarkovLM, target: MarkovLM, window: int, rule: RoundRule = standard_rule,
                 *, drafter=None, max_sequences: int = 200_000) -> dict[tuple, float]:
    """The exact law of whole generations under ``rule``: {(start context, x₁, …, x_T):
    probability}, the start context drawn from the start law; for V^T ≤ ``max_sequences``.

    Parameters
    ----------
    draft, target, window, rule, drafter :
        As for :func:`round_laws`.
    max_sequences : int
        Refuse chains with more than this many sequences.

    Examples
    --------
    >>> from sim.models import random_pair
    >>> from theory.conformance import sequence_law
    >>> draft, target = random_pair(2, 3, rng=1)
    >>> law = sequence_law(draft, target, window=2)
    >>> len(law), round(float(sum(law.values())), 12)  # 2 prompts × 2³ sequences
    (16, 1.0)
    >>> tokens = (0, 1, 1)  # lossless: summed over prompts, the target's probability
    >>> bool(abs(law[(0, *tokens)] + law[(1, *tokens)] - target.sequence_probability(tokens))
    ...      < 1e-12)
    True
    """
    check_compatible(draft, target)
    window = _check_window(window)
    horizon, vocab = target.horizon, target.vocab_size
    if vocab ** horizon > max_sequences:
        raise ValueError(f"V^T = {vocab ** horizon} sequences exceed max_sequences = "
                         f"{max_sequences}")
    outcomes: dict[tuple[int, int], list[tuple[tuple, float]]] = {}

    def round_outcomes(n, s):
        if (n, s) not in outcomes:
            k = min(window, horizon - n)
            _, drafts, path, _, p_rows, q_rows = _drafts_at(
                draft, target, n, np.array([s]), k, drafter, DEFAULT_MAX_NODES)
            law = np.asarray(rule(drafts, p_rows, q_rows), dtype=np.float64)
            merged: dict[tuple, float] = {}
            for row in range(path.size):
                for j, v in zip(*np.nonzero(law[row]), strict=True):
                    tokens = (*drafts[row, :j].tolist(), int(v))[:horizon - n]
                    merged[tokens] = merged.get(tokens, 0.0) + path[row] * law[row, j, v]
            outcomes[n, s] = list(merged.items())
        return outcomes[n, s]

    start = np.asarray(target.start_distribution, dtype=np.float64)
    frontier = {((s,), int(s)): float(start[s]) for s in np.flatnonzero(start > 0)}
    finished: dict[tuple, float] = {}
    while frontier:
        following: dict[tuple, float] = {}
        for (prefix, context), mass in frontier.items():
            for tokens, weight in round_outcomes(len(prefix) - 1, context):
                sequence, state = prefix + tokens, context
                for token in tokens:
                    state = int(target.next_context[state, token])
                bucket = finished if len(sequence) == horizon + 1 else following
                key = sequence if bucket is finished else (sequence, state)
                bucket[key] = bucket.get(key, 0.0) + mass * weight
        frontier = following
    return finished


def _sequence_tv(law: dict[tuple, float], target: MarkovLM) -> float:
    """TV between a law of (start, tokens) keys and the target's, given the start (averaged
    over the start law)."""
    sequences = np.array(list(itertools.product(range(target.vocab_size),
                                                repeat=target.horizon)))
    total = 0.0
    for weight, started in zip(*_given_start(target), strict=True):
        s = int(started.start)
        reference = np.asarray(started.sequence_probability(sequences), dtype=np.float64)
        observed = np.array([law.get((s, *row), 0.0) for row in sequences.tolist()])
        total += np.abs(observed - weight * reference).sum() / 2
    return float(total)


@dataclass(frozen=True)
class Deviation:
    """How far a rule's output is from the target, exactly (see :func:`deviation`)."""

    per_position_tv: np.ndarray  #: (T,): Σ_s P(ctx n = s) TV(law of token n | s, qₙ(·|s))
    max_tv: float  #: the largest TV over reachable (n, s)
    noncentrality: float  #: Σ_{n,s} P(ctx n = s) χ²(law | s ‖ qₙ(·|s)) per generation
    degrees_of_freedom: int  #: Σ over reachable (n, s) of (|supp qₙ(·|s)| − 1)
    rounds_per_generation: float  #: E[rounds] of one generation under the rule
    tokens_per_generation: int  #: T
    sequence_tv: float | None  #: TV of whole generations (None: too many to enumerate)
    zero_target_tokens: float  #: E[tokens emitted where the target gives 0] per generation
    context_marginals: np.ndarray  #: (T, S): P(context at n is s) under the rule
    conditional: np.ndarray  #: (T, S, V): law of token n given context s (0 where unreachable)

    @property
    def noncentrality_per_round(self) -> float:
        return self.noncentrality / self.rounds_per_generation


def deviation(draft: MarkovLM, target: MarkovLM, window: int, rule: RoundRule = standard_rule,
              *, drafter=None, max_sequences: int = 200_000) -> Deviation:
    r"""Exact distance of a rule's output from the target q, per position and per sequence.

    From :func:`round_laws`, with :math:`J_n(s, v)` the joint law of (context, token) at n and
    :math:`μ_n(s) = \sum_v J_n(s, v)`:

    * per-position TV :math:`\sum_s μ_n(s)\, \mathrm{TV}(J_n(s, \cdot)/μ_n(s), q_n(\cdot|s))` —
      the TV of the pooled law at (n, s) that the harness's χ² test sees;
    * the noncentrality per generation :math:`λ = \sum_{n,s} μ_n(s)\, χ^2(J_n(s,\cdot)/μ_n(s)
      \,\|\, q_n(\cdot|s))` — with G generations the harness's Pearson statistic is
      approximately noncentral χ² with noncentrality G·λ (infinite when the rule emits a
      token q excludes: the harness's support check then fails with certainty once it is seen);
    * the exact TV of whole generations when V^T ≤ ``max_sequences``.

    Parameters
    ----------
    draft, target, window, rule, drafter :
        As for :func:`round_laws`.
    max_sequences : int
        Enumerate whole sequences (for ``sequence_tv``) only up to this many; 0 skips it.

    Returns
    -------
    Deviation

    Examples
    --------
    >>> from sim.models import random_pair
    >>> from theory.conformance import deviation, resample_from_target_rule
    >>> draft, target = random_pair(3, 4, rng=0)
    >>> deviation(draft, target, 2).max_tv < 1e-12  # standard verification: lossless
    True
    >>> wrong = deviation(draft, target, 2, resample_from_target_rule)
    >>> bool(wrong.max_tv > 0.01 and wrong.sequence_tv > wrong.max_tv)
    True
    """
    laws = round_laws(draft, target, window, rule, drafter=drafter)
    mu = laws.context_marginals
    q = np.asarray(target.probs, dtype=np.float64)
    reachable = mu > 1e-15
    conditional = safe_ratio(laws.joint, mu[..., None])
    distance = np.where(reachable, _tv_distance(conditional, q), 0.0)
    outside = (q == 0) & (conditional > 1e-15) & reachable[..., None]
    chi2 = (safe_ratio((conditional - q) ** 2, q)).sum(axis=-1)
    noncentrality = np.inf if outside.any() else float((mu * chi2).sum())
    support = (q > 0).sum(axis=-1) - 1
    sequence_tv = None
    if target.vocab_size ** target.horizon <= max_sequences:
        sequence_tv = _sequence_tv(sequence_law(draft, target, window, rule, drafter=drafter,
                                                max_sequences=max_sequences), target)
    return Deviation(
        per_position_tv=(mu * distance).sum(axis=-1),
        max_tv=float(distance.max()),
        noncentrality=noncentrality,
        degrees_of_freedom=int(support[reachable].sum()),
        rounds_per_generation=laws.rounds_per_generation,
        tokens_per_generation=target.horizon,
        sequence_tv=sequence_tv,
        zero_target_tokens=float((laws.joint * (q == 0)).sum()),
        context_marginals=mu,
        conditional=np.where(reachable[..., None], conditional, 0.0),
    )
