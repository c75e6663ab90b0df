"""Batch speculative decoding: exact rung (enumeration == DP == Theorem 3), closed forms,
Proposition 1's limits and the optimal multi-draft acceptance."""

import itertools
import math
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.models import bernoulli_pair, fig2_pair, random_pair, uniform_subset_pair
from sim.reference import enumerate_outcomes
from sim.strategies import model_pairs, probability_vectors
from tests.harness import all_sequences, assert_exact_ladder
from tests.mutants import ForgetsResidualUpdate, UnnormalizedResidual
from theory import (
    BatchSpeculative,
    MarkovLM,
    Speculative,
    batch_improvement,
    batch_rejection_limit,
    expected_rejections,
    optimal_multidraft_acceptance,
    rejection_pmf,
    target_calls_pmf,
    theorem1_rejections,
    theorem3_rejections,
)
from theory.batch import (
    bernoulli_batch_improvement,
    multidraft_acceptance_lp,
    root_acceptance,
    uniform_subset_batch_improvement,
)
from theory.onestep import _acceptance, safe_ratio

BATCH = [BatchSpeculative(2), BatchSpeculative(2, "trie"), BatchSpeculative(3),
         BatchSpeculative(3, "trie")]


@pytest.mark.parametrize("algorithm", BATCH, ids=repr)
@settings(max_examples=15)
@given(pair=model_pairs(max_vocab=3, max_horizon=3, max_contexts=2, exact=True))
def test_enumeration_equals_dynamic_program_exactly(algorithm, pair):
    assert_exact_ladder(*pair, algorithm)  # DP laws and unbiasedness, exactly


@settings(max_examples=25)
@given(pair=model_pairs(max_vocab=3, max_horizon=4, exact=True), n_drafts=st.integers(1, 4))
def test_theorem3_equals_dynamic_program_exactly(pair, n_drafts):
    draft, target = pair
    assert theorem3_rejections(draft, target, n_drafts) == \
        expected_rejections(draft, target, BatchSpeculative(n_drafts))


@settings(max_examples=25)
@given(pair=model_pairs(max_vocab=3, max_horizon=4, exact=True))
def test_one_draft_is_speculative_exactly(pair):
    draft, target = pair
    for verifier in ("paper", "trie"):
        algorithm = BatchSpeculative(1, verifier)
        assert rejection_pmf(draft, target, algorithm).tolist() == \
            rejection_pmf(draft, target, Speculative()).tolist()
        assert target_calls_pmf(draft, target, algorithm).tolist() == \
            target_calls_pmf(draft, target, Speculative()).tolist()


@given(pair=model_pairs(max_vocab=4, max_horizon=5))
def test_more_drafts_and_the_trie_never_hurt(pair):
    draft, target = pair
    previous_paper = previous_trie = theorem1_rejections(draft, target) + 1e-12
    for n_drafts in range(1, 5):
        paper = expected_rejections(draft, target, BatchSpeculative(n_drafts))
        trie = expected_rejections(draft, target, BatchSpeculative(n_drafts, "trie"))
        assert trie <= paper + 1e-12
        assert paper <= previous_paper + 1e-12 and trie <= previous_trie + 1e-12
        previous_paper, previous_trie = paper, trie
        assert paper >= batch_rejection_limit(draft, target, "paper") - 1e-12
        assert trie >= batch_rejection_limit(draft, target, "trie") - 1e-12


# ---------------------------------------------------------------- closed forms (§3.2)
@pytest.mark.parametrize("n_drafts", range(1, 7))
@pytest.mark.parametrize(("u", "v"), [(F(1, 2), F(1, 5)), (F(9, 10), F(1, 3)), (F(1), F(1, 2)),
                                      (F(2, 7), F(2, 7))])
def test_bernoulli_closed_form_exactly(u, v, n_drafts):
    draft, target = bernoulli_pair(u, v)
    p, q = draft.probs[0, 0], target.probs[0, 0]
    assert batch_improvement(p, q, n_drafts) == bernoulli_batch_improvement(u, v, n_drafts)
    # and the DP of Algorithm 4 agrees: E[N_rej] = TV − BI on one position
    assert expected_rejections(draft, target, BatchSpeculative(n_drafts)) == \
        abs(u - v) - bernoulli_batch_improvement(u, v, n_drafts)


