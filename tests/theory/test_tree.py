"""Token trees (issue #26), exact rung: the round law of :mod:`theory.tree` against the
enumerated reference routine of :mod:`sim.engine.tree`, the output law = q for every sampling ×
verifier, the reductions to the existing families, round_accepted_tokens for every family,
Traversal Verification against rrs, a negative control, bad input."""

from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.reference import enumerate_outcomes
from sim.strategies import model_pairs
from tests.harness import all_sequences, assert_exact_ladder
from tests.mutants import StaleResidualTree
from theory import (
    AdaptiveSpeculative,
    Autoregressive,
    BatchSpeculative,
    BlockSpeculative,
    MarkovLM,
    Speculative,
    ThresholdStopping,
    TreeSpeculative,
    context_transition,
    expected_rejections,
    expected_target_calls,
    rejection_pmf,
    round_accepted_tokens,
    round_length_pmf,
    target_calls_pmf,
)
from theory.exact import _problem, rejection_profile, walltime_components
from theory.multidraft import draft_order, root_law
from theory.tree import MAX_TREE_NODES, round_law

SAMPLINGS = ("iid", "swor", "topk")
VERIFIERS = ("rrs", "traversal")
SMALL_TREES = ((2,), (1, 1), (2, 1), (1, 2), (((), ()), ()))


def tree(form, **options):
    """A TreeSpeculative from a branching tuple of ints or a nested shape."""
    if all(isinstance(k, int) for k in form):
        return TreeSpeculative(form, **options)
    return TreeSpeculative(shape=form, **options)


def toy(horizon):
    """Sun et al.'s example: context-free q = (1/3, 2/3), p = (2/3, 1/3)."""
    draft = MarkovLM.homogeneous([[F(2, 3), F(1, 3)]], horizon, next_context=[[0, 0]])
    target = MarkovLM.homogeneous([[F(1, 3), F(2, 3)]], horizon, next_context=[[0, 0]])
    return draft, target


def three_token_pair(horizon):
    """A first-order V = 3 pair with zeros on both sides (the draft misses a target token)."""
    p = [[F(1, 2), F(1, 3), F(1, 6)], [F(1, 5), F(3, 5), F(1, 5)], [F(0), F(1, 2), F(1, 2)]]
    q = [[F(1, 6), F(1, 6), F(2, 3)], [F(1, 2), F(0), F(1, 2)], [F(1, 3), F(1, 3), F(1, 3)]]
    return MarkovLM.homogeneous(p, horizon), MarkovLM.homogeneous(q, horizon)


def accepted_drafts_identity(draft, target, algorithm):
    """Σ_{n,s} P(round at (n, s)) · round_accepted_tokens(n, s) and T − E[N_rej] from the
    enumerated routine: equal for every algorithm whose rounds never end with a token from
    the target (bonus=False), since every other emitted token is an accepted draft."""
    starts = _problem(draft, target, algorithm).mean_pass()[1]  # P(round at (n, s))
    total = sum(starts[n, s] * round_accepted_tokens(draft, target, algorithm, position=n,
                                                      context=s)
                for n in range(target.horizon) for s in range(target.n_contexts)
                if starts[n, s] != 0)
    law = enumerate_outcomes(draft, target, algorithm)
    rejections = sum(p * o.rejections for o, p in law.outcomes.items())
    return total, target.horizon - rejections


# ---------------------------------------------------------------------- the API
def test_tree_forms_and_properties():
    algorithm = TreeSpeculative((2, 3))
    assert algorithm.tree == (((), (), ()), ((), (), ()))
    assert (algorithm.depth, algorithm.n_nodes) == (2, 8)
    irregular = TreeSpeculative(shape=(((), ()), ()), sampling="swor", verifier="traversal")
    assert (irregular.depth, irregular.n_nodes) == (2, 4)
    assert irregular.round_tree(2, 3) == ((), ())  # cut at depth T − n = 1
    assert TreeSpeculative((2, 1)).round_key(3, 5) == (2, False)
    assert TreeSpeculative((2, 1)).round_key(1, 5) == (2, True)


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda: TreeSpeculative(), TypeError, "exactly one"),
    (lambda: TreeSpeculative((2,), shape=((),)), TypeError, "exactly one"),
    (lambda: TreeSpeculative((0, 2)), ValueError, "branching"),
    (lambda: TreeSpeculative((2.0,)), TypeError, "branching"),
    (lambda: TreeSpeculative((True,)), TypeError, "branching"),
    (lambda: TreeSpeculative(()), TypeError, "branching"),
    (lambda: TreeSpeculative((2, 2), sampling="random"), ValueError, "sampling"),
    (lambda: TreeSpeculative((2, 2), verifier="eagle"), ValueError, "verifier"),
    (lambda: TreeSpeculative((2, 2), bonus=1), TypeError, "bonus"),
    (lambda: TreeSpeculative(shape=()), ValueError, "shape"),
    (lambda: TreeSpeculative(shape=([],)), TypeError, "shape"),
    (lambda: TreeSpeculative((12, 12)), ValueError, "MAX_TREE_NODES"),
    (lambda: TreeSpeculative(shape=((),) * (MAX_TREE_NODES + 1)), ValueError,
     "MAX_TREE_NODES"),
])
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_optimal_verifier_is_refused_with_the_reason():
    draft, target = toy(2)
    algorithm = TreeSpeculative((2,), verifier="optimal")
    for call in (lambda: round_law(draft, target, algorithm, 0),
                 lambda: expected_target_calls(draft, target, algorithm),
                 lambda: enumerate_outcomes(draft, target, algorithm)):
        with pytest.raises(ValueError, match="not unique"):
            call()


