"""The exported hypothesis strategies produce valid values and reach the edge cases."""

from fractions import Fraction

import numpy as np
from hypothesis import find, given

from sim.strategies import markov_lms, model_pairs, probability_vectors
from theory import MarkovLM, check_compatible


@given(probability_vectors())
def test_float_vectors_are_distributions(p):
    assert p.dtype == np.float64 and (p >= 0).all() and abs(p.sum() - 1) < 1e-12


@given(probability_vectors(exact=True))
def test_exact_vectors_sum_to_one_exactly(p):
    assert all(isinstance(v, Fraction) for v in p) and sum(p) == 1


@given(probability_vectors(4, allow_zeros=False))
def test_allow_zeros_false_gives_full_support(p):
    assert (p > 0).all()


def test_edge_cases_are_reachable():
    assert (find(probability_vectors(3), lambda p: sorted(p.tolist()) == [0, 0, 1]) > -1).all()
    find(probability_vectors(3), lambda p: 0 < p.min() < 1e-6)
    find(probability_vectors(3), lambda p: (p == 0).sum() == 1)
    find(markov_lms(), lambda lm: lm.vocab_size == 1)
    find(markov_lms(), lambda lm: lm.horizon == 1 and lm.vocab_size > 1)
    find(markov_lms(), lambda lm: not lm.is_first_order)
    find(markov_lms(), lambda lm: not isinstance(lm.start, int))
    find(model_pairs(), lambda pair: np.array_equal(pair[0].probs, pair[1].probs))
    find(model_pairs(relation="near"),
         lambda pair: 0 < np.abs(pair[0].probs - pair[1].probs).max() < 1e-14)
    find(model_pairs(), lambda pair: ((pair[0].probs == 0) & (pair[1].probs > 0)).any())


@given(model_pairs(exact=True))
def test_exact_pairs(pair):
    draft, target = pair
    check_compatible(draft, target)
    assert isinstance(draft, MarkovLM) and draft.is_exact and target.is_exact