@pytest.mark.parametrize("n_drafts", range(1, 7))
@pytest.mark.parametrize(("vocab", "subset"), [(4, 2), (6, 2), (6, 3), (5, 5)])
def test_uniform_subset_closed_form_exactly(vocab, subset, n_drafts):
    draft, target = uniform_subset_pair(vocab, subset, exact=True)
    p, q = draft.probs[0, 0], target.probs[0, 0]
    assert batch_improvement(p, q, n_drafts) == \
        uniform_subset_batch_improvement(F(vocab, subset), n_drafts)


def test_closed_forms_validate():
    with pytest.raises(ValueError, match="needs u >= v"):
        bernoulli_batch_improvement(0.1, 0.5, 2)
    with pytest.raises(ValueError, match="n_drafts must be an integer >= 1"):
        batch_improvement([0.5, 0.5], [0.9, 0.1], 0)
    with pytest.raises(ValueError, match="n_drafts must be >= 1"):
        BatchSpeculative(0)
    with pytest.raises(ValueError, match="verifier must be one of"):
        BatchSpeculative(2, "tree")


# ---------------------------------------------------------------- Proposition 1
def test_limits_on_fig2_decrease_monotonically():
    draft, target = fig2_pair()
    paper_limit = batch_rejection_limit(draft, target, "paper")
    assert batch_rejection_limit(draft, target, "trie") == 0  # full-support draft
    assert paper_limit == pytest.approx(theorem3_rejections(draft, target, None), abs=1e-12)
    assert 0 < paper_limit < theorem1_rejections(draft, target)
    means = [expected_rejections(draft, target, BatchSpeculative(m)) for m in range(1, 17)]
    assert all(a > b > paper_limit for a, b in itertools.pairwise(means))
    # Theorem 3's closed form reaches large M cheaply: the gap to the limit keeps closing.
    gaps = [theorem3_rejections(draft, target, m) - paper_limit for m in (16, 128, 1024)]
    assert gaps[0] > gaps[1] > gaps[2] >= 0 and gaps[2] < gaps[0] / 4


def test_trie_limit_with_unreachable_tokens():
    # The draft never proposes token 2 in context 1: with ∞ drafts only those positions reject.
    draft_rows = np.array([[0.5, 0.3, 0.2], [0.6, 0.4, 0.0], [0.2, 0.3, 0.5]])
    target_rows = np.array([[0.2, 0.3, 0.5], [0.3, 0.3, 0.4], [0.4, 0.4, 0.2]])
    draft = MarkovLM(np.stack([draft_rows] * 4), start=0)
    target = MarkovLM(np.stack([target_rows] * 4), start=0)
    marginals = target.context_marginals()
    expected = (marginals[:, 1] * 0.4).sum()
    assert batch_rejection_limit(draft, target, "trie") == pytest.approx(expected, abs=1e-15)
    means = [expected_rejections(draft, target, BatchSpeculative(m, "trie"))
             for m in (1, 4, 16, 64)]
    assert all(a > b > expected for a, b in itertools.pairwise(means))
    # Slow approach: live candidates thin out by p(x) per accepted position, so the gap closes
    # only as M grows geometrically (1.30, 0.96, 0.67, 0.53 against 0.39).
    gaps = [mean - expected for mean in means]
    assert gaps[-1] < gaps[0] / 5


# ---------------------------------------------------------------- the optimal verifier
def brute_force_alpha(p, q, n_drafts):
    tokens = range(len(p))
    return 1 + min(sum(q[list(h)]) - sum(p[list(h)]) ** n_drafts
                   for size in range(len(p) + 1) for h in itertools.combinations(tokens, size))


@given(st.integers(1, 6).flatmap(lambda v: st.tuples(probability_vectors(v),
                                                      probability_vectors(v))),
       st.integers(1, 5))
def test_sorted_prefix_minimum_equals_all_subsets(pair, n_drafts):
    p, q = pair
    alpha = optimal_multidraft_acceptance(p, q, n_drafts)
    assert alpha == pytest.approx(brute_force_alpha(p, q, n_drafts), abs=1e-12)
    # The paper's and the trie's root acceptance never exceed it; one draft attains it.
    assert root_acceptance(p, q, n_drafts) <= alpha + 1e-12
    if n_drafts == 1:
        assert alpha == pytest.approx(root_acceptance(p, q, 1), abs=1e-12)


@settings(max_examples=12)
@given(st.integers(2, 3).flatmap(lambda v: st.tuples(probability_vectors(v),
                                                      probability_vectors(v))),
       st.integers(1, 3))
