"""Rung 2 of the ladder: Monte Carlo (reference sampler and vectorized engine) ≈ closed forms.

Every check runs at the false-positive level ``ALPHA`` (1e-6) with a fixed seed and no retry,
and sits beside a negative control: a known-wrong verifier (:mod:`tests.mutants`) that the same
check, at the same sample size and seed, must fail.  Statistical assertions of correct
algorithms in this module: 34 (budget 34 × 1e-6 = 3.4e-5 per run); the calibration test adds
two binomial checks at 1e-6.
"""

import numpy as np
import pytest
from scipy import stats

from sim import simulate
from sim.models import fig2_pair, hidden_context_pair, random_pair
from sim.reference import reference_simulate
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import counts_check, mean_check, pmf_check, pmf_moments
from tests.mutants import AbsoluteResidual, InvertedRatio, ResampleFromTarget
from theory import (
    Autoregressive,
    Speculative,
    expected_rejections,
    rejection_pmf,
    target_calls_pmf,
)

ENGINES = {"vectorized": (simulate, 100_000), "reference": (reference_simulate, 3_000)}


def setting(engine):
    """The Fig. 2 pair for the fast engine; a small sparse pair for the slow one."""
    if engine == "vectorized":
        return fig2_pair()
    return random_pair(3, 6, concentration=0.5, rng=7)


def count_checks(samples, pmf, label):
    mean, variance = pmf_moments(pmf)
    return (mean_check(samples, mean, variance=variance, alpha=ALPHA, name=f"{label} mean"),
            pmf_check(samples, pmf, alpha=ALPHA, name=f"{label} pmf"))


CORRECT = [Speculative(), Speculative(window=3), Speculative(window=3, bonus=False)]


@pytest.mark.parametrize("algorithm", CORRECT, ids=repr)
@pytest.mark.parametrize("engine", ENGINES)
def test_rejections_and_target_calls_match_the_exact_laws(engine, algorithm):
    run, n_trials = ENGINES[engine]
    draft, target = setting(engine)
    result = run(draft, target, algorithm, n_trials=n_trials, rng=2024)
    checks = [*count_checks(result.rejections, rejection_pmf(draft, target, algorithm),
                            "rejections"),
              *count_checks(result.target_calls, target_calls_pmf(draft, target, algorithm),
                            "target calls")]
    for check in checks:
        assert check.passed, str(check)

    # Negative control: the same four checks, same size and seed, on a wrong acceptance rule.
    mutant = InvertedRatio(window=algorithm.window, bonus=algorithm.bonus)
    wrong = run(draft, target, mutant, n_trials=n_trials, rng=2024)
    wrong_checks = [*count_checks(wrong.rejections, rejection_pmf(draft, target, algorithm),
                                  "rejections"),
                    *count_checks(wrong.target_calls,
                                  target_calls_pmf(draft, target, algorithm), "target calls")]
    assert not any(check.passed for check in wrong_checks), [str(c) for c in wrong_checks]


def test_autoregressive_counts_are_deterministic():
    draft, target = fig2_pair()
    result = simulate(draft, target, Autoregressive(), n_trials=1000, rng=0)
    assert (result.rejections == 0).all() and (result.target_calls == target.horizon).all()


# ---------------------------------------------------------------- the emitted law is q
SMALL = dict(vocab_size=3, horizon=3)


def sequence_counts(tokens, vocab_size):
    codes = tokens @ (vocab_size ** np.arange(tokens.shape[1])[::-1])
    return np.bincount(codes, minlength=vocab_size ** tokens.shape[1])


def sequence_law(target):
    grid = np.array(np.meshgrid(*[np.arange(target.vocab_size)] * target.horizon,
                                indexing="ij")).reshape(target.horizon, -1).T
    return target.sequence_probability(grid)  # in the same base-V order as sequence_counts


