r"""Sampling tables for the vectorized engines: Walker/Vose alias tables, built for many rows.

An alias table of a law w over V outcomes stores, per column k, a threshold θ_k ∈ [0, 1] and
an alias a_k.  With one uniform u: k = ⌊uV⌋, f = uV − k; the outcome is k if f < θ_k, else a_k.
So P(x) = (θ_x + Σ_{k: a_k = x}(1 − θ_k)) / V — O(1) per draw whatever V.

Construction (Vose 1991) pairs a "small" column (scaled mass < 1) with a "large" one: columns
are sorted by scaled mass (a stable sort), smalls are taken in increasing order, larges in
decreasing order, and a large that drops below 1 is processed as the next small.  It runs in
compiled code, one row at a time and rows in parallel (``prange``; the rows are independent, so
the tables are identical for any thread count), writing straight into the integer records
(:class:`AliasTable`: the threshold on the uniforms' grid, 2⁻⁵³, and the alias): the
only memory it takes beyond its output is O(V) per thread.  Row sums are numpy's (pairwise)
``sum``, so a row's table is a fixed function of its weights.

Rows with zero mass (a rejection law where rejection never happens) get a table that is never
read; zero-probability outcomes are never drawn (their threshold is 0 and their alias has
positive mass).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from sim.engine.compiled import PACKED_VOCAB

__all__ = ["AliasTable", "build_alias", "build_alias_blocks", "implied_law", "read_only",
           "read_only_tables"]


@dataclass(frozen=True)
class AliasTable:
    """Alias tables for R rows over V outcomes, flattened row-major (column index row·V + k).

    A column's record holds t = ⌈2⁵³θ_k⌉ (the threshold on the grid of the uniforms: every
    fraction uV − k is a multiple of 2⁻⁵³, so comparing it with t · 2⁻⁵³ decides exactly as θ_k
    does) and the alias a_k, both integers: one uint64 t · 2¹⁰ + a_k when V ≤ 2¹⁰
    (:data:`sim.engine.compiled.PACKED_VOCAB`), so a draw reads a single 8-byte record — one
    random memory access once the tables outgrow the cache — else two consecutive uint64 words.
    """

    entries: np.ndarray  # uint64: (R·V,) packed records, or (2·R·V,) words for V > 2¹⁰
    vocab_size: int

    def _words(self) -> tuple[np.ndarray, np.ndarray]:
        if self.vocab_size <= PACKED_VOCAB:
            return self.entries >> np.uint64(10), self.entries & np.uint64(PACKED_VOCAB - 1)
        return self.entries[0::2], self.entries[1::2]

    @property
    def threshold(self) -> np.ndarray:
        """(R·V,) float64 thresholds t · 2⁻⁵³ (exact): the draws of θ, bit for bit."""
        return self._words()[0].astype(np.float64) * 2.0**-53

    @property
    def alias(self) -> np.ndarray:
        return self._words()[1].astype(np.intp)

    def draw(self, rows: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """One outcome per (row, uniform) pair."""
        scaled = uniforms * self.vocab_size
        column = np.minimum(scaled.astype(np.intp), self.vocab_size - 1)
        flat = rows * self.vocab_size + column
        keep = (scaled - column) < self.threshold[flat]
        return np.where(keep, column, self.alias[flat])


#: Rows up to this long are sorted by insertion; longer ones by radix (:func:`_stable_order`).
_INSERTION_SORT = 32


@njit(cache=True)
def _stable_order(values):
    """The stable ascending order of ``values`` (non-negative floats, ties by index).

    LSD radix sort on the upper 32 bits of the float's bit pattern (for non-negative floats
    it orders like the value; -0.0 is sorted as 0.0), one byte per pass, a pass skipped when
    every key shares that byte; then the runs of equal upper halves — rare: values within a
    relative 2⁻²⁰ of each other — are put in order of the full pattern by a stable insertion
    sort.  About 15 times faster than a comparison sort on rows of 1,000.  Any stable sort
    gives this one order.
    """
    size = values.size
    order = np.arange(size)
    if size <= _INSERTION_SORT:
        for i in range(1, size):
            item = order[i]
            value = values[item]
            k = i - 1
            while k >= 0 and values[order[k]] > value:
                order[k + 1] = order[k]
                k -= 1
            order[k + 1] = item
        return order
    keys = values.view(np.uint64).copy()
    counts = np.zeros((4, 257), dtype=np.int64)  # every upper byte's histogram in one pass
    for k in range(size):
        if values[k] == 0.0:
            keys[k] = 0
        key = keys[k]
        for byte in range(4):
            counts[byte, ((key >> np.uint64(8 * byte + 32)) & np.uint64(255)) + 1] += 1
    spare, spare_keys = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.uint64)
    for byte in range(4):
        if counts[byte].max() == size:  # every key has this byte: the pass would not move any
            continue
        offsets = counts[byte]
        for d in range(256):
            offsets[d + 1] += offsets[d]
        shift = np.uint64(8 * byte + 32)
        for k in range(size):  # keys travel with their items: sequential reads
            key = keys[k]
            digit = (key >> shift) & np.uint64(255)
            spare[offsets[digit]] = order[k]
            spare_keys[offsets[digit]] = key
            offsets[digit] += 1
        order, spare = spare, order
        keys, spare_keys = spare_keys, keys
    upper = np.uint64(0xFFFFFFFF00000000)
    for i in range(1, size):  # equal upper halves: order by the full key, stably
        key = keys[i]
        if (keys[i - 1] & upper) != (key & upper) or keys[i - 1] <= key:
            continue
        item = order[i]
        k = i - 1
        while k >= 0 and keys[k] > key:  # only within the run: a smaller upper half stops it
            keys[k + 1] = keys[k]
            order[k + 1] = order[k]
            k -= 1
        keys[k + 1] = key
        order[k + 1] = item
    return order


@njit(parallel=True, cache=True)
def _build_rows(weights, total, entries, first_row):
    """Vose's pairing of every row of ``weights`` into ``entries`` from row ``first_row`` on.

    Per row: scale to mean 1 (``weights · (V / total)``; an empty row — total 0 — is all ones),
    sort stably, pair (smalls ascending, larges descending, a large that drops below 1 is the
    next small), then map back from sorted positions to tokens.  Columns never processed keep
    threshold 1 (their mass is 1 up to rounding) — unless they have no mass at all, which only
    rounding (or an empty row) could leave there: those are sent to the row's mode.
    """
    n_rows, vocab_size = weights.shape
    for r in prange(n_rows):
        scaled = np.ones(vocab_size)
        if total[r] != 0:
            factor = vocab_size / total[r]
            for k in range(vocab_size):
                scaled[k] = weights[r, k] * factor
        order = _stable_order(scaled)
        mass = scaled[order]
        threshold = np.ones(vocab_size)
        alias = np.arange(vocab_size)
        if total[r] != 0:
            n_small = 0
            for k in range(vocab_size):
                n_small += mass[k] < 1.0
            next_small, large, pending = 0, vocab_size - 1, -1
            while (pending >= 0 or next_small < n_small) and large >= n_small:
                if pending >= 0:
                    small = pending
                    pending = -1
                else:
                    small = next_small
                    next_small += 1
                big = large
                threshold[small] = mass[small]
                alias[small] = big
                mass[big] -= 1.0 - mass[small]
                if mass[big] < 1.0:
                    pending = big
                    large -= 1
        out = (first_row + r) * vocab_size
        for k in range(vocab_size):
            if threshold[k] == 1.0 and weights[r, order[k]] == 0:
                threshold[k] = 0.0
                alias[k] = vocab_size - 1
            # t = ⌈2⁵³θ⌉ ≤ 2⁵³ (a threshold of -0.0 — a weight of -0.0 — is 0)
            steps = np.uint64(np.ceil(max(threshold[k], 0.0) * 2.0**53))
            token_alias = np.uint64(order[alias[k]])
            index = out + order[k]
            if vocab_size <= PACKED_VOCAB:
                entries[index] = (steps << np.uint64(10)) | token_alias
            else:
                entries[2 * index] = steps
                entries[2 * index + 1] = token_alias


def build_alias(weights: np.ndarray, *more_weights: np.ndarray) -> AliasTable:
    """Alias tables of each row of ``weights`` (R, V), normalized per row.

    Parameters
    ----------
    weights : array (R, V)
        Non-negative weights, one law per row (an all-zero row gets a table that is never
        read).
    *more_weights : arrays (R', V)
        Further rows, stacked after ``weights``'s in the one table (as if concatenated, without
        the copy).

    Returns
    -------
    AliasTable
        R (+ R' …) rows, read-only.

    Examples
    --------
    >>> import numpy as np
    >>> from sim.engine.tables import build_alias, implied_law
    >>> table = build_alias(np.array([[0.5, 0.25, 0.25, 0.0]]))
    >>> implied_law(table).tolist()
    [[0.5, 0.25, 0.25, 0.0]]
    """
    blocks = [np.asarray(block) for block in (weights, *more_weights)]
    return build_alias_blocks(blocks, sum(block.shape[0] for block in blocks),
                              blocks[0].shape[1])


def build_alias_blocks(blocks, n_rows: int, vocab_size: int) -> AliasTable:
    """:func:`build_alias` of rows that arrive in blocks: the blocks of an iterable (a generator
    computing each when asked, so only one block's weights exist at a time), R rows in all.

    Examples
    --------
    >>> import numpy as np
    >>> from sim.engine.tables import build_alias, build_alias_blocks
    >>> rows = np.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
    >>> stacked = build_alias_blocks((rows[i:i + 2] for i in (0, 2)), 3, 2)
    >>> bool((stacked.entries == build_alias(rows).entries).all())
    True
    """
    words = 1 if vocab_size <= PACKED_VOCAB else 2
    entries = np.empty(n_rows * vocab_size * words, dtype=np.uint64)
    first_row = 0
    for block in blocks:
        block = read_only(np.asarray(block, dtype=np.float64))
        _build_rows(block, read_only(block.sum(axis=1)), entries, first_row)
        first_row += block.shape[0]
    if first_row != n_rows:
        raise ValueError(f"the blocks hold {first_row} rows; expected n_rows = {n_rows}")
    return AliasTable(read_only(entries), vocab_size)


def read_only(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, read-only view of ``array`` (a copy only if it is not C-contiguous).

    The compiled kernels are compiled once per combination of argument types, and numba types
    a read-only array apart from a writable one: every table handed to a kernel goes through
    here, so models whose arrays are read-only (``MarkovLM``'s) and algorithms whose tables are
    freshly computed share one compiled kernel.  Read-only tables are also safe to cache
    (:func:`sim.engine.core.make_tables`).
    """
    view = np.ascontiguousarray(array).view()
    view.flags.writeable = False
    return view


def read_only_tables(tables):
    """``tables`` (a frozen dataclass, nested ones included) with every array :func:`read_only`.

    :func:`sim.engine.core.make_tables` passes every family's tables through here: one compiled
    kernel per family whatever the models' array flags, and tables safe to share and cache.
    """
    changes = {}
    for field in dataclasses.fields(tables):
        value = getattr(tables, field.name)
        if isinstance(value, np.ndarray) and (value.flags.writeable
                                              or not value.flags.c_contiguous):
            changes[field.name] = read_only(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            frozen = read_only_tables(value)
            if frozen is not value:
                changes[field.name] = frozen
    return dataclasses.replace(tables, **changes) if changes else tables


def implied_law(table: AliasTable) -> np.ndarray:
    """The law each row of ``table`` samples, (R, V): for checking a table against its input."""
    vocab_size = table.vocab_size
    threshold = table.threshold.reshape(-1, vocab_size)
    alias = table.alias.reshape(-1, vocab_size)
    law = threshold.copy()
    rows = np.repeat(np.arange(threshold.shape[0]), vocab_size)
    np.add.at(law, (rows, alias.ravel()), (1.0 - threshold).ravel())
    return law / vocab_size
