r"""Exact laws of one-round verification rules on Markov chains: the theory behind the
conformance harness (:mod:`sim.conformance`) and its table of failure modes.

A **round rule** is the exact law of what a single-draft verifier emits in one round, given
the drafts.  With drafts :math:`d_1 … d_k`, the rows :math:`p_i = p(\cdot \mid d_{<i})` the
verifier is *told* the drafts came from and the target rows :math:`q_1 … q_{k+1}` (row k + 1 at
the bonus position), a rule returns

.. math::  E[j, v] = P(\text{the round emits } d_1 … d_j \text{ and then } v),
           \qquad 0 \le j \le k,\ \sum_{j, v} E[j, v] = 1,

for N rounds at once (arrays (N, k), (N, k, V), (N, k + 1, V) → (N, k + 1, V)).  Every
verifier of the harness's convention emits an accepted prefix and then one token (a correction,
or the bonus when j = k), so E is its whole law.  Rules here: :func:`standard_rule`
(Leviathan et al. / the paper's Algorithm 1), :func:`block_rule` (Sun et al., ICLR 2025) and
the failure modes of :data:`FAILURE_MODES` — bugs that implementations ship.

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theory.algorithms import truncate
from theory.lossy import _given_start
from theory.models import MarkovLM, check_compatible
from theory.onestep import _acceptance, _residual, _tv_distance, positive_part, safe_ratio

__all__ = [
    "DEFAULT_MAX_NODES",
    "FAILURE_MODES",
    "MAX_ROW_FLOATS",
    "Deviation",
    "FailureMode",
    "RoundLaws",
    "TooManyDraftPaths",
    "block_rule",
    "bonus_from_wrong_row_rule",
    "deviation",
    "expected_accepted",
    "processed_rule",
    "resample_from_target_rule",
    "round_laws",
    "round_to",
    "rounded_rule",
    "sequence_law",
    "standard_rule",
    "temperature",
    "top_k",
    "top_p",
    "verification_rule",
]

#: Largest number of enumerated draft paths of one position (all start contexts together).
DEFAULT_MAX_NODES = 1_000_000
#: Largest number of floats of the rows of one position's enumerated paths (paths·(k + 1)·V).
MAX_ROW_FLOATS = 50_000_000


class TooManyDraftPaths(ValueError):
    """The exact enumeration of a round's drafts would exceed its size limits."""

