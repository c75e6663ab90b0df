"""Lossy decoding: Theorems 4–5 (closed form, LP, sympy), output model, sequence distances."""

import itertools
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import simulate
from sim.models import random_pair
from sim.strategies import model_pairs, probability_vectors
from tests.harness import assert_exact_ladder
from tests.mutants import ResampleFromTarget
from theory import (
    LossySpeculative,
    MarkovLM,
    Speculative,
    expected_rejections,
    optimal_rejection_distribution,
    output_model,
    pareto_front,
    tv_distance,
    tv_loss,
)
from theory.lossy import (
    is_optimal_rejection_distribution,
    over_acceptance,
    pareto_front_lp,
    rejection_probability,
    sequence_kl,
    sequence_tv,
    sequence_tv_bound,
    tv_loss_lp,
)
from theory.symbolic import pareto_pointwise_identity

pairs = st.integers(1, 6).flatmap(lambda v: st.tuples(probability_vectors(v),
                                                       probability_vectors(v)))
eps_values = st.one_of(st.just(0.0), st.floats(1e-6, 2.0))


@given(pairs, eps_values)
def test_theorem4_closed_form_lp_and_canonical_law(pair, eps):
    p, q = pair
    accept = over_acceptance(p, q, eps)
    loss = tv_loss(p, q, accept)
    assert loss == pytest.approx(tv_loss_lp(p, q, accept), abs=1e-7)
    rho = rejection_probability(p, accept)
    law = optimal_rejection_distribution(p, q, accept)
    if rho > 1e-12:
        assert is_optimal_rejection_distribution(p, q, accept, law)
        assert tv_distance(accept * p + rho * law, q) == pytest.approx(loss, abs=1e-12)
        # Decoding-UNO (reject into q) is never better than OPT.
        assert tv_distance(accept * p + rho * q, q) >= loss - 1e-12


@given(pairs, eps_values)
def test_theorem5_straight_pareto_line(pair, eps):
    p, q = pair
    accept = over_acceptance(p, q, eps)
    rho = rejection_probability(p, accept)
    assert rho + tv_loss(p, q, accept) == pytest.approx(tv_distance(p, q), abs=1e-12)
    assert tv_loss(p, q, accept) == pytest.approx(pareto_front(p, q, rho), abs=1e-12)


@settings(max_examples=30)
@given(pairs, st.floats(0, 1))
def test_theorem5_by_lp_over_all_verifiers(pair, rho):
    p, q = pair
    assert pareto_front_lp(p, q, rho) == pytest.approx(pareto_front(p, q, rho), abs=1e-7)


def test_pareto_identity_symbolically():
    assert pareto_pointwise_identity() == {"p <= q": 0, "p > q": 0}


def test_optimality_checker_rejects_a_wrong_law():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    accept = over_acceptance(p, q, 0.05)
    assert is_optimal_rejection_distribution(p, q, accept,
                                             optimal_rejection_distribution(p, q, accept))
    assert not is_optimal_rejection_distribution(p, q, accept, q)  # mass on A₋ = {0}


@given(pairs)
def test_eps_zero_is_speculative_and_eps_infinite_never_rejects(pair):
    p, q = pair
    for rule in ("opt", "target"):
        accept, _ = LossySpeculative(0.0, rule).verification(p, q)
        np.testing.assert_array_equal(accept, Speculative().verification(p, q)[0])
        infinite, _ = LossySpeculative(np.inf, rule).verification(p, q)
        assert rejection_probability(p, infinite) == 0
    np.testing.assert_array_equal(LossySpeculative(0.0).verification(p, q)[1],
                                  Speculative().verification(p, q)[1])


def test_lossy_validates():
    with pytest.raises(ValueError, match="eps must be a real number >= 0"):
        LossySpeculative(-0.1)
    with pytest.raises(ValueError, match="eps must be a real number >= 0"):
        LossySpeculative(float("nan"))
    with pytest.raises(ValueError, match="rejection must be one of"):
        LossySpeculative(0.1, "uniform")
    assert repr(LossySpeculative(0.1)) == "LossySpeculative(eps=0.1, rejection='opt')"


# ---------------------------------------------------------------- sequences, exactly
@pytest.mark.parametrize("rule", ["opt", "target"])
@settings(max_examples=20)
@given(pair=model_pairs(max_vocab=3, max_horizon=3, max_contexts=2, exact=True),
       eps=st.fractions(0, 1, max_denominator=8))
