"""Sampling tables: the compiled alias-table builder against an independent numpy build, bit for
bit, its integer records against float thresholds draw for draw, and the per-process cache of
built tables (:func:`sim.engine.make_tables`)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from sim.engine.compiled import PACKED_VOCAB, alias_draw
from sim.engine.tables import build_alias
from sim.strategies import probability_vectors


def _numpy_alias(weights: np.ndarray) -> np.ndarray:
    """The numpy construction the engine used before its tables were compiled, kept as an
    independent oracle: Vose's pairing run for all rows at once, one array step per pair.
    Returns (thresholds θ, aliases), flat."""
    weights = np.asarray(weights, dtype=np.float64)
    n_rows, vocab_size = weights.shape
    total = weights.sum(axis=1, keepdims=True)
    empty = total[:, 0] == 0
    scaled = weights * (vocab_size / np.where(empty[:, None], 1.0, total))
    scaled[empty] = 1.0
    order = np.argsort(scaled, axis=1, kind="stable")
    mass = np.take_along_axis(scaled, order, axis=1)
    threshold = np.ones_like(mass)
    alias = np.tile(np.arange(vocab_size), (n_rows, 1))
    rows = np.arange(n_rows)
    n_small = (mass < 1.0).sum(axis=1)
    next_small = np.zeros(n_rows, dtype=np.intp)
    large = np.full(n_rows, vocab_size - 1, dtype=np.intp)
    pending = np.full(n_rows, -1, dtype=np.intp)
    for _ in range(vocab_size):
        has_pending = pending >= 0
        active = (has_pending | (next_small < n_small)) & (large >= n_small) & ~empty
        if not active.any():
            break
        r = rows[active]
        small = np.where(has_pending[active], pending[active], next_small[active])
        big = large[active]
        threshold[r, small] = mass[r, small]
        alias[r, small] = big
        mass[r, big] -= 1.0 - mass[r, small]
        next_small[r] += ~has_pending[active]
        pending[r] = -1
        dropped = mass[r, big] < 1.0
        pending[r[dropped]] = big[dropped]
        large[r[dropped]] -= 1
    leftover_zero = (threshold == 1.0) & (np.take_along_axis(weights, order, axis=1) == 0)
    threshold[leftover_zero] = 0.0
    alias[leftover_zero] = vocab_size - 1
    token_alias = np.take_along_axis(order, alias, axis=1)
    out_threshold, out_alias = np.empty_like(threshold), np.empty_like(token_alias)
    np.put_along_axis(out_threshold, order, threshold, axis=1)
    np.put_along_axis(out_alias, order, token_alias, axis=1)
    return out_threshold.ravel(), out_alias.ravel()


def _same_bits(table, expected) -> None:
    """The table holds the oracle's aliases and, as integers t = ⌈2⁵³θ⌉, its thresholds."""
    threshold, alias = expected
    np.testing.assert_array_equal(table.alias, alias)
    steps = np.ceil(np.maximum(threshold, 0.0) * 2.0**53)
    np.testing.assert_array_equal(table.threshold.view(np.uint64),
                                  (steps * 2.0**-53).view(np.uint64))


@njit
def _compiled_draws(entries, rows, vocab_size, uniforms):
    out = np.empty(rows.size, dtype=np.int64)
    for i in range(rows.size):
        out[i] = alias_draw(entries, rows[i], vocab_size, uniforms[i])
    return out


def _draws_with_float_thresholds(expected, vocab_size, rows, uniforms):
    """The draw rule on the oracle's float thresholds: k if uV − k < θ_k, else a_k."""
    threshold, alias = expected
    scaled = uniforms * vocab_size
    column = np.minimum(scaled.astype(np.intp), vocab_size - 1)
    flat = rows * vocab_size + column
    return np.where(scaled - column < threshold[flat], column, alias[flat])


def _boundary_uniforms(expected, vocab_size, rng):
    """Uniforms on the 2⁻⁵³ grid at every column's threshold (u ≈ (k + θ_k)/V, the grid points
    around it), at both ends of [0, 1), and at random."""
    threshold, _ = expected
    n_rows = threshold.size // vocab_size
    rows = np.repeat(np.arange(n_rows), vocab_size)
    column = np.tile(np.arange(vocab_size), n_rows)
    grid = np.floor((column + threshold) / vocab_size * 2.0**53)
    steps = np.concatenate([grid + offset for offset in (-2, -1, 0, 1, 2)]
                           + [np.zeros(n_rows), np.full(n_rows, 2.0**53 - 1),
                              np.floor(rng.random(4 * rows.size) * 2.0**53)])
    rows = np.concatenate([np.tile(rows, 5), np.arange(n_rows), np.arange(n_rows),
                           np.tile(rows, 4)])
    inside = (steps >= 0) & (steps < 2.0**53)
    return rows[inside], steps[inside] * 2.0**-53


def _check_draws(table, expected, seed: int) -> None:
    """Compiled draws and :meth:`AliasTable.draw` from the integer records equal the float rule."""
    rows, uniforms = _boundary_uniforms(expected, table.vocab_size, np.random.default_rng(seed))
    reference = _draws_with_float_thresholds(expected, table.vocab_size, rows, uniforms)
    np.testing.assert_array_equal(
        _compiled_draws(table.entries, rows, table.vocab_size, uniforms), reference)
    np.testing.assert_array_equal(table.draw(rows, uniforms), reference)


