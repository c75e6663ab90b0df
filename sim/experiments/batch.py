"""Experiments: theory against simulation, as tables that reports and notebooks print.

Each experiment runs the vectorized engine, compares every simulated statistic with its closed
form through :mod:`sim.stats`, and returns plain rows (dicts) that carry the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.engine import simulate
from sim.stats import DEFAULT_ALPHA, counts_check, mean_check, pmf_moments
from theory import (
    BatchSpeculative,
    LossySpeculative,
    MarkovLM,
    batch_rejection_limit,
    expected_rejections,
    optimal_multidraft_acceptance,
    output_model,
    rejection_pmf,
)
from theory.batch import root_acceptance
from theory.lossy import sequence_kl, sequence_tv_bound

__all__ = ["BatchExperiment", "batch_experiment", "equal_rejection_eps", "multidraft_gap",
           "tradeoff_table"]


def multidraft_gap(draft: MarkovLM, target: MarkovLM, n_drafts: int) -> float:
    r"""Average over positions of α*(pₙ, qₙ, M) − (1 − Π_m TV(q^m_n, pₙ)) under the target.

    How much root acceptance the recursive ("paper"/"trie") verifier leaves on the table
    compared with the optimal multi-draft verifier, per position, averaged over n and over
    the target's context law.
    """
    marginals = np.asarray(target.context_marginals(), dtype=np.float64)
    p = np.asarray(draft.probs, dtype=np.float64)
    q = np.asarray(target.probs, dtype=np.float64)
    gap = optimal_multidraft_acceptance(p, q, n_drafts) - root_acceptance(p, q, n_drafts)
    return float((marginals * gap).sum() / target.horizon)


@dataclass(frozen=True)
class BatchExperiment:
    """Simulated vs exact E[N_rej] for ``BatchSpeculative(M, verifier)``, with limits and gaps."""

    rows: list = field(default_factory=list)
    limits: dict = field(default_factory=dict)
    gaps: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(row["passed"] for row in self.rows)


def batch_experiment(draft: MarkovLM, target: MarkovLM, n_drafts=range(1, 9), *,
                     verifiers=("paper", "trie"), n_trials: int = 100_000, rng=None,
                     alpha: float = DEFAULT_ALPHA, client=None) -> BatchExperiment:
    """E[N_rej] vs M for both verifiers: exact DP, simulation ± standard error, z, p, verdict.

    Also Proposition 1's M → ∞ limits and the gap to the optimal multi-draft verifier.
    ``client`` runs the simulations on a dask cluster (same results).

    Examples
    --------
    >>> from sim.experiments import batch_experiment
    >>> from sim.models import fig2_pair
    >>> result = batch_experiment(*fig2_pair(), n_drafts=[1, 2], n_trials=2000, rng=0)
    >>> [(row["n_drafts"], row["verifier"]) for row in result.rows]
    [(1, 'paper'), (1, 'trie'), (2, 'paper'), (2, 'trie')]
    """
    n_drafts = list(n_drafts)
    streams = np.random.default_rng(rng).spawn(len(n_drafts) * len(verifiers))
    rows = []
    for i, (m, verifier) in enumerate((m, v) for m in n_drafts for v in verifiers):
        algorithm = BatchSpeculative(m, verifier)
        mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
        result = simulate(draft, target, algorithm, n_trials=n_trials, rng=streams[i],
                          client=client)
        check = mean_check(result.rejections, mean, variance=variance, alpha=alpha,
                           name=f"E[N_rej] M={m} {verifier}")
        rows.append({"n_drafts": m, "verifier": verifier, "theory": mean,
                     "simulated": check.estimate, "standard_error": check.standard_error,
                     "z": check.statistic, "p_value": check.p_value, "passed": check.passed})
    limits = {v: float(batch_rejection_limit(draft, target, v)) for v in verifiers}
    gaps = {m: multidraft_gap(draft, target, m) for m in n_drafts}
    return BatchExperiment(rows, limits, gaps)


def tradeoff_table(draft: MarkovLM, target: MarkovLM, eps_values, *,
                   rejections=("opt", "target"), n_trials: int = 100_000, rng=None,
                   alpha: float = DEFAULT_ALPHA, client=None) -> list[dict]:
    r"""Theory vs simulation of lossy decoding over a sweep of ε (the paper's §4).

    One row per (ε, rejection rule) with, per position (averaged over n = 1..T):

    * ``rejection_probability`` — E[N_rej] / T (exact DP);
    * ``tv_loss`` — (1/T) Σₙ E_{s∼μ^o_n}[TV(oₙ(·|s), qₙ(·|s))], which is Loss*_TV(bₙ) for OPT;

    and for whole sequences ``sequence_kl`` = KL(output ‖ target) and ``sequence_tv_bound``.
    The simulated mean of N_rej is checked against the DP (``rejections_passed``), and the
    emitted last token against the output model — not q (``tokens_passed``).

    Examples
    --------
    >>> from sim.experiments import tradeoff_table
    >>> from sim.models import fig2_pair
    >>> rows = tradeoff_table(*fig2_pair(), [0.0, 0.2], n_trials=2000, rng=0)
    >>> [(row["eps"], row["rejection"]) for row in rows]
    [(0.0, 'opt'), (0.0, 'target'), (0.2, 'opt'), (0.2, 'target')]
    """
    eps_values = list(eps_values)
    streams = np.random.default_rng(rng).spawn(len(eps_values) * len(rejections))
    horizon = target.horizon
    last = horizon - 1
    rows = []
    for i, (eps, rule) in enumerate((e, r) for e in eps_values for r in rejections):
        algorithm = LossySpeculative(eps, rule)
        emitted = output_model(draft, target, algorithm)
        mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
        result = simulate(draft, target, algorithm, n_trials=n_trials, rng=streams[i],
                          record_tokens=True, client=client)
        check = mean_check(result.rejections, mean, variance=variance, alpha=alpha)
        last_law = np.asarray(emitted.context_marginals()[last] @ emitted.probs[last], float)
        tokens = counts_check(np.bincount(result.tokens[:, last], minlength=target.vocab_size),
                              last_law / last_law.sum(), alpha=alpha)
        rows.append({
            "eps": eps, "rejection": rule,
            "rejection_probability": mean / horizon,
            "tv_loss": sequence_tv_bound(emitted, target) / horizon,
            "sequence_kl": sequence_kl(emitted, target),
            "sequence_tv_bound": sequence_tv_bound(emitted, target),
            "simulated_rejection_probability": check.estimate / horizon,
            "standard_error": check.standard_error / horizon,
            "z": check.statistic, "p_value": check.p_value,
            "rejections_passed": check.passed, "tokens_passed": tokens.passed,
            "tokens_statistic": tokens.statistic, "tokens_p_value": tokens.p_value,
            "tokens_dof": tokens.degrees_of_freedom,
        })
    return rows


def equal_rejection_eps(draft: MarkovLM, target: MarkovLM, rejections: float, *,
                        tolerance: float = 1e-10):
    r"""The ε at which Decoding-OPT has E[N_rej] = ``rejections`` (None if no ε has).

    E[N_rej](ε) of ``LossySpeculative(ε, "opt")`` (exact DP) is continuous and non-increasing
    in ε, from Theorem 1's value at ε = 0 to 0 at ε = 1 (then q + ε ≥ p: every draft is
    accepted); the root is found by bisection to ``tolerance`` in ε.  Returns None when
    ``rejections`` exceeds the ε = 0 value (lossless SD already rejects less).

    Examples
    --------
    >>> from sim.experiments import equal_rejection_eps
    >>> from sim.models import fig2_pair
    >>> from theory import LossySpeculative, expected_rejections
    >>> draft, target = fig2_pair()
    >>> eps = equal_rejection_eps(draft, target, 10.0)
    >>> round(float(expected_rejections(draft, target, LossySpeculative(eps))), 6)
    10.0
    """
    def rejections_at(eps):
        return float(expected_rejections(draft, target, LossySpeculative(eps)))

    if rejections > rejections_at(0.0):
        return None
    low, high = 0.0, 1.0
    while high - low > tolerance:
        middle = (low + high) / 2
        low, high = (middle, high) if rejections_at(middle) > rejections else (low, middle)
    return (low + high) / 2
