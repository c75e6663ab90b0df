r"""Lossy verification by over-acceptance, :class:`LossySpeculative`, and the
quality–acceleration trade-off of lossy verification (the paper's §4, Theorems 4–5).

**The family.**  :class:`LossySpeculative` (Decoding-OPT and Decoding-UNO) is a token-wise
position-level verifier (a subclass of :class:`theory.Speculative`); the practitioners' lossy
rules are in :mod:`theory.lossy_zoo`.

**One position.**  A verifier accepts a draft x̃ ∼ p with probability b(x̃) and otherwise emits
a token from 𝒫; it rejects with probability ρ = Σ_x (1 − b(x)) p(x) and emits
o = b p + ρ 𝒫.

*Theorem 4.*  For fixed b, the least possible TV(o, q) over rejection laws 𝒫 is

.. math::  \mathrm{Loss}^*_{TV}(b) = \tfrac12 \sum_x |q(x) - b(x)p(x)|
           - \tfrac12 \sum_x (1 - b(x))\,p(x),

attained exactly by the 𝒫 with 𝒫 = 0 on A₋ = {q < b p} and 0 ≤ ρ𝒫 ≤ q − b p on
A₊ = {q > b p} (possible because Σ_{A₊}(q − bp) = ρ + Σ_{A₋}(bp − q) ≥ ρ).  The canonical
member is 𝒫* = [q − b p]₊ / Σ[q − b p]₊ (Decoding-OPT); for b = min(1, q/p) it is the
speculative residual [q − p]₊.

*Theorem 5.*  For min(1, q/p) ≤ b ≤ 1 (over-acceptance) the pointwise identity
|q − bp| + (1 − b)p = |p − q| (valid when bp ≥ min(p, q)) gives

.. math::  ρ(b) + \mathrm{Loss}^*_{TV}(b) = \mathrm{TV}(p, q),

a straight Pareto line: the least loss at rejection probability ρ is (TV − ρ)₊.  Both theorems
are also verified by linear programs over all (b, 𝒫) (:func:`tv_loss_lp`,
:func:`pareto_front_lp`).

**Sequences.**  Lossy decoding that drafts to the horizon emits, at every position, from
oₙ(·|s) = bₙpₙ + ρₙ𝒫ₙ, so its output is itself a Markov chain over the same contexts
(:func:`output_model`).  Its distance to the target: KL by the chain rule
(:func:`sequence_kl`), TV exactly by enumeration for small V^T (:func:`sequence_tv`), and the
subadditive bound TV ≤ Σₙ E_{s∼μ^o_n}[TV(oₙ(·|s), qₙ(·|s))] (:func:`sequence_tv_bound`).

**Any token-wise verifier against the line.**  :func:`verifier_tradeoff` places a verifier
(its ``verification(p, q)`` = (b, 𝒫)) per position: ρ, Loss_TV = TV(o, q), and the gap
ρ + Loss_TV − TV(p, q) ≥ 0 (Theorem 5: zero for Decoding-OPT);
:func:`chain_tradeoff` averages them along the verifier's own output chain.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from theory._arrays import as_scalar, checked_acceptance, checked_pair, checked_unit_interval
from theory.algorithms import Algorithm
from theory.models import MarkovLM, check_compatible
from theory.onestep import _acceptance, _tv_distance, positive_part, safe_ratio
from theory.speculative import Speculative

__all__ = [
    "LossySpeculative",
    "VerifierTradeoff",
    "chain_tradeoff",
    "is_optimal_rejection_distribution",
    "optimal_rejection_distribution",
    "output_model",
    "over_acceptance",
    "pareto_front",
    "pareto_front_lp",
    "rejection_probability",
    "sequence_kl",
    "sequence_tv",
    "sequence_tv_bound",
    "tv_loss",
    "tv_loss_lp",
    "verifier_tradeoff",
]


_REJECTION_RULES = ("opt", "target")


@dataclass(frozen=True, init=False, repr=False)
class LossySpeculative(Speculative):
    r"""Lossy speculative decoding by over-acceptance (the paper's §4), drafting to the horizon.

    A draft x̃ ∼ p is accepted with probability b(x̃) = min(1, (q(x̃) + ε)/p(x̃)) ≥ min(1, q/p);
    on rejection the token is drawn from

    * ``rejection="opt"`` (Decoding-OPT): 𝒫* = [q − b p]₊ / Σ[q − b p]₊, the canonical member
      of Theorem 4's optimal set, which minimizes TV(output, q) for this b;
    * ``rejection="target"`` (Decoding-UNO): q itself.

    Biased for ε > 0: the emitted tokens follow :func:`theory.output_model`, not q.  ε = ∞
    accepts every draft (the emitted law is p).  ε = 0 is ``Speculative()`` for
    ``rejection="opt"`` **only**: Decoding-UNO (𝒫 = q) is lossy already at ε = 0, since it
    emits o = min(p, q) + TV(p, q)·q ≠ q whenever 0 < TV(p, q) < 1 (its per-position TV
    loss at ε = 0, averaged along its output chain (:func:`theory.lossy.chain_tradeoff`), is
    0.131 on the Fig. 2 chains of :func:`sim.models.fig2_pair` and 0.150 on their Dirichlet
    stand-in, ``instance="dirichlet"``).  The two
    rules' trade-off curves therefore start at different points: OPT on the Pareto line at
    (TV, 0), UNO above it.

    Note: under over-acceptance q − b p = −ε < 0 wherever b < 1, so 𝒫* is the lossless
    residual [q − p]₊ restricted to {b = 1} ⊇ {q ≥ p} — that is, [q − p]₊ itself: Decoding-OPT
    only changes the acceptance rule, never the rejection law.

    Examples
    --------
    >>> from theory import LossySpeculative
    >>> b, law = LossySpeculative(0.1).verification([0.5, 0.5], [0.9, 0.1])
    >>> b.round(3).tolist(), law.round(3).tolist()
    ([1.0, 0.4], [1.0, 0.0])
    """

    eps: float = 0.0
    rejection: str = "opt"

    def __init__(self, eps, rejection: str = "opt"):
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or math.isnan(eps) \
                or eps < 0:
            raise ValueError(f"eps must be a real number >= 0 (inf allowed); got {eps!r}")
        if rejection not in _REJECTION_RULES:
            raise ValueError(f"rejection must be one of {_REJECTION_RULES}; got {rejection!r}")
        object.__setattr__(self, "window", None)
        object.__setattr__(self, "bonus", True)
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "rejection", rejection)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps!r}, rejection={self.rejection!r})"

    def verification(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        if math.isinf(self.eps):
            accept = np.ones_like(p)
        else:
            accept = np.where(p == 0, 1, np.minimum(1, safe_ratio(q + self.eps, p)))
            if self.eps == 0:  # exactly the standard rule (incl. its p = q convention)
                accept = _acceptance(p, q)
        if self.rejection == "target":
            return accept, q
        # 𝒫* ∝ [q − b p]₊, which is [q − p]₊ where b = 1 and exactly 0 where
        # b = (q + ε)/p < 1 (there q − b p = −ε): written so, no rounding residue survives
        # and ε = 0 gives the speculative residual exactly.
        gap = np.where(accept >= 1, positive_part(q - p), 0 * p)
        return accept, _rounded_gap_law(gap, p, q, accept)


def _rounded_gap_law(gap, p, q, accept):
    r"""``gap`` normalized per row; q in rows where ``gap`` has no mass but ρ = Σ(1 − b)p > 0.

    Exactly, Σ[q − b p]₊ ≥ Σ(q − b p) = ρ, so such a row cannot occur for Fraction models.  Float
    rows need only sum to 1 within ``ROW_SUM_ATOL``, and rounding can then leave no gap where
    rejection still has a (rounding-sized) probability, e.g. p = (1.0, 1e-300), q = (1.0, 0):
    the exact gap (1e-300 at token 0) is lost in 1 − 1e-300 = 1.  The target q is used there (a
    change of the output law by at most ρ, a rounding-sized probability), so the rule stays a
    valid verifier instead of failing :func:`theory.verification.checked_verification`.
    """
    total = gap.sum(axis=-1, keepdims=True)
    law = safe_ratio(gap, total)
    if law.dtype == object:
        return law
    stuck = (total == 0) & (((1 - accept) * p).sum(axis=-1, keepdims=True) > 0)
    return np.where(stuck, q, law) if stuck.any() else law


_NO_ACCEPT = object()


def _arrays(p, q, accept=_NO_ACCEPT):
    """Validated float64 arrays p, q (probability vectors) and accept (in [0, 1]), broadcast."""
    p, q = checked_pair(p, q)
    arrays = [np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)]
    if accept is not _NO_ACCEPT:
        arrays.append(np.asarray(checked_acceptance(accept, arrays[0]), dtype=np.float64))
        try:
            return np.broadcast_arrays(*arrays)
        except ValueError:
            raise ValueError(f"accept must broadcast with p and q; got shape "
                             f"{arrays[2].shape} for p, q of shape {arrays[0].shape}") from None
    return np.broadcast_arrays(*arrays)


def over_acceptance(p, q, eps):
    """b = min(1, (q + ε)/p) (1 where p = 0): the paper's over-acceptance rule.

    Examples
    --------
    >>> from theory.lossy import over_acceptance
    >>> over_acceptance([0.5, 0.5], [0.9, 0.1], 0.1).tolist()
    [1.0, 0.4]
    """
    p, q = _arrays(p, q)
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a real number >= 0; got {eps!r}")
    return np.where(p == 0, 1.0, np.minimum(1.0, safe_ratio(q + eps, p)))


def rejection_probability(p, accept):
    """ρ = 1 − Σ_x b(x) p(x) (for p summing to 1).

    Examples
    --------
    >>> from theory.lossy import rejection_probability
    >>> round(float(rejection_probability([0.5, 0.5], [1.0, 0.2])), 12)
    0.4
    """
    p, _, accept = _arrays(p, p, accept)
    return as_scalar(((1 - accept) * p).sum(axis=-1))  # validated above


def tv_loss(p, q, accept):
    r"""Loss*_TV(b) = ½Σ|q − b p| − ½Σ(1 − b)p (Theorem 4): the least TV(output, q) for b.

    Parameters
    ----------
    p, q : array_like
        Draft and target probability vectors along the last axis (leading axes broadcast);
        Fractions give exact results.
    accept : array_like
        The acceptance b(x) ∈ [0, 1], shaped like ``p``.

    Returns
    -------
    float, Fraction or ndarray
        Loss*_TV(b) ≥ 0; zero exactly when b ≤ min(1, q/p).

    Examples
    --------
    >>> from theory import tv_loss
    >>> round(float(tv_loss([0.5, 0.5], [0.9, 0.1], [1.0, 0.2])), 12)  # b = min(1, q/p)
    0.0
    >>> round(float(tv_loss([0.5, 0.5], [0.9, 0.1], [1.0, 1.0])), 12)  # accept everything
    0.4
    """
    p, q, accept = _arrays(p, q, accept)
    return as_scalar(np.abs(q - accept * p).sum(axis=-1) / 2
                     - ((1 - accept) * p).sum(axis=-1) / 2)


def optimal_rejection_distribution(p, q, accept):
    """The canonical member of Theorem 4's optimal set, 𝒫* = [q − b p]₊ / Σ[q − b p]₊.

    Rows with no positive gap (never reached by a rejection) are zeros.

    Parameters
    ----------
    p, q : array_like
        Draft and target probability vectors along the last axis (leading axes broadcast);
        Fractions give exact results.
    accept : array_like
        The acceptance b(x) ∈ [0, 1], shaped like ``p``.

    Returns
    -------
    ndarray
        𝒫*, shaped like ``p``.

    Examples
    --------
    >>> from theory import optimal_rejection_distribution
    >>> optimal_rejection_distribution([0.5, 0.5], [0.9, 0.1], [1.0, 0.4]).tolist()
    [1.0, 0.0]
    """
    p, q, accept = _arrays(p, q, accept)
    gap = positive_part(q - accept * p)
    return safe_ratio(gap, gap.sum(axis=-1, keepdims=True))


def is_optimal_rejection_distribution(p, q, accept, law, *, atol: float = 1e-12) -> bool:
    """Whether ``law`` is in Theorem 4's optimal set: a distribution that is 0 on
    A₋ = {q < b p} and satisfies ρ·𝒫 ≤ q − b p on A₊ (within ``atol``)."""
    p, q, accept, law = np.broadcast_arrays(*_arrays(p, q, accept), np.asarray(law, float))
    rho = ((1 - accept) * p).sum(axis=-1, keepdims=True)
    gap = q - accept * p
    is_law = (law >= -atol).all() and np.allclose(law.sum(axis=-1), 1, atol=1e-9)
    below = np.where(gap < 0, law <= atol, rho * law <= gap + atol)
    return bool(is_law and below.all())


def pareto_front(p, q, rejection_probability):
    """(TV(p, q) − ρ)₊: the least TV loss of any verifier rejecting with probability ρ (Thm 5).

    Parameters
    ----------
    p, q : array_like
        Draft and target probability vectors along the last axis (leading axes broadcast);
        Fractions give exact results.
    rejection_probability : float or array_like in [0, 1]
        ρ, the verifier's probability of rejecting.

    Returns
    -------
    float, Fraction or ndarray
        (TV(p, q) − ρ)₊.

    Examples
    --------
    >>> from theory import pareto_front
    >>> round(float(pareto_front([0.5, 0.5], [0.9, 0.1], 0.1)), 12)
    0.3
    """
    p, q = _arrays(p, q)
    rho = checked_unit_interval("rejection_probability", rejection_probability)
    return as_scalar(np.maximum(_tv_distance(p, q) - np.asarray(rho, dtype=float), 0.0))


def tv_loss_lp(p, q, accept) -> float:
    """Theorem 4 by LP: min ½Σ|b p + r − q| over r ≥ 0 with Σ r = Σ(1 − b)p."""
    p, q, accept = _arrays(p, q, accept)
    if p.ndim != 1:
        raise ValueError(f"p and q must be single vectors; got shape {p.shape}")
    vocab_size = p.size
    accepted = accept * p
    rho = ((1 - accept) * p).sum()
    identity = np.eye(vocab_size)
    # variables [r (V), t (V)]: t ≥ ±(bp + r − q)
    objective = np.concatenate([np.zeros(vocab_size), np.full(vocab_size, 0.5)])
    upper = np.vstack([np.hstack([identity, -identity]), np.hstack([-identity, -identity])])
    bound = np.concatenate([q - accepted, accepted - q])
    from scipy.optimize import linprog  # scipy is imported only when an LP is solved

    solution = linprog(objective, A_ub=upper, b_ub=bound,
                       A_eq=np.concatenate([np.ones(vocab_size), np.zeros(vocab_size)])[None],
                       b_eq=[rho], bounds=(0, None), method="highs")
    if solution.status != 0:
        raise ValueError(f"the Theorem 4 LP could not be solved: {solution.message}")
    return float(solution.fun)


def pareto_front_lp(p, q, rejection_probability: float) -> float:
    """Theorem 5 by LP: min TV(b p + r, q) over all b ∈ [0, 1]^V, r ≥ 0 with
    Σ(1 − b)p = ρ and Σ r = ρ."""
    p, q = _arrays(p, q)
    checked_unit_interval("rejection_probability", rejection_probability)
    if p.ndim != 1:
        raise ValueError(f"p and q must be single vectors; got shape {p.shape}")
    vocab_size = p.size
    identity = np.eye(vocab_size)
    # variables [b (V), r (V), t (V)]
    objective = np.concatenate([np.zeros(2 * vocab_size), np.full(vocab_size, 0.5)])
    upper = np.vstack([np.hstack([identity * p, identity, -identity]),
                       np.hstack([-identity * p, -identity, -identity])])
    bound = np.concatenate([q, -q])
    equal = np.vstack([np.concatenate([p, np.zeros(2 * vocab_size)]),  # Σ b p = 1 − ρ
                       np.concatenate([np.zeros(vocab_size), np.ones(vocab_size),
                                       np.zeros(vocab_size)])])  # Σ r = ρ
    from scipy.optimize import linprog  # scipy is imported only when an LP is solved

    solution = linprog(objective, A_ub=upper, b_ub=bound, A_eq=equal,
                       b_eq=[p.sum() - rejection_probability, rejection_probability],
                       bounds=[(0, 1)] * vocab_size + [(0, None)] * (2 * vocab_size),
                       method="highs")
    if solution.status != 0:
        raise ValueError(f"the Theorem 5 LP could not be solved: {solution.message}")
    return float(solution.fun)


# ---------------------------------------------------------------------- sequences
def output_model(draft: MarkovLM, target: MarkovLM, algorithm: Algorithm) -> MarkovLM:
    """The MarkovLM of the tokens ``algorithm`` emits (same contexts, map and start).

    The emission law at (n, s) is the sum of the algorithm's branch weights leaving one round
    state; the output is a Markov chain over the target's contexts when that law does not
    depend on the round state, and ``ValueError`` is raised otherwise.  It holds for

    * every unbiased algorithm, any window: the output model is q (Theorem 1);
    * every token-wise verifier drafting to the horizon (``window=None``: ``LossySpeculative``,
      ``TypicalAcceptance``, any ``Speculative`` subclass): oₙ = b p + ρ 𝒫, the same in both
      round states;
    * ``TruncatedSpeculative`` with any window: every state emits q̂ (lossless for q̂, its
      bonus is drawn from q̂), so the output model is its ``truncated_target(target)``.

    A biased verifier with a finite window and a q bonus emits differently at the bonus
    position: that raises.

    Parameters
    ----------
    draft, target : MarkovLM
        The draft p and the target q (compatible: :func:`theory.check_compatible`).
    algorithm : Algorithm
        The decoding algorithm.

    Returns
    -------
    MarkovLM
        probs[n, s, x] = P(emit x at position n | context s).

    Raises
    ------
    ValueError
        If the emission law depends on the round state, or the models are incompatible.

    Examples
    --------
    >>> from sim.models import fig2_pair
    >>> from theory import LossySpeculative, Speculative, output_model
    >>> draft, target = fig2_pair()
    >>> import numpy as np
    >>> bool(np.allclose(output_model(draft, target, Speculative()).probs, target.probs))
    True
    """
    check_compatible(draft, target)
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a theory Algorithm (e.g. LossySpeculative(0.1)); "
                        f"got {algorithm!r}")
    algorithm.check_models(draft, target)
    rows = []
    for n in range(target.horizon):
        per_state: dict[int, np.ndarray] = {}
        for branch in algorithm.branches_at(n, draft.probs[n], target.probs[n]):
            per_state[branch.source] = per_state.get(branch.source, 0) + np.asarray(
                branch.weights)
        laws = list(per_state.values())
        for law in laws[1:]:
            if not np.allclose(np.asarray(law, dtype=float), np.asarray(laws[0], dtype=float),
                               atol=1e-12):
                raise ValueError(
                    f"{algorithm!r} emits different laws in different round states at "
                    f"position {n}; its output is not a Markov chain over the contexts")
        rows.append(laws[0])
    probs = np.stack(rows)
    next_context = None if target.is_first_order else target.next_context
    return MarkovLM(probs, next_context, target.start)


def _given_start(model: MarkovLM):
    """(start law, [the model started in each context with positive start mass])."""
    law = np.asarray(model.start_distribution, dtype=np.float64)
    next_context = None if model.is_first_order else model.next_context
    contexts = np.flatnonzero(law > 0)
    return law[contexts], [MarkovLM(model.probs, next_context, int(s)) for s in contexts]


def sequence_kl(model: MarkovLM, reference: MarkovLM) -> float:
    r"""KL(model ‖ reference) of the emitted sequences given the prompt, by the chain rule.

    Σₙ Σ_s μ^{model}_n(s) KL(modelₙ(·|s) ‖ referenceₙ(·|s)).  Since the context is a function
    of the start context and the tokens, this is E_{s₀∼μ₀}[KL(model(·|s₀) ‖ reference(·|s₀))]:
    the exact sequence KL for a fixed start, and the KL given the (random) prompt otherwise.
    ``inf`` if the model emits what the reference cannot.
    """
    check_compatible(model, reference)
    marginals = np.asarray(model.context_marginals(), dtype=np.float64)
    p = np.asarray(model.probs, dtype=np.float64)
    q = np.asarray(reference.probs, dtype=np.float64)
    if ((p > 0) & (q == 0) & (marginals[..., None] > 0)).any():
        return float("inf")
    with np.errstate(divide="ignore", invalid="ignore"):  # logs, not a ratio: no overflow
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1))
                                     - np.log(np.where(q > 0, q, 1))), 0.0)
    return float((marginals * terms.sum(axis=-1)).sum())


def sequence_tv_bound(model: MarkovLM, reference: MarkovLM) -> float:
    r"""Σₙ E_{s∼μ^{model}_n}[TV(modelₙ(·|s), referenceₙ(·|s))] ≥ :func:`sequence_tv`.

    The subadditive sum (a coupling bound); it exceeds 1, and says nothing, when the kernels
    are far apart over a long horizon.
    """
    check_compatible(model, reference)
    marginals = np.asarray(model.context_marginals(), dtype=np.float64)
    distances = _tv_distance(np.asarray(model.probs, float), np.asarray(reference.probs, float))
    return float((marginals * distances).sum())


def sequence_tv(model: MarkovLM, reference: MarkovLM, *, max_sequences: int = 2_000_000):
    """Exact TV of the emitted sequences given the prompt, E_{s₀}[TV(model(·|s₀),
    reference(·|s₀))], by enumerating all V^T sequences for each start context."""
    check_compatible(model, reference)
    count = model.vocab_size ** model.horizon
    if count > max_sequences:
        raise ValueError(f"V^T = {count} sequences exceed max_sequences = {max_sequences}; "
                         "use sequence_tv_bound")
    sequences = np.array(list(itertools.product(range(model.vocab_size),
                                                repeat=model.horizon)))
    weights, models = _given_start(model)
    _, references = _given_start(reference)
    total = 0.0
    for weight, started, started_reference in zip(weights, models, references, strict=True):
        difference = started.sequence_probability(sequences) - \
            started_reference.sequence_probability(sequences)
        total += weight * np.abs(difference).sum() / 2
    return float(total)


# ---------------------------------------------------------------------- any verifier vs the line
class VerifierTradeoff(NamedTuple):
    """Per-position place of a verifier against Theorem 5's line (arrays over rows)."""

    rejection_probability: np.ndarray  #: ρ = Σ(1 − b)p
    tv_loss: np.ndarray  #: TV(b p + ρ𝒫, q), the verifier's own loss
    optimal_tv_loss: np.ndarray  #: Loss*_TV(b), Theorem 4's least loss for this b
    tv: np.ndarray  #: TV(p, q)
    gap: np.ndarray  #: ρ + tv_loss − TV(p, q) ≥ 0: the distance above the line


def verifier_tradeoff(p, q, algorithm) -> VerifierTradeoff:
    r"""Where a token-wise verifier sits against Theorem 5's Pareto line, row by row.

    For (b, 𝒫) = ``algorithm.verification(p, q)`` (any :class:`theory.Speculative`
    subclass: the verifier of one tested position), with ρ = Σ_x (1 − b(x)) p(x) and the
    emitted one-step law o = b p + ρ 𝒫:

    .. math::  \mathrm{gap} = ρ + \mathrm{TV}(o, q) - \mathrm{TV}(p, q) \ge 0,

    the vertical (equivalently, horizontal) distance of the point (ρ, TV(o, q)) above the line
    ρ + Loss = TV(p, q) of Theorem 5 (arXiv:2411.00841): zero for Decoding-OPT, and
    Σ_{b = 0} min(p, q) for a deterministic 0/1 acceptance with its optimal 𝒫*
    (:class:`theory.TypicalAcceptance`).  Theorem 4's optimum Loss*_TV(b) ≤ TV(o, q) is
    returned beside it: TV(o, q) − Loss*_TV(b) is the part of the gap due to 𝒫, the rest is
    due to b.  Rows are the leading axes of p and q (broadcast); Fraction rows give exact
    values when the verifier's (b, 𝒫) are exact.

    Parameters
    ----------
    p, q : array_like (..., V)
        Draft and target rows (validated).
    algorithm : theory.Speculative
        A token-wise verifier (its ``verification`` is read).

    Returns
    -------
    VerifierTradeoff
        ``rejection_probability``, ``tv_loss``, ``optimal_tv_loss``, ``tv``, ``gap``, each
        shaped like the rows.

    Examples
    --------
    >>> from theory import LossySpeculative, TypicalAcceptance
    >>> from theory.lossy import verifier_tradeoff
    >>> p, q = [0.5, 0.3, 0.2], [0.6, 0.35, 0.05]
    >>> round(float(verifier_tradeoff(p, q, LossySpeculative(0.05)).gap), 12)  # on the line
    0.0
    >>> t = verifier_tradeoff(p, q, TypicalAcceptance(rejection="opt"))  # rejects token 2
    >>> round(float(t.gap), 12)  # min(p, q) of the rejected token
    0.05
    """
    if not isinstance(algorithm, Speculative):
        raise TypeError(f"algorithm must be a token-wise verifier (a theory.Speculative); "
                        f"got {algorithm!r}")
    p, q = checked_pair(p, q)
    p, q = np.broadcast_arrays(p, q)
    accept, law = algorithm.verification(p, q)
    accept, law = np.asarray(accept), np.asarray(law)
    rho = np.asarray(((1 - accept) * p).sum(axis=-1))
    emitted = accept * p + rho[..., None] * law
    loss = np.asarray(_tv_distance(emitted, q))
    best = np.abs(q - accept * p).sum(axis=-1) / 2 - rho / 2
    tv = np.asarray(_tv_distance(p, q))
    return VerifierTradeoff(*(as_scalar(value) for value in (rho, loss, best, tv,
                                                              rho + loss - tv)))


def chain_tradeoff(draft: MarkovLM, target: MarkovLM, algorithm) -> dict:
    r""":func:`verifier_tradeoff` averaged along the verifier's own output chain.

    With μ^o_n the context marginals of :func:`output_model` (the contexts the verifier
    actually visits) and T the horizon, returns the per-position averages

    .. math::  \bar ρ = \tfrac1T \sum_n \sum_s μ^o_n(s)\, ρ_n(s),\quad
               \overline{\mathrm{Loss}} = \tfrac1T \sum_n \sum_s μ^o_n(s)\,
               \mathrm{TV}(o_n(\cdot|s), q_n(\cdot|s)),\quad
               \overline{\mathrm{TV}} = \tfrac1T \sum_n \sum_s μ^o_n(s)\,
               \mathrm{TV}(p_n, q_n),

    (also ``optimal_tv_loss``, the average of Loss*_TV(bₙ)) and ``gap`` = ρ̄ + Loss̄ − TV̄ ≥ 0,
    a μ^o-average of per-position gaps.  For a verifier drafting to the horizon every position
    is tested, so ρ̄ · T = E[N_rej] (:func:`theory.expected_rejections`).  In the coordinates
    (ρ̄/TV̄, Loss̄/TV̄) every verifier's line is x + y = 1.  Also returned: ``sequence_kl`` =
    KL(output ‖ target) (:func:`sequence_kl`).  The per-row quantities are computed on the
    models' own rows (exactly for exact models); the averages are float64.

    Examples
    --------
    >>> from sim.models import fig2_pair
    >>> from theory import LossySpeculative, expected_rejections
    >>> from theory.lossy import chain_tradeoff
    >>> draft, target = fig2_pair()
    >>> row = chain_tradeoff(draft, target, LossySpeculative(0.1))
    >>> rejections = expected_rejections(draft, target, LossySpeculative(0.1))
    >>> abs(row["gap"]) < 1e-12, abs(50 * row["rejection_probability"] - rejections) < 1e-9
    (True, True)
    """
    if getattr(algorithm, "window", None) is not None:
        raise ValueError(f"chain_tradeoff needs a verifier drafting to the horizon "
                         f"(window=None); got window={algorithm.window!r}")
    emitted = output_model(draft, target, algorithm)
    marginals = np.asarray(emitted.context_marginals(), dtype=np.float64)
    # the verifier on the models' own rows (exact for exact models, so a cut such as
    # truncation falls where the exact DPs put it), averaged in float64 afterwards
    rows = verifier_tradeoff(*np.broadcast_arrays(draft.probs, target.probs), algorithm)
    horizon = target.horizon

    def average(values):
        return float((marginals * np.asarray(values, dtype=np.float64)).sum() / horizon)

    out = {"rejection_probability": average(rows.rejection_probability),
           "tv_loss": average(rows.tv_loss), "optimal_tv_loss": average(rows.optimal_tv_loss),
           "tv": average(rows.tv)}
    out["gap"] = out["rejection_probability"] + out["tv_loss"] - out["tv"]
    out["sequence_kl"] = sequence_kl(emitted, target)
    return out