def test_enumeration_follows_the_output_model_exactly(rule, pair, eps):
    draft, target = pair
    algorithm = LossySpeculative(eps, rule)
    assert_exact_ladder(draft, target, algorithm, output_model(draft, target, algorithm))


@given(pair=model_pairs(max_vocab=3, max_horizon=4), eps=eps_values)
def test_opt_kernels_never_worse_than_uno(pair, eps):
    draft, target = pair
    opt = output_model(draft, target, LossySpeculative(eps, "opt"))
    uno = output_model(draft, target, LossySpeculative(eps, "target"))
    assert (tv_distance(opt.probs, target.probs)
            <= tv_distance(uno.probs, target.probs) + 1e-12).all()


def test_sequence_distances_match_enumeration():
    draft, target = random_pair(3, 4, concentration=0.7, rng=2)  # uniform random prompt
    emitted = output_model(draft, target, LossySpeculative(0.1))
    sequences = np.array(list(itertools.product(range(3), repeat=4)))
    kl = tv = 0.0
    for prompt in range(3):  # brute force, given each prompt
        o = MarkovLM(emitted.probs, start=prompt).sequence_probability(sequences)
        q = MarkovLM(target.probs, start=prompt).sequence_probability(sequences)
        kl += float(np.sum(np.where(o > 0, o * np.log(np.where(o > 0, o, 1) / q), 0))) / 3
        tv += np.abs(o - q).sum() / 2 / 3
    assert sequence_kl(emitted, target) == pytest.approx(kl, abs=1e-12)
    assert sequence_tv(emitted, target) == pytest.approx(tv, abs=1e-15)
    assert 0 < sequence_tv(emitted, target) <= sequence_tv_bound(emitted, target) + 1e-12
    exact = output_model(draft, target, LossySpeculative(0.0))
    assert sequence_kl(exact, target) == pytest.approx(0, abs=1e-12)


def test_infinite_eps_emits_the_draft_and_never_rejects():
    draft, target = random_pair(4, 5, rng=4)
    algorithm = LossySpeculative(np.inf)
    assert expected_rejections(draft, target, algorithm) == 0
    np.testing.assert_allclose(output_model(draft, target, algorithm).probs, draft.probs)


def test_decoding_opt_where_rounding_leaves_no_gap():
    """p = (1.0, 1e-20) is a legal float row (it sums to 1 + 1e-20); with ε = 1e-25 token 1 is
    accepted with b = ε/p = 1e-5, so rejection has probability ≈ 1e-20, and the exact gap
    [q − p]₊ = (1e-20, 0) on the accepted token rounds to 0.  The rejection law is then q
    instead of a row of zeros that every engine refused as an invalid verifier."""
    algorithm = LossySpeculative(1e-25)
    b, law = algorithm.verification(np.array([1.0, 1e-20]), np.array([1.0, 0.0]))
    assert b.tolist() == [1.0, 1e-25 / 1e-20] and law.tolist() == [1.0, 0.0]
    draft = MarkovLM.homogeneous([[1.0, 1e-20]], 3, next_context=[[0, 0]])
    target = MarkovLM.homogeneous([[1.0, 0.0]], 3, next_context=[[0, 0]])
    assert expected_rejections(draft, target, algorithm) == pytest.approx(3e-20, rel=1e-4)
    result = simulate(draft, target, algorithm, n_trials=50, rng=0, record_tokens=True)
    assert result.tokens.tolist() == [[0, 0, 0]] * 50

def test_output_model_needs_a_state_free_emission():
    draft, target = random_pair(3, 3, rng=1)
    np.testing.assert_allclose(output_model(draft, target, Speculative(window=2)).probs,
                               target.probs, atol=1e-15)
    with pytest.raises(ValueError, match="not a Markov chain over the contexts"):
        output_model(draft, target, ResampleFromTarget(window=2))


def test_exact_lossy_with_fractions():
    half = F(1, 2)
    exact_draft = MarkovLM([[[half, half], [F(1, 3), F(2, 3)]]] * 2, start=0)
    exact_target = MarkovLM([[[F(9, 10), F(1, 10)], [F(1, 4), F(3, 4)]]] * 2, start=0)
    rejections = expected_rejections(exact_draft, exact_target, LossySpeculative(F(1, 10)))
    assert isinstance(rejections, F)
