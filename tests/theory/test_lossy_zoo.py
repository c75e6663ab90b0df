"""Lossy zoo: typical acceptance and truncated-target SD against Theorem 5, exactly.

Exact rung only: per-position places against the Pareto line (hand-derived closed forms of the
gap), the enumerated laws of the reference routine against the DPs and the output models in
rationals, and the negative controls of :mod:`tests.mutants` caught by the same assertions.
"""

import math
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import simulate
from sim.models import fig2_pair
from sim.reference import enumerate_outcomes
from sim.strategies import model_pairs, probability_vectors
from tests.harness import all_sequences, assert_exact_ladder
from tests.mutants import TruncatedBonusFromTarget, TypicalWithoutEntropy
from theory import (
    LossySpeculative,
    MarkovLM,
    Speculative,
    TruncatedSpeculative,
    TypicalAcceptance,
    expected_rejections,
    output_model,
    theorem1_rejections,
    tv_distance,
    verifier_tradeoff,
)
from theory.lossy import chain_tradeoff
from theory.lossy_zoo import truncate, typical_cutoff

exact_pairs = st.integers(1, 5).flatmap(
    lambda v: st.tuples(probability_vectors(v, exact=True), probability_vectors(v, exact=True)))
typical_settings = st.tuples(st.sampled_from([0.01, 0.09, 0.3, 0.6, 2.0]),
                             st.sampled_from([0.05, 0.3, 1.0, 3.0]))
truncations = st.one_of(
    st.builds(TruncatedSpeculative, top_k=st.integers(1, 5)),
    st.builds(TruncatedSpeculative, top_p=st.sampled_from([F(1, 3), F(1, 2), F(9, 10), 1])),
    st.builds(TruncatedSpeculative, top_k=st.integers(1, 4), top_p=st.sampled_from([F(1, 2)])))


def _min(a, b):
    return a if a <= b else b


# ---------------------------------------------------------------------- one position, exactly
@given(exact_pairs, typical_settings)
def test_typical_acceptance_gap_is_the_rejected_overlap(pair, setting):
    """OPT rule: ρ + Loss* − TV = Σ_{b=0} min(p, q) (hand-derived from Theorem 4's closed
    form), exactly in rationals; UNO rule never below it; both ≥ 0."""
    p, q = pair
    threshold, alpha = setting
    opt = verifier_tradeoff(p, q, TypicalAcceptance(threshold, alpha, "opt"))
    uno = verifier_tradeoff(p, q, TypicalAcceptance(threshold, alpha, "target"))
    entropy = -sum(float(x) * math.log(float(x)) for x in q if x > 0)
    cutoff = min(threshold, alpha * math.exp(-entropy))
    rejected = [x for x in range(len(p)) if not float(q[x]) > cutoff]
    assert opt.gap == sum((_min(p[x], q[x]) for x in rejected), F(0))
    assert opt.tv_loss == opt.optimal_tv_loss  # 𝒫* attains Theorem 4's optimum
    assert uno.gap >= opt.gap >= 0
    assert opt.rejection_probability == sum((p[x] for x in rejected), F(0))


@given(exact_pairs, truncations)
def test_truncation_sits_at_the_triangle_inequality(pair, algorithm):
    """(ρ, Loss) = (TV(p, q̂), TV(q̂, q)) and Loss = 1 − q(kept), exactly."""
    p, q = pair
    hat = algorithm.truncate(q)
    place = verifier_tradeoff(p, q, algorithm)
    assert place.rejection_probability == tv_distance(p, hat)
    assert place.tv_loss == tv_distance(hat, q) == 1 - sum(q[hat > 0])
    assert place.gap == tv_distance(p, hat) + tv_distance(hat, q) - tv_distance(p, q) >= 0


@given(exact_pairs, st.sampled_from([F(0), F(1, 20), F(1, 5), F(1)]))
def test_decoding_opt_is_on_the_line_and_uno_is_not_below(pair, eps):
    p, q = pair
    assert verifier_tradeoff(p, q, LossySpeculative(eps, "opt")).gap == 0
    assert verifier_tradeoff(p, q, LossySpeculative(eps, "target")).gap >= 0


@settings(max_examples=30)
@given(st.integers(1, 6).flatmap(lambda v: st.tuples(probability_vectors(v),
                                                     probability_vectors(v))),
       typical_settings)
def test_float_rows_are_never_below_the_line(pair, setting):
    p, q = pair
    for algorithm in (TypicalAcceptance(*setting, "opt"), TypicalAcceptance(*setting),
                      TruncatedSpeculative(top_k=2), TruncatedSpeculative(top_p=0.8)):
        assert verifier_tradeoff(p, q, algorithm).gap >= -1e-12


