"""The optimal lossless tree verifier (LP), the enumerated rrs / Traversal Verification, the shape
search: exact checks against the known optima (block verification on a path, α* at a root),
losslessness in rationals, and negative controls."""

import itertools
from fractions import Fraction as F

import numpy as np
import pytest

import theory.tree_enumeration as enumeration
from theory import (
    BatchSpeculative,
    BlockSpeculative,
    MarkovLM,
    TreeSpeculative,
    root_acceptance,
    round_accepted_tokens,
)
from theory.multidraft import optimal_multidraft_acceptance
from theory.tree_drafts import shape_from_branching
from theory.tree_enumeration import (
    expected_accepted,
    is_lossless,
    round_output_law,
    verifier_value,
)
from theory.tree_optimal import (
    _solve_exact,
    match_coupling_acceptance,
    optimal_tree_acceptance,
    optimal_tree_lp,
)
from theory.tree_shapes import (
    enumerate_shapes,
    exact_instance_grid,
    optimal_tree_shape,
    positional_acceptance,
    sequoia_gap,
    sequoia_tree_shape,
    shape_value,
    traversal_optimality_search,
)


def _chain(kernel, horizon):
    return MarkovLM.homogeneous([[F(v) for v in row] for row in kernel], horizon)


# a first-order pair over 2 tokens (2 contexts) and a context-free pair over 3 tokens
P2 = _chain([["1/3", "2/3"], ["3/4", "1/4"]], 3)
Q2 = _chain([["2/3", "1/3"], ["1/4", "3/4"]], 3)
_ONE = [[0, 0, 0]]
P3 = MarkovLM.homogeneous([[F(1, 2), F(1, 3), F(1, 6)]], 2, next_context=_ONE)
Q3 = MarkovLM.homogeneous([[F(1, 6), F(1, 3), F(1, 2)]], 2, next_context=_ONE)
# the smallest counterexample of the traversal-optimality search (V = 2, "swor", (2, 1))
P_CE = MarkovLM.homogeneous([[F(1, 4), F(3, 4)]], 2, next_context=[[0, 0]])
Q_CE = MarkovLM.homogeneous([[F(1, 2), F(1, 2)]], 2, next_context=[[0, 0]])


def _block_value(draft, target, window, position, context, bonus=True):
    """E[accepted drafts] of block verification from its exact round law (theory.block)."""
    law = BlockSpeculative(window, bonus=bonus).round_law(draft, target, position)
    depth = min(window, target.horizon - position)
    counts = np.arange(law.total.shape[0])
    rejected = law.rejected[:, context, :].sum(axis=1)
    accepted = law.accepted[:, context, :].sum(axis=1)
    return sum((k - 1) * v for k, v in zip(counts, rejected, strict=True)) \
        + depth * sum(accepted)


def _lp_output_law(lp):
    """The output law of the LP's optimal coupling: {(string, accepted): probability}."""
    law = {}
    for (_, string, count), weight in lp.coupling.items():
        law[(string, count)] = law.get((string, count), 0) + weight
    return law


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("bonus", [True, False])
def test_single_path_optimum_is_block_verification(window, position, bonus):
    """Sun et al. (ICLR 2025): block verification is optimal among verifiers of one drafted
    path; the LP over (1,)*d, with their bonus convention, equals it exactly (and traversal,
    which is block verification on a path)."""
    for context in (0, 1):
        lp = optimal_tree_lp(P2, Q2, (1,) * window, position=position, context=context,
                             bonus=bonus)
        assert lp.certified
        block = _block_value(P2, Q2, window, position, context, bonus)
        assert lp.value == block
        assert verifier_value(P2, Q2, (1,) * window, "traversal", position=position,
                              context=context) == block


def _alpha_star(p_row, q_row, k):
    """α* = 1 + min over every token set H of [q(H) − p(H)^k] (Khisti et al. 2024), exactly."""
    tokens = range(len(p_row))
    return 1 + min(sum((q_row[x] for x in h), F(0)) - sum((p_row[x] for x in h), F(0)) ** k
                   for size in range(len(p_row) + 1)
                   for h in itertools.combinations(tokens, size))


