"""Invalid custom verifiers are refused, with the same message, by every consumer.

A verifier's (b, 𝒫) must have b ∈ [0, 1] and 𝒫 a law wherever rejection can happen
(:mod:`theory.verification`).  Hypothesis draws models and a corruption that breaks this in every
row; the dynamic programs, the reference engine, the CPU engine and the torch engine must all
raise :class:`InvalidVerification` before producing a number, and the three table builders must
agree on the message.  Valid edge cases (zeros where rejection is impossible) must still run.
"""

import importlib.util
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import simulate
from sim.reference import enumerate_outcomes
from sim.strategies import model_pairs
from theory import MarkovLM, Speculative, UnbiasedSpeculative, expected_rejections, rejection_pmf
from theory.onestep import _acceptance, _residual
from theory.verification import InvalidVerification, checked_verification

TORCH = importlib.util.find_spec("torch") is not None
if TORCH:
    from gpu_kernels import simulate as simulate_torch


def _half(p, q):
    return _acceptance(p, q) / 2  # Σ b p ≤ ½: rejection has probability ≥ ½ in every row


CORRUPTIONS = {  # each breaks (b, 𝒫) in every row of every model
    "acceptance above 1": lambda p, q, c: ((1 + c) * _acceptance(p, q), _residual(p, q)),
    "negative acceptance": lambda p, q, c: (_acceptance(p, q) - 1 - c, _residual(p, q)),
    "acceptance nan": lambda p, q, c: (np.where(np.arange(p.shape[-1]) == 0, np.nan,
                                                _acceptance(p, q)), _residual(p, q)),
    "law scaled": lambda p, q, c: (_half(p, q), c * q),
    "law negative": lambda p, q, c: (_half(p, q), q - c - 0.25),
    "law infinite": lambda p, q, c: (_acceptance(p, q), q + np.inf),
}


@dataclass(frozen=True)
class Corrupted(Speculative):
    corruption: str = "acceptance above 1"
    factor: float = 2.0

    def verification(self, p, q):
        return CORRUPTIONS[self.corruption](np.asarray(p, dtype=np.float64),
                                            np.asarray(q, dtype=np.float64), self.factor)


@dataclass(frozen=True)
class RejectsIntoNothing(Speculative):
    """The old README example: 0.9 · min(1, q/p) with the residual, which is empty at p = q."""

    def verification(self, p, q):
        return Fraction(9, 10) * _acceptance(p, q), _residual(p, q)


def _message(call) -> str:
    with pytest.raises(InvalidVerification) as raised:
        call()
    return str(raised.value)


@settings(max_examples=25)
@given(model_pairs(max_vocab=3, max_horizon=3),
       st.sampled_from(sorted(CORRUPTIONS)),
       st.sampled_from([0.5, 1.5, 3.0]),
       st.sampled_from(range(3)))
def test_every_consumer_refuses_an_invalid_verifier(pair, corruption, factor, window):
    draft, target = pair
    algorithm = Corrupted(window=window or None, corruption=corruption, factor=factor)
    dp = _message(lambda: expected_rejections(draft, target, algorithm))
    assert _message(lambda: rejection_pmf(draft, target, algorithm)) == dp
    cpu = _message(lambda: simulate(draft, target, algorithm, n_trials=4, rng=0))
    assert cpu == dp  # the same rows, the same first offending entry
    assert "at position 0, context 0, " in dp
    if TORCH:
        assert _message(lambda: simulate_torch(draft, target, algorithm, n_trials=4, rng=0,
                                               device="cpu")) == dp
    reference = _message(lambda: enumerate_outcomes(draft, target, algorithm))
    assert re.search(r"at position 0, context \d+, ", reference)
    kind = "acceptance" if "the acceptance" in dp else "rejection law"
    assert f"the {kind}" in reference


def _pair_with_a_zero_residual():
    same = [[Fraction(1, 2), Fraction(1, 2)], [Fraction(1), Fraction(0)]]
    draft = MarkovLM([same, [[Fraction(1, 4), Fraction(3, 4)], [Fraction(1), Fraction(0)]]])
    target = MarkovLM([same, [[Fraction(3, 4), Fraction(1, 4)], [Fraction(1), Fraction(0)]]])
    return draft, target


