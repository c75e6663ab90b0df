"""Known-wrong verifiers: the negative controls of the statistical and exact checks.

Each is a small subclass of :class:`theory.Speculative` that changes one line of the
verification rule, the way a real implementation bug would.  Every engine runs them.
"""

import functools
from dataclasses import dataclass

import numpy as np

from sim.engine.multidraft import rooted_rounds, spectr_root, swor_root
from sim.engine.reference import _Trace, run_algorithm
from sim.engine.stopping import draft_round
from sim.engine.tree import tree_rounds
from theory import (
    AdaptiveSpeculative,
    BatchSpeculative,
    BlockSpeculative,
    LossySpeculative,
    Speculative,
    TreeSpeculative,
    TruncatedSpeculative,
    TypicalAcceptance,
    WindowPolicy,
)
from theory.multidraft import _top_mask, draft_order, spectr_root_law, swor_root_law
from theory.onestep import (
    acceptance_probability,
    positive_part,
    residual_distribution,
    safe_ratio,
)


@dataclass(frozen=True)
class ResampleFromTarget(Speculative):
    """Bug: on rejection, draw from q instead of the residual [q − p]₊."""

    def verification(self, p, q):
        return acceptance_probability(p, q), np.asarray(q)


@dataclass(frozen=True)
class InvertedRatio(Speculative):
    """Bug: accept with min(1, p/q) instead of min(1, q/p)."""

    def verification(self, p, q):
        return acceptance_probability(q, p), residual_distribution(p, q)