def test_huge_problems_are_refused_up_front_with_the_estimate():
    rows = np.full((1, 40, 40), 1 / 40)
    model = MarkovLM(np.repeat(rows, 4, axis=0))
    with pytest.raises(ValueError, match=r"about \d+ recursion steps"):
        expected_target_calls(model, model, TreeSpeculative((3, 3, 3), verifier="traversal"))
    with pytest.raises(ValueError, match="max_nodes"):
        round_law(model, model, TreeSpeculative((2, 2)), 0, max_nodes=100)


# ---------------------------------------------------------------------- exact ladder
@settings(max_examples=30, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=2, max_horizon=3, max_contexts=2),
       form=st.sampled_from(SMALL_TREES), sampling=st.sampled_from(SAMPLINGS),
       verifier=st.sampled_from(VERIFIERS), bonus=st.booleans())
def test_round_dp_equals_enumeration_and_output_is_the_target(pair, form, sampling, verifier,
                                                              bonus):
    """DP pmfs of rejections and target calls == the enumerated reference routine, the emitted
    law is q, and the DP's expected draft count is the routine's, exactly."""
    draft, target = pair
    algorithm = tree(form, sampling=sampling, verifier=verifier, bonus=bonus)
    assert_exact_ladder(draft, target, algorithm)
    law = enumerate_outcomes(draft, target, algorithm)
    drafted = sum(p * o.drafted for o, p in law.outcomes.items())
    assert walltime_components(draft, target, algorithm)[1] == drafted
    assert sum(rejection_profile(draft, target, algorithm)) == \
        expected_rejections(draft, target, algorithm)


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("verifier", VERIFIERS)
def test_three_tokens_with_zeros_exact_ladder(sampling, verifier):
    """V = 3 with zeros in p and q, an irregular tree reaching the horizon: enumeration ==
    DP and the output is q; with bonus=False the accepted-draft identity holds."""
    draft, target = three_token_pair(2)
    for bonus in (True, False):
        algorithm = TreeSpeculative(shape=(((),), ()), sampling=sampling, verifier=verifier,
                                    bonus=bonus)
        assert_exact_ladder(draft, target, algorithm)
    total, expected = accepted_drafts_identity(draft, target, algorithm)
    assert total == expected


# ---------------------------------------------------------------------- reductions
def padded(law, size):
    """A round law's (k, s, s') array with zero rows up to k = size − 1 (the families size
    k by the cut depth or by the full window)."""
    extra = np.zeros((size - law.shape[0], *law.shape[1:]), dtype=object)
    return np.concatenate([law, np.where(extra == 0, F(0), extra)])


def greedy_draft(draft):
    """The draft that always proposes p's most probable token (ties to the lowest index)."""
    probs = np.asarray(draft.probs)
    top = draft_order(probs)[..., :1]
    greedy = np.zeros(probs.shape, dtype=object)
    np.put_along_axis(greedy, top, F(1), axis=-1)
    return MarkovLM(np.where(greedy == 0, F(0), greedy), draft.next_context, draft.start)


@settings(max_examples=25, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=3, max_horizon=4, max_contexts=3),
       depth=st.integers(1, 3), bonus=st.booleans())
