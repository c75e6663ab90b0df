"""Sampling tables: the compiled alias-table builder against an independent numpy build, bit for
bit, and the per-process cache of built tables (:func:`sim.engine.make_tables`)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sim.engine.tables import build_alias
from sim.strategies import probability_vectors


def _numpy_alias(weights: np.ndarray) -> np.ndarray:
    """The numpy construction the engine used before its tables were compiled, kept as an
    independent oracle: Vose's pairing run for all rows at once, one array step per pair.
    Returns the packed complex128 records."""
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
    return out_threshold.ravel() + 1j * out_alias.ravel().astype(np.float64)


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(a.view(np.uint64), b.view(np.uint64))


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
    _same_bits(build_alias(weights).entries, expected)
    # stacked blocks give the table of their concatenation
    split = min(split, len(rows))
    if 0 < split < len(rows):
        _same_bits(build_alias(weights[:split], weights[split:]).entries, expected)


def test_alias_tables_on_many_large_rows_equal_the_numpy_construction():
    rng = np.random.default_rng(5)
    weights = rng.dirichlet(np.full(300, 0.1), size=60)  # sparse rows, 60 > one thread's share
    weights[7] = 0.0
    weights[9] = np.where(weights[9] < 1e-3, 0.0, weights[9])
    table = build_alias(weights)
    _same_bits(table.entries, _numpy_alias(weights))
    assert not table.entries.flags.writeable


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