@pytest.mark.parametrize("k", [2, 3])
def test_root_optimum_is_the_multidraft_optimum(k):
    """(k,) with i.i.d. drafts: the LP is α* exactly; every root verifier of the package is at
    most the LP optimum of its own drafting rule."""
    for draft, target in ((P2, Q2), (P3, Q3)):
        for context in range(draft.n_contexts if draft.is_first_order else 1):
            p_row, q_row = draft.probs[1, context], target.probs[1, context]
            lp = optimal_tree_lp(draft, target, (k,), context=context, position=1)
            assert lp.certified and lp.value == _alpha_star(p_row, q_row, k)
            assert float(optimal_multidraft_acceptance(np.asarray(p_row, float),
                                                       np.asarray(q_row, float), k)) \
                == pytest.approx(float(lp.value), abs=1e-12)
            for verifier, sampling in (("paper", "iid"), ("trie", "iid"), ("swor", "swor"),
                                       ("topk", "topk")):
                root = root_acceptance(p_row, q_row, BatchSpeculative(k, verifier=verifier))
                optimum = optimal_tree_lp(draft, target, (k,), context=context, position=1,
                                          sampling=sampling)
                assert optimum.certified and root <= optimum.value
            spectr = root_acceptance(p_row, q_row, BatchSpeculative(k, verifier="spectr"))
            assert float(spectr) <= float(lp.value) + 1e-12  # ρ* is a float root


SHAPES = [(2, 1), (1, 2), (2, 2), (3, 1), (((), ()), ())]


@pytest.mark.parametrize("sampling", ["iid", "swor", "topk"])
def test_optimum_dominates_rrs_and_traversal_and_is_attained_losslessly(sampling):
    for shape in SHAPES:
        lp = optimal_tree_lp(P2, Q2, shape, sampling=sampling)
        assert lp.certified and lp.upper_bound == lp.value
        law = _lp_output_law(lp)  # the certificate's verifier: lossless, worth the value
        assert is_lossless(P2, Q2, law)
        assert expected_accepted(law) == lp.value
        for verifier in ("rrs", "traversal"):
            assert verifier_value(P2, Q2, shape, verifier, sampling=sampling) <= lp.value


@pytest.mark.parametrize("sampling", ["iid", "swor", "topk"])
@pytest.mark.parametrize("verifier", ["rrs", "traversal"])
def test_enumerated_verifiers_are_lossless_and_match_the_recursion(sampling, verifier):
    for (draft, target), shapes in (((P2, Q2), SHAPES), ((P3, Q3), [(2, 1), (3,)])):
        for shape in shapes:
            for bonus in (True, False):
                law = round_output_law(draft, target, shape, verifier, sampling=sampling,
                                       bonus=bonus)
                assert sum(law.values()) == 1
                assert is_lossless(draft, target, law)
                assert expected_accepted(law) == verifier_value(
                    draft, target, shape, verifier, sampling=sampling)


def test_rrs_reproduces_token_wise_speculative_decoding_on_a_path():
    """rrs on (1,)*d is Speculative(window=d): E[accepted] = Σ_i Π_{j≤i} acceptance, which
    for a context-free pair is Σ_{i=1}^{d} α^i (Leviathan et al.), α = 1 − TV."""
    p = MarkovLM.homogeneous([[F(1, 5), F(4, 5)]], 4, next_context=[[0, 0]])
    q = MarkovLM.homogeneous([[F(3, 5), F(2, 5)]], 4, next_context=[[0, 0]])
    alpha = F(3, 5)
    for depth in (1, 2, 3):
        value = verifier_value(p, q, (1,) * depth, "rrs")
        assert value == sum(alpha ** i for i in range(1, depth + 1))


def test_negative_control_a_wrong_traversal_update_is_not_lossless(monkeypatch):
    """Dropping the denominator of π ← r/(r + 1 − π) breaks losslessness, and the check sees
    it; so does moving mass between two outputs of a correct law."""
    law = round_output_law(P2, Q2, (1, 1), "traversal")
    assert is_lossless(P2, Q2, law)
    (first, a), (second, _) = list(law.items())[:2]
    moved = dict(law)
    moved[first] -= a / 2
    moved[second] += a / 2
    assert not is_lossless(P2, Q2, moved)

    original = enumeration._residual

    def residual_without_scale(scale, q_row, p_row):  # the residual of [q − p]₊, not [πq − p]₊
        return original(1, q_row, p_row)

    monkeypatch.setattr(enumeration, "_residual", residual_without_scale)
    assert not is_lossless(P2, Q2, round_output_law(P2, Q2, (1, 1), "traversal"))