def test_chains_are_speculative_and_block_verification(pair, depth, bonus):
    """(1,)*d: rrs with "iid"/"swor" is Speculative(window=d), with "topk" Speculative on the
    greedy draft; traversal is BlockSpeculative(d) round law for round law — exactly."""
    draft, target = pair
    for sampling, model in (("iid", draft), ("swor", draft), ("topk", greedy_draft(draft))):
        chain = TreeSpeculative((1,) * depth, sampling=sampling, bonus=bonus)
        window = Speculative(window=depth, bonus=bonus)
        for count in (rejection_pmf, target_calls_pmf):
            assert count(draft, target, chain).tolist() == count(model, target, window).tolist()
        assert round_accepted_tokens(draft, target, chain) == \
            round_accepted_tokens(model, target, window)
    for sampling in SAMPLINGS:
        traversal = TreeSpeculative((1,) * depth, sampling=sampling, verifier="traversal",
                                    bonus=bonus)
        reference = draft if sampling != "topk" else greedy_draft(draft)
        block = BlockSpeculative(depth, bonus=bonus)
        for n in range(target.horizon):
            ours, theirs = round_law(draft, target, traversal, n), block.round_law(
                reference, target, n)
            for field in ("accepted", "rejected", "from_target"):
                assert padded(getattr(ours, field), depth + 2).tolist() == \
                    padded(getattr(theirs, field), depth + 2).tolist()


@settings(max_examples=25, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=3, max_horizon=3, max_contexts=3),
       k=st.integers(1, 3), verifier=st.sampled_from(VERIFIERS))
def test_one_level_is_the_batch_root(pair, k, verifier):
    """(k,) with bonus=False: its round law at every position is the root law (a, r) of
    BatchSpeculative(k, v), v = "paper" ("iid"), "swor", "topk" (rrs and traversal alike)."""
    draft, target = pair
    for sampling, root in (("iid", "paper"), ("swor", "swor"), ("topk", "topk")):
        algorithm = TreeSpeculative((k,), sampling=sampling, verifier=verifier, bonus=False)
        for n in range(target.horizon):
            p, q = np.asarray(draft.probs[n]), np.asarray(target.probs[n])
            if root == "paper":
                batch = BatchSpeculative(k).branches(p, q)
                accepted, rejected = batch[0].weights, batch[1].weights
            else:
                accepted, rejected = root_law(root, p, q, k)
            law = round_law(draft, target, algorithm, n)
            assert law.accepted[1].tolist() == \
                context_transition(accepted, target.next_context).tolist()
            assert law.rejected[1].tolist() == \
                context_transition(rejected, target.next_context).tolist()
            assert not law.total[2:].any()


@settings(max_examples=15, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=3, max_horizon=3, max_contexts=2),
       k=st.integers(2, 3))
def test_a_fan_of_chains_is_algorithm_4(pair, k):
    """(k,) + (1,)*(T − 1) drafts k chains to the horizon: "iid" rrs is BatchSpeculative(k)
    (the paper's Algorithm 4), "swor" rrs is BatchSpeculative(k, "swor")."""
    draft, target = pair
    fan = (k,) + (1,) * (target.horizon - 1)
    for sampling, verifier in (("iid", "paper"), ("swor", "swor")):
        ours, theirs = TreeSpeculative(fan, sampling=sampling), BatchSpeculative(k, verifier)
        for count in (rejection_pmf, target_calls_pmf):
            assert count(draft, target, ours).tolist() == count(draft, target, theirs).tolist()


# ---------------------------------------------------------------------- accepted tokens
def test_round_accepted_tokens_closed_forms():
    """Speculative: α + … + α^γ (context-free, α = 1 − TV); Sun et al.'s toy: 10/9 token-wise,
    11/9 block (their §3) — and the chains of trees; autoregressive: 0."""
    draft, target = toy(4)
    alpha = F(2, 3)
    assert round_accepted_tokens(draft, target, Speculative(window=2)) == alpha + alpha ** 2
    assert round_accepted_tokens(draft, target, Speculative(window=3), position=2) == \
        alpha + alpha ** 2  # cut at the horizon
    assert round_accepted_tokens(draft, target, BlockSpeculative(2)) == F(11, 9)
    assert round_accepted_tokens(draft, target, TreeSpeculative((1, 1))) == F(10, 9)
    assert round_accepted_tokens(draft, target, TreeSpeculative(
        (1, 1), verifier="traversal")) == F(11, 9)
    assert round_accepted_tokens(draft, target, Autoregressive()) == 0
    with pytest.raises(ValueError, match="context"):
        round_accepted_tokens(draft, target, Speculative(), context=1)
    with pytest.raises(ValueError, match="position"):
        round_accepted_tokens(draft, target, Speculative(), position=4)


