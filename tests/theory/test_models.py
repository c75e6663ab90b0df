"""MarkovLM: validation, immutability, exact marginals and sequence probabilities."""

import itertools
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.strategies import markov_lms, model_pairs, probability_vectors
from theory import (
    BatchSpeculative,
    MarkovLM,
    Speculative,
    check_compatible,
    expected_rejections,
    rejection_pmf,
)
from theory._arrays import compact


def kernel_model(horizon=3):
    kernel = np.array([[0.9, 0.1], [0.5, 0.5]])
    return MarkovLM(np.stack([kernel] * horizon))


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("probs", "kwargs", "error", "match"),
    [
        (np.full((2, 2), 0.5), {}, ValueError, r"shape \(T, S, V\).*got shape \(2, 2\)"),
        (np.zeros((0, 1, 1)), {}, ValueError, r"T, S, V >= 1"),
        ([[[0.5, np.nan], [0.5, 0.5]]], {}, ValueError, r"probs\[0, 0, 1\] is nan"),
        ([[[0.5, np.inf], [0.5, 0.5]]], {}, ValueError, r"probs\[0, 0, 1\] is inf"),
        ([[[1.5, -0.5], [0.5, 0.5]]], {}, ValueError, r"probs\[0, 0, 1\] is -0.5.*>= 0"),
        ([[[0.5, 0.5], [0.5, 0.48]]], {}, ValueError,
         r"probs\[0, 1\] sums to 0.98, expected 1 within 1e-09"),
        ([[["a", "b"]]], {}, TypeError, r"probs must hold real numbers"),
        ([[[True, False]]], {}, TypeError, r"probs must hold real numbers"),
        ([[[1.0, 0.0]]], {}, ValueError, r"needs n_contexts == vocab_size"),
        ([[[1.0, 0.0]]], {"next_context": [[0, 1]]}, ValueError,
         r"next_context\[0, 1\] = 1 is not a context in range\(0, 1\)"),
        ([[[1.0, 0.0]]], {"next_context": [[0.0, 0.0]]}, TypeError, r"next_context must hold"),
        ([[[1.0, 0.0]]], {"next_context": [[0, 0, 0]]}, ValueError,
         r"next_context must have shape \(S, V\) = \(1, 2\)"),
        (np.full((1, 2, 2), 0.5), {"start": 2}, ValueError, r"start = 2 is not a context"),
        (np.full((1, 2, 2), 0.5), {"start": [0.5, 0.6]}, ValueError, r"start sums to 1.1"),
        (np.full((1, 2, 2), 0.5), {"start": [0.5, 0.25, 0.25]}, ValueError,
         r"start must be a context index or a distribution of shape \(S,\) = \(2,\)"),
        (np.full((1, 2, 2), 0.5), {"start": True}, TypeError, r"got bool"),
        ([[[F(1, 2), F(1, 3)], [F(1, 2), F(1, 2)]]], {}, ValueError,
         r"probs\[0, 0\] sums to 5/6, expected 1 exactly"),
        ([[[F(1, 2), F(1, 2)], [F(1, 2), F(1, 2)]]], {"start": [0.5, 0.5]}, TypeError,
         r"exact model.*exact \(Fraction\) start"),
    ],
)
def test_constructor_rejects_bad_input_precisely(probs, kwargs, error, match):
    with pytest.raises(error, match=match):
        MarkovLM(probs, **kwargs)


def test_rows_within_tolerance_are_accepted_as_given():
    row = np.array([0.5, 0.5 + 5e-10])
    lm = MarkovLM(np.stack([[row, row]]))
    assert lm.probs[0, 0, 1] == row[1]  # not renormalized


# ---------------------------------------------------------------- immutability
def test_model_is_immutable_and_copies_its_input():
    probs = np.stack([[[0.9, 0.1], [0.5, 0.5]]] * 2)
    lm = MarkovLM(probs)
    probs[0, 0] = [0.0, 1.0]
    assert lm.probs[0, 0, 0] == 0.9
    for array in (lm.probs, lm.next_context, lm.start_distribution):
        with pytest.raises(ValueError, match="read-only"):
            array[(0,) * array.ndim] = 0
    with pytest.raises(AttributeError):
        lm.probs = probs
    with pytest.raises(AttributeError):
        lm.extra = 1


def test_homogeneous_model_is_stored_once():
    kernel = np.full((3, 5000), 1 / 5000)
    lm = MarkovLM.homogeneous(kernel, horizon=1000, next_context=np.zeros((3, 5000), int))
    assert lm.probs.shape == (1000, 3, 5000)
    assert lm.probs.strides[0] == 0 and lm.is_time_homogeneous
    assert not kernel_model().is_time_homogeneous


# ---------------------------------------------------------------- broadcast (stride-0) layouts
BROADCAST_ALGORITHMS = [Speculative(), Speculative(window=2), BatchSpeculative(2, "trie")]


