"""The CPU engine and its randomness contract: Philox known answers, uniforms as a pure
function of (seed, trial, position, slot), and results invariant to n_trials, chunking,
threads and memory layout."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import SimResult, simulate
from sim.engine import count_dtype, make_tables, token_dtype
from sim.engine.compiled import KERNEL_STAMP, clear_stale_kernels, uniform, uniform_pair
from sim.engine.philox import START_POSITION, philox4x32, philox_key, uniforms
from sim.engine.tables import build_alias, implied_law
from sim.models import fig2_pair, random_pair
from sim.reference import reference_simulate
from sim.strategies import broadcast_layouts, model_pairs, probability_vectors
from theory import (
    Autoregressive,
    BatchSpeculative,
    BlockSpeculative,
    LossySpeculative,
    MarkovLM,
    Speculative,
    TreeSpeculative,
    UnbiasedSpeculative,
    expected_rejections,
)

ALGORITHMS = [Speculative(), Speculative(window=2), Speculative(window=2, bonus=False),
              Autoregressive(), UnbiasedSpeculative.scaled(0.5), BatchSpeculative(3),
              BatchSpeculative(3, "trie"), LossySpeculative(0.2), TreeSpeculative((2, 2)),
              TreeSpeculative((2, 1), sampling="swor", verifier="traversal")]

# Random123's published known-answer vectors for Philox4x32-10: counter, key -> output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(word) for word in philox4x32(counter, key)) == expected


@numba.njit
def _compiled_uniforms(key, trials, positions, slots):
    out = np.empty(trials.size)
    for i in range(trials.size):
        out[i] = uniform(np.uint64(key[0]), np.uint64(key[1]), np.uint64(trials[i]),
                         np.uint64(positions[i]), np.uint64(slots[i]))
    return out


@numba.njit
def _compiled_pairs(key, trials, position, pair):
    even, odd = np.empty(trials.size), np.empty(trials.size)
    for i in range(trials.size):
        even[i], odd[i] = uniform_pair(np.uint64(key[0]), np.uint64(key[1]),
                                       np.uint64(trials[i]), np.uint64(position),
                                       np.uint64(pair))
    return even, odd


@given(key=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
       trials=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20),
       position=st.integers(0, 2**32 - 1), slot=st.integers(0, 2**20))
def test_compiled_uniforms_equal_the_readable_definition(key, trials, position, slot):
    trials = np.array(trials, dtype=np.uint64)
    expected = uniforms(key, trials, position, slot)
    n = trials.size
    got = _compiled_uniforms(np.array(key, dtype=np.uint64), trials,
                             np.full(n, position, dtype=np.uint64),
                             np.full(n, slot, dtype=np.uint64))
    np.testing.assert_array_equal(got, expected)
    even, odd = _compiled_pairs(np.array(key, dtype=np.uint64), trials, position, slot)
    np.testing.assert_array_equal(even, uniforms(key, trials, position, 2 * slot))
    np.testing.assert_array_equal(odd, uniforms(key, trials, position, 2 * slot + 1))
    assert ((expected >= 0) & (expected < 1)).all()


def test_uniforms_are_uniform_and_distinct_across_slots():
    """A sanity check of the construction (not of Philox itself): 10⁵ uniforms per slot
    pass a chi-square test of 100 equal bins at level 1e-6, and slots differ."""
    from scipy import stats

    key = philox_key(3)
    trials = np.arange(100_000)
    for slot in (0, 1, 2, 7):
        u = uniforms(key, trials, 5, slot)
        counts = np.bincount((u * 100).astype(int), minlength=100)
        assert stats.chisquare(counts).pvalue > 1e-6
    assert not np.array_equal(uniforms(key, trials, 5, 0), uniforms(key, trials, 5, 1))
    assert not np.array_equal(uniforms(key, trials, 5, 0), uniforms(key, trials, 6, 0))
    assert not np.array_equal(uniforms(key, trials, START_POSITION, 0),
                              uniforms(key, trials, 0, 0))


def test_philox_key_from_seeds_and_generators():
    assert philox_key(0) == philox_key(np.int64(0)) != philox_key(1)
    assert philox_key(np.random.default_rng(4)) == philox_key(np.random.default_rng(4))
    assert philox_key(None) != philox_key(None)
    with pytest.raises(TypeError, match="rng must be a seed"):
        philox_key(True)
    with pytest.raises(TypeError, match="rng must be a seed"):
        philox_key(1.5)
    with pytest.raises(ValueError, match="rng must be a seed >= 0"):
        philox_key(-1)


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


def _assert_same(a: SimResult, b: SimResult, rows=slice(None)):
    np.testing.assert_array_equal(a.rejections[rows], b.rejections[rows])
    np.testing.assert_array_equal(a.target_calls[rows], b.target_calls[rows])
    if a.tokens is not None or b.tokens is not None:
        np.testing.assert_array_equal(a.tokens[rows], b.tokens[rows])


@settings(max_examples=30)
@given(pair=model_pairs(max_vocab=4, max_horizon=5, max_contexts=4),
       algorithm=st.sampled_from(ALGORITHMS), seed=st.integers(0, 2**32 - 1),
       n_trials=st.integers(1, 700), chunk_size=st.integers(1, 300))
def test_trial_outcomes_depend_only_on_seed_and_index(pair, algorithm, seed, n_trials,
                                                      chunk_size):
    """Prefix invariance (the first n trials of a larger run are the n trials of a smaller
    one) and chunk invariance, on models with hidden contexts, zeros and random prompts."""
    draft, target = pair
    full = simulate(draft, target, algorithm, n_trials=n_trials + 50, rng=seed,
                    record_tokens=True)
    chunked = simulate(draft, target, algorithm, n_trials=n_trials, rng=seed,
                       chunk_size=chunk_size, record_tokens=True)
    _assert_same(full, chunked, slice(0, n_trials))


@settings(max_examples=30)
@given(pair=model_pairs(max_vocab=4, max_horizon=6, max_contexts=4), depth=st.integers(1, 4),
       bonus=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_traversal_on_a_chain_is_block_verification_bit_for_bit(pair, depth, bonus, seed):
    """Traversal Verification of a single path makes block verification's operations with
    its counter slots (sim.engine.tree_kernel), so the arrays are identical — horizon cuts,
    hidden contexts, zeros and random prompts included."""
    draft, target = pair
    chain = TreeSpeculative((1,) * depth, verifier="traversal", bonus=bonus)
    _assert_same(simulate(draft, target, chain, n_trials=200, rng=seed, record_tokens=True),
                 simulate(draft, target, BlockSpeculative(depth, bonus=bonus), n_trials=200,
                          rng=seed, record_tokens=True))


@pytest.mark.parametrize("algorithm", [Speculative(), BatchSpeculative(4, "trie")], ids=repr)
def test_results_do_not_depend_on_the_thread_count(algorithm):
    draft, target = fig2_pair(horizon=20)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulate(draft, target, algorithm, n_trials=3000, rng=2, record_tokens=True)
        numba.set_num_threads(threads)
        many = simulate(draft, target, algorithm, n_trials=3000, rng=2, record_tokens=True)
    finally:
        numba.set_num_threads(threads)
    _assert_same(one, many)


def test_compact_output_dtypes():
    assert count_dtype(50) == np.int8 and count_dtype(127) == np.int8
    assert count_dtype(128) == np.int16 and count_dtype(40_000) == np.int32
    assert token_dtype(7) == np.int8 and token_dtype(128) == np.int8
    assert token_dtype(129) == np.int16 and token_dtype(50_000) == np.int32
    draft, target = fig2_pair(horizon=5)
    result = simulate(draft, target, Speculative(), n_trials=1001, rng=1, chunk_size=100,
                      record_tokens=True)
    assert result.n_trials == 1001 and result.tokens.shape == (1001, 5)
    assert result.rejections.dtype == result.tokens.dtype == np.int8


def test_kernels_write_wide_scratch_in_ranges_with_the_same_values(monkeypatch):
    """Compact outputs come from int32 scratch (one compiled kernel whatever T and V); the
    scratch is filled over consecutive trial ranges, which never changes a value."""
    from sim.engine import run
    from sim.engine.token import token_kernel

    draft, target = random_pair(200, 140, time_homogeneous=True, rng=3)  # int16 counts/tokens
    whole = simulate(draft, target, Speculative(window=2), n_trials=9000, rng=4,
                     record_tokens=True)
    monkeypatch.setattr(run, "KERNEL_SCRATCH_BYTES", 1)  # ranges of 16 blocks: 3 kernel calls
    ranged = simulate(draft, target, Speculative(window=2), n_trials=9000, rng=4,
                      record_tokens=True)
    assert whole.rejections.dtype == whole.tokens.dtype == np.int16
    for name in ("rejections", "target_calls", "drafted", "tokens"):
        assert np.array_equal(getattr(whole, name), getattr(ranged, name))
        assert getattr(whole, name).dtype == getattr(ranged, name).dtype
    # every compiled signature of the token kernel writes int32 outputs
    assert token_kernel.signatures
    for signature in token_kernel.signatures:
        assert all(str(kind.dtype) == "int32" for kind in signature[-4:]), signature


@settings(max_examples=30)
@given(data=st.data(), pair=model_pairs(max_vocab=4, max_horizon=4, max_contexts=4),
       algorithm=st.sampled_from(ALGORITHMS))
def test_broadcast_layouts_give_the_results_of_dense_copies(data, pair, algorithm):
    draft, target = (data.draw(broadcast_layouts(model)) if data.draw(st.booleans()) else model
                     for model in pair)
    dense = [MarkovLM(np.array(m.probs), m.next_context, m.start) for m in (draft, target)]
    seed = data.draw(st.integers(0, 2**32 - 1))
    _assert_same(simulate(draft, target, algorithm, n_trials=200, rng=seed, record_tokens=True),
                 simulate(*dense, algorithm, n_trials=200, rng=seed, record_tokens=True))
    assert expected_rejections(draft, target, algorithm) == pytest.approx(
        expected_rejections(*dense, algorithm), rel=1e-12, abs=1e-12)


def test_broadcast_draft_against_a_context_dependent_target():
    """Found in review: a draft stored as one row for every context crashed the engines."""
    horizon = 4
    draft = MarkovLM(np.broadcast_to([0.2, 0.3, 0.5], (horizon, 3, 3)))
    target = MarkovLM.homogeneous([[.6, .2, .2], [.1, .1, .8], [.3, .4, .3]], horizon)
    result = simulate(draft, target, Speculative(), n_trials=1000, rng=0)
    dense = MarkovLM(np.array(draft.probs))
    _assert_same(result, simulate(dense, target, Speculative(), n_trials=1000, rng=0))
    assert make_tables(draft, target, Speculative()).layout.row_stride == 0


@settings(max_examples=40)
@given(pair=model_pairs(max_vocab=4, max_horizon=4), seed=st.integers(0, 2**32 - 1),
       algorithm=st.sampled_from(ALGORITHMS))
def test_every_emitted_sequence_is_possible_under_the_target(pair, seed, algorithm):
    draft, target = pair
    emitted = target if not isinstance(algorithm, LossySpeculative) else None
    for run in (simulate, reference_simulate):
        result = run(draft, target, algorithm, n_trials=50, rng=seed, record_tokens=True)
        if emitted is not None:
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


def test_a_huge_batch_on_a_short_horizon_draws_only_tried_candidates():
    """10,000 candidates: tables of 10,000 residuals, but no per-candidate uniforms."""
    draft, target = random_pair(3, 2, rng=0)
    result = simulate(draft, target, BatchSpeculative(10_000, "trie"), n_trials=10, rng=0)
    assert result.n_trials == 10 and (result.target_calls >= 1).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"n_trials": 0}, ValueError, "n_trials must be >= 1; got 0"),
     ({"n_trials": 2.5}, TypeError, "n_trials must be an integer"),
     ({"n_trials": 5, "chunk_size": 0}, ValueError, "chunk_size must be a positive integer"),
     ({"n_trials": 5, "rng": True}, TypeError, "rng must be a seed"),
     ({"n_trials": 5, "rng": -1}, ValueError, "rng must be a seed >= 0")],
)
def test_simulate_validates(kwargs, error, match):
    draft, target = fig2_pair(horizon=3)
    with pytest.raises(error, match=match):
        simulate(draft, target, Speculative(), **kwargs)


def test_simulate_rejects_non_algorithms():
    draft, target = fig2_pair(horizon=3)
    with pytest.raises(TypeError, match="algorithm must be a theory Algorithm"):
        simulate(draft, target, "speculative", n_trials=5)


def test_concatenate_results():
    part = SimResult(np.array([1]), np.array([2]), np.array([[0, 1]]))
    joined = SimResult.concatenate([part, part])
    assert joined.n_trials == 2 and joined.tokens.shape == (2, 2)


def test_allocations_beyond_the_memory_limit_are_refused_before_they_start(monkeypatch):
    import sim.engine

    draft, target = fig2_pair(horizon=5)
    with pytest.raises(MemoryError, match=r"results of 100,000,000,000 trials would need "
                                          r"about .* over the limit of .*MEMORY_LIMIT"):
        simulate(draft, target, Speculative(), n_trials=10**11, rng=0)
    monkeypatch.setattr(sim.engine, "MEMORY_LIMIT", 1000)
    with pytest.raises(MemoryError, match=r"sampling tables of Speculative\(window=None"):
        simulate(draft, target, Speculative(), n_trials=10, rng=0)
    monkeypatch.setattr(sim.engine, "MEMORY_LIMIT", 10**12)  # the user raises the limit
    sim.engine.check_memory(10**11, "a plan", "")
    monkeypatch.setattr(sim.engine, "MEMORY_LIMIT", 50_000)  # tables ≈ 20 kB fit, results not
    with pytest.raises(MemoryError, match="the results of 100,000 trials"):
        simulate(draft, target, Speculative(), n_trials=100_000, rng=0)


def test_work_beyond_the_work_limit_is_refused_before_it_starts(monkeypatch):
    """Hours of CPU are refused at once, naming n_trials, the estimate and the limit; the
    limit is the user's to lower or raise."""
    import time

    import sim.engine
    from sim import simulate_counts

    draft, target = fig2_pair()
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"Speculative\(window=None, bonus=True\) on T = 50 "
                                         r"with n_trials = 100,000,000,000 would take about "
                                         r"5e\+12 position-steps, over the limit of 1e\+12 "
                                         r"\(sim\.engine\.WORK_LIMIT\); use fewer trials, or "
                                         r"assign a larger sim\.engine\.WORK_LIMIT"):
        simulate_counts(draft, target, Speculative(), n_trials=10**11, rng=0)
    with pytest.raises(ValueError, match=r"n_trials = 100,000,000 would take about 5e\+12"):
        simulate(draft, target, BatchSpeculative(1000), n_trials=10**8, rng=0)  # M per position
    assert time.perf_counter() - started < 1  # refused before any work
    monkeypatch.setattr(sim.engine, "WORK_LIMIT", 1000)
    with pytest.raises(ValueError, match=r"n_trials = 100 would take about 5e\+03"):
        simulate(draft, target, Speculative(), n_trials=100, rng=0)
    monkeypatch.setattr(sim.engine, "WORK_LIMIT", 5000)  # the user raises the limit
    assert simulate_counts(draft, target, Speculative(), n_trials=100, rng=0).n_trials == 100


