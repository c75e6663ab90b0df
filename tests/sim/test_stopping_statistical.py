"""Adaptive drafting in the compiled and torch engines (:mod:`sim.engine.stopping`).

Rung 3: the torch engine returns the compiled engine's arrays bit for bit, for each kernel
form of the rule (the threshold evaluated in the kernel, a per-row table, a table over drafted
paths).  Rung 2: the compiled engine's target calls, rejections and walltime against the exact
laws of ``theory.stopping`` at level ``DEFAULT_ALPHA`` each, beside a negative control: a
threshold rule with an off-by-one product (the last draft left out, a natural slip) simulated
at the same size must fail the same checks against the true rule's exact laws.
"""

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest

from gpu_kernels import simulate as simulate_torch
from sim import simulate
from sim.engine.stopping import StoppingTables
from sim.models import fig2_pair, random_pair
from sim.stats import DEFAULT_ALPHA, mean_check, pmf_moments
from theory import (
    AdaptiveSpeculative,
    EntropyStopping,
    MarkovLM,
    ThresholdStopping,
    expected_walltime,
    optimal_stopping_policy,
    rejection_pmf,
    target_calls_pmf,
)


@dataclass(frozen=True)
class OffByOneThreshold:
    """Known-wrong SpecDec++: the product leaves out the last drafted token."""

    threshold: float

    def bind(self, draft, target):
        def rule(position, context, drafted):
            product, row_context = 1.0, context
            for i, token in enumerate(drafted[:-1]):
                p = draft.probs[position + i, row_context, token]
                q = target.probs[position + i, row_context, token]
                product *= min(1.0, q / p)
                row_context = int(target.next_context[row_context, token])
            return bool(len(drafted) >= 1 and 1 - product > self.threshold)

        return rule


def _pairs():
    prompt = [0.25, 0.25, 0.5, 0.0]  # a random start context
    return {"fig2": fig2_pair(horizon=10),
            "random prompt": random_pair(vocab_size=4, horizon=9, start=prompt, rng=5)}


RULES = {
    "threshold (kernel)": lambda d, t: AdaptiveSpeculative(ThresholdStopping(0.4), 3),
    "entropy (rows)": lambda d, t: AdaptiveSpeculative(EntropyStopping(0.5, scale=0.2), 3),
    "optimum (table)": lambda d, t: optimal_stopping_policy(d, t, cost_ratio=0.1, max_window=3),
    "no bonus (table)": lambda d, t: AdaptiveSpeculative(
        lambda n, s, drafted: len(drafted) >= 2 and drafted[-1] == 0, 3, bonus=False),
}


@pytest.mark.parametrize("pair", sorted(_pairs()))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_torch_engine_equals_the_compiled_engine(pair, rule):
    draft, target = _pairs()[pair]
    algorithm = RULES[rule](draft, target)
    compiled = simulate(draft, target, algorithm, n_trials=1500, rng=4, record_tokens=True)
    torch = simulate_torch(draft, target, algorithm, n_trials=1500, rng=4, record_tokens=True,
                           device="cpu", chunk_size=600)
    for field in ("rejections", "target_calls", "drafted", "tokens"):
        np.testing.assert_array_equal(getattr(torch, field), getattr(compiled, field))


def test_each_rule_takes_its_kernel_form():
    draft, target = fig2_pair(horizon=6)
    forms = {name: StoppingTables.build(draft, target, make(draft, target)).form
             for name, make in RULES.items()}
    assert forms == {"threshold (kernel)": 0, "entropy (rows)": 2, "optimum (table)": 1,
                     "no bonus (table)": 1}


#: 40,000 trials on fig2_pair(horizon=10): the off-by-one rule drafts one token more per round
#: almost always, moving E[drafted] by ≈ 2.5 and the walltime at c = 0.2 by ≈ 0.5, ≈ 40 standard
#: errors; a correct engine fails a check with probability ≤ 1e-6.
N_TRIALS = 40_000
COST = 0.2


def _checks(result, draft, target, algorithm):
    checks = []
    for samples, pmf in ((result.target_calls, target_calls_pmf(draft, target, algorithm)),
                         (result.rejections, rejection_pmf(draft, target, algorithm))):
        mean, variance = pmf_moments(np.asarray(pmf, dtype=np.float64))
        checks.append(mean_check(samples, mean, variance=variance, alpha=DEFAULT_ALPHA))
    exact = expected_walltime(draft, target, algorithm, cost_ratio=COST)
    checks.append(mean_check(result.walltime(COST), float(exact), alpha=DEFAULT_ALPHA))
    return checks


