"""Multi-draft root verifiers: exact rung — literal reference routine enumerated ==
DP on the root law == Theorem 3's form, losslessness in rationals, closed forms of the
acceptances, α* bounds, negative controls and bad input."""

import itertools
import math
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.models import bernoulli_pair, fig2_pair, random_pair
from sim.reference import enumerate_outcomes
from sim.strategies import model_pairs
from tests.harness import all_sequences, assert_exact_ladder
from tests.mutants import GreedyWithoutDraftedMass, SpectrNaive, SworUnnormalized, TopkRatioTest
from theory import (
    BatchSpeculative,
    MarkovLM,
    Speculative,
    expected_rejections,
    optimal_multidraft_acceptance,
    rejection_pmf,
    root_acceptance,
    target_calls_pmf,
)
from theory.batch import root_theorem3_rejections
from theory.multidraft import (
    OPTIMAL_MAX_SETS,
    greedy_root_law,
    optimal_root_law,
    spectr_rho,
    swor_root_law,
)

EXACT_VERIFIERS = ("swor", "greedy", "topk")  # no root-finding, no LP: exact in rationals


def _pair(p, q, horizon=1):
    """One-context chains with rows p (draft) and q (target) at every position."""
    draft = MarkovLM.homogeneous([p], horizon, next_context=[[0] * len(p)])
    target = MarkovLM.homogeneous([q], horizon, next_context=[[0] * len(q)])
    return draft, target


EDGE_CASES = {  # zeros, ties, p = q, V = 1, disjoint supports (M > support follows from M ≤ 4)
    "zeros-and-ties": ([F(1, 2), F(1, 2), F(0)], [F(1, 5), F(1, 5), F(3, 5)]),
    "p-equals-q": ([F(1, 3), F(1, 6), F(1, 2)], [F(1, 3), F(1, 6), F(1, 2)]),
    "one-token": ([F(1)], [F(1)]),
    "disjoint": ([F(1), F(0)], [F(0), F(1)]),
    "tie-in-top": ([F(2, 5), F(2, 5), F(1, 5)], [F(1, 10), F(7, 10), F(1, 5)]),
}


@pytest.mark.parametrize("verifier", EXACT_VERIFIERS)
@settings(max_examples=12, deadline=None)
@given(pair=model_pairs(max_vocab=3, max_horizon=3, max_contexts=2, exact=True),
       n_drafts=st.integers(1, 4))
def test_enumeration_equals_dp_and_is_lossless_exactly(verifier, pair, n_drafts):
    assert_exact_ladder(*pair, BatchSpeculative(n_drafts, verifier))


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("verifier", EXACT_VERIFIERS)
def test_edge_cases_exactly(verifier, case):
    draft, target = _pair(*EDGE_CASES[case], horizon=2)
    for n_drafts in (1, 2, 3, 4):
        assert_exact_ladder(draft, target, BatchSpeculative(n_drafts, verifier))


def _assert_close_ladder(draft, target, algorithm, tol=1e-9):
    """Enumeration vs DP and the emitted law vs q, to ``tol`` (root-finding or an LP)."""
    law = enumerate_outcomes(draft, target, algorithm)
    np.testing.assert_allclose(np.asarray(law.rejection_pmf(), dtype=float),
                               np.asarray(rejection_pmf(draft, target, algorithm), dtype=float),
                               atol=tol)
    np.testing.assert_allclose(np.asarray(law.target_calls_pmf(), dtype=float),
                               np.asarray(target_calls_pmf(draft, target, algorithm),
                                          dtype=float), atol=tol)
    sequences = law.sequence_law()
    for tokens in all_sequences(target):
        assert float(sequences.get(tokens, 0)) == pytest.approx(
            float(target.sequence_probability(list(tokens))), abs=tol)


@settings(max_examples=8, deadline=None)
@given(pair=model_pairs(max_vocab=3, max_horizon=3, max_contexts=2, exact=True),
       n_drafts=st.integers(1, 4))
