"""Lossy zoo: Monte Carlo of typical acceptance and truncated SD ≈ the exact laws.

Level 1e-6 per check, fixed seeds, no retries, each beside a negative control caught by the
same check at the same size.  Statistical assertions on correct algorithms: 2 × 2 (typical,
N_rej and last token) + 2 (truncated, sequence law, two engines) + 2 (a nucleus tie on exact
models, N_rej, compiled and torch engines) = 8.
"""

from fractions import Fraction as F

import numpy as np
import pytest

import gpu_kernels
from sim import simulate
from sim.models import fig2_pair, random_pair
from sim.reference import enumerate_outcomes, reference_simulate
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import counts_check, mean_check
from tests.mutants import TruncatedBonusFromTarget, TypicalWithoutEntropy
from tests.sim.test_statistical import pmf_moments, sequence_counts
from theory import (
    MarkovLM,
    TruncatedSpeculative,
    TypicalAcceptance,
    expected_rejections,
    output_model,
    rejection_pmf,
)
from theory.lossy import chain_tradeoff

#: Fig. 2 trials.  Power: the mutant without the entropy term has E[N_rej] ≈ 15.30 against
#: 8.62 (sd 2.64 per run), z ≈ 358 at 20,000 runs against the two-sided 1e-6 cut-off 4.9.
TYPICAL_TRIALS = 20_000


@pytest.mark.parametrize("rule", ["target", "opt"])
def test_typical_acceptance_on_fig2(rule):
    draft, target = fig2_pair()
    algorithm = TypicalAcceptance(0.09, 0.3, rule)
    mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
    result = simulate(draft, target, algorithm, n_trials=TYPICAL_TRIALS, rng=15,
                      record_tokens=True)
    check = mean_check(result.rejections, mean, variance=variance, alpha=ALPHA)
    assert check.passed, str(check)
    emitted = output_model(draft, target, algorithm)
    last = target.horizon - 1
    law = np.asarray(emitted.context_marginals()[last] @ emitted.probs[last], dtype=float)
    counts = np.bincount(result.tokens[:, last], minlength=target.vocab_size)
    fit = counts_check(counts, law / law.sum(), alpha=ALPHA)
    assert fit.passed, str(fit)
    wrong = simulate(draft, target, TypicalWithoutEntropy(0.09, 0.3, rule),
                     n_trials=TYPICAL_TRIALS, rng=15)
    control = mean_check(wrong.rejections, mean, variance=variance, alpha=ALPHA)
    assert not control.passed, str(control)


@pytest.mark.parametrize(("run", "n_trials"), [(simulate, 20_000), (reference_simulate, 3_000)],
                         ids=["vectorized", "reference"])
def test_truncated_speculative_emits_the_truncated_target(run, n_trials):
    """Sequence law (27 sequences) == q̂ with a bonus token every other position.  Power of the
    control: the bonus-from-q mutant puts 2.2% of its mass on sequences q̂ cannot emit
    (computed exactly by enumeration), ≈ 65 of 3,000 runs; any one fails the check."""
    draft, target = random_pair(3, 3, concentration=0.5, rng=31)
    algorithm = TruncatedSpeculative(top_k=2, window=1)
    truncated = algorithm.truncated_target(target)
    grid = np.array(np.meshgrid(*[np.arange(3)] * 3, indexing="ij")).reshape(3, -1).T
    law = truncated.sequence_probability(grid)
    result = run(draft, target, algorithm, n_trials=n_trials, rng=5, record_tokens=True)
    check = counts_check(sequence_counts(result.tokens, 3), law, alpha=ALPHA)
    assert check.passed, str(check)
    wrong = run(draft, target, TruncatedBonusFromTarget(top_k=2, window=1), n_trials=n_trials,
                rng=5, record_tokens=True)
    control = counts_check(sequence_counts(wrong.tokens, 3), law, alpha=ALPHA)
    assert not control.passed, str(control)


#: Runs of the nucleus-tie check.  P(token 2, of probability 1/5, never emitted) = (4/5)^20000
#: < 1e-1900, far below the 1e-6 level.  Power of the control: the float64 cut rejects with
#: probability 1/3 against 2/15 (sd 0.34 per run), z ≈ 83 at 20,000 runs against 4.9.
TIE_TRIALS = 20_000


def _nucleus_tie(exact):
    """p uniform, q = (2/5, 2/5, 1/5), one context, T = 1: with top_p = 0.8 the mass before
    token 2 is 4/5, a tie with top_p · 1 that only the exact comparison breaks (0.8 is
    0.8000000000000000444 in binary, so token 2 is kept: q̂ = q)."""
    def number(a, b):
        return F(a, b) if exact else a / b

    draft = MarkovLM([[[number(1, 3)] * 3]], next_context=[[0, 0, 0]])
    target = MarkovLM([[[number(2, 5), number(2, 5), number(1, 5)]]], next_context=[[0, 0, 0]])
    return draft, target


@pytest.mark.parametrize("engine", ["compiled", "torch"])
def test_nucleus_tie_on_exact_models_is_cut_alike_by_every_engine(engine):
    """Every consumer cuts on the models' own (exact) rows: the DP, enumeration, both engines
    and ``chain_tradeoff`` keep token 2.  Negative control: the same models in float64, whose
    cut drops token 2 (what the engines did to exact models when they cut after rounding)."""
    draft, target = _nucleus_tie(exact=True)
    algorithm = TruncatedSpeculative(top_p=0.8)
    assert expected_rejections(draft, target, algorithm) == F(2, 15)  # TV(p, q), as q̂ = q
    outcomes = enumerate_outcomes(draft, target, algorithm)
    assert outcomes.rejection_pmf().tolist() == [F(13, 15), F(2, 15)]
    law = outcomes.sequence_law()
    assert law == {(0,): F(2, 5), (1,): F(2, 5), (2,): F(1, 5)}
    tradeoff = chain_tradeoff(draft, target, algorithm)
    assert tradeoff["rejection_probability"] * target.horizon == float(F(2, 15))
    run = simulate if engine == "compiled" else \
        (lambda *args, **kwargs: gpu_kernels.simulate(*args, device="cpu", **kwargs))
    mean, variance = pmf_moments(outcomes.rejection_pmf())
    result = run(draft, target, algorithm, n_trials=TIE_TRIALS, rng=8, record_tokens=True)
    emitted = set(np.unique(result.tokens).tolist())
    assert emitted == {token for (token,), mass in law.items() if mass > 0}
    check = mean_check(result.rejections, mean, variance=variance, alpha=ALPHA)
    assert check.passed, str(check)
    wrong = run(*_nucleus_tie(exact=False), algorithm, n_trials=TIE_TRIALS, rng=8,
                record_tokens=True)
    assert 2 not in wrong.tokens
    control = mean_check(wrong.rejections, mean, variance=variance, alpha=ALPHA)
    assert not control.passed, str(control)