def test_optimal_acceptance_equals_the_coupling_lp(pair, n_drafts):
    p, q = pair
    assert optimal_multidraft_acceptance(p, q, n_drafts) == pytest.approx(
        multidraft_acceptance_lp(p, q, n_drafts), abs=1e-7)


def test_recursive_verifier_is_strictly_suboptimal_somewhere():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert optimal_multidraft_acceptance(p, q, 2) == pytest.approx(0.85)  # 1 + 0.1 − 0.25
    assert root_acceptance(p, q, 2) == pytest.approx(0.8)  # 1 − 0.4 · 0.5


def test_optimal_acceptance_broadcasts():
    _, target = random_pair(5, 3, rng=0)
    draft, _ = random_pair(5, 3, rng=1)
    alpha = optimal_multidraft_acceptance(draft.probs, target.probs, 3)
    assert alpha.shape == (3, 5)
    assert (alpha >= root_acceptance(draft.probs, target.probs, 3) - 1e-12).all()


@pytest.mark.parametrize("mutant", [ForgetsResidualUpdate(3), UnnormalizedResidual(3),
                                    ForgetsResidualUpdate(2, "trie")], ids=repr)
def test_exact_check_catches_batch_mutants(mutant):
    draft, target = random_pair(3, 2, concentration=0.5, rng=11)
    law = enumerate_outcomes(draft, target, mutant).sequence_law()
    assert any(law.get(tokens, 0.0) != pytest.approx(target.sequence_probability(list(tokens)),
                                                     abs=1e-9)
               for tokens in all_sequences(target))


@pytest.mark.parametrize("mutant", [ForgetsResidualUpdate(3), UnnormalizedResidual(2, "trie")],
                         ids=repr)
def test_dynamic_program_follows_any_residual_rule(mutant):
    draft, target = random_pair(3, 2, concentration=0.6, rng=21)
    law = enumerate_outcomes(draft, target, mutant)
    np.testing.assert_allclose(law.rejection_pmf().astype(float),
                               rejection_pmf(draft, target, mutant), atol=1e-12)


# ---------------------------------------------------------------- trie branch weights
def direct_trie_branches(algorithm, p, q):
    """The trie's branches by the direct triple sum over (k, stay, i), the former O(M³) code:
    W(k, stay) = Σ_i a_i C(k − 1 − i, stay − 1) p^{stay−1} (1 − p)^{k−1−i−(stay−1)}."""
    p, q = np.asarray(p), np.asarray(q)
    residuals, failures = algorithm.residuals(p, q)
    reach = [1]
    for failure in failures:
        reach.append(reach[-1] * failure)
    accept_at = [np.asarray(reach[i])[..., None] * _acceptance(p, residuals[i]) * p
                 for i in range(algorithm.n_drafts)]
    out = []
    for state in range(algorithm.n_round_states()):
        k = algorithm.live_drafts(state)
        for stay in range(1, k + 1):
            weights = sum(
                accept_at[i] * math.comb(k - 1 - i, stay - 1) * p ** (stay - 1)
                * (1 - p) ** (k - 1 - i - (stay - 1))
                for i in range(k - stay + 1))
            out.append((state, stay, False, weights))
        law = residuals[k]
        out.append((state, 0, True,
                    reach[k][..., None] * safe_ratio(law, law.sum(axis=-1, keepdims=True))))
    return out


def assert_same_trie_branches(p, q, n_drafts):
    algorithm = BatchSpeculative(n_drafts, "trie")
    fast, direct = algorithm.branches(p, q), direct_trie_branches(algorithm, p, q)
    assert [branch[:3] for branch in fast] == [branch[:3] for branch in direct]
    exact = p.dtype == object
    for branch, (*_, expected) in zip(fast, direct, strict=True):
        weights = np.asarray(branch.weights)
        assert weights.shape == p.shape
        if exact:  # identical Fractions, not merely close
            assert all(isinstance(w, F) for w in weights.ravel())
            assert weights.tolist() == np.asarray(expected).tolist()
        else:
            np.testing.assert_allclose(weights, expected, rtol=1e-12, atol=1e-300)


@settings(max_examples=40)
@given(data=st.data(), exact=st.booleans(), n_drafts=st.integers(1, 6),
       n_rows=st.integers(1, 3), vocab=st.integers(1, 5), equal=st.booleans())
