"""The vectorized engine and its tables: determinism, the uniform layout, edge cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import SimResult, simulate
from sim.engine import make_kernel, run_uniforms
from sim.models import fig2_pair, random_pair
from sim.reference import reference_simulate
from sim.strategies import model_pairs, probability_vectors
from sim.tables import build_alias, implied_law
from theory import Autoregressive, Speculative, UnbiasedSpeculative

ALGORITHMS = [Speculative(), Speculative(window=2), Speculative(window=2, bonus=False),
              Autoregressive(), UnbiasedSpeculative.scaled(0.5)]


@given(st.integers(1, 40).flatmap(
    lambda v: st.lists(probability_vectors(v), min_size=1, max_size=6)))
def test_alias_tables_reproduce_their_laws(rows):
    weights = np.array(rows)
    table = build_alias(weights)
    np.testing.assert_allclose(implied_law(table), weights, atol=1e-14)
    # A zero-probability outcome is never reachable: as a column its threshold is 0, and it is
    # nobody's alias where the alias can be taken.
    reach = table.threshold.reshape(weights.shape) > 0
    flat_alias = table.alias.reshape(weights.shape)
    for r in range(weights.shape[0]):
        reached = set(np.flatnonzero(reach[r])) | set(flat_alias[r][table.threshold.reshape(
            weights.shape)[r] < 1])
        assert all(weights[r, x] > 0 for x in reached)


def test_alias_draw_extremes_of_the_uniform():
    table = build_alias(np.array([[0.2, 0.0, 0.8]]))
    tokens = table.draw(np.zeros(3, dtype=np.intp), np.array([0.0, 0.5, np.nextafter(1, 0)]))
    assert set(tokens.tolist()) <= {0, 2}


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=repr)
def test_same_seed_same_result_and_the_uniform_layout(algorithm):
    draft, target = fig2_pair(horizon=12)
    first = simulate(draft, target, algorithm, n_trials=3000, rng=7, record_tokens=True)
    again = simulate(draft, target, algorithm, n_trials=3000, rng=7, record_tokens=True)
    for a, b in ((first.rejections, again.rejections), (first.tokens, again.tokens)):
        np.testing.assert_array_equal(a, b)
    # One chunk: the engine consumed start uniforms (n,), then (k, n) per position, in order,
    # from the first spawned child — the layout run_uniforms documents.
    stream = np.random.default_rng(7).spawn(1)[0]
    k = make_kernel(draft, target, algorithm).n_uniforms
    start = stream.random(3000)
    uniforms = stream.random((target.horizon, k, 3000))
    replay = run_uniforms(draft, target, algorithm, uniforms, start_uniforms=start,
                          record_tokens=True)
    np.testing.assert_array_equal(replay.tokens, first.tokens)
    np.testing.assert_array_equal(replay.rejections, first.rejections)
    np.testing.assert_array_equal(replay.target_calls, first.target_calls)


def test_chunking_keeps_shapes_and_counts():
    draft, target = fig2_pair(horizon=5)
    result = simulate(draft, target, Speculative(), n_trials=1001, rng=1, chunk_size=100,
                      record_tokens=True)
    assert result.n_trials == 1001 and result.tokens.shape == (1001, 5)
    assert result.rejections.dtype == np.int64


@settings(max_examples=40)
@given(pair=model_pairs(max_vocab=4, max_horizon=4), seed=st.integers(0, 2**32 - 1),
       algorithm=st.sampled_from(ALGORITHMS))
def test_every_emitted_sequence_is_possible_under_the_target(pair, seed, algorithm):
    draft, target = pair
    for run in (simulate, reference_simulate):
        result = run(draft, target, algorithm, n_trials=50, rng=seed, record_tokens=True)
        assert (target.sequence_probability(result.tokens) > 0).all()
        assert (result.rejections <= target.horizon).all()
        assert (result.target_calls >= 1).all()
        assert (result.target_calls <= target.horizon).all()


@given(pair=model_pairs(relation="near"), seed=st.integers(0, 2**32 - 1))
def test_equal_models_never_reject_in_simulation(pair, seed):
    draft, target = pair
    result = simulate(draft, target, Speculative(), n_trials=200, rng=seed)
    assert (result.rejections == 0).all()


def test_single_token_single_position():
    draft, target = random_pair(1, 1, rng=0)
    result = simulate(draft, target, Speculative(), n_trials=10, rng=0, record_tokens=True)
    assert (result.tokens == 0).all() and (result.rejections == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"n_trials": 0}, ValueError, "n_trials must be >= 1; got 0"),
     ({"n_trials": 2.5}, TypeError, "n_trials must be an integer"),
     ({"n_trials": 5, "chunk_size": 0}, ValueError, "chunk_size must be a positive integer")],
)
def test_simulate_validates(kwargs, error, match):
    draft, target = fig2_pair(horizon=3)
    with pytest.raises(error, match=match):
        simulate(draft, target, Speculative(), **kwargs)


def test_simulate_rejects_non_algorithms_and_bad_uniforms():
    draft, target = fig2_pair(horizon=3)
    with pytest.raises(TypeError, match="algorithm must be a theory Algorithm"):
        simulate(draft, target, "speculative", n_trials=5)
    with pytest.raises(ValueError, match=r"uniforms must have shape \(T, k, n\) = \(3, 3, 4\)"):
        run_uniforms(draft, target, Speculative(), np.zeros((3, 2, 4)),
                     start_uniforms=np.zeros(4))
    with pytest.raises(ValueError, match="start_uniforms"):
        run_uniforms(draft, target, Speculative(), np.zeros((3, 3, 4)))


def test_concatenate_results():
    part = SimResult(np.array([1]), np.array([2]), np.array([[0, 1]]))
    joined = SimResult.concatenate([part, part])
    assert joined.n_trials == 2 and joined.tokens.shape == (2, 2)


@given(st.integers(1, 30).flatmap(
    lambda v: st.lists(probability_vectors(v), min_size=1, max_size=5)))
def test_both_pairing_loops_build_identical_tables(rows):
    from sim.tables import _pair_rows, _pair_rows_one_by_one

    weights = np.array(rows)
    scaled = weights * weights.shape[1] / weights.sum(axis=1, keepdims=True)
    mass = np.sort(scaled, axis=1, kind="stable")
    empty = np.zeros(len(rows), dtype=bool)
    vectorized, scalar = _pair_rows(mass, empty), _pair_rows_one_by_one(mass, empty)
    np.testing.assert_array_equal(vectorized[0], scalar[0])
    np.testing.assert_array_equal(vectorized[1], scalar[1])
