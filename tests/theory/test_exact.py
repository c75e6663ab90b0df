"""Rung 1 of the ladder: exact enumeration of the reference engine == closed forms.

With Fraction models every comparison is exact equality; with floats, 1e-12.
"""

from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.models import bernoulli_pair, random_pair
from sim.reference import enumerate_outcomes
from sim.strategies import model_pairs
from tests.harness import all_sequences, assert_exact_ladder
from tests.mutants import AbsoluteResidual, InvertedRatio, ResampleFromTarget
from theory import (
    Autoregressive,
    Speculative,
    UnbiasedSpeculative,
    expected_rejections,
    expected_speedup,
    expected_target_calls,
    expected_walltime,
    rejection_pmf,
    rejection_profile,
    round_length_pmf,
    target_calls_pmf,
    theorem1_rejections,
)
from theory.symbolic import leviathan_expected_tokens, leviathan_walltime_factor

ALGORITHMS = [
    Speculative(),
    Speculative(window=1),
    Speculative(window=2),
    Speculative(window=2, bonus=False),
    Autoregressive(),
    UnbiasedSpeculative.scaled(F(1, 2)),
]
small_exact_pairs = model_pairs(max_vocab=3, max_horizon=3, max_contexts=2, exact=True)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=repr)
@settings(max_examples=25)
@given(pair=small_exact_pairs)
def test_enumeration_equals_dynamic_program_exactly(algorithm, pair):
    # and unbiasedness: every algorithm here emits exactly the target's sequence law
    assert_exact_ladder(*pair, algorithm)


@settings(max_examples=25)
@given(pair=small_exact_pairs, window=st.sampled_from([None, 1, 2, 3]))
def test_theorem1_equals_dynamic_program_exactly(pair, window):
    draft, target = pair
    bound = theorem1_rejections(draft, target)
    assert isinstance(bound, F)
    # Every tested position rejects w.p. TV: Theorem 1 holds for any window without bonus.
    assert expected_rejections(draft, target, Speculative(window, bonus=False)) == bound
    assert expected_rejections(draft, target, Speculative()) == bound


def test_larger_exact_case_enumerates():
    draft, target = random_pair(3, 4, concentration=0.7, rng=5)
    law = enumerate_outcomes(draft, target, Speculative(window=2))
    np.testing.assert_allclose(law.rejection_pmf().astype(float),
                               rejection_pmf(draft, target, Speculative(window=2)), atol=1e-12)
    np.testing.assert_allclose(law.target_calls_pmf().astype(float),
                               target_calls_pmf(draft, target, Speculative(window=2)),
                               atol=1e-12)
    sequences = law.sequence_law()
    for tokens in all_sequences(target):
        assert sequences.get(tokens, 0.0) == pytest.approx(
            target.sequence_probability(list(tokens)), abs=1e-12)


@given(pair=model_pairs(max_vocab=4, max_horizon=5, max_contexts=3))
def test_float_dynamic_program_properties(pair):
    draft, target = pair
    horizon = target.horizon
    for algorithm in ALGORITHMS[:4]:
        mean = expected_rejections(draft, target, algorithm)
        pmf = rejection_pmf(draft, target, algorithm)
        assert -1e-12 <= mean <= horizon + 1e-12
        assert (pmf >= -1e-15).all() and abs(pmf.sum() - 1) < 1e-12
        assert abs(np.arange(horizon + 1) @ pmf - mean) < 1e-10
        calls = target_calls_pmf(draft, target, algorithm)
        assert abs(np.arange(horizon + 1) @ calls
                   - expected_target_calls(draft, target, algorithm)) < 1e-10
        assert calls[0] == 0 and 1 - 1e-12 <= expected_target_calls(draft, target,
                                                                    algorithm) <= horizon + 1e-12
    assert abs(expected_rejections(draft, target) - theorem1_rejections(draft, target)) < 1e-12
    assert abs(rejection_profile(draft, target).sum()
               - expected_rejections(draft, target)) < 1e-12


@given(pair=model_pairs(relation="equal"))
def test_identical_models_never_reject(pair):
    draft, target = pair
    assert expected_rejections(draft, target) == 0  # exactly: acceptance is 1 everywhere
    # (a float start law may sum to 1 − 1e-16, hence the rounding tolerance below)
    assert rejection_pmf(draft, target)[0] == pytest.approx(1, abs=1e-15)
    assert expected_target_calls(draft, target) == pytest.approx(1, abs=1e-15)


@given(pair=model_pairs(relation="near"))
def test_models_equal_to_rounding_never_reject(pair):
    draft, target = pair
    # Either no residual mass (acceptance 1 everywhere) or a residual of rounding size.
    assert expected_rejections(draft, target) < 1e-13