def test_spectr_enumeration_equals_dp_exactly_for_its_rho(pair, n_drafts):
    """Both sides use the same float ρ* as an exact rational, so the laws of the counts agree
    exactly; the emitted law is q up to the bisection's precision."""
    draft, target = pair
    algorithm = BatchSpeculative(n_drafts, "spectr")
    law = enumerate_outcomes(draft, target, algorithm)
    assert law.rejection_pmf().tolist() == rejection_pmf(draft, target, algorithm).tolist()
    assert law.target_calls_pmf().tolist() == \
        target_calls_pmf(draft, target, algorithm).tolist()
    _assert_close_ladder(draft, target, algorithm, tol=1e-12)


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("verifier", ["spectr", "optimal"])
def test_spectr_and_optimal_edge_cases(verifier, case):
    p, q = EDGE_CASES[case]
    draft, target = _pair([float(v) for v in p], [float(v) for v in q], horizon=2)
    for n_drafts in (1, 2, 3):
        _assert_close_ladder(draft, target, BatchSpeculative(n_drafts, verifier))


@settings(max_examples=6, deadline=None)
@given(pair=model_pairs(max_vocab=3, max_horizon=2, max_contexts=2), n_drafts=st.integers(1, 3))
def test_optimal_enumeration_matches_dp(pair, n_drafts):
    _assert_close_ladder(*pair, BatchSpeculative(n_drafts, "optimal"))


@pytest.mark.parametrize("verifier", ["swor", "spectr", "greedy", "topk", "optimal"])
def test_theorem3_form_equals_the_dp(verifier):
    draft, target = fig2_pair(horizon=12)
    for n_drafts in (1, 2, 4):
        algorithm = BatchSpeculative(n_drafts, verifier)
        assert root_theorem3_rejections(draft, target, algorithm) == pytest.approx(
            expected_rejections(draft, target, algorithm), abs=1e-11)


@settings(max_examples=25, deadline=None)
@given(pair=model_pairs(max_vocab=4, max_horizon=3, exact=True), n_drafts=st.integers(1, 5))
def test_theorem3_form_equals_the_dp_exactly(pair, n_drafts):
    draft, target = pair
    for verifier in EXACT_VERIFIERS:
        algorithm = BatchSpeculative(n_drafts, verifier)
        assert root_theorem3_rejections(draft, target, algorithm) == \
            expected_rejections(draft, target, algorithm)


# -- closed forms of the root acceptance, by hand-written independent sums -------------------
def _top(p, size):
    """The ``size`` most probable tokens with p > 0, ties → lower index (sorted by hand)."""
    ranked = sorted(range(len(p)), key=lambda x: (-p[x], x))
    return [x for x in ranked[:max(size, 0)] if p[x] > 0]


@settings(max_examples=40, deadline=None)
@given(p=st.lists(st.integers(0, 4), min_size=1, max_size=5),
       q=st.lists(st.integers(0, 4), min_size=1, max_size=5), n_drafts=st.integers(1, 6))
def test_closed_forms_exactly(p, q, n_drafts):
    size = min(len(p), len(q))
    p, q = p[:size], q[:size]
    if sum(p) == 0 or sum(q) == 0:
        return
    p = [F(v, sum(p)) for v in p]
    q = [F(v, sum(q)) for v in q]
    drafted = _top(p, n_drafts)
    assert root_acceptance(p, q, BatchSpeculative(n_drafts, "topk")) == \
        sum(q[x] for x in drafted)  # q(D)
    greedy = _top(p, n_drafts - 1)
    rest_mass = sum(p[x] for x in range(size) if x not in greedy)
    rest = [F(0) if x in greedy or rest_mass == 0 else p[x] / rest_mass for x in range(size)]
    assert root_acceptance(p, q, BatchSpeculative(n_drafts, "greedy")) == \
        sum(q[x] for x in greedy) + sum(min(q[x], rest[x]) for x in range(size)
                                        if x not in greedy)
    swor = root_acceptance(p, q, BatchSpeculative(n_drafts, "swor"))
    if n_drafts == 1:  # one draft: standard speculative sampling, 1 − TV
        assert swor == 1 - sum(abs(a - b) for a, b in zip(p, q, strict=True)) / 2
    for verifier in EXACT_VERIFIERS:  # lossless root: a + r = q, exactly
        accepted, rejected = BatchSpeculative(n_drafts, verifier).root_law(
            np.array(p, dtype=object), np.array(q, dtype=object))
        assert (accepted + rejected).tolist() == q