def test_trie_weights_equal_the_direct_binomial_sum(data, exact, n_drafts, n_rows, vocab,
                                                     equal):
    rows = st.lists(probability_vectors(vocab, exact=exact), min_size=n_rows, max_size=n_rows)
    p = np.array(data.draw(rows), dtype=object if exact else np.float64)
    q = p.copy() if equal else np.array(data.draw(rows), dtype=p.dtype)
    assert_same_trie_branches(p, q, n_drafts)


@pytest.mark.parametrize("n_drafts", [9, 16])
@pytest.mark.parametrize("exact", [False, True])
def test_trie_weights_equal_the_direct_binomial_sum_for_many_drafts(n_drafts, exact):
    rng = np.random.default_rng(n_drafts)
    if exact:  # rational rows with small denominators
        counts = rng.integers(0, 6, size=(2, 3, 4)) + np.eye(3, 4, dtype=int)
        p, q = (np.array([[F(int(c), int(row.sum())) for c in row] for row in model],
                         dtype=object) for model in counts)
    else:
        p, q = rng.dirichlet(np.full(6, 0.7), size=(2, 4))
    assert_same_trie_branches(p, q, n_drafts)


def test_absurd_numbers_of_drafts_are_refused_before_any_work(monkeypatch):
    import time

    from gpu_kernels import simulate as simulate_torch
    from sim import simulate

    draft, target = fig2_pair()
    started = time.perf_counter()
    for call in (lambda: simulate(draft, target, BatchSpeculative(10_000), n_trials=10, rng=0),
                 lambda: simulate_torch(draft, target, BatchSpeculative(10_000), n_trials=10,
                                        rng=0, device="cpu"),
                 lambda: expected_rejections(draft, target, BatchSpeculative(2_000, "trie"))):
        with pytest.raises(ValueError, match=r"n_drafts = \d+ on T = 50, S = 7, V = 7: .* GB "
                                             r"of tables, above BatchSpeculative\."
                                             r"max_table_bytes = 1\.07 GB"):
            call()
    assert time.perf_counter() - started < 5  # refused up front, not after minutes
    # the limit is the user's to raise (and to lower)
    monkeypatch.setattr(BatchSpeculative, "max_table_bytes", 10_000)
    with pytest.raises(ValueError, match="max_table_bytes = 1e-05 GB"):
        expected_rejections(draft, target, BatchSpeculative(2))
    monkeypatch.setattr(BatchSpeculative, "max_table_bytes", 1 << 40)
    assert BatchSpeculative(10_000).table_bytes(draft, target, "engine") > 1 << 30


def test_exact_dps_estimated_to_run_for_minutes_are_refused_at_once(monkeypatch):
    """M = 10⁵ "paper" drafts: small tables (160 MB), but minutes of DP (M = 2·10⁴ took 64 s)."""
    import time

    draft, target = fig2_pair()
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"n_drafts = 100000 on T = 50, S = 7, V = 7: the exact "
                                         r"DP would take about 404 s \(estimate\), above "
                                         r"BatchSpeculative\.max_dp_seconds = 120 s; .* assign "
                                         r"a larger BatchSpeculative\.max_dp_seconds"):
        expected_rejections(draft, target, BatchSpeculative(100_000))
    assert time.perf_counter() - started < 1
    estimate = BatchSpeculative(200, "trie").dp_seconds(draft, target)
    assert 5 < estimate < 60  # measured ≈ 16 s: accepted (its tables, 0.8 GB, are too)
    # the limit is the user's to lower and to raise
    monkeypatch.setattr(BatchSpeculative, "max_dp_seconds", 1e-3)
    with pytest.raises(ValueError, match=r"max_dp_seconds = 0\.001 s"):
        expected_rejections(draft, target, BatchSpeculative(2))
    monkeypatch.setattr(BatchSpeculative, "max_dp_seconds", 0.01)
    assert expected_rejections(draft, target, BatchSpeculative(2)) > 0


def test_table_estimate_covers_the_engine_tables():
    from sim.engine import make_tables

    draft, target = fig2_pair()
    algorithm = BatchSpeculative(8)
    tables = make_tables(draft, target, algorithm)
    stored = sum(array.nbytes for array in (tables.acceptance, tables.residual.entries,
                                            tables.draft.entries, tables.draft_probs))
    assert stored <= algorithm.table_bytes(draft, target, "engine") <= 8 * stored
