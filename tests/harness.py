"""Shared assertions of the exact rung, used by every algorithm's tests."""

import itertools

from sim.reference import enumerate_outcomes
from theory import rejection_pmf, target_calls_pmf


def all_sequences(model):
    """Every token sequence of the model's horizon, as tuples."""
    return list(itertools.product(range(model.vocab_size), repeat=model.horizon))


def assert_exact_ladder(draft, target, algorithm, emitted=None):
    """Enumeration of the reference routine == the DPs (pmfs of rejections and target calls)
    and its sequence law == ``emitted`` (default: the target, i.e. unbiasedness), exactly."""
    emitted = target if emitted is None else emitted
    law = enumerate_outcomes(draft, target, algorithm)
    assert law.total() == 1
    assert law.rejection_pmf().tolist() == rejection_pmf(draft, target, algorithm).tolist()
    assert law.target_calls_pmf().tolist() == \
        target_calls_pmf(draft, target, algorithm).tolist()
    sequences = law.sequence_law()
    for tokens in all_sequences(target):
        assert sequences.get(tokens, 0) == emitted.sequence_probability(list(tokens))
