"""Hypothesis strategies for probability vectors, language models and draft/target pairs.

These are part of the product: use them to property-test your own verifier against the theory,

>>> from hypothesis import given
>>> from sim.strategies import model_pairs
>>> from theory import expected_rejections
>>> @given(model_pairs())
... def test_rejections_in_range(pair):
...     draft, target = pair
...     assert 0 <= expected_rejections(draft, target) <= target.horizon + 1e-9
>>> test_rejections_in_range()

Values are built directly, never by filtering: weights are drawn non-negative with one entry
forced positive, then normalized (hypothesis's own guide warns that rows of ``floats(0, 1)`` can
be all zero).  The strategies deliberately reach the edge cases of docs/architecture.md §4:
zero probabilities, tiny probabilities, one-hot rows, p = q, p ≈ q to rounding, V = 1 and
T = 1.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as error:
    raise ModuleNotFoundError(
        "sim.strategies needs hypothesis, an optional extra; install it from the checkout "
        "with pip install -e '.[hypothesis]'", name=error.name) from None

from theory import MarkovLM

__all__ = ["broadcast_layouts", "markov_lms", "model_pairs", "probability_vectors"]

_SHAPES = ("generic", "one_hot", "uniform", "sparse")


@st.composite
def probability_vectors(draw, size: int | None = None, *, min_size: int = 1,
                        max_size: int = 5, exact: bool = False, allow_zeros: bool = True):
    """A probability vector (float64 array, or object array of Fractions when ``exact``).

    Shapes drawn: generic (positive weights down to 1e-12), sparse (some exact zeros),
    one-hot, and uniform.  ``allow_zeros=False`` keeps every entry positive.

    Examples
    --------
    >>> from hypothesis import given
    >>> from sim.strategies import probability_vectors
    >>> @given(probability_vectors(3))
    ... def check(p):
    ...     assert p.shape == (3,) and abs(p.sum() - 1) < 1e-12 and (p >= 0).all()
    >>> check()
    """
    n = size if size is not None else draw(st.integers(min_size, max_size))
    shapes = _SHAPES if allow_zeros else ("generic", "uniform")
    shape = draw(st.sampled_from(shapes))
    if shape == "one_hot" or n == 1:
        weights = [0] * n
        weights[draw(st.integers(0, n - 1))] = 1
    elif shape == "uniform":
        weights = [1] * n
    elif exact:
        low = 0 if shape == "sparse" else 1
        weights = draw(st.lists(st.integers(low, 12), min_size=n, max_size=n))
    else:
        entry = st.floats(1e-12, 1.0)
        if shape == "sparse":
            entry = st.one_of(st.just(0.0), entry)
        weights = draw(st.lists(entry, min_size=n, max_size=n))
    if not any(weights):
        weights[draw(st.integers(0, n - 1))] = 1
    if exact:
        total = sum(weights)
        return np.array([Fraction(w, total) for w in weights], dtype=object)
    vector = np.asarray(weights, dtype=np.float64)
    return vector / vector.sum()


def _rows(draw, shape, *, exact: bool, allow_zeros: bool = True) -> np.ndarray:
    horizon, n_contexts, vocab_size = shape
    rows = [draw(probability_vectors(vocab_size, exact=exact, allow_zeros=allow_zeros))
            for _ in range(horizon * n_contexts)]
    return np.array(rows, dtype=object if exact else np.float64).reshape(shape)


@st.composite
def _structure(draw, max_vocab, max_horizon, max_contexts, first_order, exact):
    vocab_size = draw(st.integers(1, max_vocab))
    horizon = draw(st.integers(1, max_horizon))
    if first_order is None:
        first_order = draw(st.booleans())
    if first_order:
        n_contexts, next_context = vocab_size, None
    else:
        n_contexts = draw(st.integers(1, max_contexts))
        cells = draw(st.lists(st.integers(0, n_contexts - 1), min_size=n_contexts * vocab_size,
                              max_size=n_contexts * vocab_size))
        next_context = np.array(cells, dtype=np.intp).reshape(n_contexts, vocab_size)
    if draw(st.booleans()):
        start = draw(st.integers(0, n_contexts - 1))
    else:
        start = draw(probability_vectors(n_contexts, exact=exact))
    return (horizon, n_contexts, vocab_size), next_context, start


@st.composite
def markov_lms(draw, *, max_vocab: int = 3, max_horizon: int = 4, max_contexts: int = 3,
               first_order: bool | None = None, exact: bool = False):
    """A valid :class:`theory.MarkovLM` with small sizes.

    ``first_order=None`` draws both first-order and hidden-context models; ``exact=True``
    builds Fractions.

    Examples
    --------
    >>> from hypothesis import given
    >>> from sim.strategies import markov_lms
    >>> @given(markov_lms(exact=True))
    ... def check(lm):
    ...     assert lm.context_marginals().sum(axis=1).tolist() == [1] * lm.horizon
    >>> check()
    """
    shape, next_context, start = draw(
        _structure(max_vocab, max_horizon, max_contexts, first_order, exact))
    return MarkovLM(_rows(draw, shape, exact=exact), next_context, start)


def _near_copy(draw, rows: np.ndarray) -> np.ndarray:
    """Rows equal to ``rows`` up to rounding: relative perturbations of 1e-15, renormalized."""
    scale = 1 + 1e-15 * np.array(
        draw(st.lists(st.integers(-4, 4), min_size=rows.size, max_size=rows.size)),
        dtype=np.float64).reshape(rows.shape)
    near = rows * scale
    return near / near.sum(axis=-1, keepdims=True)


@st.composite
def model_pairs(draw, *, max_vocab: int = 3, max_horizon: int = 4, max_contexts: int = 3,
                first_order: bool | None = None, exact: bool = False,
                relation: str | None = None):
    """A compatible ``(draft, target)`` pair.

    ``relation`` (drawn when None): ``'independent'`` rows, ``'equal'`` (p = q exactly),
    ``'near'`` (p = q up to rounding; float only), or ``'mixed'`` (each row independent or
    equal).  Independent rows include zeros, so the draft can miss target tokens and vice versa.

    Examples
    --------
    >>> from hypothesis import given
    >>> from sim.strategies import model_pairs
    >>> from theory import check_compatible
    >>> @given(model_pairs())
    ... def check(pair):
    ...     check_compatible(*pair)
    >>> check()
    """
    relations = ("independent", "equal", "mixed") if exact else \
        ("independent", "equal", "near", "mixed")
    if relation is None:
        relation = draw(st.sampled_from(relations))
    elif relation not in relations:
        raise ValueError(f"relation must be one of {relations}; got {relation!r}")
    shape, next_context, start = draw(
        _structure(max_vocab, max_horizon, max_contexts, first_order, exact))
    target_rows = _rows(draw, shape, exact=exact)
    if relation == "equal":
        draft_rows = target_rows.copy()
    elif relation == "near":
        draft_rows = _near_copy(draw, target_rows)
    else:
        draft_rows = _rows(draw, shape, exact=exact)
        if relation == "mixed":
            keep = np.array(draw(st.lists(st.booleans(), min_size=shape[0] * shape[1],
                                          max_size=shape[0] * shape[1]))).reshape(shape[:2])
            draft_rows[keep] = target_rows[keep]
    return (MarkovLM(draft_rows, next_context, start),
            MarkovLM(target_rows, next_context, start))


@st.composite
def broadcast_layouts(draw, model: MarkovLM) -> MarkovLM:
    """``model`` stored compactly as a broadcast (stride-0) view — layouts users build with
    ``np.broadcast_to`` and that every engine and DP must treat like dense arrays.

    Drawn: the first position broadcast along the time axis and/or the first context along
    the context axis (a model whose rows are a subset of ``model``'s), or — when the
    vocabulary axis is drawn — uniform rows from one number broadcast along every axis.

    Examples
    --------
    >>> import numpy as np
    >>> from hypothesis import given
    >>> from sim.strategies import broadcast_layouts, markov_lms
    >>> from theory import MarkovLM, expected_rejections
    >>> @given(markov_lms().flatmap(broadcast_layouts))
    ... def check(lm):
    ...     dense = MarkovLM(np.array(lm.probs), lm.next_context, lm.start)
    ...     assert expected_rejections(lm, dense) == 0
    >>> check()
    """
    axes = draw(st.sets(st.sampled_from((0, 1, 2)), min_size=1))
    probs = np.asarray(model.probs)
    if 2 in axes:
        one = Fraction(1, model.vocab_size) if model.is_exact else 1 / model.vocab_size
        stored = np.broadcast_to(np.array(one, dtype=probs.dtype), probs.shape)
    else:
        index = tuple(slice(0, 1) if axis in axes else slice(None) for axis in range(3))
        stored = np.broadcast_to(probs[index], probs.shape)
    return MarkovLM(stored, model.next_context, model.start)