@given(pair=model_pairs(max_vocab=3, max_horizon=4), factor=st.floats(0, 1))
def test_class_f_members_never_beat_speculative(pair, factor):
    draft, target = pair
    member = UnbiasedSpeculative.scaled(factor)
    assert expected_rejections(draft, target, member) >= \
        expected_rejections(draft, target) - 1e-12


@settings(max_examples=20)
@given(pair=small_exact_pairs, factor=st.fractions(0, 1, max_denominator=6))
def test_class_f_members_are_unbiased_exactly(pair, factor):
    draft, target = pair
    law = enumerate_outcomes(draft, target, UnbiasedSpeculative.scaled(factor)).sequence_law()
    for tokens in all_sequences(target):
        assert law.get(tokens, 0) == target.sequence_probability(list(tokens))


def test_class_f_rejects_a_biased_acceptance_rule():
    greedy = UnbiasedSpeculative(acceptance=lambda p, q: np.ones_like(p))
    with pytest.raises(ValueError, match=r"outside \[0, min\(1, q/p\)\].*biased"):
        greedy.verification(np.array([0.5, 0.5]), np.array([0.9, 0.1]))


@pytest.mark.parametrize("mutant", [ResampleFromTarget(), AbsoluteResidual(), InvertedRatio()],
                         ids=repr)
def test_exact_checks_catch_mutants(mutant):
    """Negative control for the exact rung: each known-wrong verifier breaks unbiasedness."""
    draft, target = bernoulli_pair(F(1, 2), F(1, 5), horizon=2)
    draft3, target3 = random_pair(3, 2, rng=11)
    caught = False
    for d, t in ((draft, target), (draft3, target3)):
        law = enumerate_outcomes(d, t, mutant).sequence_law()
        caught |= any(law.get(tokens, 0) != pytest.approx(t.sequence_probability(list(tokens)),
                                                          abs=1e-12)
                      for tokens in all_sequences(t))
    assert caught


# ---------------------------------------------------------------- Leviathan et al.
@pytest.mark.parametrize("window", [1, 2, 3, 5])
@pytest.mark.parametrize(("u", "v"), [(F(1, 2), F(1, 5)), (F(9, 10), F(1, 3)), (F(1, 4), F(1, 4))])
def test_round_length_reproduces_leviathan_exactly(window, u, v):
    draft, target = bernoulli_pair(u, v, horizon=window + 3)
    acceptance = 1 - abs(u - v)
    pmf = round_length_pmf(draft, target, Speculative(window=window))
    mean = sum(k * pmf[k] for k in range(len(pmf)))
    expected = sum(acceptance ** k for k in range(window + 1))  # geometric sum
    assert mean == expected
    if acceptance != 1:
        assert mean == leviathan_expected_tokens(window, acceptance)


def test_speedup_tends_to_leviathan_factor_at_rate_one_over_t():
    u, v, window, cost = 0.6, 0.3, 3, 0.1
    limit = float(leviathan_walltime_factor(1 - abs(u - v), window, cost))
    errors = []
    for horizon in (250, 1000, 4000):
        draft, target = bernoulli_pair(u, v, horizon=horizon)
        speedup = expected_speedup(draft, target, Speculative(window=window), cost_ratio=cost)
        errors.append(abs(speedup - limit) * horizon)
    assert max(errors) < 5 and errors[-1] <= errors[0] * 1.01  # error · T stays bounded


def test_autoregressive_walltime_is_the_horizon():
    draft, target = random_pair(3, 7, rng=1)
    assert expected_walltime(draft, target, Autoregressive(), cost_ratio=0.3) == 7
    assert expected_speedup(draft, target, Autoregressive(), cost_ratio=0.3) == 1
    with pytest.raises(ValueError, match="cost_ratio must be a real number >= 0"):
        expected_walltime(draft, target, cost_ratio=-1)


@pytest.mark.parametrize("algorithm", [ResampleFromTarget(window=2), InvertedRatio(),
                                       AbsoluteResidual(window=1, bonus=False)], ids=repr)
def test_dynamic_program_follows_any_verification_rule(algorithm):
    """The DP reads the same (b, 𝒫) as the engines, so it is exact for wrong rules too."""
    draft, target = random_pair(3, 3, concentration=0.5, rng=17)
    law = enumerate_outcomes(draft, target, algorithm)
    np.testing.assert_allclose(law.rejection_pmf().astype(float),
                               rejection_pmf(draft, target, algorithm), atol=1e-12)
    np.testing.assert_allclose(law.target_calls_pmf().astype(float),
                               target_calls_pmf(draft, target, algorithm), atol=1e-12)