@pytest.mark.parametrize("rule", ["threshold (kernel)", "optimum (table)"])
def test_simulation_matches_the_exact_laws(rule):
    draft, target = fig2_pair(horizon=10)
    algorithm = RULES[rule](draft, target)
    result = simulate(draft, target, algorithm, n_trials=N_TRIALS, rng=21)
    assert all(check.passed for check in _checks(result, draft, target, algorithm))


def test_negative_control_an_off_by_one_threshold_is_caught():
    draft, target = fig2_pair(horizon=10)
    right = AdaptiveSpeculative(ThresholdStopping(0.4), 3)
    wrong = AdaptiveSpeculative(OffByOneThreshold(0.4), 3)
    result = simulate(draft, target, wrong, n_trials=N_TRIALS, rng=21)
    assert not all(check.passed for check in _checks(result, draft, target, right))


def test_exact_models_tabulate_the_exact_decisions():
    """On Fraction models a threshold rule is tabulated (ties decided exactly), not compared
    in floats: with p = (1/2, 1/2), q = (1/6, 5/6), 1 − min(1, q/p) = 2/3 after drafting token 0
    — the threshold exactly, so the exact rule continues, while in float64 (1/6)/(1/2) rounds
    below 1/3 and the rule stops.  E[W] at c = 1/5: 133/45 exact, 26/9 in floats (a gap of
    ≈ 9 standard errors at 20,000 trials).  The float copy, run by the in-kernel threshold, is
    the negative control: it fails the exact checks."""
    def pair(exact):
        half, sixth = (Fraction(1, 2), Fraction(1, 6)) if exact else (0.5, 1 / 6)
        draft = MarkovLM.homogeneous([[half, 1 - half]], 4, next_context=[[0, 0]])
        target = MarkovLM.homogeneous([[sixth, 1 - sixth]], 4, next_context=[[0, 0]])
        return draft, target

    draft, target = pair(exact=True)
    algorithm = AdaptiveSpeculative(ThresholdStopping(Fraction(2, 3)), 3)
    assert StoppingTables.build(draft, target, algorithm).form == 1
    assert expected_walltime(draft, target, algorithm, cost_ratio=Fraction(1, 5)) \
        == Fraction(133, 45)
    result = simulate(draft, target, algorithm, n_trials=20_000, rng=2)
    assert all(check.passed for check in _checks(result, draft, target, algorithm))
    float_draft, float_target = pair(exact=False)
    float_rule = AdaptiveSpeculative(ThresholdStopping(2 / 3), 3)
    assert StoppingTables.build(float_draft, float_target, float_rule).form == 0
    floats = simulate(float_draft, float_target, float_rule, n_trials=20_000, rng=2)
    assert not all(check.passed for check in _checks(floats, draft, target, algorithm))


def test_rules_are_asked_only_on_paths_the_draft_can_produce():
    """A draft row with a zero: the exact threshold rule (which divides by p) is never asked
    about a token the draft cannot produce; the engines agree with the exact laws."""
    draft = MarkovLM.homogeneous([[Fraction(1), Fraction(0)],
                                  [Fraction(1, 2), Fraction(1, 2)]], 3)
    target = MarkovLM.homogeneous([[Fraction(1, 2), Fraction(1, 2)]] * 2, 3)
    algorithm = AdaptiveSpeculative(ThresholdStopping(Fraction(1, 3)), 2)
    result = simulate(draft, target, algorithm, n_trials=20_000, rng=0)
    assert all(check.passed for check in _checks(result, draft, target, algorithm))
    torch = simulate_torch(draft, target, algorithm, n_trials=2_000, rng=0, device="cpu")
    np.testing.assert_array_equal(torch.drafted, result.drafted[:2_000])


def test_a_huge_decision_table_is_refused_up_front():
    draft, target = random_pair(vocab_size=60, horizon=30, rng=0)
    algorithm = AdaptiveSpeculative(lambda n, s, drafted: len(drafted) >= 3, 4)
    with pytest.raises(ValueError, match="MAX_DECISIONS"):
        simulate(draft, target, algorithm, n_trials=10)
