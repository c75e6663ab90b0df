r"""The multi-draft root verifiers in the engines: exact root laws sampled, literal routines.

``BatchSpeculative(M, verifier)`` for the root verifiers of :mod:`theory.multidraft` ("swor",
"spectr", "greedy", "topk", "optimal"): the verifier acts at the root of a round, then the
accepted draft is followed alone by standard speculative sampling.

* :class:`RootTables` — the compiled engines sample each verifier's **exact root law** (a, r)
  with the token-wise kernel (:func:`sim.engine.token.token_kernel`), the root as its bonus
  state;
* the reference routines — each ``*_root(p, q, n_drafts, choose)`` is the verifier's
  definition at the root, written literally: drafts drawn with ``choose.categorical``, tests
  with ``choose.bernoulli`` (:mod:`sim.engine.reference`); it returns ``(token, accepted)``,
  the emitted root token and whether it is one of the drafts' root tokens.
  :func:`rooted_rounds` runs whole sequences: a root per round, then standard speculative
  sampling on the accepted draft (its continuation drawn from p given its root token) until
  the first rejection.

``enumerate_outcomes`` on these routines equals the dynamic programs run on the laws
(tests/theory/test_multidraft.py), which ties the sampled laws to the literal definitions.
The family's registration is in :mod:`sim.engine.batch` (``BatchSpeculative`` dispatches on its
``verifier`` there).

Examples
--------
>>> from sim.models import fig2_pair
>>> from sim.reference import reference_simulate
>>> from theory import BatchSpeculative
>>> draft, target = fig2_pair(horizon=5)
>>> result = reference_simulate(draft, target, BatchSpeculative(3, "swor"), n_trials=3, rng=0)
>>> result.rejections.shape
(3,)
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from sim.engine.core import Layout, draft_table
from sim.engine.tables import build_alias
from sim.engine.token import TokenTables
from theory import MarkovLM, Speculative
from theory.multidraft import (
    FLOW_TOLERANCE,
    _exclude_renormalized,
    draft_order,
    optimal_flow,
    spectr_rho,
)
from theory.onestep import _acceptance, _residual, positive_part

__all__ = ["ROOT_PROCEDURES", "RootTables", "greedy_root", "optimal_root", "rooted_rounds",
           "spectr_root", "swor_root", "topk_root"]


@dataclass(frozen=True)
class RootTables(TokenTables):
    """Tables of a root verifier of :mod:`theory.multidraft` ("swor", "spectr", …), run by the
    token-wise kernel.

    The engines sample the verifier's **exact root law** (a, r) — validated against its literal
    routine (:mod:`sim.engine.multidraft`) by exact enumeration — not its draw-by-draw procedure.
    At a root (round state 0, used as the kernel's bonus state) the token is proposed from
    a/α (α = Σa), accepted with probability α (the same for every token of the row) and else
    replaced by a draw from r/(1 − α): P(token x, accepted) = a(x), P(token x, rejected) = r(x),
    exactly the root law.  The root rows sit ``bonus_offset`` = R rows after the draft's rows in
    ``proposal`` and ``rejection_offset`` = R rows after the residuals [q − p]₊ in
    ``rejection``; state 1 is standard speculative sampling.  Where α = 0 (or 1) the unused
    law is q.
    """

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> RootTables:
        layout = Layout.of(draft, target)
        exact_p, exact_q = layout.exact_rows(draft), layout.exact_rows(target)
        p, q = layout.rows(draft), layout.rows(target)
        # the root law on the models' own rows (exact for exact models: ties as in the DPs)
        accepted, rejected = (np.asarray(law, dtype=np.float64)
                              for law in algorithm.root_law(exact_p, exact_q))
        alpha = np.clip(accepted.sum(axis=-1, keepdims=True), 0.0, 1.0)
        root_proposal = np.where(alpha > 0, accepted / np.where(alpha > 0, alpha, 1.0), q)
        root_rejection = np.where(alpha < 1, rejected / np.where(alpha < 1, 1 - alpha, 1.0), q)
        standard = Speculative()
        accept, residual = standard.verification(exact_p, exact_q)
        residual = np.asarray(residual, dtype=np.float64)
        acceptance = np.concatenate([np.ascontiguousarray(accept, dtype=np.float64).ravel(),
                                     np.repeat(alpha.ravel(), layout.vocab_size)])
        rows = p.shape[0]
        return cls(algorithm, layout, build_alias(np.concatenate([p, root_proposal])),
                   acceptance, build_alias(np.concatenate([residual, root_rejection])),
                   np.ones(2, dtype=np.int64), 0, rows, np.empty(0, dtype=np.int64), rows,
                   draft_lengths=draft_table(algorithm, layout))


# ---------------------------------------------------------------------- reference routines
def swor_root(p, q, n_drafts, choose, *, exclude=_exclude_renormalized):
    """Recursive rejection sampling without replacement (Jeon et al. 2024, arXiv:2402.14160)."""
    draft_law, residual = np.asarray(p), np.asarray(q)
    for _ in range(n_drafts):
        token = choose.categorical(draft_law)  # X_k ~ p^k
        if choose.bernoulli(_acceptance(draft_law, residual)[token]):  # min(1, q^k/p^k)
            return token, True
        residual = _residual(draft_law, residual)  # q^{k+1} = [q^k − p^k]₊ normalized
        draft_law = exclude(draft_law, np.arange(len(draft_law)) == token)  # p^{k+1}: p^k
        # without X_k, renormalized
        if not any(draft_law != 0):  # no draft token left: fewer than M candidates
            break
    return choose.categorical(residual), False


def spectr_root(p, q, n_drafts, choose, *, rho=None):
    """K-SEQ (Sun et al., NeurIPS 2023, arXiv:2310.15141): i.i.d. drafts, ratio tests /ρ*."""
    p, q = np.asarray(p), np.asarray(q)
    if rho is None:
        rho = float(spectr_rho(p, q, n_drafts))
    if p.dtype == object:
        rho = Fraction(rho)
    for _ in range(n_drafts):
        token = choose.categorical(p)
        if choose.bernoulli(min(1, q[token] / (rho * p[token]))):
            return token, True
    return choose.categorical(positive_part(q - rho * p)), False


def _point_drafts(p, count):
    """The ``count`` most probable draft tokens with p > 0, ties → lower index."""
    return [int(x) for x in draft_order(p)[:max(count, 0)] if p[x] != 0]


def greedy_root(p, q, n_drafts, choose):
    """Hu et al. (ICLR 2025, arXiv:2502.18779): M − 1 greedy point drafts and one from p'."""
    p, q = np.asarray(p), np.asarray(q)
    drafted = _point_drafts(p, n_drafts - 1)
    rest = p.copy()
    rest[drafted] = 0 * rest[drafted]
    if sum(rest) == 0:  # no random draft left: emit from q, a drafted token accepts
        token = choose.categorical(q)
        return token, token in drafted
    rest = rest / sum(rest)  # p' = p restricted to Dᶜ, renormalized
    token = choose.categorical(rest)
    if choose.bernoulli(min(1, q[token] / rest[token])):
        return token, True
    law = positive_part(q - rest)
    law[drafted] = q[drafted]  # ∝ q·1_D + [q − p']₊·1_{Dᶜ}
    token = choose.categorical(law)
    return token, token in drafted


def topk_root(p, q, n_drafts, choose):
    """EAGLE-style top-k point drafts, tried in decreasing p, accepted with q^k(x)."""
    p, q = np.asarray(p), np.asarray(q)
    residual = q
    for token in _point_drafts(p, n_drafts):
        if choose.bernoulli(residual[token]):
            return token, True
        residual = residual.copy()
        residual[token] = 0 * residual[token]
        residual = residual / sum(residual)
    return choose.categorical(residual), False


def optimal_root(p, q, n_drafts, choose):
    """The α*-attaining verifier: M i.i.d. drafts → their set S → y ∈ S by the max flow."""
    p, q = np.asarray(p), np.asarray(q)
    sets, weights, flow = optimal_flow(p, q, n_drafts)
    drafts = {choose.categorical(p) for _ in range(n_drafts)}
    index = sets.index(tuple(sorted(drafts)))
    sent = [flow.get((index, y), 0.0) for y in sets[index]]
    left = weights[index] - sum(sent)
    left = left if left > FLOW_TOLERANCE else 0.0  # the LP's rounding is not a rejection
    inflow = np.zeros(len(q))
    for (_, y), value in flow.items():
        inflow[y] += value
    residual = np.maximum(np.asarray(q, dtype=np.float64) - inflow, 0.0)
    if sum(sent) + left == 0 or (sum(sent) == 0 and not residual.any()):
        # a set of rounding-level weight (< FLOW_TOLERANCE) that the LP left empty
        token = choose.categorical(q)
        return token, token in drafts
    pick = choose.categorical([*sent, left])
    if pick < len(sent):
        return sets[index][pick], True
    return choose.categorical(residual), False


#: Verifier name → its literal root routine.
ROOT_PROCEDURES = {"swor": swor_root, "spectr": spectr_root, "greedy": greedy_root,
                   "topk": topk_root, "optimal": optimal_root}


def rooted_rounds(draft, target, choose, root, trace):
    """Rounds of a root verifier ``root(p, q, choose) -> (token, accepted)``, then standard SD
    on the accepted draft until its first rejection; fills ``trace`` (a reference trace)."""
    while not trace.done:  # one round per iteration: one target call
        trace.target_calls += 1
        trace.drafted += target.horizon - trace.position  # drafts run to the horizon
        p = draft.probs[trace.position, trace.context]
        q = target.probs[trace.position, trace.context]
        token, accepted = root(p, q, choose)
        trace.emit(token)
        if not accepted:
            trace.rejections += 1
            continue
        while not trace.done:  # the accepted draft, alone: Algorithm 1
            p = draft.probs[trace.position, trace.context]
            q = target.probs[trace.position, trace.context]
            token = choose.categorical(p)
            if choose.bernoulli(_acceptance(p, q)[token]):
                trace.emit(token)
            else:
                trace.emit(choose.categorical(_residual(p, q)))
                trace.rejections += 1
                break
    return trace.outcome()