@dataclass(frozen=True)
class AbsoluteResidual(Speculative):
    """Bug: the rejection law uses |q − p| instead of its positive part [q − p]₊."""

    def verification(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        spread = np.abs(q - p)
        total = spread.sum(axis=-1, keepdims=True)
        law = np.where(total > 0, spread / np.where(total > 0, total, 1), positive_part(q - p))
        return acceptance_probability(p, q), law


@dataclass(frozen=True)
class ForgetsResidualUpdate(BatchSpeculative):
    """Bug: every candidate is tested against q itself (no residual update between drafts)."""

    def next_residual(self, p, residual):
        return residual


@dataclass(frozen=True)
class UnnormalizedResidual(BatchSpeculative):
    """Bug: candidates are tested against [q^m − p]₊ without normalizing it."""

    def next_residual(self, p, residual):
        return positive_part(np.asarray(residual) - np.asarray(p))


@dataclass(frozen=True, init=False, repr=False)
class LossyAbsoluteGap(LossySpeculative):
    """Bug: Decoding-OPT that rejects into |q − b p| (normalized) instead of [q − b p]₊."""

    def verification(self, p, q):
        accept, _ = super().verification(p, q)
        gap = np.abs(np.asarray(q) - accept * np.asarray(p))
        return accept, gap / gap.sum(axis=-1, keepdims=True)


@dataclass(frozen=True, init=False, repr=False)
class LossyAdditiveAcceptance(LossySpeculative):
    """Bug: accepts with min(1, q/p + ε) instead of min(1, (q + ε)/p)."""

    def verification(self, p, q):
        _, law = super().verification(p, q)
        accept = np.minimum(1.0, acceptance_probability(p, q) + self.eps)
        return accept, law


def context_blind(policy: WindowPolicy) -> WindowPolicy:
    """Bug: the draft length is chosen by position only — every context gets context 0's."""
    table = policy.table
    return WindowPolicy(np.repeat(table[:, :1], table.shape[1], axis=1))


@dataclass(frozen=True, init=False, repr=False)
class TypicalWithoutEntropy(TypicalAcceptance):
    """Bug: typical acceptance with the cutoff ``threshold`` alone (the α·exp(−H) term
    forgotten), i.e. accepting iff q(x) > threshold."""

    def cutoff(self, q):
        return np.full(np.shape(q)[:-1], float(self.threshold))


@dataclass(frozen=True, init=False, repr=False)
class TruncatedBonusFromTarget(TruncatedSpeculative):
    """Bug: truncated speculative decoding whose bonus token is drawn from q, not q̂."""

    def bonus_law(self, q):
        return np.asarray(q)


class SharedUniformBlock(BlockSpeculative):
    """Bug: one uniform η for the whole block, τ = max{i : η ≤ h_i} (the η's not independent)."""

    selection = "shared_uniform"


class FirstFailureBlock(BlockSpeculative):
    """Bug: scan i upward and stop at the first failure η_i > h_i (token-wise style)."""

    selection = "first_failure"


class CumulativeProductBlock(BlockSpeculative):
    """Bug: τ = max{i : Π_{j≤i} q/p(X_j) ≥ Π_{j≤i} η_j} (cumulative products; engines only)."""

    selection = "cumulative_product"


# -- multi-draft root verifiers: each mutant has its root law (DP, engines) and
#    its literal reference routine, registered with the reference engine.

def _exclude_without_renormalizing(p, removed):
    p = np.asarray(p)
    return np.where(removed, 0 * p, p)


@dataclass(frozen=True)
class SworUnnormalized(BatchSpeculative):
    """Bug: "swor" removes the tried draft from p^k but does not renormalize p^{k+1}."""

    verifier: str = "swor"

    def root_law(self, p, q):
        return swor_root_law(p, q, self.n_drafts, exclude=_exclude_without_renormalizing)


@dataclass(frozen=True)
class SpectrNaive(BatchSpeculative):
    """Bug: K-SEQ with ρ = 1 (acceptance min(1, q/p)) and residual [q − p]₊."""

    verifier: str = "spectr"

    def root_law(self, p, q):
        return spectr_root_law(p, q, self.n_drafts, rho=1.0)


def _greedy_parts(p, q, n_drafts):
    drafted = _top_mask(p, n_drafts - 1)
    rest = np.where(drafted, 0 * p, p)
    rest = safe_ratio(rest, rest.sum(axis=-1, keepdims=True))
    return drafted, rest


@dataclass(frozen=True)
class GreedyWithoutDraftedMass(BatchSpeculative):
    """Bug: greedy drafts whose residual omits q·1_D (only [q − p']₊ outside D)."""

    verifier: str = "greedy"

    def root_law(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        drafted, rest = _greedy_parts(p, q, self.n_drafts)
        accepted = np.where(drafted | (q > rest), 0 * q, q) + \
            np.where(~drafted & (q > rest), rest, 0 * q)
        gap = np.where(drafted, 0 * q, positive_part(q - rest))
        law = np.where(gap.sum(axis=-1, keepdims=True) > 0,
                       safe_ratio(gap, gap.sum(axis=-1, keepdims=True)), q)
        rejected = (1 - accepted.sum(axis=-1, keepdims=True)) * law
        none_left = rest.sum(axis=-1, keepdims=True) == 0  # no random draft: emit from q
        return (np.where(none_left, np.where(drafted, q, 0 * q), accepted),
                np.where(none_left, np.where(drafted, 0 * q, q), rejected))


def _greedy_without_drafted_mass_root(p, q, n_drafts, choose):
    p, q = np.asarray(p), np.asarray(q)
    drafted = [int(x) for x in draft_order(p)[:n_drafts - 1] if p[x] != 0]
    rest = p.copy()
    rest[drafted] = 0 * rest[drafted]
    if sum(rest) == 0:
        token = choose.categorical(q)
        return token, token in drafted
    rest = rest / sum(rest)
    token = choose.categorical(rest)
    if choose.bernoulli(min(1, q[token] / rest[token])):
        return token, True
    law = positive_part(q - rest)
    law[drafted] = 0 * law[drafted]  # the bug: q·1_D is missing
    token = choose.categorical(law if any(law != 0) else q)
    return token, token in drafted


@dataclass(frozen=True)
class TopkRatioTest(BatchSpeculative):
    """Bug: top-k point drafts accepted with min(1, q^k(x)/p(x)) instead of q^k(x)."""

    verifier: str = "topk"

    def root_law(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        order = draft_order(p)
        accepted, residual = 0 * q, q
        reach = 1 + 0 * q[..., :1]
        for k in range(min(self.n_drafts, p.shape[-1])):
            token = order[..., k:k + 1]
            p_x = np.take_along_axis(p, token, axis=-1)
            q_x = np.take_along_axis(residual, token, axis=-1)
            ratio = np.where(p_x > 0, np.minimum(1, safe_ratio(q_x, p_x)), 0 * p_x)
            hit = np.zeros(p.shape, dtype=bool)
            np.put_along_axis(hit, token, True, axis=-1)
            accepted = accepted + np.where(hit, reach * ratio, 0 * q)
            reach = reach * (1 - ratio)
            residual = np.where(hit, 0 * residual, residual)
            residual = safe_ratio(residual, residual.sum(axis=-1, keepdims=True))
        return accepted, reach * residual


def _topk_ratio_test_root(p, q, n_drafts, choose):
    p, q = np.asarray(p), np.asarray(q)
    residual = q
    for token in [int(x) for x in draft_order(p)[:n_drafts] if p[x] != 0]:
        if choose.bernoulli(min(1, residual[token] / p[token])):  # the bug
            return token, True
        residual = residual.copy()
        residual[token] = 0 * residual[token]
        residual = residual / sum(residual)
    return choose.categorical(residual), False


_MUTANT_ROOTS = {
    SworUnnormalized: functools.partial(swor_root, exclude=_exclude_without_renormalizing),
    SpectrNaive: functools.partial(spectr_root, rho=1),
    GreedyWithoutDraftedMass: _greedy_without_drafted_mass_root,
    TopkRatioTest: _topk_ratio_test_root,
}


def _register(kind, root):
    @run_algorithm.register(kind)
    def _routine(algorithm, draft, target, choose):
        trace = _Trace(target, choose)
        return rooted_rounds(draft, target, choose,
                             lambda p, q, c: root(p, q, algorithm.n_drafts, c), trace)


for _kind, _root in _MUTANT_ROOTS.items():
    _register(_kind, _root)


@dataclass(frozen=True)
class UndercountedDrafts(Speculative):
    """Known-wrong draft count: declares one draft fewer per round than it drafts (the
    verification itself is standard, so only the walltime is wrong)."""

    def draft_lengths(self, horizon, n_contexts):
        return np.maximum(super().draft_lengths(horizon, n_contexts) - 1, 0)

# -- adaptive draft length (issue #27): literal routines with one wrong line each, registered
#    with the reference engine (the exact round law is the correct one's).

@dataclass(frozen=True)
class StartContextAdaptive(AdaptiveSpeculative):
    """Bug: every draft of a round is verified with the rows of the round's start context."""


@dataclass(frozen=True)
class ResampleFromTargetAdaptive(AdaptiveSpeculative):
    """Bug: after the first failed test the token comes from q instead of [q − p]₊."""


@dataclass(frozen=True)
class BonusAfterRejectionAdaptive(AdaptiveSpeculative):
    """Bug: the bonus token from q is emitted after a rejection too (still lossless: a token
    from q in the right context; but one target call too few, caught by the round DP)."""


def _adaptive_mutant(algorithm, draft, target, choose):
    """sim.engine.stopping's routine with the mutant's one wrong line."""
    rule = algorithm.bound_rule(draft, target)
    trace = _Trace(target, choose)
    while not trace.done:
        trace.target_calls += 1
        start = trace.context
        drafted, contexts = draft_round(rule, draft, target, trace, choose,
                                        algorithm.max_window)
        if not drafted:
            trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
            continue
        all_accepted = True
        for token, context in zip(drafted, contexts, strict=False):
            if isinstance(algorithm, StartContextAdaptive):
                context = start  # the bug
            p = draft.probs[trace.position, context]
            q = target.probs[trace.position, context]
            if choose.bernoulli(min(1, q[token] / p[token])):
                trace.emit(token)
            else:
                law = q if isinstance(algorithm, ResampleFromTargetAdaptive) else \
                    positive_part(q - p)  # the bug: q
                trace.emit(choose.categorical(law))
                trace.rejections += 1
                all_accepted = False
                break
        if isinstance(algorithm, BonusAfterRejectionAdaptive):
            all_accepted = True  # the bug
        if all_accepted and algorithm.bonus and not trace.done:
            trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
    return trace.outcome()


for _kind in (StartContextAdaptive, ResampleFromTargetAdaptive,
              BonusAfterRejectionAdaptive):
    run_algorithm.register(_kind, _adaptive_mutant)


# -- token trees (issue #26): a literal routine with one wrong line, registered
@dataclass(frozen=True)
class StaleResidualTree(TreeSpeculative):
    """Bug: recursive rejection sampling that never updates the residual between siblings
    (every child is tested against q; all rejected → a draw from [q − p_k]₊)."""

    _engine_rule = "stale_residual"  # the same bug in the compiled and torch engines


@dataclass(frozen=True)
class StaleTraversalTree(TreeSpeculative):
    """Bug: Traversal Verification whose deletions update p_α but never the target row M_b
    (it stays q); engines only (``verifier="traversal"``)."""

    _engine_rule = "stale_traversal"


def _stale_rrs(root, algorithm, choose):
    node, path = root, []
    while node.shape:
        target_row, law, accepted = np.asarray(node.target_row), None, None
        for j in range(len(node.shape)):
            child = node.child(j)
            if child is None:
                break
            law = node.laws[j]
            if choose.bernoulli(min(1, target_row[child.token] / law[child.token])):
                accepted = child
                break
        if accepted is None:
            gap = positive_part(target_row - law)
            return path, gap / gap.sum(), "residual"
        path.append(accepted.token)
        node = accepted
    return path, node, "bonus"


@run_algorithm.register(StaleResidualTree)
def _stale_residual_tree(algorithm, draft, target, choose):
    return tree_rounds(algorithm, draft, target, choose, _stale_rrs)