def test_typical_acceptance_is_on_the_line_where_it_accepts_the_support():
    """Uniform q over V: H = ln V, cutoff = min(threshold, α/V) < 1/V for α < 1, so every
    token is accepted: b ≡ 1 (ρ = 0, loss TV(p, q), gap 0); with α > 1 and threshold ≥ 1/V
    every token is rejected and the gap is Σ min(p, q) = 1 − TV(p, q)."""
    p, q = [F(1, 2), F(1, 3), F(1, 6)], [F(1, 3)] * 3
    accepted = verifier_tradeoff(p, q, TypicalAcceptance(0.09, 0.3, "opt"))
    assert (accepted.rejection_probability, accepted.gap) == (0, 0)
    assert accepted.tv_loss == tv_distance(p, q) == F(1, 6)
    rejected = verifier_tradeoff(p, q, TypicalAcceptance(0.5, 1.5, "opt"))
    assert rejected.rejection_probability == 1 and rejected.tv_loss == 0
    assert rejected.gap == 1 - tv_distance(p, q)


def test_typical_cutoff_by_hand_and_ties_are_rejected():
    q = np.array([0.5, 0.25, 0.25])
    entropy = 1.5 * math.log(2)
    assert typical_cutoff(q, 1.0, 0.3) == pytest.approx(0.3 * math.exp(-entropy), rel=1e-15)
    assert typical_cutoff(q, 0.01, 0.3) == 0.01
    # q(x) == cutoff is rejected (strict >): threshold 0.25 binds when α e^{-H} > 0.25
    b, _ = TypicalAcceptance(0.25, 1.0).verification(np.full(3, 1 / 3), q)
    assert b.tolist() == [1.0, 0.0, 0.0]


def test_typical_opt_where_rounding_leaves_no_gap():
    """A legal float row p = (1.0, 1e-300) (it sums to 1 + 1e-300) against q = (1.0, 0): token 1
    is rejected (q = 0 is below the cutoff) with probability 1e-300, and the exact gap
    q − b p = (1e-300, 0) rounds to (0, 0).  The rejection law is then q (not a row of zeros
    that every engine refused as an invalid verifier; found by randomized testing)."""
    algorithm = TypicalAcceptance(0.09, 0.3, "opt")
    b, law = algorithm.verification(np.array([1.0, 1e-300]), np.array([1.0, 0.0]))
    assert b.tolist() == [1.0, 0.0] and law.tolist() == [1.0, 0.0]
    # the fallback is for rounding only: an exact gap (here on token 0) is kept as it is
    assert algorithm.verification(np.array([0.5, 0.5]), np.array([1.0, 0.0]))[1].tolist() \
        == [1.0, 0.0]
    draft = MarkovLM.homogeneous([[1.0, 1e-300]], 2, next_context=[[0, 0]])
    target = MarkovLM.homogeneous([[1.0, 0.0]], 2, next_context=[[0, 0]])
    assert expected_rejections(draft, target, algorithm) == pytest.approx(2e-300, rel=1e-12)
    assert enumerate_outcomes(draft, target, algorithm).rejection_pmf().tolist()[0] == 1.0
    result = simulate(draft, target, algorithm, n_trials=50, rng=0, record_tokens=True)
    assert result.tokens.tolist() == [[0, 0]] * 50 and result.rejections.sum() == 0

def test_truncation_by_hand_with_ties():
    q = [F(1, 4), F(1, 4), F(1, 2)]
    assert truncate(q, top_k=2).tolist() == [F(1, 3), 0, F(2, 3)]  # tie: index 0 first
    assert truncate(q, top_p=F(1, 2)).tolist() == [0, 0, 1]  # 1/2 reaches 1/2 already
    assert truncate(q, top_p=F(1, 2) + F(1, 100)).tolist() == [F(1, 3), 0, F(2, 3)]
    assert truncate(q, top_k=1, top_p=F(1, 10)).tolist() == [0, 0, 1]
    assert truncate(q, top_k=9).tolist() == q
    # nucleus of the renormalized top-k law: top-2 = (1/3, 2/3); 2/3 ≥ 0.6 · 1
    assert truncate(q, top_k=2, top_p=F(3, 5)).tolist() == [0, 0, 1]
    rows = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    np.testing.assert_allclose(truncate(rows, top_k=2), [[0, 2 / 3, 1 / 3], [0.625, 0, 0.375]])


# ---------------------------------------------------------------------- sequences, exactly
@settings(max_examples=25)
@given(model_pairs(exact=True, max_vocab=3, max_horizon=3), st.sampled_from([
    TruncatedSpeculative(top_k=1), TruncatedSpeculative(top_k=2),
    TruncatedSpeculative(top_p=F(1, 2)), TruncatedSpeculative(top_k=2, window=1),
    TruncatedSpeculative(top_p=F(2, 3), window=2), TruncatedSpeculative(top_k=2, window=2,
                                                                        bonus=False)]))
def test_truncated_speculative_is_lossless_for_the_truncated_target(pair, algorithm):
    """Enumeration == DPs, sequence law == q̂, exactly; without bonus E[N_rej] is Theorem 1
    for the pair (p, q̂) (an independent formula)."""
    draft, target = pair
    truncated = algorithm.truncated_target(target)
    assert_exact_ladder(draft, target, algorithm, emitted=truncated)
    assert output_model(draft, target, algorithm).probs.tolist() == truncated.probs.tolist()
    if algorithm.window is None or not algorithm.bonus:
        assert expected_rejections(draft, target, algorithm) == \
            theorem1_rejections(draft, truncated)


