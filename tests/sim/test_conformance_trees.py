"""The tree convention of the conformance harness (sim.conformance.trees).

Statistical checks: each ``check_verifier`` report is one test at level 1e-6 (Bonferroni over
the pairs), fixed seeds, no retries.  The reference tree verifiers must pass (powered: verdict
"passed" at ``min_tv = 0.1``); the known-wrong mutants are the negative controls and must fail
at the same size and seed.
"""

import numpy as np
import pytest

from sim.conformance import VerifierError, check_verifier, conformance_suite
from sim.conformance.trees import (
    _accepted_along,
    bfs_layout,
    cut_tree,
    draft_trees,
    eagle_verifier,
    specinfer_verifier,
    tree_verifier,
)
from theory import TreeSpeculative

SMALL = conformance_suite()[:4]
ROUNDS, MIN_TV = 12_000, 0.1


@pytest.mark.parametrize("sampling", ["iid", "swor", "topk"])
def test_reference_tree_verifiers_pass_and_both_mutants_fail(sampling):
    tree = TreeSpeculative((2, 2), sampling=sampling)
    report = check_verifier(tree_verifier(sampling), tree=tree, models=SMALL, n_rounds=ROUNDS,
                            rng=3, min_tv=MIN_TV)
    assert report.verdict == "passed", report
    assert np.isfinite(report.efficiency) and report.efficiency > 0.8, report.efficiency
    for mutation in ("stale_residual", "rows_by_depth"):
        wrong = check_verifier(tree_verifier(sampling, mutation=mutation), tree=tree,
                               models=SMALL, n_rounds=ROUNDS, rng=3, min_tv=MIN_TV)
        assert wrong.verdict == "failed", (mutation, wrong)
        assert wrong.deviations, "a failed report locates its deviation"


def test_named_rules_are_the_samplings_rules():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    parents = np.array([0, 0, 1, 1, 2, 2])
    p = np.random.default_rng(1).dirichlet(np.ones(3), size=(4, 7))
    q = np.random.default_rng(2).dirichlet(np.ones(3), size=(4, 7))
    tokens = np.array([[0, 1, 2, 0, 1, 1]] * 4)
    assert (specinfer_verifier(tokens, parents, p, q, rng_a)
            == tree_verifier("iid")(tokens, parents, p, q, rng_b)).all()
    assert eagle_verifier.__qualname__ == "eagle_verifier"


def test_layout_cut_and_drafting():
    shape = TreeSpeculative((2, 3)).tree
    parents, depths = bfs_layout(shape)
    assert parents.tolist() == [0, 0, 1, 1, 1, 2, 2, 2] and depths.max() == 2
    assert cut_tree(shape, 1) == ((), ())
    rows = np.array([[0.5, 0.5, 0.0]] * 4)  # two tokens with mass: swor and topk run out
    for sampling in ("swor", "topk"):
        drafted = draft_trees(((), (), ()), sampling, lambda node, tokens: rows,
                              np.random.default_rng(0))
        assert (drafted[:, 2] == -1).all() and (np.sort(drafted[:, :2], axis=1) == [0, 1]).all()
    drafted = draft_trees(((), (), ()), "topk", lambda node, tokens: rows, None)
    assert (drafted[:, :2] == [0, 1]).all()  # ties to the lowest index


def test_accepted_tokens_follow_drafted_paths():
    parents = np.array([0, 0, 1])  # root → 1 (token 4), 2 (token 5); 1 → 3 (token 6)
    tokens = np.array([[4, 5, 6]] * 3)
    emitted = np.array([[4, 6, 9], [5, 1, -1], [4, 2, -1]])
    assert _accepted_along(emitted, tokens, parents).tolist() == [2, 1, 1]


def test_tree_arguments_are_checked():
    tree = TreeSpeculative((2,))
    with pytest.raises(TypeError, match="exactly one of window"):
        check_verifier(tree_verifier(), window=2, tree=tree)
    with pytest.raises(TypeError, match="exactly one of window"):
        check_verifier(tree_verifier())
    with pytest.raises(TypeError, match=r"theory\.TreeSpeculative"):
        check_verifier(tree_verifier(), tree=(2, 2))
    with pytest.raises(ValueError, match="level='token'"):
        check_verifier(tree_verifier(), tree=tree, level="sequence")
    with pytest.raises(ValueError, match="sampling must be"):
        tree_verifier("beam")


def test_malformed_tree_output_is_a_verifier_error():
    def short(tree_tokens, parents, p, q, rng):
        return np.zeros((tree_tokens.shape[0], 1), dtype=np.int64)

    with pytest.raises(VerifierError, match=r"tree verifier .* shape"):
        check_verifier(short, tree=TreeSpeculative((2, 2)), models=SMALL[:1], n_rounds=200,
                       rng=0)
