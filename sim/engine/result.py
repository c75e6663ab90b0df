"""The result type shared by every engine, and the input checks every engine runs first."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from theory import Algorithm, MarkovLM, check_compatible

__all__ = ["SimCounts", "SimResult", "check_problem"]


@dataclass(frozen=True)
class SimResult:
    """Per-trial counts of a simulation.

    Attributes
    ----------
    rejections : int array (n_trials,)
        N_rej of each trial.
    target_calls : int array (n_trials,)
        Number of target calls (rounds) of each trial.
    tokens : int array (n_trials, T) or None
        The emitted sequences, when recorded.
    drafted : int array (n_trials,) or None
        Draft tokens of each trial: the sum, over its rounds, of what a round drafts
        (:meth:`theory.Algorithm.draft_lengths` at the round's start, e.g. min(γ, T − n) for a
        window γ, also those after a rejection), so that the walltime of trial i is
        ``target_calls[i] + c · drafted[i]`` (:func:`theory.expected_walltime`'s convention).
        Every engine fills it; None only for results built by hand.
    """

    rejections: np.ndarray
    target_calls: np.ndarray
    tokens: np.ndarray | None = None
    drafted: np.ndarray | None = None

    @property
    def n_trials(self) -> int:
        return int(self.rejections.shape[0])

    @classmethod
    def concatenate(cls, parts: list[SimResult]) -> SimResult:
        """Join the results of consecutive chunks of trials."""
        tokens = None
        if parts and parts[0].tokens is not None:
            tokens = np.concatenate([part.tokens for part in parts])
        drafted = None
        if parts and all(part.drafted is not None for part in parts):
            drafted = np.concatenate([part.drafted for part in parts])
        return cls(np.concatenate([part.rejections for part in parts]),
                   np.concatenate([part.target_calls for part in parts]), tokens, drafted)

    def walltime(self, cost_ratio) -> np.ndarray:
        """Per-trial walltime ``target_calls + cost_ratio · drafted`` (float64).

        Parameters
        ----------
        cost_ratio : float >= 0
            c, the cost of one drafted token in target calls.

        Examples
        --------
        >>> from sim import simulate
        >>> from sim.models import fig2_pair
        >>> from theory import Speculative, expected_walltime
        >>> draft, target = fig2_pair()
        >>> result = simulate(draft, target, Speculative(window=3), n_trials=20_000, rng=0)
        >>> exact = expected_walltime(draft, target, Speculative(window=3), cost_ratio=0.1)
        >>> bool(abs(result.walltime(0.1).mean() - exact) < 0.05)
        True
        """
        if self.drafted is None:
            raise ValueError("this result has no drafted counts (built by hand)")
        if not 0 <= float(cost_ratio) < float("inf"):
            raise ValueError(f"cost_ratio must be a finite number >= 0; got {cost_ratio!r}")
        return self.target_calls.astype(np.float64) + float(cost_ratio) * self.drafted


@dataclass(frozen=True)
class SimCounts:
    """Histograms of a simulation: entry k counts the trials with k rejections (k target calls).

    What :func:`sim.engine.simulate_counts` keeps instead of per-trial arrays; counts add up
    (``a + b``) across chunks, processes and machines.
    """

    rejection_counts: np.ndarray  # (T + 1,) int64
    target_call_counts: np.ndarray  # (T + 1,) int64

    @classmethod
    def empty(cls, horizon: int) -> SimCounts:
        return cls(np.zeros(horizon + 1, dtype=np.int64), np.zeros(horizon + 1, dtype=np.int64))

    @classmethod
    def from_result(cls, result: SimResult, horizon: int) -> SimCounts:
        return cls(np.bincount(result.rejections, minlength=horizon + 1),
                   np.bincount(result.target_calls, minlength=horizon + 1))

    def __add__(self, other: SimCounts) -> SimCounts:
        return SimCounts(self.rejection_counts + other.rejection_counts,
                         self.target_call_counts + other.target_call_counts)

    @property
    def n_trials(self) -> int:
        return int(self.rejection_counts.sum())

    @staticmethod
    def _moments(counts):
        k = np.arange(counts.size)
        n = counts.sum()
        mean = (k * counts).sum() / n
        return float(mean), float(((k - mean) ** 2 * counts).sum() / (n - 1))

    def rejection_moments(self) -> tuple[float, float]:
        """(mean, unbiased sample variance) of N_rej."""
        return self._moments(self.rejection_counts)

    def target_call_moments(self) -> tuple[float, float]:
        """(mean, unbiased sample variance) of the number of target calls."""
        return self._moments(self.target_call_counts)


def check_problem(draft: MarkovLM, target: MarkovLM, algorithm, n_trials) -> int:
    """Validate a simulation request; returns ``n_trials`` as an int."""
    check_compatible(draft, target)
    if not isinstance(algorithm, Algorithm):
        raise TypeError(
            f"algorithm must be a theory Algorithm (e.g. Speculative()); got {algorithm!r}"
        )
    algorithm.check_models(draft, target)
    if not isinstance(n_trials, numbers.Integral) or isinstance(n_trials, bool):
        raise TypeError(f"n_trials must be an integer; got {n_trials!r}")
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1; got {n_trials}")
    if n_trials >= 2**63:  # trial indices are 64-bit Philox counters
        raise ValueError(f"n_trials must be < 2**63; got {n_trials}")
    return int(n_trials)
