"""Array helpers shared by the theory modules: float64 or exact-rational probability arrays.

A probability array is either ``float64`` or an ``object`` array whose entries are
``fractions.Fraction`` (exact arithmetic).  Every closed form in :mod:`theory` is written with
numpy operations that work on both, so a model built from Fractions yields exact answers.
"""

from __future__ import annotations

import numbers
from fractions import Fraction

import numpy as np

#: Tolerance on row sums of float probability arrays (exact arrays must sum to exactly 1).
ROW_SUM_ATOL = 1e-9


def describe(value) -> str:
    """A short, readable rendering of a number for error messages (0.98, nan, 5/6)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Fraction):
        return str(value)
    return repr(value)


def as_scalar(value):
    """Unwrap 0-d arrays and numpy scalars to Python numbers; Fractions pass through."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _index_text(index) -> str:
    return ", ".join(str(int(i)) for i in np.atleast_1d(index))


def _is_rational(value) -> bool:
    return isinstance(value, numbers.Rational) and not isinstance(value, bool)


def as_probability_array(values, name: str) -> np.ndarray:
    """Return ``values`` as float64, or as an object array of Fractions when all are rational.

    Raises ``TypeError`` for non-numeric input (strings, complex, booleans, mixed objects).
    """
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array: {error}") from None
    if array.dtype == object:
        flat = array.ravel()
        if flat.size and all(_is_rational(v) for v in flat):
            return np.vectorize(Fraction, otypes=[object])(array)
        bad = next((v for v in flat if not isinstance(v, numbers.Real) or isinstance(v, bool)),
                   None)
        if bad is not None or not flat.size:
            raise TypeError(f"{name} must hold real numbers; got an entry {bad!r}")
        return array.astype(np.float64)
    if array.dtype.kind == "b" or array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {array.dtype}")
    return np.asarray(array, dtype=np.float64)


def is_exact(array: np.ndarray) -> bool:
    """True for object arrays of Fractions (exact arithmetic)."""
    return array.dtype == object


def compact(array: np.ndarray) -> np.ndarray:
    """The smallest slice of a broadcast view that holds all of its distinct rows.

    Leading axes with stride 0 (``np.broadcast_to`` along them) are cut to length 1, so
    validation and table building touch each stored row once.  The last axis (the vocabulary of
    a probability array) is always kept whole, even when its stride is 0 (a row whose entries
    are all equal): reductions along it — row sums, TV distances, minima — and reshapes to
    (rows, V) then see every row in full.

    Examples
    --------
    >>> import numpy as np
    >>> from theory._arrays import compact
    >>> compact(np.broadcast_to([0.5, 0.5], (4, 3, 2))).shape
    (1, 1, 2)
    >>> compact(np.broadcast_to(np.array(1 / 3), (4, 3, 3))).shape
    (1, 1, 3)
    """
    if array.ndim == 0:
        return array
    index = tuple(
        slice(0, 1) if stride == 0 and size > 1 else slice(None)
        for stride, size in zip(array.strides[:-1], array.shape[:-1], strict=True)
    )
    return array[(*index, slice(None))]


def frozen_copy(array: np.ndarray) -> np.ndarray:
    """A read-only copy of ``array`` that keeps broadcast (stride-0) leading axes compact."""
    small = np.array(compact(array), copy=True)
    small.flags.writeable = False
    if small.shape == array.shape:
        return small
    return np.broadcast_to(small, array.shape)


def check_distributions(array: np.ndarray, name: str, *, axis_names: str = "") -> None:
    """Validate that the last axis of ``array`` holds probability distributions.

    Finite, non-negative entries whose sums are 1 (within :data:`ROW_SUM_ATOL` for floats,
    exactly for Fractions).  Errors name ``name``, the offending index and value.
    """
    stored = compact(array)  # whole rows: compact never cuts the last axis
    if not is_exact(stored):
        bad = np.argwhere(~np.isfinite(stored))
        if bad.size:
            where = tuple(bad[0])
            raise ValueError(
                f"{name}[{_index_text(where)}] is {describe(stored[where])}; entries must be finite"
            )
    negative = np.argwhere(stored < 0)
    if negative.size:
        where = tuple(negative[0])
        raise ValueError(
            f"{name}[{_index_text(where)}] is {describe(stored[where])}; probabilities must be >= 0"
        )
    sums = np.atleast_1d(np.asarray(stored.sum(axis=-1)))
    if is_exact(stored):
        off = np.argwhere(sums != 1)
        tolerance_text = "exactly"
    else:
        off = np.argwhere(np.abs(sums - 1.0) > ROW_SUM_ATOL)
        tolerance_text = f"within {ROW_SUM_ATOL:g}"
    if off.size:
        where = tuple(off[0])
        label = f"{name}[{_index_text(where)}]" if stored.ndim > 1 else name
        raise ValueError(
            f"{label} sums to {describe(sums[where])}, expected 1 {tolerance_text}{axis_names}"
        )


def zeros_like_kind(shape, exact: bool) -> np.ndarray:
    """Zeros of the given shape: Fractions when ``exact``, else float64."""
    if exact:
        out = np.empty(shape, dtype=object)
        out[...] = Fraction(0)
        return out
    return np.zeros(shape)


def checked_distributions(name: str, values, axis: int = -1) -> np.ndarray:
    """``values`` as probability vectors along ``axis``, validated (finite, >= 0, sum 1)."""
    array = as_probability_array(values, name)
    if array.ndim < 1 or array.size == 0:
        raise ValueError(f"{name} must be probability vectors (a non-empty vocabulary axis); "
                         f"got shape {array.shape}")
    check_distributions(np.moveaxis(array, axis, -1), name)
    return array


def checked_pair(p, q, names=("p", "q"), axis: int = -1):
    """Two validated families of probability vectors over the same vocabulary."""
    p = checked_distributions(names[0], p, axis)
    q = checked_distributions(names[1], q, axis)
    if p.shape[axis] != q.shape[axis]:
        raise ValueError(f"{names[0]} and {names[1]} must share the vocabulary axis; got "
                         f"shapes {p.shape} and {q.shape}")
    try:
        np.broadcast_shapes(p.shape, q.shape)
    except ValueError:
        raise ValueError(f"{names[0]} and {names[1]} must broadcast together; got shapes "
                         f"{p.shape} and {q.shape}") from None
    if is_exact(p) != is_exact(q):
        p, q = p.astype(np.float64), q.astype(np.float64)
    return p, q


def checked_unit_interval(name: str, values) -> np.ndarray:
    """``values`` as numbers in [0, 1] (finite), validated with the offending index."""
    array = as_probability_array(values, name)
    flat = np.atleast_1d(array)
    bad = np.argwhere(~((flat >= 0) & (flat <= 1)))
    if bad.size:
        where = tuple(bad[0])
        label = f"{name}[{_index_text(where)}]" if array.ndim else name
        raise ValueError(f"{label} = {describe(flat[where])} is not in [0, 1]")
    return array


def checked_acceptance(accept, p, name: str = "accept") -> np.ndarray:
    """Acceptance probabilities b ∈ [0, 1] for the rows ``p``: validated, and broadcastable
    against ``p`` (a clear error names ``name`` and both shapes otherwise)."""
    if accept is None:
        raise TypeError(f"{name} must be acceptance probabilities in [0, 1] (an array like p); "
                        f"got None")
    array = checked_unit_interval(name, accept)
    try:
        np.broadcast_shapes(np.shape(array), np.shape(p))
    except ValueError:
        raise ValueError(f"{name} must broadcast with p; got shape {np.shape(array)} for p of "
                         f"shape {np.shape(p)}") from None
    return array
