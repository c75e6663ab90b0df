"""Batch verifiers: Monte Carlo ≈ exact laws, with negative controls (false-positive level
1e-6 per check; 16 + 4 + 4 = 24 statistical assertions on correct algorithms)."""

import numpy as np
import pytest

from sim import simulate
from sim.experiments import batch_experiment, multidraft_gap
from sim.models import fig2_pair, random_pair
from sim.reference import reference_simulate
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import counts_check, mean_check, pmf_check
from tests.mutants import ForgetsResidualUpdate
from tests.sim.test_statistical import pmf_moments, sequence_counts, sequence_law
from theory import BatchSpeculative, rejection_pmf, target_calls_pmf


def test_fig2_mean_rejections_for_one_to_eight_drafts():
    """The issue's acceptance check: M = 1..8, both verifiers, 10^5 trials each."""
    draft, target = fig2_pair()
    result = batch_experiment(draft, target, range(1, 9), n_trials=100_000, rng=2024)
    for row in result.rows:
        assert row["passed"], row
    assert result.limits["trie"] == 0 and result.limits["paper"] > 0
    assert result.gaps[1] == pytest.approx(0, abs=1e-12)  # one draft: recursion is optimal
    assert all(result.gaps[m] > 0 for m in range(2, 9))


@pytest.mark.parametrize("n_drafts", [2, 4, 8])
@pytest.mark.parametrize("verifier", ["paper", "trie"])
def test_forgetting_the_residual_update_is_caught(n_drafts, verifier):
    """Negative control for the check above, at the same size."""
    draft, target = fig2_pair()
    mean, variance = pmf_moments(rejection_pmf(draft, target, BatchSpeculative(n_drafts,
                                                                               verifier)))
    wrong = simulate(draft, target, ForgetsResidualUpdate(n_drafts, verifier),
                     n_trials=100_000, rng=2024)
    assert not mean_check(wrong.rejections, mean, variance=variance, alpha=ALPHA).passed


@pytest.mark.parametrize("verifier", ["paper", "trie"])
@pytest.mark.parametrize("run", [simulate, reference_simulate], ids=["vectorized", "reference"])
def test_laws_of_rejections_and_calls(run, verifier):
    draft, target = random_pair(3, 5, concentration=0.6, rng=21)
    algorithm = BatchSpeculative(3, verifier)
    n_trials = 40_000 if run is simulate else 3_000
    result = run(draft, target, algorithm, n_trials=n_trials, rng=8)
    checks = [pmf_check(result.rejections, rejection_pmf(draft, target, algorithm), alpha=ALPHA),
              pmf_check(result.target_calls, target_calls_pmf(draft, target, algorithm),
                        alpha=ALPHA)]
    assert all(check.passed for check in checks), [str(c) for c in checks]
    wrong = run(draft, target, ForgetsResidualUpdate(3, verifier), n_trials=n_trials, rng=8)
    control = pmf_check(wrong.rejections, rejection_pmf(draft, target, algorithm), alpha=ALPHA)
    assert not control.passed, str(control)


@pytest.mark.parametrize("verifier", ["paper", "trie"])
@pytest.mark.parametrize("run", [simulate, reference_simulate], ids=["vectorized", "reference"])
def test_emitted_sequences_follow_the_target(run, verifier):
    draft, target = random_pair(3, 3, concentration=0.5, rng=31)
    law = sequence_law(target)
    n_trials = 20_000
    result = run(draft, target, BatchSpeculative(3, verifier), n_trials=n_trials, rng=5,
                 record_tokens=True)
    check = counts_check(sequence_counts(result.tokens, 3), law, alpha=ALPHA)
    assert check.passed, str(check)
    wrong = run(draft, target, ForgetsResidualUpdate(3, verifier), n_trials=n_trials, rng=5,
                record_tokens=True)
    control = counts_check(sequence_counts(wrong.tokens, 3), law, alpha=ALPHA)
    assert not control.passed, str(control)


def test_one_draft_engine_matches_speculative_trial_by_trial():
    from theory import Speculative

    draft, target = fig2_pair(horizon=20)
    base = simulate(draft, target, Speculative(), n_trials=5000, rng=3, record_tokens=True)
    for verifier in ("paper", "trie"):
        batch = simulate(draft, target, BatchSpeculative(1, verifier), n_trials=5000, rng=3,
                         record_tokens=True)
        np.testing.assert_array_equal(batch.tokens, base.tokens)
        np.testing.assert_array_equal(batch.rejections, base.rejections)
        np.testing.assert_array_equal(batch.target_calls, base.target_calls)


def test_multidraft_gap_is_zero_for_one_draft_and_grows():
    draft, target = fig2_pair()
    assert multidraft_gap(draft, target, 1) == pytest.approx(0, abs=1e-12)
    assert multidraft_gap(draft, target, 4) > 0
