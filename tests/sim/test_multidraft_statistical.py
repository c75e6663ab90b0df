"""Multi-draft root verifiers: the compiled engine's samples ≈ the exact DP, with a
negative control at the same sample size for every check (false-positive level 1e-6 per
check; 5 + 5 = 10 statistical assertions on correct algorithms).

Sizes: on Fig. 2 (T = 50, M = 4) the mutants' exact means differ from the correct ones by
z = 42 (swor without renormalizing, the closest), 167 (spectr with ρ = 1), 960 (greedy without
q·1_D) and 517 (topk with min(1, q/p)) standard errors at 10^5 trials — against a critical
z of 4.9 at level 1e-6 — so a miss of a control has probability far below 1e-6.  For the
sequence check (V = 3, T = 3, 3 · 10^4 trials) the controls are caught with large margins too
(each printed on failure)."""

import pytest

from sim import simulate
from sim.models import fig2_pair, random_pair
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import counts_check, mean_check
from tests.mutants import GreedyWithoutDraftedMass, SpectrNaive, SworUnnormalized, TopkRatioTest
from tests.sim.test_statistical import pmf_moments, sequence_counts, sequence_law
from theory import BatchSpeculative, rejection_pmf

CONTROLS = {"swor": SworUnnormalized, "spectr": SpectrNaive,
            "greedy": GreedyWithoutDraftedMass, "topk": TopkRatioTest,
            "optimal": SpectrNaive}  # "optimal" has no named bug: any wrong verifier will do


@pytest.mark.parametrize("verifier", sorted(CONTROLS))
def test_fig2_mean_rejections(verifier):
    draft, target = fig2_pair()
    mean, variance = pmf_moments(rejection_pmf(draft, target, BatchSpeculative(4, verifier)))
    good = simulate(draft, target, BatchSpeculative(4, verifier), n_trials=100_000, rng=14)
    check = mean_check(good.rejections, mean, variance=variance, alpha=ALPHA)
    assert check.passed, str(check)
    wrong = simulate(draft, target, CONTROLS[verifier](4), n_trials=100_000, rng=14)
    control = mean_check(wrong.rejections, mean, variance=variance, alpha=ALPHA)
    assert not control.passed, str(control)


@pytest.mark.parametrize("verifier", sorted(CONTROLS))
def test_emitted_sequences_follow_the_target(verifier):
    draft, target = random_pair(3, 3, concentration=0.5, rng=31)
    law = sequence_law(target)
    n_trials = 30_000
    good = simulate(draft, target, BatchSpeculative(2, verifier), n_trials=n_trials, rng=6,
                    record_tokens=True)
    check = counts_check(sequence_counts(good.tokens, 3), law, alpha=ALPHA)
    assert check.passed, str(check)
    wrong = simulate(draft, target, CONTROLS[verifier](2), n_trials=n_trials, rng=6,
                     record_tokens=True)
    control = counts_check(sequence_counts(wrong.tokens, 3), law, alpha=ALPHA)
    assert not control.passed, str(control)
