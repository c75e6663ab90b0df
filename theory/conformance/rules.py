r"""Round rules: the exact law of what a single-draft verifier emits in one round, for the
standard and block verifiers and for the failure modes (:data:`FAILURE_MODES`) of the
conformance harness (:mod:`sim.conformance`).

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
the failure modes of :data:`FAILURE_MODES` — bugs that implementations ship.  The rows'
processors (:func:`top_k`, :func:`top_p`, :func:`temperature`, :func:`floor`) build the mismatch
modes.  The exact laws of a rule run over a whole chain are in :mod:`theory.conformance.laws`.

Everything is float64 and exact up to rounding (the rules are products and sums of the rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theory.lossy_zoo import truncate
from theory.onestep import _acceptance, _residual, positive_part, safe_ratio
from theory.speculative import Speculative
from theory.verification import checked_verification

__all__ = [
    "FAILURE_MODES",
    "PRECISION_FAILURES",
    "FailureMode",
    "RoundRule",
    "block_rule",
    "bonus_from_wrong_row_rule",
    "floor",
    "processed_rule",
    "resample_from_target_rule",
    "round_to",
    "rounded_rule",
    "standard_rule",
    "temperature",
    "top_k",
    "top_p",
    "verification_rule",
]

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
    rule.token_wise = True
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
    :func:`~theory.conformance.laws.round_laws`' ``drafter`` with :func:`standard_rule`.

    Parameters
    ----------
    process : callable
        Maps rows (..., V) to processed rows (:func:`top_k`, :func:`top_p`, :func:`temperature`,
        :func:`floor`).

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
    rule.token_wise = True
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
    """Bug: the ratio test computed in ``dtype`` ("bfloat16" or "float16"): p and q rounded to
    ``dtype``, the ratio q̃/p̃ rounded to ``dtype`` as well (a division of two such tensors
    returns one), and the residual and the bonus drawn from the rounded rows (each law
    renormalized when sampled, as a multinomial draw does; a rejection whose rounded residual
    is empty draws from the rounded q).  The uniform stays in float64.

    A ratio within half a unit in the last place of 1 — 2⁻⁹ in bfloat16, 2⁻¹² in float16 —
    rounds to 1: the draft is always kept, and its rejection mass never reaches the residual.
    :func:`sim.conformance.precision_suite` is built on such near-ties.

    Parameters
    ----------
    dtype : "bfloat16" or "float16"

    Examples
    --------
    >>> import numpy as np
    >>> from theory.conformance import rounded_rule
    >>> p, q = np.array([[[0.5, 0.5]]]), np.array([[[0.7, 0.3], [0.3, 0.7]]])
    >>> # bf16: 0.3 → 0.30078125, 0.7 → 0.69921875; kept w.p. 0.30078125 / 0.5 = 0.6015625
    >>> # (a bfloat16 number), then the bonus 0.69921875
    >>> float(rounded_rule("bfloat16")(np.array([[1]]), p, q)[0, 1, 1])
    0.420623779296875
    >>> p, q = np.array([[[1.0, 0.0]]]), np.array([[[0.999, 0.001], [0.5, 0.5]]])
    >>> rounded_rule("bfloat16")(np.array([[0]]), p, q)[0, 0].tolist()  # never rejects
    [0.0, 0.0]
    >>> rounded_rule("float16")(np.array([[0]]), p, q)[0, 0].round(6).tolist()
    [0.0, 0.000977]
    """
    round_to(0.0, dtype)  # validate now

    def rule(drafts, p_rows, q_rows):
        p_low, q_low = round_to(p_rows, dtype), round_to(q_rows, dtype)
        bonus = q_low[:, -1] / q_low[:, -1].sum(axis=-1, keepdims=True)
        ratio = round_to(_ratio_test(p_low, q_low[:, :-1]), dtype)
        return _token_wise(_picked(ratio, drafts), _residual_or_target(p_low, q_low[:, :-1]),
                           bonus)

    rule.__qualname__ = f"rounded_rule({dtype!r})"
    rule.token_wise = True
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
    """Row processor: keep the ``k`` most likely tokens, renormalize (:func:`theory.lossy_zoo.
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
    """Row processor: nucleus sampling at ``mass`` (:func:`theory.lossy_zoo.truncate`).

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


def floor(value: float) -> Callable[[np.ndarray], np.ndarray]:
    """Row processor: ``value`` added to every entry, renormalized — (p + ε) / (1 + V ε), the
    ``+ eps`` then ``/ sum`` of real code.  It mixes the row with the uniform law at weight
    V ε / (1 + V ε), so on a large vocabulary a tiny ε scales every probability by
    ≈ 1 − V ε: a verifier given the floored draft row sees every ratio q/p̂ raised by that
    factor, and near-ties within ≈ V ε of 1 are always kept.

    Parameters
    ----------
    value : float >= 0
        ε.

    Examples
    --------
    >>> from theory.conformance import floor
    >>> floor(0.25)([[1.0, 0.0]]).tolist()
    [[0.8333333333333334, 0.16666666666666666]]
    """
    if isinstance(value, bool) or not np.isfinite(value) or value < 0:
        raise ValueError(f"value must be a finite number >= 0; got {value!r}")

    def process(rows):
        rows = np.asarray(rows, dtype=np.float64)
        return (rows + value) / (1 + rows.shape[-1] * value)

    process.__qualname__ = f"floor({value:g})"
    return process


# ------------------------------------------------------------------ the failure modes
#: Rules built by ``_token_wise`` carry ``token_wise = True``: the first token a round emits
#: depends on its first draft only (kept, or drawn from the first rejection law), so the law of
#: a round's first token is the same whatever the window.  Block verification is not.
for _rule in (standard_rule, resample_from_target_rule, bonus_from_wrong_row_rule):
    _rule.token_wise = True
del _rule

@dataclass(frozen=True)
class FailureMode:
    """A known implementation bug: its exact round rule and, for the mismatch of drafting and
    verification laws, the processor of the rows the drafts are really drawn from."""

    name: str
    description: str
    rule: RoundRule
    drafter: Callable[[np.ndarray], np.ndarray] | None = None
    window: int | None = None  #: the window the bug needs (block verification: ≥ 2)


#: The failure modes quantified in the README's tables (``sim.conformance`` samples them).
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
    FailureMode("bfloat16", "ratio test in bfloat16: p, q and q/p rounded",
                rounded_rule("bfloat16")),
    FailureMode("float16", "ratio test in float16: p, q and q/p rounded",
                rounded_rule("float16")),
    FailureMode("draft_floor", "verifier given the draft row floored at 1e-6, (p + ε)/(1 + Vε)",
                processed_rule(floor(1e-6))),
    FailureMode("block_shared_uniform", "block verification with one uniform for the block",
                lambda d, p, q: block_rule(d, p, q, shared_uniform=True), window=3),
)}

#: The failure modes of floating-point precision: too small on ordinary pairs for the default
#: suite's size, caught on :func:`sim.conformance.precision_suite` (the README's precision
#: table); the others are the logic bugs of the README's failure-mode table.
PRECISION_FAILURES: tuple[str, ...] = ("bfloat16", "float16", "draft_floor")
