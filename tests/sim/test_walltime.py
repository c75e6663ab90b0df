"""Drafted tokens per trial: every engine counts them, so walltime can be simulated.

``SimResult.drafted`` adds, at each round start (n, s), the tokens the round drafts
(``Algorithm.draft_lengths``: min(γ, T − n), T − n without a window, 0 for autoregressive
sampling), also those after the first rejection; the walltime of a trial is then
``target_calls + c · drafted`` (``theory.expected_walltime``'s convention).  Checked on the
verification ladder: the reference routines' exact law of ``drafted`` against the theory
(rationals), the compiled and torch engines bit for bit, and the simulated mean walltime
against the exact one beside a known-wrong draft count.
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings

from gpu_kernels import simulate as simulate_torch
from sim import simulate
from sim.models import fig2_pair
from sim.reference import enumerate_outcomes
from sim.stats import DEFAULT_ALPHA, mean_check
from sim.strategies import model_pairs
from tests.mutants import UndercountedDrafts
from theory import (
    AdaptiveSpeculative,
    Autoregressive,
    BatchSpeculative,
    BlockSpeculative,
    LossySpeculative,
    Speculative,
    ThresholdStopping,
    expected_target_calls,
    expected_walltime,
    optimal_window_policy,
)

FAMILIES = [Autoregressive(), Speculative(), Speculative(window=2),
            Speculative(window=2, bonus=False), LossySpeculative(Fraction(1, 10)),
            BatchSpeculative(2),
            BatchSpeculative(2, "trie"), BatchSpeculative(2, "swor"), BlockSpeculative(2),
            BlockSpeculative(3, bonus=False)]


@settings(max_examples=15, deadline=None)
@given(model_pairs(exact=True, max_vocab=3, max_horizon=3))
def test_the_reference_law_of_drafted_tokens_is_the_walltime_convention(pair):
    """E[drafted] from the exact law of the reference routines = E[W](c = 1) − E[calls]."""
    draft, target = pair
    adaptive = [AdaptiveSpeculative(ThresholdStopping(Fraction(1, 2)), max_window=2),
                AdaptiveSpeculative(lambda n, s, drafted: n + len(drafted) >= 2, max_window=3)]
    for algorithm in [*FAMILIES, *adaptive]:
        law = enumerate_outcomes(draft, target, algorithm)
        mean = sum(p * outcome.drafted for outcome, p in law.outcomes.items())
        expected = (expected_walltime(draft, target, algorithm, cost_ratio=1)
                    - expected_target_calls(draft, target, algorithm))
        assert mean == expected, algorithm
        assert isinstance(mean, Fraction | int)


def test_drafted_is_exact_when_every_draft_is_accepted():
    """p = q: rounds start at 0, γ + 1, 2(γ + 1), … and draft min(γ, T − n) each."""
    draft, _ = fig2_pair(horizon=10)
    for window in (1, 3, 4):
        expected = sum(min(window, 10 - n) for n in range(0, 10, window + 1))
        for engine in (simulate, simulate_torch):
            result = engine(draft, draft, Speculative(window=window), n_trials=50, rng=0)
            assert (result.drafted == expected).all()
    result = simulate(draft, draft, Speculative(), n_trials=50, rng=0)  # one round, T drafts
    assert (result.drafted == 10).all() and (result.target_calls == 1).all()
    assert (simulate(draft, draft, Autoregressive(), n_trials=5, rng=0).drafted == 0).all()


@pytest.mark.parametrize("algorithm", [*FAMILIES[1:], "policy"], ids=repr)
def test_engines_count_the_same_drafts(algorithm):
    draft, target = fig2_pair(horizon=12)
    if algorithm == "policy":
        algorithm = optimal_window_policy(draft, target, cost_ratio=0.1, max_window=4)
    compiled = simulate(draft, target, algorithm, n_trials=2000, rng=3, chunk_size=700)
    torch = simulate_torch(draft, target, algorithm, n_trials=2000, rng=3, device="cpu")
    np.testing.assert_array_equal(compiled.drafted, torch.drafted)
    np.testing.assert_array_equal(compiled.target_calls, torch.target_calls)


#: 20,000 trials: the undercount of one draft per round moves the mean walltime at c = 0.5 by
#: ≈ 0.5 · E[rounds] ≈ 1.6 on these chains, ≈ 60 standard errors; a correct count is caught
#: with probability ≤ 1e-6 per check.
N_TRIALS = 20_000


@pytest.mark.parametrize("algorithm", [Speculative(window=3), BatchSpeculative(2, "trie"),
                                       BlockSpeculative(3)], ids=repr)
def test_simulated_walltime_matches_the_exact_walltime(algorithm):
    draft, target = fig2_pair(horizon=12)
    exact = expected_walltime(draft, target, algorithm, cost_ratio=0.5)
    result = simulate(draft, target, algorithm, n_trials=N_TRIALS, rng=11)
    assert mean_check(result.walltime(0.5), exact, alpha=DEFAULT_ALPHA).passed


def test_negative_control_an_undercounted_draft_is_caught():
    """A verifier that counts one draft fewer per round than it drafts (the walltime of
    implementations that stop counting at the first rejection is smaller still)."""
    draft, target = fig2_pair(horizon=12)
    exact = expected_walltime(draft, target, Speculative(window=3), cost_ratio=0.5)
    result = simulate(draft, target, UndercountedDrafts(window=3), n_trials=N_TRIALS, rng=11)
    np.testing.assert_array_equal(
        result.target_calls,
        simulate(draft, target, Speculative(window=3), n_trials=N_TRIALS, rng=11).target_calls)
    assert not mean_check(result.walltime(0.5), exact, alpha=DEFAULT_ALPHA).passed


def test_walltime_needs_drafted_counts_and_a_cost():
    draft, target = fig2_pair(horizon=4)
    result = simulate(draft, target, Speculative(window=2), n_trials=10, rng=0)
    with pytest.raises(ValueError, match="cost_ratio"):
        result.walltime(-1)
    with pytest.raises(ValueError, match="no drafted counts"):
        type(result)(result.rejections, result.target_calls).walltime(0.1)
