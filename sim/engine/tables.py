r"""Sampling tables for the vectorized engines: Walker/Vose alias tables, built for many rows.

An alias table of a law w over V outcomes stores, per column k, a threshold θ_k ∈ [0, 1] and
an alias a_k.  With one uniform u: k = ⌊uV⌋, f = uV − k; the outcome is k if f < θ_k, else a_k.
So P(x) = (θ_x + Σ_{k: a_k = x}(1 − θ_k)) / V — O(1) per draw whatever V.

Construction (Vose 1991) pairs a "small" column (scaled mass < 1) with a "large" one; here it
runs for all rows at once: columns are sorted by scaled mass, smalls are taken in increasing
order, larges in decreasing order, and a large that drops below 1 is processed as the next
small.  Each of the ≤ V steps is a handful of numpy operations on R rows.

Rows with zero mass (a rejection law where rejection never happens) get a table that is never
read; zero-probability outcomes are never drawn (their threshold is 0 and their alias has
positive mass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AliasTable", "build_alias", "implied_law"]


@dataclass(frozen=True)
class AliasTable:
    """Alias tables for R rows over V outcomes, flattened row-major (index row·V + k).

    Each entry packs (θ_k, a_k) into one complex128 (real: threshold, imaginary: alias as an
    exactly representable float), so a draw reads a single 16-byte record — one random memory
    access instead of two once the tables outgrow the cache.
    """

    entries: np.ndarray  # (R·V,) complex128
    vocab_size: int

    @property
    def threshold(self) -> np.ndarray:
        return self.entries.real

    @property
    def alias(self) -> np.ndarray:
        return self.entries.imag.astype(np.intp)

    def draw(self, rows: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """One outcome per (row, uniform) pair."""
        scaled = uniforms * self.vocab_size
        column = np.minimum(scaled.astype(np.intp), self.vocab_size - 1)
        record = self.entries[rows * self.vocab_size + column]
        keep = (scaled - column) < record.real
        return np.where(keep, column, record.imag.astype(np.intp))


#: Up to this many rows the pairing runs row by row in Python (V steps of scalar work per
#: row); above it, once for all rows (V steps of array work).  Both give identical tables.
SCALAR_ROWS = 32


def _pair_rows(mass: np.ndarray, empty: np.ndarray):
    """Vose's pairing on rows of ascending scaled masses, all rows at once.

    Returns (threshold, alias) in sorted positions.  Smalls are taken in increasing order,
    larges in decreasing order, and a large that drops below 1 is the next small.
    """
    mass = mass.copy()
    n_rows, vocab_size = mass.shape
    threshold = np.ones_like(mass)
    alias = np.tile(np.arange(vocab_size), (n_rows, 1))
    rows = np.arange(n_rows)
    n_small = (mass < 1.0).sum(axis=1)
    next_small = np.zeros(n_rows, dtype=np.intp)  # next original small (ascending)
    large = np.full(n_rows, vocab_size - 1, dtype=np.intp)  # current large (descending)
    pending = np.full(n_rows, -1, dtype=np.intp)  # a large that became small
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
    return threshold, alias


def _pair_rows_one_by_one(mass: np.ndarray, empty: np.ndarray):
    """:func:`_pair_rows`, the same steps in the same floating-point order, row by row.

    For few rows and many outcomes the Python loop is faster than V array steps.
    """
    n_rows, vocab_size = mass.shape
    threshold = np.ones_like(mass)
    alias = np.tile(np.arange(vocab_size), (n_rows, 1))
    for r in range(n_rows):
        if empty[r]:
            continue
        row = mass[r].tolist()
        row_threshold, row_alias = threshold[r].tolist(), alias[r].tolist()
        n_small = sum(value < 1.0 for value in row)
        next_small, large, pending = 0, vocab_size - 1, -1
        while (pending >= 0 or next_small < n_small) and large >= n_small:
            if pending >= 0:
                small, pending = pending, -1
            else:
                small, next_small = next_small, next_small + 1
            big = large
            row_threshold[small] = row[small]
            row_alias[small] = big
            row[big] -= 1.0 - row[small]
            if row[big] < 1.0:
                pending, large = big, large - 1
        threshold[r], alias[r] = row_threshold, row_alias
    return threshold, alias


def build_alias(weights: np.ndarray) -> AliasTable:
    """Alias tables of each row of ``weights`` (R, V), normalized per row.

    Examples
    --------
    >>> import numpy as np
    >>> from sim.engine.tables import build_alias, implied_law
    >>> table = build_alias(np.array([[0.5, 0.25, 0.25, 0.0]]))
    >>> implied_law(table).tolist()
    [[0.5, 0.25, 0.25, 0.0]]
    """
    weights = np.asarray(weights, dtype=np.float64)
    n_rows, vocab_size = weights.shape
    total = weights.sum(axis=1, keepdims=True)
    empty = total[:, 0] == 0
    scaled = weights * (vocab_size / np.where(empty[:, None], 1.0, total))
    scaled[empty] = 1.0
    order = np.argsort(scaled, axis=1, kind="stable")
    mass = np.take_along_axis(scaled, order, axis=1)  # ascending per row
    pair = _pair_rows if n_rows > SCALAR_ROWS else _pair_rows_one_by_one
    threshold, alias = pair(mass, empty)
    # Columns never processed keep threshold 1 (their mass is 1 up to rounding) — unless they
    # have no mass at all, which only rounding could leave there: send those to the row's mode.
    leftover_zero = (threshold == 1.0) & (np.take_along_axis(weights, order, axis=1) == 0)
    if leftover_zero.any():
        threshold[leftover_zero] = 0.0
        alias[leftover_zero] = (vocab_size - 1)
    token_alias = np.take_along_axis(order, alias, axis=1)
    out_threshold = np.empty_like(threshold)
    out_alias = np.empty_like(token_alias)
    np.put_along_axis(out_threshold, order, threshold, axis=1)
    np.put_along_axis(out_alias, order, token_alias, axis=1)
    entries = out_threshold.ravel() + 1j * out_alias.ravel().astype(np.float64)
    return AliasTable(np.ascontiguousarray(entries), vocab_size)


def implied_law(table: AliasTable) -> np.ndarray:
    """The law each row of ``table`` samples, (R, V): for checking a table against its input."""
    vocab_size = table.vocab_size
    threshold = table.threshold.reshape(-1, vocab_size)
    alias = table.alias.reshape(-1, vocab_size)
    law = threshold.copy()
    rows = np.repeat(np.arange(threshold.shape[0]), vocab_size)
    np.add.at(law, (rows, alias.ravel()), (1.0 - threshold).ravel())
    return law / vocab_size