@pytest.mark.parametrize("mutant", [ResampleFromTarget(), AbsoluteResidual()], ids=repr)
@pytest.mark.parametrize("engine", ENGINES)
def test_emitted_sequences_follow_the_target(engine, mutant):
    run, n_trials = ENGINES[engine]
    n_trials = min(n_trials, 20_000)
    draft, target = random_pair(SMALL["vocab_size"], SMALL["horizon"], concentration=0.5,
                                rng=31)
    law = sequence_law(target)
    result = run(draft, target, Speculative(), n_trials=n_trials, rng=5, record_tokens=True)
    check = counts_check(sequence_counts(result.tokens, 3), law, alpha=ALPHA, name="sequences")
    assert check.passed, str(check)
    wrong = run(draft, target, mutant, n_trials=n_trials, rng=5, record_tokens=True)
    control = counts_check(sequence_counts(wrong.tokens, 3), law, alpha=ALPHA, name="sequences")
    assert not control.passed, str(control)


def test_last_token_marginal_on_fig2_follows_the_target():
    draft, target = fig2_pair()
    last = target.horizon - 1
    law = target.context_marginals()[last] @ target.probs[last]  # P(x_T = x)
    result = simulate(draft, target, Speculative(), n_trials=100_000, rng=9, record_tokens=True)
    check = counts_check(np.bincount(result.tokens[:, last], minlength=7), law, alpha=ALPHA)
    assert check.passed, str(check)
    wrong = simulate(draft, target, ResampleFromTarget(), n_trials=100_000, rng=9,
                     record_tokens=True)
    control = counts_check(np.bincount(wrong.tokens[:, last], minlength=7), law, alpha=ALPHA)
    assert not control.passed, str(control)


def test_large_vocabulary_mean_rejections():
    draft, target = hidden_context_pair(50_000, 4, 16, rng=3)
    result = simulate(draft, target, Speculative(), n_trials=20_000, rng=4)
    pmf = rejection_pmf(draft, target)
    mean, variance = pmf_moments(pmf)
    assert abs(mean - expected_rejections(draft, target)) < 1e-10
    check = mean_check(result.rejections, mean, variance=variance, alpha=ALPHA)
    assert check.passed, str(check)
    wrong = simulate(draft, target, InvertedRatio(), n_trials=20_000, rng=4)
    assert not mean_check(wrong.rejections, mean, variance=variance, alpha=ALPHA).passed


# ---------------------------------------------------------------- calibration
def test_checks_are_calibrated():
    """Over 400 seeds, a correct algorithm fails a level-0.05 check about 5% of the time."""
    draft, target = random_pair(3, 4, concentration=0.8, rng=12)
    pmf = rejection_pmf(draft, target)
    mean, variance = pmf_moments(pmf)
    n_seeds, level = 400, 0.05
    mean_failures = pmf_failures = 0
    for seed in range(n_seeds):
        samples = simulate(draft, target, Speculative(), n_trials=400, rng=seed).rejections
        mean_failures += not mean_check(samples, mean, variance=variance, alpha=level).passed
        pmf_failures += not pmf_check(samples, pmf, alpha=level).passed
    for failures in (mean_failures, pmf_failures):
        assert stats.binomtest(failures, n_seeds, level).pvalue >= 1e-6, failures


def test_optimal_window_policy_simulates_its_exact_laws():
    """The optimal draft-length policy on Fig. 2 (c = 0.05), 100,000 trials: the four checks
    of the laws of rejections and target calls.  Negative control: the same policy with the
    window chosen by position only (context 0's for every context), whose mean number of
    target calls differs by 0.084 (≈ 10 standard errors at this size)."""
    from tests.mutants import context_blind
    from theory import optimal_window_policy

    draft, target = fig2_pair()
    policy = optimal_window_policy(draft, target, cost_ratio=0.05, max_window=10)
    result = simulate(draft, target, policy, n_trials=100_000, rng=16)
    calls_pmf = target_calls_pmf(draft, target, policy)
    checks = [*count_checks(result.rejections, rejection_pmf(draft, target, policy),
                            "rejections"),
              *count_checks(result.target_calls, calls_pmf, "target calls")]
    for check in checks:
        assert check.passed, str(check)
    wrong = simulate(draft, target, context_blind(policy), n_trials=100_000, rng=16)
    wrong_checks = count_checks(wrong.target_calls, calls_pmf, "target calls")
    assert not any(check.passed for check in wrong_checks), [str(c) for c in wrong_checks]