def _alpha_star_brute_force(p, q, n_drafts):
    """1 + min over all subsets H of [q(H) − p(H)^M] (every H, not only the prefixes)."""
    tokens = range(len(p))
    return 1 + min(sum(q[x] for x in h) - sum(p[x] for x in h) ** n_drafts
                   for size in range(len(p) + 1) for h in itertools.combinations(tokens, size))


@settings(max_examples=30, deadline=None)
@given(p=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       q=st.lists(st.integers(0, 5), min_size=1, max_size=4), n_drafts=st.integers(1, 5))
def test_optimal_attains_alpha_star_and_bounds(p, q, n_drafts):
    size = min(len(p), len(q))
    p, q = p[:size], q[:size]
    if sum(p) == 0 or sum(q) == 0:
        return
    p = np.array(p, dtype=float) / sum(p)
    q = np.array(q, dtype=float) / sum(q)
    star = _alpha_star_brute_force(p, q, n_drafts)
    optimal = root_acceptance(p, q, BatchSpeculative(n_drafts, "optimal"))
    assert optimal == pytest.approx(star, abs=1e-9)
    assert optimal == pytest.approx(optimal_multidraft_acceptance(p, q, n_drafts), abs=1e-9)
    spectr = root_acceptance(p, q, BatchSpeculative(n_drafts, "spectr"))
    assert root_acceptance(p, q, n_drafts) <= optimal + 1e-9  # "paper"
    assert spectr <= optimal + 1e-9
    assert spectr >= (1 - np.exp(-1)) * optimal - 1e-12  # Sun et al. 2023, Thm. 3
    accepted, rejected = optimal_root_law(p, q, n_drafts)
    np.testing.assert_allclose(accepted + rejected, q, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(p=st.lists(st.integers(0, 5), min_size=2, max_size=5),
       q=st.lists(st.integers(0, 5), min_size=2, max_size=5), n_drafts=st.integers(1, 8))
def test_spectr_rho_solves_its_equation(p, q, n_drafts):
    size = min(len(p), len(q))
    p, q = p[:size], q[:size]
    if sum(p) == 0 or sum(q) == 0:
        return
    p = np.array(p, dtype=float) / sum(p)
    q = np.array(q, dtype=float) / sum(q)
    rho = float(spectr_rho(p, q, n_drafts))
    assert 1 <= rho <= n_drafts
    beta = np.minimum(p, q / rho).sum()
    assert 1 - (1 - beta) ** n_drafts == pytest.approx(rho * beta, abs=1e-12) or rho == 1
    alpha = root_acceptance(p, q, BatchSpeculative(n_drafts, "spectr"))
    assert alpha == pytest.approx(1 - (1 - beta) ** n_drafts, abs=1e-12)


def test_paper_closed_form_examples():
    """Hand-derived values: p = (1/2, 1/2), q = (9/10, 1/10), M = 2."""
    p, q = [F(1, 2), F(1, 2)], [F(9, 10), F(1, 10)]
    assert root_acceptance(p, q, BatchSpeculative(2, "topk")) == 1  # D = both tokens
    # greedy: D = {0}, p' = (0, 1): a = 9/10 + min(1/10, 1)
    assert root_acceptance(p, q, BatchSpeculative(2, "greedy")) == 1
    # swor: X₁ = 0 accepted (b = 1) w.p. 1/2; X₁ = 1 accepted w.p. 1/2 · 1/5; after X₁ = 1
    # fails, p² = δ₀ and q² = δ₀: accepted.  So α = 1.
    assert root_acceptance(p, q, BatchSpeculative(2, "swor")) == 1
    assert root_acceptance(p, q, BatchSpeculative(2, "optimal")) == pytest.approx(0.85)


# -- negative controls: the same exact checks catch each known-wrong verifier ------------------
MUTANT_CASES = [
    (SworUnnormalized(3), ([F(1, 2), F(1, 4), F(1, 4)], [F(1, 10), F(1, 2), F(2, 5)])),
    (SpectrNaive(3), ([F(1, 2), F(1, 4), F(1, 4)], [F(1, 10), F(1, 5), F(7, 10)])),
    (GreedyWithoutDraftedMass(2), ([F(1, 2), F(1, 4), F(1, 4)], [F(1, 10), F(1, 5), F(7, 10)])),
    (TopkRatioTest(2), ([F(1, 2), F(1, 4), F(1, 4)], [F(3, 5), F(1, 5), F(1, 5)])),
]


@pytest.mark.parametrize("mutant, rows", MUTANT_CASES, ids=lambda v: type(v).__name__)
def test_negative_controls_are_caught_exactly(mutant, rows):
    draft, target = _pair(*rows, horizon=2)
    law = enumerate_outcomes(draft, target, mutant)  # the mutant's literal routine
    # its own DP agrees with its literal routine (the checks below compare with the target)
    assert law.rejection_pmf().tolist() == rejection_pmf(draft, target, mutant).tolist()
    with pytest.raises(AssertionError):
        assert_exact_ladder(draft, target, mutant)  # ... but it is not lossless
    accepted, rejected = mutant.root_law(np.array(rows[0], dtype=object),
                                         np.array(rows[1], dtype=object))
    assert (accepted + rejected).tolist() != rows[1]


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="verifier must be one of"):
        BatchSpeculative(2, "beam")
    with pytest.raises(ValueError, match="n_drafts must be >= 1"):
        BatchSpeculative(0, "swor")
    with pytest.raises(TypeError, match="n_drafts must be a positive integer"):
        BatchSpeculative(2.5, "topk")
    with pytest.raises(TypeError, match="algorithm must be a BatchSpeculative"):
        root_acceptance([0.5, 0.5], [0.9, 0.1], "swor")
    with pytest.raises(TypeError, match="algorithm must be a BatchSpeculative"):
        root_acceptance([0.5, 0.5], [0.9, 0.1], Speculative())
    with pytest.raises(ValueError, match="n_drafts must be an integer >= 1"):
        root_acceptance([0.5, 0.5], [0.9, 0.1], 0)
    wide = np.full(16, 1 / 16)  # C(16, 1) + … + C(16, 8) sets > OPTIMAL_MAX_SETS
    with pytest.raises(ValueError, match=r"verifier .optimal. solves a flow over .* draft sets"):
        optimal_root_law(wide, wide, 8)
    assert sum(math.comb(16, k) for k in range(1, 9)) > OPTIMAL_MAX_SETS
    with pytest.raises(ValueError, match="verifier 'swor' sums over"):
        swor_root_law(np.full(30, 1 / 30), np.full(30, 1 / 30), 6)
    draft, target = random_pair(20, 2, rng=0)
    with pytest.raises(ValueError, match="verifier 'optimal'"):
        expected_rejections(draft, target, BatchSpeculative(8, "optimal"))


def test_one_draft_swor_spectr_greedy_are_speculative():
    draft, target = bernoulli_pair(F(1, 2), F(1, 4), horizon=3)
    for verifier in ("swor", "greedy"):
        assert rejection_pmf(draft, target, BatchSpeculative(1, verifier)).tolist() == \
            rejection_pmf(draft, target, Speculative()).tolist()
    a, r = greedy_root_law([F(1, 2), F(1, 2)], [F(1, 4), F(3, 4)], 1)
    assert a.tolist() == [F(1, 4), F(1, 2)] and r.tolist() == [0, F(1, 4)]
    fdraft, ftarget = bernoulli_pair(0.5, 0.25, horizon=3)
    np.testing.assert_allclose(rejection_pmf(fdraft, ftarget, BatchSpeculative(1, "spectr")),
                               rejection_pmf(fdraft, ftarget, Speculative()), atol=1e-15)