FAMILIES = (
    Speculative(), Speculative(window=2, bonus=False), BlockSpeculative(2, bonus=False),
    BatchSpeculative(2), BatchSpeculative(2, "trie"), BatchSpeculative(2, "swor"),
    AdaptiveSpeculative(ThresholdStopping(F(1, 2)), max_window=2, bonus=False),
    TreeSpeculative((2, 1), bonus=False),
    TreeSpeculative(shape=(((),), ()), sampling="swor", verifier="traversal", bonus=False),
)


@pytest.mark.parametrize("algorithm", FAMILIES, ids=repr)
def test_round_accepted_tokens_against_enumeration(algorithm):
    """Without a token from the target every emitted token but the rejections is an accepted
    draft: the round-start-weighted round_accepted_tokens == T − E[N_rej] (enumerated)."""
    draft, target = three_token_pair(2)
    total, expected = accepted_drafts_identity(draft, target, algorithm)
    assert total == expected


@pytest.mark.parametrize("algorithm", [
    Speculative(window=2), BlockSpeculative(2),
    AdaptiveSpeculative(ThresholdStopping(F(1, 2)), max_window=2),
    TreeSpeculative((2, 1), sampling="topk"), TreeSpeculative((2, 1), verifier="traversal"),
], ids=repr)
def test_round_accepted_tokens_with_a_final_token_is_the_round_length_minus_one(algorithm):
    """From position 0 with positions left after every round (T = 4 > depth), every round
    ends with one token not drafted: accepted drafts = E[first round length] − 1."""
    draft, target = three_token_pair(4)
    pmf = round_length_pmf(draft, target, algorithm)
    assert round_accepted_tokens(draft, target, algorithm) == \
        np.arange(target.horizon + 1) @ pmf - 1


# ---------------------------------------------------------------------- traversal vs rrs
@settings(max_examples=25, deadline=None)
@given(pair=model_pairs(exact=True, max_vocab=3, max_horizon=3, max_contexts=3),
       form=st.sampled_from(((2, 1), (2, 2), (1, 2), (3,), (((),), ()))),
       sampling=st.sampled_from(SAMPLINGS))
def test_traversal_accepts_at_least_as_many_drafts_as_rrs(pair, form, sampling):
    """Measured, not a theorem for trees: on every tested round, Traversal Verification
    accepts at least as many drafts in expectation as rrs (the paper proves optimality on a
    single chain only)."""
    draft, target = pair
    for n in range(target.horizon):
        for s in range(target.n_contexts):
            rrs = round_accepted_tokens(draft, target, tree(form, sampling=sampling),
                                        position=n, context=s)
            traversal = round_accepted_tokens(
                draft, target, tree(form, sampling=sampling, verifier="traversal"),
                position=n, context=s)
            assert traversal >= rrs


def test_traversal_strictly_beats_rrs_on_the_toy():
    """Two i.i.d. chains of two on Sun et al.'s toy (q = (1/3, 2/3), p = (2/3, 1/3)), by hand.

    rrs: the first child is accepted w.p. 2/3, else the residual (0, 1) accepts the second
    w.p. 1/3; below an accepted child the chain adds α = 2/3: (5/3)(2/3 + 1/9) = 35/27.
    Traversal: c₁ = 1 (1/3): p_α(c₁) = 1, its child passes w.p. 2/3 and else c₁ itself
    (p_α′ = 1): 5/3.  c₁ = 0 (2/3): p_α(c₁) = 1/2, its child passes w.p. 2/3·1/4 + 1/3 = 1/2
    (2 drafts), else S = Σ[q/2 − p]₊ = 0 deletes c₁ and the root's residual (0, 1) makes c₂ =
    1 (1/3) worth 5/3: 1/3·5/3 + 2/3·(1 + 1/2·5/9) = 38/27."""
    draft, target = toy(4)
    rrs, traversal = (TreeSpeculative((2, 1), verifier=v) for v in VERIFIERS)
    assert round_accepted_tokens(draft, target, rrs) == F(35, 27)
    assert round_accepted_tokens(draft, target, traversal) == F(38, 27)


# ---------------------------------------------------------------------- negative control
def test_stale_residual_tree_is_caught():
    """Known-wrong: the residual is not updated between siblings.  Its sequence law is not
    the target's (the same check passes the correct rule)."""
    draft, target = three_token_pair(1)
    wrong = enumerate_outcomes(draft, target, StaleResidualTree((2,))).sequence_law()
    right = enumerate_outcomes(draft, target, TreeSpeculative((2,))).sequence_law()
    for tokens in all_sequences(target):
        assert right.get(tokens, 0) == target.sequence_probability(list(tokens))
    assert any(wrong.get(tokens, 0) != target.sequence_probability(list(tokens))
               for tokens in all_sequences(target))
