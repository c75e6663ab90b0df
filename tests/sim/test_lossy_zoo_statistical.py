"""Lossy zoo (issue #15): Monte Carlo of typical acceptance and truncated SD ≈ the exact laws.

Level 1e-6 per check, fixed seeds, no retries, each beside a negative control caught by the
same check at the same size.  Statistical assertions on correct algorithms: 2 × 2 (typical,
N_rej and last token) + 2 (truncated, sequence law, two engines) = 6.
"""

import numpy as np
import pytest

from sim import simulate
from sim.models import fig2_pair, random_pair
from sim.reference import reference_simulate
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import counts_check, mean_check
from tests.mutants import TruncatedBonusFromTarget, TypicalWithoutEntropy
from tests.sim.test_statistical import pmf_moments, sequence_counts
from theory import TruncatedSpeculative, TypicalAcceptance, output_model, rejection_pmf

#: Fig. 2 trials.  Power: the mutant without the entropy term has E[N_rej] ≈ 15.30 against
#: 8.62 (sd 2.64 per run), z ≈ 358 at 20,000 runs against the two-sided 1e-6 cut-off 4.9.
TYPICAL_TRIALS = 20_000


@pytest.mark.parametrize("rule", ["target", "opt"])
def test_typical_acceptance_on_fig2(rule):
    draft, target = fig2_pair()
    algorithm = TypicalAcceptance(0.09, 0.3, rule)
    mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
    result = simulate(draft, target, algorithm, n_trials=TYPICAL_TRIALS, rng=15,
                      record_tokens=True)
    check = mean_check(result.rejections, mean, variance=variance, alpha=ALPHA)
    assert check.passed, str(check)
    emitted = output_model(draft, target, algorithm)
    last = target.horizon - 1
    law = np.asarray(emitted.context_marginals()[last] @ emitted.probs[last], dtype=float)
    counts = np.bincount(result.tokens[:, last], minlength=target.vocab_size)
    fit = counts_check(counts, law / law.sum(), alpha=ALPHA)
    assert fit.passed, str(fit)
    wrong = simulate(draft, target, TypicalWithoutEntropy(0.09, 0.3, rule),
                     n_trials=TYPICAL_TRIALS, rng=15)
    control = mean_check(wrong.rejections, mean, variance=variance, alpha=ALPHA)
    assert not control.passed, str(control)


@pytest.mark.parametrize(("run", "n_trials"), [(simulate, 20_000), (reference_simulate, 3_000)],
                         ids=["vectorized", "reference"])
def test_truncated_speculative_emits_the_truncated_target(run, n_trials):
    """Sequence law (27 sequences) == q̂ with a bonus token every other position.  Power of the
    control: the bonus-from-q mutant puts 2.2% of its mass on sequences q̂ cannot emit
    (computed exactly by enumeration), ≈ 65 of 3,000 runs; any one fails the check."""
    draft, target = random_pair(3, 3, concentration=0.5, rng=31)
    algorithm = TruncatedSpeculative(top_k=2, window=1)
    truncated = algorithm.truncated_target(target)
    grid = np.array(np.meshgrid(*[np.arange(3)] * 3, indexing="ij")).reshape(3, -1).T
    law = truncated.sequence_probability(grid)
    result = run(draft, target, algorithm, n_trials=n_trials, rng=5, record_tokens=True)
    check = counts_check(sequence_counts(result.tokens, 3), law, alpha=ALPHA)
    assert check.passed, str(check)
    wrong = run(draft, target, TruncatedBonusFromTarget(top_k=2, window=1), n_trials=n_trials,
                rng=5, record_tokens=True)
    control = counts_check(sequence_counts(wrong.tokens, 3), law, alpha=ALPHA)
    assert not control.passed, str(control)