def test_traversal_is_not_optimal_the_smallest_counterexample():
    """The search's smallest counterexample (V = 2, one context, "swor", branching (2, 1)):
    the LP's certified verifier is lossless and accepts strictly more than traversal."""
    lp = optimal_tree_lp(P_CE, Q_CE, (2, 1), sampling="swor")
    law = _lp_output_law(lp)
    assert lp.certified and is_lossless(P_CE, Q_CE, law)
    traversal = round_output_law(P_CE, Q_CE, (2, 1), "traversal", sampling="swor")
    assert is_lossless(P_CE, Q_CE, traversal)
    assert expected_accepted(law) > expected_accepted(traversal)
    pairs = [(P_CE, Q_CE)]
    found = traversal_optimality_search(pairs, [(1, 1), (2, 1)], samplings=("swor",))
    assert found["smallest_counterexample"]["shape"] == (2, 1)
    assert found["uncertified"] == 0


def test_longest_match_coupling_overstates_the_optimum():
    """Coupling D with a full target sample and counting the longest match drops the
    stopping-time condition.  On a path of 2 with p = (1/4, 3/4), q = (3/4, 1/4) by hand:
    P(X₁ = Y₁) ≤ 1 − TV = 1/2 and P(X₁X₂ = Y₁Y₂) ≤ Σ min(p², q²) = 1/2 hold together under
    the maximal coupling of the pairs, so the match is 1, while block verification (the
    optimum) accepts 7/8 (its weights: π₁ = (1, 1/3), h₁ = (1, 0))."""
    p = MarkovLM.homogeneous([[F(1, 4), F(3, 4)]], 3, next_context=[[0, 0]])
    q = MarkovLM.homogeneous([[F(3, 4), F(1, 4)]], 3, next_context=[[0, 0]])
    assert optimal_tree_lp(p, q, (1, 1)).value == F(7, 8)
    assert match_coupling_acceptance(p, q, (1, 1)) == pytest.approx(1.0, abs=1e-12)
    for shape in [(2, 1), (1, 2)]:  # an upper bound everywhere
        for sampling in ("iid", "swor"):
            lp = optimal_tree_lp(P_CE, Q_CE, shape, sampling=sampling)
            match = match_coupling_acceptance(P_CE, Q_CE, shape, sampling=sampling)
            assert match >= float(lp.value) - 1e-12


def test_lp_refuses_large_problems_with_the_estimate():
    with pytest.raises(ValueError, match=r"needs up to \d+ variables > max_variables = 100"):
        optimal_tree_lp(P3, Q3, (2, 2), max_variables=100)
    with pytest.raises(ValueError, match="sampling must be one of"):
        optimal_tree_lp(P3, Q3, (2,), sampling="beam")


def test_exact_solver_detects_inconsistency_and_underdetermination():
    assert _solve_exact([({"a": 1, "b": 1}, 2), ({"a": 1, "b": -1}, 0)], ["a", "b"]) == \
        {"a": 1, "b": 1}
    assert _solve_exact([({"a": 1}, 1), ({"a": 2}, 3)], ["a"]) is None
    assert _solve_exact([({"a": 1, "b": 1}, 2)], ["a", "b"]) is None
    assert _solve_exact([({"a": 1, "b": 1}, 2)], ["a", "b"], {"a": 0, "b": 5}) in (
        {"a": 0, "b": 2}, {"a": -3, "b": 5})


def test_shapes_and_averaging_over_the_start_law():
    assert shape_from_branching((2, 1)) == (((),), ((),))
    assert len(enumerate_shapes(4, 4)) == 14  # Catalan(4)
    assert len(enumerate_shapes(4, 4, ordered=False)) == 9  # rooted trees with 5 vertices
    mixed = MarkovLM.homogeneous(P2.probs[0], 3, start=[F(1, 2), F(1, 2)])
    target = MarkovLM.homogeneous(Q2.probs[0], 3, start=[F(1, 2), F(1, 2)])
    per_context = [optimal_tree_lp(P2, Q2, (2,), context=s).value for s in (0, 1)]
    assert optimal_tree_acceptance(mixed, target, (2,)) == sum(per_context) / 2


