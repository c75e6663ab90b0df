"""Token trees in the engines: the reference routine runs (the exact rung is
tests/theory/test_tree.py); the compiled engines refuse the optimal verifier (no law to
sample); tests/sim/test_tree_statistical.py checks the kernels."""

from fractions import Fraction as F

import numpy as np
import pytest

from sim import simulate
from sim.models import bernoulli_pair
from sim.reference import enumerate_outcomes, reference_simulate
from theory import MarkovLM, TreeSpeculative


def test_compiled_engine_refuses_the_optimal_verifier_clearly():
    draft, target = bernoulli_pair(0.5, 0.25, horizon=3)
    with pytest.raises(TypeError, match=r"no kernel.*optimal tree verifier is not unique"):
        simulate(draft, target, TreeSpeculative((2, 2), verifier="optimal"), n_trials=10,
                 rng=0)


@pytest.mark.parametrize("sampling", ["iid", "swor", "topk"])
@pytest.mark.parametrize("verifier", ["rrs", "traversal"])
def test_reference_routine_samples_whole_runs(sampling, verifier):
    draft, target = bernoulli_pair(0.7, 0.4, horizon=6)
    algorithm = TreeSpeculative((2, 2), sampling=sampling, verifier=verifier)
    result = reference_simulate(draft, target, algorithm, n_trials=50, rng=1,
                                record_tokens=True)
    assert result.tokens.shape == (50, 6) and set(np.unique(result.tokens)) <= {0, 1}
    assert (result.rejections <= result.target_calls).all()
    assert (1 <= result.target_calls).all() and (result.target_calls <= 6).all()
    per_round = {"iid": 6, "swor": 6, "topk": 6}[sampling]  # V = 2: all children exist
    assert (result.drafted <= per_round * result.target_calls).all()


def test_swor_drafts_fewer_children_where_the_draft_has_less_mass():
    """Only token 0 has draft mass in context 0: "swor" drafts one child there (its child too,
    counted even when verification never reads it); a second round, from context 1 after the
    residual token 1, drafts a cut tree of two children."""
    draft = MarkovLM.homogeneous([[F(1), F(0)], [F(1, 2), F(1, 2)]], 2)
    target = MarkovLM.homogeneous([[F(1, 2), F(1, 2)], [F(1, 2), F(1, 2)]], 2)
    law = enumerate_outcomes(draft, target, TreeSpeculative((2, 2), sampling="swor"))
    assert {(o.target_calls, o.drafted) for o in law.outcomes} == {(1, 2), (2, 4)}
