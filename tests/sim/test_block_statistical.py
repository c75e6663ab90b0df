"""Block verification, Monte Carlo rung: the CPU engine and the reference sampler against the
exact round-level DP, each check at level 1e-6, fixed seeds, no retry, and beside negative
controls — the three wrong rules serving engines have shipped (``tests.mutants``: one shared
η, an upward scan stopping at the first failure, cumulative products of ratios vs uniforms),
which the same checks at the same sample size must fail.  Statistical assertions of correct
algorithms here: 13 (the rest are negative controls)."""

import numpy as np
import pytest

from sim import simulate
from sim.models import fig2_pair, random_pair
from sim.reference import reference_simulate
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import counts_check
from tests.mutants import CumulativeProductBlock, FirstFailureBlock, SharedUniformBlock
from tests.sim.test_statistical import count_checks, sequence_counts, sequence_law
from theory import BlockSpeculative, rejection_pmf, target_calls_pmf

MUTANTS = (SharedUniformBlock, FirstFailureBlock, CumulativeProductBlock)

# Sample size: 40,000 trials of Fig. 2 (T = 50).  The target-call count has sd ≈ 2, so the
# mean's standard error is ≈ 0.01 and the 1e-6 two-sided z threshold (4.9) is ≈ 0.05 calls.
# The mutants move E[calls] by +0.32 (shared η), +4.5 (first failure) and −3.3 (cumulative
# products) at γ = 2, and by more at γ = 3, 4 (measured on this pair at this size): z ≥ 30,
# so every control is caught with overwhelming probability; the correct rule keeps 1e-6.
FIG2_TRIALS = 40_000


def block_checks(result, draft, target, algorithm):
    return [*count_checks(result.rejections, rejection_pmf(draft, target, algorithm),
                          "rejections"),
            *count_checks(result.target_calls, target_calls_pmf(draft, target, algorithm),
                          "target calls")]


@pytest.mark.parametrize("algorithm", [BlockSpeculative(2), BlockSpeculative(4),
                                       BlockSpeculative(3, bonus=False)], ids=repr)
def test_cpu_engine_matches_the_exact_laws_on_fig2(algorithm):
    draft, target = fig2_pair()
    result = simulate(draft, target, algorithm, n_trials=FIG2_TRIALS, rng=13)
    for check in block_checks(result, draft, target, algorithm)[2:]:  # target calls
        assert check.passed, str(check)
    if algorithm.window == 4:  # the rejection law too, once
        for check in block_checks(result, draft, target, algorithm)[:2]:
            assert check.passed, str(check)
    for mutant in MUTANTS:
        wrong = simulate(draft, target, mutant(algorithm.window, bonus=algorithm.bonus),
                         n_trials=FIG2_TRIALS, rng=13)
        controls = block_checks(wrong, draft, target, algorithm)[2:]
        assert not any(check.passed for check in controls), [str(c) for c in controls]


def test_reference_sampler_matches_the_exact_laws():
    """The readable routine, sampled: 3,000 trials of a small sparse pair (slow engine)."""
    draft, target = random_pair(3, 6, concentration=0.5, rng=7)
    algorithm = BlockSpeculative(3)
    result = reference_simulate(draft, target, algorithm, n_trials=3_000, rng=2025)
    for check in block_checks(result, draft, target, algorithm):
        assert check.passed, str(check)


def test_emitted_sequences_follow_the_target():
    """Chi-square of whole sequences (V = 3, T = 4: 81 cells) against q; the mutants bias
    the sequence law (exactly shown for two of them in tests/theory/test_block.py) and the
    same check at 100,000 trials catches all three (measured chi-square statistics 2.7e3,
    2.2e4 and 1.8e5 on 80 degrees of freedom)."""
    draft, target = random_pair(3, 4, concentration=0.5, rng=31)
    law = sequence_law(target)
    n_trials = 100_000
    result = simulate(draft, target, BlockSpeculative(3), n_trials=n_trials, rng=5,
                      record_tokens=True)
    check = counts_check(sequence_counts(result.tokens, 3), law, alpha=ALPHA, name="sequences")
    assert check.passed, str(check)
    for mutant in MUTANTS:
        wrong = simulate(draft, target, mutant(3), n_trials=n_trials, rng=5, record_tokens=True)
        control = counts_check(sequence_counts(wrong.tokens, 3), law, alpha=ALPHA)
        assert not control.passed, f"{mutant.__name__}: {control}"
    assert (np.asarray(result.tokens) < 3).all()