_ROWS = st.integers(1, 40).flatmap(
    lambda v: st.lists(st.one_of(probability_vectors(v),
                                 st.just(np.zeros(v)),  # an empty row (never read)
                                 st.lists(st.floats(0, 1e3), min_size=v, max_size=v).map(
                                     np.array)),  # unnormalized, zeros and denormals likely
                       min_size=1, max_size=40))


@given(_ROWS, st.integers(0, 40))
def test_compiled_alias_tables_equal_the_numpy_construction_bit_for_bit(rows, split):
    weights = np.array(rows)
    expected = _numpy_alias(weights)
    table = build_alias(weights)
    _same_bits(table, expected)
    _check_draws(table, expected, split)
    # stacked blocks give the table of their concatenation
    split = min(split, len(rows))
    if 0 < split < len(rows):
        _same_bits(build_alias(weights[:split], weights[split:]), expected)


def test_alias_tables_on_many_large_rows_equal_the_numpy_construction():
    rng = np.random.default_rng(5)
    weights = rng.dirichlet(np.full(300, 0.1), size=60)  # sparse rows, 60 > one thread's share
    weights[7] = 0.0
    weights[9] = np.where(weights[9] < 1e-3, 0.0, weights[9])
    table = build_alias(weights)
    expected = _numpy_alias(weights)
    _same_bits(table, expected)
    _check_draws(table, expected, 5)
    assert not table.entries.flags.writeable


def test_wide_vocabularies_store_two_words_per_column_and_draw_alike():
    """Above PACKED_VOCAB the records are (t, a) word pairs; the draws are the same rule."""
    rng = np.random.default_rng(6)
    weights = rng.dirichlet(np.full(PACKED_VOCAB + 3, 0.1), size=3)
    table = build_alias(weights)
    assert table.entries.size == 2 * weights.size
    expected = _numpy_alias(weights)
    _same_bits(table, expected)
    _check_draws(table, expected, 6)
    small = build_alias(weights[:, :PACKED_VOCAB])
    assert small.entries.size == 3 * PACKED_VOCAB


def test_the_draw_check_catches_a_threshold_one_grid_step_off():
    """Negative control: rounding t down instead of up (⌊2⁵³θ⌋) changes some boundary draw."""
    from sim.engine.tables import AliasTable

    weights = np.random.default_rng(8).dirichlet(np.full(50, 0.5), size=20)
    expected = _numpy_alias(weights)
    threshold, alias = expected
    floor = np.floor(threshold * 2.0**53).astype(np.uint64)
    wrong = AliasTable((floor << np.uint64(10)) | alias.astype(np.uint64), 50)
    rows, uniforms = _boundary_uniforms(expected, 50, np.random.default_rng(8))
    assert not np.array_equal(wrong.draw(rows, uniforms),
                              _draws_with_float_thresholds(expected, 50, rows, uniforms))


def test_tables_are_built_once_per_problem_content_and_the_cache_can_be_cleared(monkeypatch):
    import sim.engine
    from sim.engine import clear_table_cache, make_tables, simulate, table_cache_info
    from sim.models import fig2_pair
    from theory import BatchSpeculative, MarkovLM, Speculative

    clear_table_cache()
    draft, target = fig2_pair(horizon=6)
    first = make_tables(draft, target, Speculative())
    # equal content, new objects: the same tables; read-only, so sharing them is safe
    again = make_tables(*fig2_pair(horizon=6), Speculative())
    assert again is first and not first.proposal.entries.flags.writeable
    assert table_cache_info()["hits"] == 1 and table_cache_info()["misses"] == 1
    # any difference in the problem is another entry: algorithm, its class, the models' numbers
    assert make_tables(draft, target, Speculative(window=2)) is not first
    assert make_tables(draft, target, BatchSpeculative(2)) is not first

    class Renamed(Speculative):
        pass

    assert make_tables(draft, target, Renamed()) is not first
    probs = np.array(target.probs)
    probs[0, 0] = probs[0, 0][::-1]
    changed = MarkovLM(probs, target.next_context, target.start)
    assert make_tables(draft, changed, Speculative()) is not first
    # cached tables give the arrays of freshly built ones
    cached_run = simulate(draft, target, Speculative(), n_trials=500, rng=3, record_tokens=True)
    clear_table_cache()
    assert table_cache_info() == {"entries": 0, "bytes": 0, "hits": 0, "misses": 0}
    fresh = simulate(draft, target, Speculative(), n_trials=500, rng=3, record_tokens=True)
    np.testing.assert_array_equal(cached_run.tokens, fresh.tokens)
    assert make_tables(draft, target, Speculative()) is not first
    # the byte limit: 0 keeps nothing
    monkeypatch.setattr(sim.engine, "TABLE_CACHE_LIMIT", 0)
    clear_table_cache()
    assert make_tables(draft, target, Speculative()) is not make_tables(draft, target,
                                                                       Speculative())
    assert table_cache_info()["entries"] == 0


def test_the_cache_keeps_the_most_recent_problems_within_its_limits(monkeypatch):
    import sim.engine
    from sim.engine import clear_table_cache, make_tables, table_cache_info
    from sim.models import fig2_pair
    from theory import Speculative

    monkeypatch.setattr(sim.engine, "TABLE_CACHE_ENTRIES", 2)
    clear_table_cache()
    draft, target = fig2_pair(horizon=4)
    tables = [make_tables(draft, target, Speculative(window=w)) for w in (1, 2, 3)]
    assert table_cache_info()["entries"] == 2
    assert make_tables(draft, target, Speculative(window=3)) is tables[2]
    assert make_tables(draft, target, Speculative(window=1)) is not tables[0]  # evicted
