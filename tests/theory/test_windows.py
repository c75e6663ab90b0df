"""Draft-length policies: the DP on policies, the optimal policy by backward induction, against
brute force, fixed windows and Leviathan's i.i.d. rule."""

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.models import context_free_pair, fig2_pair, random_pair
from sim.strategies import model_pairs
from tests.harness import assert_exact_ladder
from theory import (
    MarkovLM,
    Speculative,
    WindowPolicy,
    expected_rejections,
    expected_target_calls,
    expected_walltime,
    optimal_window_policy,
    rejection_pmf,
    target_calls_pmf,
)
from theory.windows import _bellman


@st.composite
def pairs_with_tables(draw, exact=False, max_window=3):
    draft, target = draw(model_pairs(exact=exact, max_vocab=3, max_horizon=4))
    table = draw(st.lists(st.integers(0, max_window),
                          min_size=target.horizon * target.n_contexts,
                          max_size=target.horizon * target.n_contexts))
    return draft, target, WindowPolicy(np.reshape(table, (target.horizon, target.n_contexts)))


@settings(max_examples=40)
@given(pairs_with_tables(exact=True))
def test_enumeration_of_the_reference_routine_equals_the_dp_exactly(case):
    """The policy is lossless, and the DP's laws of rejections and target calls are the
    reference routine's, in rationals (windows 0 … 3, horizon cuts, hidden contexts)."""
    draft, target, policy = case
    assert_exact_ladder(draft, target, policy)


@settings(max_examples=30)
@given(model_pairs(max_vocab=3, max_horizon=5), st.integers(1, 4))
def test_a_constant_table_is_a_fixed_window(pair, window):
    draft, target = pair
    table = np.full((target.horizon, target.n_contexts), window)
    policy, fixed = WindowPolicy(table), Speculative(window=window)
    for quantity in (rejection_pmf, target_calls_pmf):
        np.testing.assert_allclose(quantity(draft, target, policy),
                                   quantity(draft, target, fixed), atol=1e-12)
    assert expected_walltime(draft, target, policy, cost_ratio=0.3) == pytest.approx(
        expected_walltime(draft, target, fixed, cost_ratio=0.3), abs=1e-12)


def test_brute_force_over_every_table_attains_the_returned_minimum():
    """T = 3, S = V = 2, windows 0 … 2: all 3⁶ = 729 tables, for three cost ratios."""
    draft, target = random_pair(2, 3, rng=4)
    for cost_ratio in (0.02, 0.2, 0.7):
        policy = optimal_window_policy(draft, target, cost_ratio=cost_ratio, max_window=2)
        best = min(
            expected_walltime(draft, target, WindowPolicy(np.reshape(table, (3, 2))),
                              cost_ratio=cost_ratio)
            for table in itertools.product(range(3), repeat=6))
        assert expected_walltime(draft, target, policy, cost_ratio=cost_ratio) == \
            pytest.approx(best, rel=1e-12)


def test_optimal_value_is_exact_in_rationals():
    """Bellman's value Σ_s start(s) J(0, s) equals the DP wall time of the returned table,
    exactly, and no fixed window does better."""
    weights = np.random.default_rng(7).integers(1, 9, size=(2, 4, 2, 2))
    draft, target = (MarkovLM([[[Fraction(int(w), int(row.sum())) for w in row]
                                for row in position] for position in model])
                     for model in weights)
    cost = Fraction(1, 5)
    policy = optimal_window_policy(draft, target, cost_ratio=cost, max_window=3)
    value = expected_walltime(draft, target, policy, cost_ratio=cost)
    _, bellman = _bellman(draft, target, cost, 3)
    assert isinstance(value, Fraction)
    assert value == target.start_distribution @ bellman[0]
    for window in (1, 2, 3):
        assert value <= expected_walltime(draft, target, Speculative(window=window),
                                          cost_ratio=cost)


@settings(max_examples=25)
@given(pair=model_pairs(max_vocab=3, max_horizon=5),
       cost_ratio=st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0, 3.0]))