@pytest.mark.parametrize("sampling", ["iid", "swor", "topk"])
def test_rrs_shape_dp_equals_exhaustive_search_and_beats_sequoia(sampling):
    best_shape, best = optimal_tree_shape(P2, Q2, 4, sampling=sampling, verifier="rrs")
    values = [shape_value(P2, Q2, s, verifier="rrs", sampling=sampling)
              for s in enumerate_shapes(4, 3)]
    assert best == max(values)
    assert shape_value(P2, Q2, best_shape, verifier="rrs", sampling=sampling) == best
    sequoia, _ = sequoia_tree_shape(P2, Q2, 4, sampling=sampling)
    for verifier in ("rrs", "traversal"):
        _, optimum = optimal_tree_shape(P2, Q2, 4, sampling=sampling, verifier=verifier)
        assert shape_value(P2, Q2, sequoia, verifier=verifier, sampling=sampling) <= optimum
    accept = positional_acceptance(P2, Q2, 3, sampling=sampling)
    assert sum(accept) <= 1 and all(a >= 0 for a in accept)


def test_shape_search_refuses_above_the_budget():
    """Ordered shapes of 10 nodes and depth <= 3: 4181 (Fibonacci F(19) counts them)."""
    with pytest.raises(ValueError, match=r"would evaluate 4181 shapes of 10 nodes"):
        optimal_tree_shape(P2, Q2, 10, sampling="iid", verifier="traversal", max_shapes=100)


def test_instance_grid_is_deterministic_and_exact():
    pairs = exact_instance_grid(2)
    assert len(pairs) == 6 and all(p.is_exact and q.is_exact for p, q in pairs)
    assert len(exact_instance_grid(2, first_order=True)) == 6


@pytest.mark.parametrize("verifier", ["rrs", "traversal"])
def test_independent_values_agree_with_the_tree_family(verifier):
    """The enumerations here are written apart from theory.tree; the two agree exactly, and
    the LP bounds TreeSpeculative's rounds (bonus or not, every start)."""
    for shape in [(2, 1), (1, 2), (((), ()), ()), ((), ((), ()))]:
        for sampling in ("iid", "swor", "topk"):
            for bonus in (True, False):
                regular = all(isinstance(k, int) for k in shape)
                algorithm = TreeSpeculative(shape if regular else None,
                                            shape=None if regular else shape,
                                            sampling=sampling, verifier=verifier, bonus=bonus)
                for position, context in ((0, 0), (1, 1), (2, 0)):
                    theirs = round_accepted_tokens(P2, Q2, algorithm, position=position,
                                                   context=context)
                    law = round_output_law(P2, Q2, algorithm, verifier, position=position,
                                           context=context)
                    assert expected_accepted(law) == theirs
                    optimum = optimal_tree_lp(P2, Q2, algorithm, position=position,
                                              context=context)
                    assert optimum.certified and theirs <= optimum.value


def test_float_models_where_acceptance_rounds_to_one():
    """On the Fig. 2 chains, the last of 7 drafts without replacement has p_j = 1 and
    min(1, q_j/p_j) < 1 while [q_j − p_j]₊ is 0 in floats: the recursions, the shape DP's
    weights and the enumeration must not divide by that empty residual."""
    from sim.models import fig2_pair

    draft, target = fig2_pair(2)
    value = verifier_value(draft, target, (7,), "rrs", sampling="swor", context=0)
    accept = positional_acceptance(draft, target, 7, sampling="swor", context=0)
    assert value == pytest.approx(float(sum(accept)), abs=1e-12)
    law = round_output_law(draft, target, (7,), "rrs", sampling="swor", context=0)
    assert is_lossless(draft, target, law, tolerance=1e-12)
    assert expected_accepted(law) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("sampling", ["iid", "swor"])
def test_optimal_shape_dominates_every_verifier_s_best_shape(sampling):
    """max over shapes of the LP ≥ max over shapes of rrs and of traversal (shape by shape
    the LP dominates); the unordered search of "iid" finds the ordered optimum."""
    _, optimum = optimal_tree_shape(P2, Q2, 3, sampling=sampling, verifier="optimal")
    for verifier in ("rrs", "traversal"):
        assert optimal_tree_shape(P2, Q2, 3, sampling=sampling, verifier=verifier)[1] <= optimum
    every = max(optimal_tree_lp(P2, Q2, shape, sampling=sampling).value
                for shape in enumerate_shapes(3, 3))
    assert every == optimum
    found = sequoia_gap(P2, Q2, 3, sampling=sampling, verifier="optimal")
    assert found["gap"] >= 0 and found["optimal_value"] == optimum