RoundRule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------ the rules
def _picked(rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """rows[..., i, tokens[..., i]]: the probability of each draft under its row."""
    return np.take_along_axis(rows, tokens[..., None], axis=-1)[..., 0]


def _token_wise(accept: np.ndarray, rejection: np.ndarray, bonus: np.ndarray) -> np.ndarray:
    """E for a token-wise verifier: draft i kept with probability ``accept[:, i]`` (N, k),
    the first failure at i emits from ``rejection[:, i]`` (N, k, V), all kept emits from
    ``bonus`` (N, V)."""
    n_rounds, k = accept.shape
    survive = np.concatenate([np.ones((n_rounds, 1)), np.cumprod(accept, axis=1)], axis=1)
    law = np.empty((n_rounds, k + 1, rejection.shape[-1]))
    law[:, :k] = (survive[:, :k] * (1 - accept))[..., None] * rejection
    law[:, k] = survive[:, k, None] * bonus
    return law


def standard_rule(drafts, p_rows, q_rows) -> np.ndarray:
    r"""Standard speculative verification: keep draft i with probability min(1, qᵢ/pᵢ)(dᵢ); at
    the first failure emit from [qᵢ − pᵢ]₊ normalized; with every draft kept emit the bonus
    from q_{k+1}.  Lossless.

    Parameters
    ----------
    drafts : int array (N, k)
    p_rows : float array (N, k, V)
        The law each draft was drawn from.
    q_rows : float array (N, k + 1, V)
        The target at each drafted position and at the bonus position.

    Returns
    -------
    ndarray (N, k + 1, V)
        E[·, j, v] = P(emit d₁ … d_j, then v).

    Examples
    --------
    >>> import numpy as np
    >>> from theory.conformance import standard_rule
    >>> p, q = np.array([[[0.5, 0.5]]]), np.array([[[0.9, 0.1], [0.2, 0.8]]])
    >>> standard_rule(np.array([[1]]), p, q).round(3).tolist()  # draft 1: kept w.p. 0.2
    [[[0.8, 0.0], [0.04, 0.16]]]
    """
    return _token_wise(_picked(_acceptance(p_rows, q_rows[:, :-1]), drafts),
                       _residual_or_target(p_rows, q_rows[:, :-1]), q_rows[:, -1])


def _residual_or_target(p_rows, q_rows):
    """[q − p]₊ normalized; q normalized where there is no residual (for valid laws rejection
    then has mass 0; for the rows of a buggy verifier it may not, and the law stays a law)."""
    residual = _residual(p_rows, q_rows)
    empty = residual.sum(axis=-1, keepdims=True) == 0
    return np.where(empty, q_rows / q_rows.sum(axis=-1, keepdims=True), residual)


def _ratio_test(p_rows, q_rows):
    """P(u < q/p) for u ∼ U(0, 1), as an implementation computes it from possibly
    inconsistent rows: min(1, q/p); q/0 = ∞ is kept, 0/0 (NaN) is rejected."""
    kept = np.minimum(1.0, safe_ratio(q_rows, p_rows))
    return np.where(p_rows == 0, (q_rows > 0).astype(np.float64), kept)


def verification_rule(algorithm) -> RoundRule:
    """The round rule of a token-wise verifier of the package (:class:`theory.Speculative` or a
    subclass: class ℱ, lossy, typical, truncated, a user's own): draft i is kept with the
    algorithm's acceptance b(dᵢ), a failure emits from its rejection law 𝒫, and the bonus comes
    from its :meth:`~theory.Speculative.bonus_law`.  The window is the harness's; the
    algorithm's own ``window`` is ignored.

    Parameters
    ----------
    algorithm : theory.Speculative
        Any token-wise verifier of the package.

    Examples
    --------
    >>> import numpy as np
    >>> from theory import UnbiasedSpeculative
    >>> from theory.conformance import standard_rule, verification_rule
    >>> p, q = np.array([[[0.5, 0.5]]]), np.array([[[0.9, 0.1], [0.2, 0.8]]])
    >>> half = verification_rule(UnbiasedSpeculative.scaled(0.5))(np.array([[0]]), p, q)
    >>> half.sum(-1).round(3).tolist(), standard_rule(np.array([[0]]), p, q).sum(-1).tolist()
    ([[0.5, 0.5]], [[0.0, 1.0]])
    """
    from theory.algorithms import Speculative
    from theory.verification import checked_verification

    if not isinstance(algorithm, Speculative):
        raise TypeError(f"algorithm must be a token-wise verifier (theory.Speculative or a "
                        f"subclass); got {algorithm!r}")

    def rule(drafts, p_rows, q_rows):
        vocab = p_rows.shape[-1]
        accept, law = checked_verification(algorithm, p_rows.reshape(-1, vocab),
                                           q_rows[:, :-1].reshape(-1, vocab))
        accept = np.asarray(accept, dtype=np.float64).reshape(p_rows.shape)
        law = np.asarray(law, dtype=np.float64).reshape(p_rows.shape)
        bonus = np.asarray(algorithm.bonus_law(q_rows[:, -1]), dtype=np.float64)
        return _token_wise(_picked(accept, drafts), law, bonus)

    rule.__qualname__ = f"verification_rule({algorithm!r})"
    return rule


def resample_from_target_rule(drafts, p_rows, q_rows) -> np.ndarray:
    """Bug: on rejection, resample from q instead of the residual [q − p]₊.

    Parameters
    ----------
    drafts, p_rows, q_rows :
        As for :func:`standard_rule` (and the result).
    """
    return _token_wise(_picked(_acceptance(p_rows, q_rows[:, :-1]), drafts), q_rows[:, :-1],
                       q_rows[:, -1])


def bonus_from_wrong_row_rule(drafts, p_rows, q_rows) -> np.ndarray:
    """Bug: the bonus token is drawn from the last *drafted* position's target row q_k instead
    of q_{k+1} (an off-by-one in the row index).

    Parameters
    ----------
    drafts, p_rows, q_rows :
        As for :func:`standard_rule` (and the result).
    """
    return _token_wise(_picked(_acceptance(p_rows, q_rows[:, :-1]), drafts),
                       _residual_or_target(p_rows, q_rows[:, :-1]), q_rows[:, -2])


def processed_rule(process: Callable[[np.ndarray], np.ndarray]) -> RoundRule:
    """Bug: the verifier applies ``process`` (top-k, top-p, temperature) to the draft rows it
    is given before the ratio and the residual, although the drafts came from the unprocessed
    rows.  A draft the processed law excludes (p̂(d) = 0) is kept when q(d) > 0 (q/0 = ∞) and
    rejected when q(d) = 0 (0/0), as a test u < q/p̂ in floating point does.  The reverse
    mismatch — drafts from a processed law, verification with the raw one — is
    :func:`round_laws`' ``drafter`` with :func:`standard_rule`.

    Parameters
    ----------
    process : callable
        Maps rows (..., V) to processed rows (:func:`top_k`, :func:`top_p`, :func:`temperature`).

    Examples
    --------
    >>> import numpy as np
    >>> from theory.conformance import processed_rule, top_k
    >>> rule = processed_rule(top_k(1))
    >>> rule(np.array([[0]]), np.array([[[0.6, 0.4]]]), np.array([[[0.3, 0.7], [1, 0]]]))[0, 0]
    array([0. , 0.7])
    """
    def rule(drafts, p_rows, q_rows):
        told = process(p_rows)
        return _token_wise(_picked(_ratio_test(told, q_rows[:, :-1]), drafts),
                           _residual_or_target(told, q_rows[:, :-1]), q_rows[:, -1])

    rule.__qualname__ = f"processed_rule({getattr(process, '__qualname__', process)})"
    return rule


def round_to(values, dtype: str) -> np.ndarray:
    """``values`` rounded to the nearest ``"bfloat16"`` or ``"float16"`` (ties to even), as
    float64.

    Parameters
    ----------
    values : array_like
    dtype : "bfloat16" or "float16"

    Examples
    --------
    >>> from theory.conformance import round_to
    >>> round_to([0.1, 1 / 3], "bfloat16").tolist()
    [0.10009765625, 0.333984375]
    """
    values = np.asarray(values, dtype=np.float64)
    if dtype == "float16":
        return values.astype(np.float16).astype(np.float64)
    if dtype != "bfloat16":
        raise ValueError(f"dtype must be 'bfloat16' or 'float16'; got {dtype!r}")
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def rounded_rule(dtype: str) -> RoundRule:
    """Bug: p and q rounded to ``dtype`` ("bfloat16" or "float16") before the ratio, the
    residual and the bonus draw (each law renormalized when sampled, as a multinomial draw
    does; a rejection whose rounded residual is empty draws from the rounded q).

    Parameters
    ----------
    dtype : "bfloat16" or "float16"

    Examples
    --------
    >>> import numpy as np
    >>> from theory.conformance import rounded_rule
    >>> p, q = np.array([[[0.5, 0.5]]]), np.array([[[0.7, 0.3], [0.3, 0.7]]])
    >>> # bf16: 0.3 → 0.30078125, 0.7 → 0.69921875; kept w.p. 0.30078125 / 0.5, bonus 0.69921875
    >>> float(rounded_rule("bfloat16")(np.array([[1]]), p, q)[0, 1, 1])
    0.420623779296875
    """
    round_to(0.0, dtype)  # validate now

    def rule(drafts, p_rows, q_rows):
        p_low, q_low = round_to(p_rows, dtype), round_to(q_rows, dtype)
        bonus = q_low[:, -1] / q_low[:, -1].sum(axis=-1, keepdims=True)
        return _token_wise(_picked(_ratio_test(p_low, q_low[:, :-1]), drafts),
                           _residual_or_target(p_low, q_low[:, :-1]), bonus)

    rule.__qualname__ = f"rounded_rule({dtype!r})"
    return rule


def block_rule(drafts, p_rows, q_rows, *, shared_uniform: bool = False) -> np.ndarray:
    r"""Block verification (Sun et al., arXiv:2403.10444, Algorithm 2), the notation of
    :class:`theory.BlockSpeculative`: π₀ = 1, πᵢ = min(1, πᵢ₋₁ qᵢ(dᵢ)/pᵢ(dᵢ)),
    rᵢ = Σₓ[πᵢ q_{i+1}(x) − p_{i+1}(x)]₊, hᵢ = rᵢ/(rᵢ + 1 − πᵢ) (1 ≤ i < k), h_k = π_k, h₀ = 1;
    τ = max{i : ηᵢ ≤ hᵢ}, then the residual [π_τ q_{τ+1} − p_{τ+1}]₊ (τ < k) or the bonus.

    With independent η's, P(τ = i) = hᵢ Πⱼ>ᵢ (1 − hⱼ) — lossless.  ``shared_uniform=True`` is
    the bug of one η for the whole block: P(τ = i) = [hᵢ − maxⱼ>ᵢ hⱼ]₊.

    Parameters
    ----------
    drafts, p_rows, q_rows :
        As for :func:`standard_rule` (and the result).
    shared_uniform : bool
        One η for the block (the bug) instead of independent ones.
    """
    n_rounds, k = drafts.shape
    ratio = safe_ratio(_picked(q_rows[:, :-1], drafts), _picked(p_rows, drafts))
    ratio = np.where(_picked(p_rows, drafts) == 0, 1.0, ratio)
    pi = np.ones((n_rounds, k + 1))
    for i in range(1, k + 1):
        pi[:, i] = np.minimum(1.0, pi[:, i - 1] * ratio[:, i - 1])
    # residual after i kept drafts: [π_i q_{i+1} − p_{i+1}]₊ (rows index i, 0-based)
    residual = positive_part(pi[:, :k, None] * q_rows[:, :k] - p_rows)
    mass = residual.sum(axis=-1)
    h = np.ones((n_rounds, k + 1))
    denominator = mass[:, 1:] + 1 - pi[:, 1:k]
    h[:, 1:k] = np.where(denominator > 0, safe_ratio(mass[:, 1:], denominator), 1.0)
    h[:, k] = pi[:, k]
    if shared_uniform:
        later_max = np.zeros((n_rounds, k + 1))
        for i in range(k - 1, -1, -1):
            later_max[:, i] = np.maximum(later_max[:, i + 1], h[:, i + 1])
        tau = positive_part(h - later_max)
    else:
        none_later = np.concatenate(
            [np.cumprod((1 - h)[:, :0:-1], axis=1)[:, ::-1], np.ones((n_rounds, 1))], axis=1)
        tau = h * none_later
    law = np.empty((n_rounds, k + 1, q_rows.shape[-1]))
    normalized = safe_ratio(residual, mass[..., None])
    law[:, :k] = tau[:, :k, None] * np.where(mass[..., None] > 0, normalized, q_rows[:, :k])
    law[:, k] = tau[:, k, None] * q_rows[:, k]
    return law


# ------------------------------------------------------------------ processing of rows
def top_k(k: int) -> Callable[[np.ndarray], np.ndarray]:
    """Row processor: keep the ``k`` most likely tokens, renormalize (:func:`theory.algorithms.
    truncate`).

    Parameters
    ----------
    k : int >= 1
    """
    def process(rows):
        return truncate(np.asarray(rows, dtype=np.float64), top_k=k)

    process.__qualname__ = f"top_k({k})"
    return process


def top_p(mass: float) -> Callable[[np.ndarray], np.ndarray]:
    """Row processor: nucleus sampling at ``mass`` (:func:`theory.algorithms.truncate`).

    Parameters
    ----------
    mass : float in (0, 1]
    """
    def process(rows):
        return truncate(np.asarray(rows, dtype=np.float64), top_p=mass)

    process.__qualname__ = f"top_p({mass})"
    return process


def temperature(value: float) -> Callable[[np.ndarray], np.ndarray]:
    """Row processor: p^(1/τ) renormalized (softmax of the log-probabilities over τ).

    Parameters
    ----------
    value : float > 0
        τ.
    """
    def process(rows):
        rows = np.asarray(rows, dtype=np.float64)
        with np.errstate(divide="ignore"):
            logits = np.log(rows) / value
        logits -= logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=-1, keepdims=True)

    process.__qualname__ = f"temperature({value})"
    return process