def test_cached_kernels_are_dropped_when_the_engine_sources_change(tmp_path):
    """numba checks only a kernel's own file; the kernels inline helpers of other engine files,
    so the package drops its cached kernels when any engine source changed (or no stamp says
    what they were built from) and keeps them otherwise."""
    sources = tmp_path / "src"
    cache = tmp_path / "cache"
    sources.mkdir()
    cache.mkdir()
    (sources / "compiled.py").write_text("ROUNDS = 10\n")
    (sources / "token.py").write_text("KERNEL = 1\n")

    def cached():
        for name in ("token.token_kernel-1.py311.nbi", "token.token_kernel-1.py311.1.nbc"):
            (cache / name).write_bytes(b"machine code")
        return sorted(path.name for path in cache.iterdir() if path.suffix in (".nbi", ".nbc"))

    cached()
    assert clear_stale_kernels(cache, sources.glob("*.py"))  # no stamp: provenance unknown
    assert (cache / KERNEL_STAMP).exists() and not list(cache.glob("*.nb?"))
    kept = cached()
    assert not clear_stale_kernels(cache, sources.glob("*.py"))  # unchanged sources: kept
    assert sorted(path.name for path in cache.glob("*.nb?")) == kept
    (sources / "compiled.py").write_text("ROUNDS = 7\n")  # a helper the kernels inline
    assert clear_stale_kernels(cache, sources.glob("*.py"))
    assert not list(cache.glob("*.nb?"))
    cached()
    (sources / "tree_kernel.py").write_text("")  # a new engine file counts too
    assert clear_stale_kernels(cache, sources.glob("*.py"))

