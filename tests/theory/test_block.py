"""Block verification (Sun et al., ICLR 2025), exact rung: the round-level DP of
:mod:`theory.block` against the enumerated reference routine, the output law = q, the paper's
toy, never worse than token-wise verification, negative controls, bad input."""

import math
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.reference import enumerate_outcomes
from sim.strategies import model_pairs
from tests.harness import all_sequences, assert_exact_ladder
from tests.mutants import FirstFailureBlock, SharedUniformBlock
from theory import (
    BlockSpeculative,
    MarkovLM,
    Speculative,
    expected_rejections,
    expected_speedup,
    expected_target_calls,
    rejection_pmf,
    rejection_profile,
    round_length_pmf,
    target_calls_pmf,
)
from theory.block import round_law


def toy(horizon):
    """Sun et al.'s example: context-free q = (1/3, 2/3), p = (2/3, 1/3)."""
    draft = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], horizon, next_context=[[0, 0]])
    target = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], horizon, next_context=[[0, 0]])
    return draft, target


@pytest.mark.parametrize("horizon", [3, 6])
def test_paper_toy_accepted_drafts(horizon):
    """Expected accepted drafts in a round with γ = 2: 10/9 token-wise, 11/9 block (Sun et
    al., §3), exactly.  A round with a position left emits accepted drafts + 1 tokens."""
    draft, target = toy(horizon)
    for algorithm, accepted in ((Speculative(window=2), F(10, 9)), (BlockSpeculative(2),
                                                                      F(11, 9))):
        pmf = round_length_pmf(draft, target, algorithm)
        assert np.arange(horizon + 1) @ pmf - 1 == accepted
    # Hand derivation of the block law: π₁ = min(1, q/p) is 1/2 (X₁ = 0) or 1 (X₁ = 1);
    # r₁ = Σ[π₁ q − p]₊ = 0 or 1/3, so h₁ = 0 or 1; h₂ = π₂.  P(τ = 2) = E[π₂] = 5/9,
    # P(τ = 1) = P(X₁ = 1)(1 − E[π₂ | X₁ = 1]) = 1/3 · 1/3 = 1/9, P(τ = 0) = 1/3.
    law = round_law(draft, target, BlockSpeculative(2), 0)
    assert law.total[:, 0, 0].tolist() == [0, F(1, 3), F(1, 9), F(5, 9)]
    assert law.rejected[:, 0, 0].sum() == F(4, 9)


small_exact = model_pairs(exact=True, max_vocab=3, max_horizon=3, max_contexts=3)


@settings(max_examples=25, deadline=None)
@given(pair=small_exact, window=st.integers(1, 4), bonus=st.booleans())
def test_round_dp_equals_enumeration_and_output_is_the_target(pair, window, bonus):
    """DP pmfs of rejections and target calls == the enumerated reference routine, and the
    emitted law is q, exactly (zeros, higher-order contexts, p = q, V = 1, T < γ)."""
    draft, target = pair
    algorithm = BlockSpeculative(window, bonus=bonus)
    assert_exact_ladder(draft, target, algorithm)
    assert sum(rejection_profile(draft, target, algorithm)) == \
        expected_rejections(draft, target, algorithm)
    calls = target_calls_pmf(draft, target, algorithm)
    assert np.arange(target.horizon + 1) @ calls == expected_target_calls(draft, target,
                                                                          algorithm)


@settings(max_examples=40, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=3, max_horizon=5, max_contexts=3),
       window=st.integers(1, 4), bonus=st.booleans())
def test_block_never_needs_more_target_calls_than_tokenwise(pair, window, bonus):
    """E[calls] and speedup of block ≤ / ≥ token-wise; equal for γ = 1 (identical laws)."""
    draft, target = pair
    block = BlockSpeculative(window, bonus=bonus)
    tokenwise = Speculative(window=window, bonus=bonus)
    assert expected_target_calls(draft, target, block) <= \
        expected_target_calls(draft, target, tokenwise)
    assert expected_speedup(draft, target, block, cost_ratio=F(1, 5)) >= \
        expected_speedup(draft, target, tokenwise, cost_ratio=F(1, 5))
    if window == 1:  # one draft: h₁ = π₁ = min(1, q/p), residual [q − p]₊ — Speculative
        for law in (target_calls_pmf, rejection_pmf):
            assert law(draft, target, block).tolist() == law(draft, target, tokenwise).tolist()


@given(pair=model_pairs(exact=True, relation="equal", max_horizon=6), window=st.integers(1, 4))
def test_equal_models_accept_every_block(pair, window):
    """p = q: π ≡ 1, every block is accepted; ⌈T / (γ + 1)⌉ calls, as token-wise."""
    draft, target = pair
    calls = math.ceil(target.horizon / (window + 1))
    for algorithm in (BlockSpeculative(window), Speculative(window=window)):
        assert expected_target_calls(draft, target, algorithm) == calls
        assert expected_rejections(draft, target, algorithm) == 0


@settings(max_examples=30, deadline=None)
@given(pair=model_pairs(max_vocab=4, max_horizon=5, max_contexts=3), window=st.integers(1, 4))
def test_float_models_agree_with_the_exact_pmfs(pair, window):
    draft, target = pair
    algorithm = BlockSpeculative(window)
    for law in (target_calls_pmf, rejection_pmf, round_length_pmf):
        pmf = law(draft, target, algorithm)
        assert (pmf >= -1e-15).all() and abs(pmf.sum() - 1) < 1e-12
    assert expected_target_calls(draft, target, algorithm) <= \
        expected_target_calls(draft, target, Speculative(window=window)) + 1e-12


@pytest.mark.parametrize("mutant", [SharedUniformBlock(2), FirstFailureBlock(2)], ids=repr)
def test_exact_check_catches_block_mutants(mutant):
    """Negative controls of the exact rung: the same sequence-law check fails."""
    draft, target = toy(3)
    law = enumerate_outcomes(draft, target, mutant).sequence_law()
    assert any(law.get(tokens, 0) != target.sequence_probability(list(tokens))
               for tokens in all_sequences(target))


def test_round_law_guards_its_size():
    draft, target = toy(4)
    with pytest.raises(ValueError, match=r"needs \d+ draft-tree nodes .* max_nodes = 3"):
        round_law(draft, target, BlockSpeculative(3), 0, max_nodes=3)
    with pytest.raises(ValueError, match=r"position must be an integer in \[0, T\)"):
        round_law(draft, target, BlockSpeculative(3), 4)
    with pytest.raises(TypeError, match="not position-synchronous"):
        BlockSpeculative(2).branches(np.ones((1, 2)) / 2, np.ones((1, 2)) / 2)


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: BlockSpeculative(0), ValueError, "window must be >= 1; got 0"),
    (lambda: BlockSpeculative(-3), ValueError, "window must be >= 1; got -3"),
    (lambda: BlockSpeculative(2.0), TypeError, "window must be a positive integer; got 2.0"),
    (lambda: BlockSpeculative(None), TypeError, "window must be a positive integer; got None"),
    (lambda: BlockSpeculative(True), TypeError, "window must be a positive integer; got True"),
    (lambda: BlockSpeculative(2, bonus=1), TypeError, "bonus must be a bool; got 1"),
])
def test_bad_input(make, error, message):
    with pytest.raises(error, match=message):
        make()
