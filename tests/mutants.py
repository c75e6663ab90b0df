"""Known-wrong verifiers: the negative controls of the statistical and exact checks.

Each is a small subclass of :class:`theory.Speculative` that changes one line of the
verification rule, the way a real implementation bug would.  Every engine runs them.
"""

from dataclasses import dataclass

import numpy as np

from theory import (
    BatchSpeculative,
    BlockSpeculative,
    LossySpeculative,
    Speculative,
    TruncatedSpeculative,
    TypicalAcceptance,
    WindowPolicy,
)
from theory.onestep import acceptance_probability, positive_part, residual_distribution


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
