"""Theorem 2 by linear programming, and the sympy identities."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.models import random_pair
from sim.strategies import probability_vectors
from theory import theorem1_rejections, tv_distance
from theory.optimality import optimal_rejections_lp, optimal_verifier_lp
from theory.symbolic import leviathan_identity, one_step_unbiasedness, optimal_window


@given(st.integers(1, 6).flatmap(lambda v: st.tuples(probability_vectors(v),
                                                      probability_vectors(v))))
def test_lp_optimum_is_total_variation(pair):
    p, q = pair
    lp = optimal_verifier_lp(p, q)
    assert lp.rejection_probability == pytest.approx(tv_distance(p, q), abs=1e-9)
    # The optimal verifier is unbiased: b p + ρ 𝒫 = q.
    np.testing.assert_allclose(lp.acceptance * p + lp.rejection_probability * lp.rejection_law,
                               q, atol=1e-8)


def test_sequence_level_bound_by_optimization_equals_theorem1():
    draft, target = random_pair(4, 6, concentration=0.5, rng=3)
    assert optimal_rejections_lp(draft, target) == pytest.approx(
        theorem1_rejections(draft, target), abs=1e-8)


@pytest.mark.parametrize("vocab_size", [2, 3])
def test_one_step_unbiasedness_symbolically(vocab_size):
    regions = one_step_unbiasedness(vocab_size)
    assert len(regions) == 2 ** vocab_size - 2
    assert all(residual == 0 for residuals in regions.values() for residual in residuals)


def test_leviathan_geometric_sum_symbolically():
    assert leviathan_identity() == 0


def test_optimal_window_validates():
    assert optimal_window(0.0, 0.5) == 1
    with pytest.raises(ValueError, match="acceptance must be in"):
        optimal_window(1.0, 0.1)