@st.composite
def broadcast_probs(draw, shape, exact):
    """(axes, view): a valid (T, S, V) ``np.broadcast_to`` view, stride 0 along ``axes``."""
    axes = draw(st.sets(st.sampled_from((0, 1, 2)), min_size=1))
    base_shape = tuple(1 if axis in axes else size for axis, size in enumerate(shape))
    dtype = object if exact else np.float64
    vocab = shape[2]
    if 2 in axes:  # one stored number per row: the row is uniform
        base = np.full(base_shape, F(1, vocab) if exact else 1 / vocab, dtype=dtype)
    else:
        rows = [draw(probability_vectors(vocab, exact=exact))
                for _ in range(base_shape[0] * base_shape[1])]
        base = np.array(rows, dtype=dtype).reshape(base_shape)
    return axes, np.broadcast_to(base, shape)


def assert_same_number(a, b, exact):
    if exact:
        assert a == b
    else:
        assert abs(float(a) - float(b)) <= 1e-12


def assert_same_dynamic_programs(draft, target, dense_draft, dense_target, exact):
    for algorithm in BROADCAST_ALGORITHMS:
        assert_same_number(expected_rejections(draft, target, algorithm),
                           expected_rejections(dense_draft, dense_target, algorithm), exact)
        pmf = rejection_pmf(draft, target, algorithm)
        dense_pmf = rejection_pmf(dense_draft, dense_target, algorithm)
        assert pmf.shape == dense_pmf.shape
        for value, dense_value in zip(pmf, dense_pmf, strict=True):
            assert_same_number(value, dense_value, exact)


@settings(max_examples=40)
@given(data=st.data(), horizon=st.integers(1, 3), vocab=st.integers(1, 4),
       first_order=st.booleans(), exact=st.booleans())
def test_broadcast_models_validate_and_match_dense_copies(data, horizon, vocab, first_order,
                                                           exact):
    n_contexts = vocab if first_order else data.draw(st.integers(1, 3))
    shape = (horizon, n_contexts, vocab)
    next_context = None if first_order else np.array(data.draw(st.lists(
        st.integers(0, n_contexts - 1), min_size=n_contexts * vocab,
        max_size=n_contexts * vocab))).reshape(n_contexts, vocab)
    start = data.draw(probability_vectors(n_contexts, exact=exact))
    models, dense_models = [], []
    for _ in ("draft", "target"):
        axes, view = data.draw(broadcast_probs(shape, exact))
        dense = np.array(view)
        stored = compact(view)  # whole rows, one per distinct (n, s) of the layout
        rows = tuple(1 if axis in axes else size for axis, size in enumerate(shape[:2]))
        assert stored.shape == (*rows, vocab)
        np.testing.assert_array_equal(np.broadcast_to(stored, shape), dense)
        model = MarkovLM(view, next_context, start)
        assert model.probs.shape == shape
        np.testing.assert_array_equal(model.probs, dense)
        if not exact and 0 in axes:
            assert model.is_time_homogeneous
        models.append(model)
        dense_models.append(MarkovLM(dense, next_context, start))
    assert_same_dynamic_programs(*models, *dense_models, exact)


def test_stride_zero_vocabulary_axis_is_a_valid_uniform_row():
    view = np.broadcast_to(np.array(1 / 3), (4, 3, 3))
    model = MarkovLM(view)
    np.testing.assert_array_equal(model.probs, np.full((4, 3, 3), 1 / 3))
    assert model.is_time_homogeneous
    # Row sums still see the whole vocabulary: 3 × 0.3 is not 1.
    with pytest.raises(ValueError, match=r"probs\[0, 0\] sums to 0\.8999.*expected 1"):
        MarkovLM(np.broadcast_to(np.array(0.3), (4, 3, 3)))
    target = MarkovLM.homogeneous([[.6, .2, .2], [.1, .1, .8], [.3, .4, .3]], 4)
    assert_same_dynamic_programs(model, target, MarkovLM(np.array(view)),
                                 MarkovLM(np.array(target.probs)), exact=False)


def test_draft_broadcast_over_positions_and_contexts_matches_dense_copies():
    draft = MarkovLM(np.broadcast_to([0.2, 0.3, 0.5], (4, 3, 3)))
    target = MarkovLM.homogeneous([[.6, .2, .2], [.1, .1, .8], [.3, .4, .3]], 4)
    np.testing.assert_array_equal(draft.probs, np.tile([0.2, 0.3, 0.5], (4, 3, 1)))
    assert_same_dynamic_programs(draft, target, MarkovLM(np.array(draft.probs)),
                                 MarkovLM(np.array(target.probs)), exact=False)


def test_properties():
    lm = kernel_model(4)
    assert (lm.horizon, lm.n_contexts, lm.vocab_size) == (4, 2, 2)
    assert lm.is_first_order and not lm.is_exact
    assert lm.next_context.tolist() == [[0, 1], [0, 1]]
    assert lm.start == 0 and lm.start_distribution.tolist() == [1.0, 0.0]
    assert "T=4, S=2, V=2" in repr(lm)


