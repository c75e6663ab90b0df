"""Exact laws of round rules (theory.conformance), tied to the package's independent DPs.

The round-level DP of theory.conformance enumerates drafts; theory.exact (per-position DP) and
theory.block (block round laws) compute the same expectations by other routes, so agreement to
1e-12 checks both.  Lossless rules must give the target's law in every reachable cell and for
whole sequences; every failure mode must not.
"""

import numpy as np
import pytest

from sim.conformance import conformance_suite
from sim.models import random_pair
from sim.reference import enumerate_outcomes
from tests.mutants import ResampleFromTarget, SharedUniformBlock
from theory import (
    BlockSpeculative,
    MarkovLM,
    Speculative,
    TypicalAcceptance,
    UnbiasedSpeculative,
    expected_target_calls,
)
from theory.conformance import (
    FAILURE_MODES,
    block_rule,
    deviation,
    expected_accepted,
    resample_from_target_rule,
    round_laws,
    round_to,
    sequence_law,
    standard_rule,
    verification_rule,
)

SUITE = conformance_suite()[:4]  # the enumerable pairs (large_vocab has V = 10⁴)
PAIRS = [(pair.name, pair.draft, pair.target) for pair in SUITE]


def _shared_uniform_block(d, p, q):
    return block_rule(d, p, q, shared_uniform=True)


def _conditional(laws):
    mu = laws.joint.sum(axis=-1)
    reachable = mu > 1e-15
    return reachable, np.divide(laws.joint, mu[..., None], where=reachable[..., None],
                                out=np.zeros_like(laws.joint))


@pytest.mark.parametrize("window", [1, 2, 3, 5])
@pytest.mark.parametrize("name, draft, target", PAIRS, ids=[p[0] for p in PAIRS])
def test_lossless_rules_emit_the_target_law_in_every_reachable_cell(name, draft, target,
                                                                    window):
    q = np.asarray(target.probs, dtype=np.float64)
    for rule in (standard_rule, block_rule):
        reachable, conditional = _conditional(round_laws(draft, target, window, rule))
        assert reachable.any()
        assert np.abs(conditional - q)[reachable].max() < 1e-12, (name, rule)


@pytest.mark.parametrize("window", [1, 2, 4])
@pytest.mark.parametrize("name, draft, target", PAIRS, ids=[p[0] for p in PAIRS])
def test_round_counts_and_acceptance_match_the_package_dps(name, draft, target, window):
    standard = round_laws(draft, target, window)
    assert standard.rounds_per_generation == pytest.approx(
        expected_target_calls(draft, target, Speculative(window=window)), abs=1e-12)
    reachable = standard.round_starts > 0
    closed = expected_accepted(draft, target, window)
    assert np.abs(standard.accepted - closed)[reachable].max() < 1e-12
    block = round_laws(draft, target, window, block_rule)
    assert block.rounds_per_generation == pytest.approx(
        expected_target_calls(draft, target, BlockSpeculative(window)), abs=1e-12)
    resample = round_laws(draft, target, window, resample_from_target_rule)
    assert resample.rounds_per_generation == pytest.approx(
        expected_target_calls(draft, target, ResampleFromTarget(window=window)), abs=1e-12)


def test_shared_uniform_block_rule_matches_the_reference_routine():
    """The failure mode's exact law vs the literal reference routine of the known-wrong rule
    (sim.reference walks every branch of its choices), whole sequences, γ = 2 and 3."""
    draft, target = random_pair(3, 4, concentration=0.6, rng=8, start=0)
    for window in (2, 3):
        reference = enumerate_outcomes(draft, target, SharedUniformBlock(window)).sequence_law()
        law = sequence_law(draft, target, window, _shared_uniform_block)
        keys = {key[1:] for key in law} | set(reference)
        assert max(abs(law.get((0, *key), 0.0) - reference.get(key, 0.0))
                   for key in keys) < 1e-14
    with pytest.raises(ValueError, match="selection of τ only"):
        expected_target_calls(draft, target, SharedUniformBlock(2))


def test_block_accepts_at_least_the_token_wise_optimum():
    """Sun et al., Theorem 2: block verification accepts at least as much from every state."""
    for _, draft, target in PAIRS:
        standard, block = (round_laws(draft, target, 3, rule) for rule in
                           (standard_rule, block_rule))
        reachable = standard.round_starts > 0
        assert (block.accepted - standard.accepted)[reachable].min() > -1e-12


def test_sequence_laws_of_lossless_rules_are_the_target_sequence_law():
    draft, target = random_pair(3, 5, concentration=0.7, rng=4)
    sequences = np.array(np.meshgrid(*[range(3)] * 5, indexing="ij")).reshape(5, -1).T
    for rule in (standard_rule, block_rule):
        law = sequence_law(draft, target, 3, rule)
        assert sum(law.values()) == pytest.approx(1, abs=1e-12)
        for start in range(3):
            started = MarkovLM(target.probs, None, start)
            expected = started.sequence_probability(sequences) / 3
            observed = [law.get((start, *row), 0.0) for row in sequences.tolist()]
            assert np.abs(np.array(observed) - expected).max() < 1e-14
    assert deviation(draft, target, 3).sequence_tv < 1e-12
    assert deviation(draft, target, 3, block_rule).sequence_tv < 1e-12