def test_rejecting_where_the_residual_is_empty_is_named_precisely():
    """p = q at position 0 (residual empty, rejection 1/10): the old README verifier."""
    draft, target = _pair_with_a_zero_residual()
    expected = ("at position 0, context 0, the rejection law sums to 0 where rejection has "
                "probability 1/10")
    for call in (lambda: expected_rejections(draft, target, RejectsIntoNothing()),
                 lambda: enumerate_outcomes(draft, target, RejectsIntoNothing()),
                 # the samplers verify on the exact rows too, before rounding their tables
                 lambda: simulate(draft, target, RejectsIntoNothing(), n_trials=4, rng=0)):
        assert expected in _message(call)
    # float models: the same message in floats
    floats = [MarkovLM(np.asarray(model.probs, dtype=float), model.next_context, model.start)
              for model in (draft, target)]
    assert "at position 0, context 0, the rejection law sums to 0.0 where rejection has " \
           "probability 0.1" in _message(
               lambda: simulate(*floats, RejectsIntoNothing(), n_trials=4, rng=0))


def test_valid_verifiers_may_leave_impossible_rejection_laws_empty():
    draft, target = _pair_with_a_zero_residual()
    # Speculative's residual is all zeros at position 0 (p = q) and at context 1 (one-hot)
    accept, law = checked_verification(Speculative(), draft.probs[0], target.probs[0],
                                       position=0)
    assert (law == 0).all() and (accept == 1).all()
    assert expected_rejections(draft, target, Speculative()) == Fraction(1, 4)


def test_messages_locate_the_row_in_position_context_tables():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
    q = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.75, 0.25]])

    @dataclass(frozen=True)
    class TooEager(Speculative):
        def verification(self, p, q):
            return np.where(p < q, 1.25, _acceptance(p, q)), _residual(p, q)

    message = _message(lambda: checked_verification(TooEager(), p, q, position=0,
                                                    n_contexts=2))
    assert "at position 1, context 1, token 0, the acceptance is 1.25" in message

    @dataclass(frozen=True)
    class Ragged(Speculative):
        def verification(self, p, q):
            return _acceptance(p, q).T, _residual(p, q)

    assert "must have the shape of p" in _message(
        lambda: checked_verification(Ragged(), p, q, position=0, n_contexts=2))


@dataclass(frozen=True)
class NaNRejectionLaw(Speculative):
    """Exact (b, 𝒫) with a float NaN in 𝒫 (a rule written for floats)."""

    def verification(self, p, q):
        p, q = np.asarray(p), np.asarray(q)
        return Fraction(1, 2) * _acceptance(p, q), _residual(p, q) * float("nan")


@pytest.mark.parametrize("exact", [False, True], ids=["float", "exact"])
@pytest.mark.parametrize("rule", [lambda p, q: p * float("nan"),
                                  lambda p, q: np.full(np.shape(p), float("nan"))],
                         ids=["nan times p", "nan array"])
def test_a_nan_acceptance_is_refused_on_exact_models_as_on_float_ones(exact, rule):
    """Exact models used to give E[N_rej] = nan (or ignore the NaN): the finiteness check
    skipped object tables, and clipping at min(1, q/p) in Fractions dropped a float NaN."""
    def number(a, b):
        return Fraction(a, b) if exact else a / b

    draft = MarkovLM([[[number(1, 3), number(2, 3)], [number(1, 2), number(1, 2)]]])
    target = MarkovLM([[[number(1, 5), number(4, 5)], [number(1, 2), number(1, 2)]]])
    algorithm = UnbiasedSpeculative(acceptance=rule)
    expected = "at position 0, context 0, token 0, the acceptance is nan; it must be finite"
    for call in (lambda: expected_rejections(draft, target, algorithm),
                 lambda: rejection_pmf(draft, target, algorithm),
                 lambda: simulate(draft, target, algorithm, n_trials=4, rng=0)):
        assert expected in _message(call)
    law = "at position 0, context 0, token 0, the rejection law is nan; it must be finite"
    assert law in _message(lambda: expected_rejections(draft, target, NaNRejectionLaw()))