# ------------------------------------------------------------------ the failure modes
@dataclass(frozen=True)
class FailureMode:
    """A known implementation bug: its exact round rule and, for the mismatch of drafting and
    verification laws, the processor of the rows the drafts are really drawn from."""

    name: str
    description: str
    rule: RoundRule
    drafter: Callable[[np.ndarray], np.ndarray] | None = None
    window: int | None = None  #: the window the bug needs (block verification: ≥ 2)


#: The failure modes quantified in the README's table (``sim.conformance`` samples them).
FAILURE_MODES: dict[str, FailureMode] = {mode.name: mode for mode in (
    FailureMode("resample_from_target", "on rejection, resample from q, not [q − p]₊",
                resample_from_target_rule),
    FailureMode("bonus_from_wrong_row", "bonus token from q at the last draft's row",
                bonus_from_wrong_row_rule),
    FailureMode("drafts_top_k", "drafts from top-2 p̂, verifier given p", standard_rule,
                drafter=top_k(2)),
    FailureMode("drafts_top_p", "drafts from top-p(0.8) p̂, verifier given p", standard_rule,
                drafter=top_p(0.8)),
    FailureMode("drafts_temperature", "drafts from p at temperature 0.7, verifier given p",
                standard_rule, drafter=temperature(0.7)),
    FailureMode("verifier_top_k", "drafts from p, verifier given top-2 p̂",
                processed_rule(top_k(2))),
    FailureMode("verifier_temperature", "drafts from p, verifier given p at temperature 0.7",
                processed_rule(temperature(0.7))),
    FailureMode("bfloat16", "p and q rounded to bfloat16 before the ratio",
                rounded_rule("bfloat16")),
    FailureMode("float16", "p and q rounded to float16 before the ratio",
                rounded_rule("float16")),
    FailureMode("block_shared_uniform", "block verification with one uniform for the block",
                lambda d, p, q: block_rule(d, p, q, shared_uniform=True), window=3),
)}


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