def test_never_worse_than_any_fixed_window_or_autoregression(pair, cost_ratio):
    draft, target = pair
    policy = optimal_window_policy(draft, target, cost_ratio=cost_ratio, max_window=4)
    value = expected_walltime(draft, target, policy, cost_ratio=cost_ratio)
    fixed = [expected_walltime(draft, target, Speculative(window=w), cost_ratio=cost_ratio)
             for w in range(1, 5)]
    assert value <= min(fixed) + 1e-12
    assert value <= target.horizon + 1e-12  # window 0 everywhere: autoregressive decoding


@pytest.mark.parametrize(("cost_ratio", "leviathan_window"), [(0.02, 4), (0.05, 3), (0.1, 2)])
def test_context_free_interior_is_leviathans_window(cost_ratio, leviathan_window):
    r"""i.i.d. tokens with acceptance α = 1/2: far from the horizon the optimal window is the
    maximizer of Leviathan et al.'s (1 − α^{γ+1}) / ((1 − α)(γc + 1)) (the optimal
    stationary policy of the average-cost problem); within a few positions of the horizon it
    is not — shorter windows avoid drafting past T, and one position may draft longer to end
    on a bonus token."""
    alpha = 0.5
    ratios = [(1 - alpha ** (g + 1)) / ((1 - alpha) * (g * cost_ratio + 1)) for g in range(12)]
    assert int(np.argmax(ratios)) == leviathan_window  # the closed form, independently
    draft, target = context_free_pair([0.5, 0.5], [1.0, 0.0], horizon=60)
    table = optimal_window_policy(draft, target, cost_ratio=cost_ratio, max_window=11).table
    assert (table[:50, 0] == leviathan_window).all()
    assert table[-1, 0] == 0  # the last position: drafting cannot pay


def test_fig2_gain_over_the_best_fixed_window():
    draft, target = fig2_pair()
    for cost_ratio in (0.05, 0.2):
        policy = optimal_window_policy(draft, target, cost_ratio=cost_ratio, max_window=10)
        value = expected_walltime(draft, target, policy, cost_ratio=cost_ratio)
        best = min(expected_walltime(draft, target, Speculative(window=w), cost_ratio=cost_ratio)
                   for w in range(1, 11))
        assert value < best
        assert expected_rejections(draft, target, policy) >= 0
        assert expected_target_calls(draft, target, policy) <= target.horizon


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [(lambda d, t: optimal_window_policy(d, t, cost_ratio=-0.1, max_window=2), ValueError,
      "cost_ratio must be a real number >= 0"),
     (lambda d, t: optimal_window_policy(d, t, cost_ratio=float("nan"), max_window=2),
      ValueError, "cost_ratio must be a real number >= 0"),
     (lambda d, t: optimal_window_policy(d, t, cost_ratio=True, max_window=2), ValueError,
      "cost_ratio must be a real number >= 0"),
     (lambda d, t: optimal_window_policy(d, t, cost_ratio=0.1, max_window=-1), ValueError,
      "max_window must be an integer >= 0"),
     (lambda d, t: optimal_window_policy(d, t, cost_ratio=0.1, max_window=2.5), ValueError,
      "max_window must be an integer >= 0"),
     (lambda d, t: WindowPolicy(np.zeros(3)), ValueError, "non-empty 2-d array"),
     (lambda d, t: WindowPolicy([[1, -1]]), ValueError, r"table\[0, 1\] = -1"),
     (lambda d, t: WindowPolicy([[0.5]]), TypeError, "table must hold integers"),
     (lambda d, t: expected_target_calls(d, t, WindowPolicy(np.ones((2, 2), dtype=int))),
      ValueError, r"table must have shape \(T, S\) = \(3, 2\)"),
     (lambda d, t: expected_walltime(d, t, Speculative(2), cost_ratio=True), ValueError,
      "cost_ratio must be a real number >= 0")],
)
def test_bad_input(call, error, match):
    draft, target = random_pair(2, 3, rng=0)
    with pytest.raises(error, match=match):
        call(draft, target)


def test_simulating_a_table_of_the_wrong_shape_is_refused():
    from sim import simulate

    draft, target = random_pair(2, 3, rng=0)
    with pytest.raises(ValueError, match="table must have shape"):
        simulate(draft, target, WindowPolicy(np.ones((3, 3), dtype=int)), n_trials=5)