# ---------------------------------------------------------------- marginals, exact
def brute_force_context_marginals(lm):
    """Law of the context at each position by enumerating every (start, prefix)."""
    horizon, n_contexts, vocab = lm.probs.shape
    zero = F(0) if lm.is_exact else 0.0
    out = [[zero] * n_contexts for _ in range(horizon)]
    for s0, w in enumerate(lm.start_distribution):
        for n in range(horizon):
            for prefix in itertools.product(range(vocab), repeat=n):
                prob, context = w, s0
                for position, x in enumerate(prefix):
                    prob = prob * lm.probs[position, context, x]
                    context = lm.next_context[context, x]
                out[n][context] = out[n][context] + prob
    return out


@given(markov_lms(exact=True))
def test_context_marginals_equal_enumeration_exactly(lm):
    marginals = lm.context_marginals()
    assert marginals.dtype == object
    assert marginals.tolist() == brute_force_context_marginals(lm)


@given(markov_lms(max_vocab=3, max_horizon=3, exact=True))
def test_sequence_probabilities_sum_to_one_exactly(lm):
    sequences = np.array(list(itertools.product(range(lm.vocab_size), repeat=lm.horizon)))
    probabilities = lm.sequence_probability(sequences)
    assert sum(probabilities) == 1
    assert all(isinstance(p, F) for p in probabilities)


@given(markov_lms())
def test_float_marginals_are_distributions(lm):
    marginals = lm.context_marginals()
    np.testing.assert_allclose(marginals.sum(axis=1), 1.0, atol=1e-12)


def test_hand_computed_marginals_and_sequence_probability():
    half, quarter = F(1, 2), F(1, 4)
    probs = [[[half, half], [1, 0]], [[quarter, 3 * quarter], [half, half]]]
    lm = MarkovLM(probs, start=[F(1, 3), F(2, 3)])
    # μ₁(0) = 1/3·1/2 + 2/3·1 = 5/6
    assert lm.context_marginals().tolist() == [[F(1, 3), F(2, 3)], [F(5, 6), F(1, 6)]]
    # P(0, 1) = 1/3·1/2·3/4 + 2/3·1·3/4 = 1/8 + 1/2
    assert lm.sequence_probability([0, 1]) == F(5, 8)
    # P(1, ·) = 1/3·1/2·1/2 for either second token; start 1 cannot emit 1
    assert lm.sequence_probability([[1, 1], [1, 0]]).tolist() == [F(1, 12), F(1, 12)]


def test_log_probability_matches_and_handles_zero_and_underflow():
    lm = kernel_model()
    tokens = np.array([[0, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(lm.sequence_log_probability(tokens),
                               np.log(lm.sequence_probability(tokens)), rtol=1e-14)
    zero = MarkovLM([[[1.0, 0.0], [1.0, 0.0]]])
    assert zero.sequence_log_probability([1]) == -np.inf
    tiny = F(1, 10**400)
    exact = MarkovLM([[[1 - tiny, tiny]]] * 3, next_context=[[0, 0]])
    assert exact.sequence_log_probability([1, 1, 1]) == pytest.approx(-3 * 400 * np.log(10))


def test_tokens_are_validated():
    lm = kernel_model()
    with pytest.raises(ValueError, match=r"tokens\[1\] = 2 is not a token in range\(0, 2\)"):
        lm.sequence_probability([0, 2, 0])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., T\) with T = 3"):
        lm.sequence_probability([0, 1])
    with pytest.raises(TypeError, match="tokens must be integers"):
        lm.sequence_probability([0.0, 1.0, 0.0])


def test_to_float_keeps_the_law():
    lm = MarkovLM([[[F(1, 3), F(2, 3)], [1, 0]]], start=[F(1, 2), F(1, 2)])
    as_float = lm.to_float()
    assert not as_float.is_exact
    np.testing.assert_allclose(as_float.context_marginals(),
                               lm.context_marginals().astype(float), rtol=1e-15)


# ---------------------------------------------------------------- pairs
def test_check_compatible_names_the_difference():
    base = np.full((2, 2, 2), 0.5)
    a = MarkovLM(base)
    with pytest.raises(ValueError, match="same horizon T; got draft 2, target 3"):
        check_compatible(a, MarkovLM(np.full((3, 2, 2), 0.5)))
    with pytest.raises(ValueError, match="share next_context; they differ at"):
        check_compatible(a, MarkovLM(base, next_context=[[0, 0], [0, 1]]))
    with pytest.raises(ValueError, match="share the start law; they differ at context 0"):
        check_compatible(a, MarkovLM(base, start=1))
    with pytest.raises(TypeError, match="draft must be a MarkovLM"):
        check_compatible(base, a)
    exact = MarkovLM([[[F(1, 2)] * 2] * 2] * 2)
    with pytest.raises(TypeError, match="both be exact"):
        check_compatible(a, exact)


@given(model_pairs())
def test_strategy_pairs_are_compatible(pair):
    check_compatible(*pair)