@settings(max_examples=25)
@given(model_pairs(exact=True, max_vocab=3, max_horizon=3),
       st.sampled_from([(0.09, 0.3), (0.3, 0.6), (0.4, 1.0)]), st.sampled_from(["opt", "target"]))
def test_typical_acceptance_follows_its_output_model_exactly(pair, setting, rule):
    draft, target = pair
    algorithm = TypicalAcceptance(*setting, rule)
    assert_exact_ladder(draft, target, algorithm, emitted=output_model(draft, target, algorithm))


def _exact_pair():
    """V = 4, T = 2, one context, p uniform, q = (7/24, 7/24, 1/3, 1/12): H(q) ≈ 1.292 nats,
    so 0.3·e^{−H} ≈ 0.0824 < q(3) = 1/12 ≈ 0.0833 < 0.09 — the entropy term decides token 3."""
    q = [F(7, 24), F(7, 24), F(1, 3), F(1, 12)]
    p = [F(1, 4)] * 4
    lm = lambda row: MarkovLM([[row]] * 2, next_context=[[0, 0, 0, 0]])  # noqa: E731
    return lm(p), lm(q)


def test_typical_without_entropy_is_caught_exactly():
    """Negative control: the mutant (cutoff = threshold) rejects token 3, which the right rule
    accepts; the assertion the right rule passes fails for the mutant."""
    draft, target = _exact_pair()
    right = TypicalAcceptance(0.09, 0.3)
    cutoff = float(right.cutoff(np.array(target.probs[0, 0], dtype=float)))
    assert cutoff < 1 / 12 < 0.09
    expected = output_model(draft, target, right)
    assert_exact_ladder(draft, target, right, emitted=expected)
    wrong = TypicalWithoutEntropy(0.09, 0.3)
    with pytest.raises(AssertionError):
        assert_exact_ladder(draft, target, wrong, emitted=expected)


def test_bonus_from_the_target_is_caught_exactly():
    draft, target = _exact_pair()
    algorithm = TruncatedSpeculative(top_k=2, window=1)
    assert_exact_ladder(draft, target, algorithm, emitted=algorithm.truncated_target(target))
    wrong = TruncatedBonusFromTarget(top_k=2, window=1)
    law = enumerate_outcomes(draft, target, wrong).sequence_law()
    truncated = algorithm.truncated_target(target)
    assert any(law.get(tokens, 0) != truncated.sequence_probability(list(tokens))
               for tokens in all_sequences(target))


def test_chain_tradeoff_matches_the_dp_on_fig2():
    """ρ̄ · T (output-chain average) == E[N_rej] (branch DP), and every gap ≥ 0, OPT's 0."""
    draft, target = fig2_pair()
    for algorithm in (TypicalAcceptance(), TypicalAcceptance(rejection="opt"),
                      TruncatedSpeculative(top_k=3), TruncatedSpeculative(top_p=0.9),
                      LossySpeculative(0.05)):
        row = chain_tradeoff(draft, target, algorithm)
        assert 50 * row["rejection_probability"] == pytest.approx(
            expected_rejections(draft, target, algorithm), rel=1e-12)
        assert row["gap"] >= -1e-12
    assert chain_tradeoff(draft, target, LossySpeculative(0.05))["gap"] == pytest.approx(
        0, abs=1e-12)
    with pytest.raises(ValueError, match="window"):
        chain_tradeoff(draft, target, Speculative(window=2))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["threshold", "alpha"])
@pytest.mark.parametrize("value", [0, -0.1, float("nan"), float("inf")])
def test_typical_acceptance_validates(name, value):
    with pytest.raises(ValueError, match=name):
        TypicalAcceptance(**{name: value})


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="threshold"):
        TypicalAcceptance(threshold="0.1")
    with pytest.raises(TypeError, match="alpha"):
        TypicalAcceptance(alpha=True)
    with pytest.raises(ValueError, match="rejection"):
        TypicalAcceptance(rejection="residual")
    with pytest.raises(ValueError, match="top_k"):
        TruncatedSpeculative(top_k=0)
    with pytest.raises(TypeError, match="top_k"):
        TruncatedSpeculative(top_k=2.0)
    for bad in (0, -0.5, 1.01, float("nan")):
        with pytest.raises(ValueError, match="top_p"):
            TruncatedSpeculative(top_p=bad)
    with pytest.raises(ValueError, match="window"):
        TruncatedSpeculative(top_k=2, window=0)
    with pytest.raises(TypeError, match="algorithm"):
        verifier_tradeoff([0.5, 0.5], [0.5, 0.5], "typical")
    with pytest.raises(ValueError, match="p"):
        verifier_tradeoff([0.5, 0.6], [0.5, 0.5], TypicalAcceptance())