@pytest.mark.parametrize("name", sorted(set(FAILURE_MODES) - {"draft_floor"}))
def test_every_failure_mode_moves_the_output_law(name):
    """(The draft floor moves only large-vocabulary laws: tests/sim/test_conformance_precision.py
    computes it on the precision suite.)"""
    mode = FAILURE_MODES[name]
    window = mode.window or 3
    for pair in SUITE:  # exact sequence TV on the smallest pair (an independent
        # re-implementation agreed with every sequence law here to 1e-17)
        small = pair.name == "second_order"
        exact = deviation(pair.draft, pair.target, window, mode.rule, drafter=mode.drafter,
                          max_sequences=10 ** 5 if small else 0)
        assert exact.max_tv > 1e-5, pair.name
        assert not small or exact.sequence_tv > 1e-5
        assert exact.per_position_tv.max() <= exact.max_tv + 1e-15
        assert exact.noncentrality > 0


def test_class_f_verifiers_are_lossless_rules_that_accept_less():
    """A lossless but wasteful verifier (b = ½ min(1, q/p), Corollary 1's class ℱ): the target
    law, strictly fewer accepted drafts (Theorem 2)."""
    _, draft, target = PAIRS[0]
    rule = verification_rule(UnbiasedSpeculative.scaled(0.5))
    laws = round_laws(draft, target, 3, rule)
    reachable, conditional = _conditional(laws)
    assert np.abs(conditional - np.asarray(target.probs))[reachable].max() < 1e-12
    optimum = round_laws(draft, target, 3)
    starts = optimum.round_starts > 0
    assert (laws.accepted < optimum.accepted)[starts & (optimum.accepted > 0)].all()
    assert verification_rule(Speculative())(
        np.array([[1, 0]]), np.full((1, 2, 2), 0.5), np.array([[[0.2, 0.8]] * 3])).sum() == \
        pytest.approx(1)
    typical = verification_rule(TypicalAcceptance(0.3, 0.3))
    assert deviation(draft, target, 2, typical).max_tv > 1e-3  # lossy by design


def test_buggy_rows_keep_laws_and_follow_floating_point_ratio_tests():
    """Rounded rows can reject with an empty rounded residual: the rule still emits a law.  A
    processed verifier keeps a draft its law excludes iff q > 0 (q/0 = inf; 0/0 rejects)."""
    from theory.conformance import processed_rule, rounded_rule, top_k

    p, q = np.array([[[0.3, 0.7]]]), np.array([[[0.2995, 0.7005], [0.5, 0.5]]])
    assert rounded_rule("bfloat16")(np.array([[0]]), p, q).sum() == pytest.approx(1, abs=1e-15)
    p, q = np.array([[[0.2, 0.3, 0.5]]]), np.array([[[0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]])
    rule = processed_rule(top_k(1))  # told p̂ = (0, 0, 1)
    kept = rule(np.array([[0]]), p, q)[0, 1].sum(), rule(np.array([[1]]), p, q)[0, 1].sum()
    assert kept == (1.0, 0.0)


def test_round_to_matches_torch_bfloat16_and_numpy_float16():
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(3).random(10_000) ** 4
    values[:3] = [0.0, 1.0, 0.1]
    rounded = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).to(torch.float64)
    assert np.array_equal(round_to(values, "bfloat16"), rounded.numpy())
    assert np.array_equal(round_to(values, "float16"),
                          values.astype(np.float16).astype(np.float64))
    with pytest.raises(ValueError, match="dtype must be"):
        round_to(values, "float8")


def test_bad_input_is_refused_with_the_argument_named():
    _, draft, target = PAIRS[0]
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        round_laws(draft, target, 0)
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        expected_accepted(draft, target, True)
    with pytest.raises(ValueError, match="rule returned shape"):
        round_laws(draft, target, 2, lambda d, p, q: p)
    with pytest.raises(ValueError, match="exceed max_nodes"):
        round_laws(draft, target, 4, max_nodes=10)
    with pytest.raises(ValueError, match="exceed max_sequences"):
        sequence_law(draft, target, 2, max_sequences=100)
    with pytest.raises(TypeError, match="token-wise verifier"):
        verification_rule(BlockSpeculative(2))


def test_token_wise_rules_give_the_first_token_the_same_law_in_the_chain_cut_there():
    """The power computation counts a pair too large to enumerate by its first position, from
    the chain cut there (sim.conformance.power): valid for rules marked `token_wise`, whose
    first token depends on the first draft only.  Block verification's first token depends on
    the whole block: its shared-uniform bug (the negative control) differs."""
    draft, target = random_pair(3, 4, concentration=0.7, rng=8)

    def cut(model):
        return MarkovLM(np.asarray(model.probs)[:1], model.next_context, model.start)

    marked = [mode for mode in FAILURE_MODES.values() if getattr(mode.rule, "token_wise", False)]
    assert {mode.name for mode in FAILURE_MODES.values()} - {mode.name for mode in marked} \
        == {"block_shared_uniform"}
    for mode in marked:
        whole = round_laws(draft, target, 3, mode.rule, drafter=mode.drafter).joint[0]
        first = round_laws(cut(draft), cut(target), 3, mode.rule, drafter=mode.drafter).joint[0]
        assert np.abs(whole - first).max() < 1e-15, mode.name
    block = FAILURE_MODES["block_shared_uniform"].rule
    assert np.abs(round_laws(draft, target, 3, block).joint[0]
                  - round_laws(cut(draft), cut(target), 3, block).joint[0]).max() > 1e-3
