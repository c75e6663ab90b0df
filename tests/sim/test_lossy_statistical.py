"""Lossy decoding: Monte Carlo ≈ the biased closed forms, with negative controls.

False-positive level 1e-6 per check; statistical assertions on correct algorithms:
20 (trade-off table) + 4 (sequence laws) = 24.
"""

import itertools

import numpy as np
import pytest

from sim import simulate
from sim.experiments import tradeoff_table
from sim.models import fig2_pair, random_pair
from sim.reference import reference_simulate
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import counts_check, mean_check
from tests.mutants import LossyAbsoluteGap, LossyAdditiveAcceptance
from tests.sim.test_statistical import pmf_moments, sequence_counts
from theory import LossySpeculative, output_model, rejection_pmf

EPS = [0.0, 0.05, 0.1, 0.2, 0.5]


def test_fig2_tradeoff_table_matches_simulation():
    """The issue's table: (ε, P(reject), Loss*_TV, sequence KL, TV bound) for OPT and UNO."""
    draft, target = fig2_pair()
    rows = tradeoff_table(draft, target, EPS, n_trials=100_000, rng=7)
    assert len(rows) == 2 * len(EPS)
    for row in rows:
        assert row["rejections_passed"] and row["tokens_passed"], row
    opt = [row for row in rows if row["rejection"] == "opt"]
    uno = [row for row in rows if row["rejection"] == "target"]
    # more over-acceptance: fewer rejections, more loss; OPT's loss never above UNO's
    assert all(a["rejection_probability"] > b["rejection_probability"]
               for a, b in itertools.pairwise(opt))
    assert all(a["tv_loss"] < b["tv_loss"] for a, b in itertools.pairwise(opt))
    assert all(o["tv_loss"] <= u["tv_loss"] + 1e-12 for o, u in zip(opt, uno, strict=True))
    assert opt[0]["tv_loss"] == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_wrong_acceptance_rule_is_caught(eps):
    """Negative control for the rejection check of the table, same size."""
    draft, target = fig2_pair()
    mean, variance = pmf_moments(rejection_pmf(draft, target, LossySpeculative(eps)))
    wrong = simulate(draft, target, LossyAdditiveAcceptance(eps), n_trials=100_000, rng=7)
    assert not mean_check(wrong.rejections, mean, variance=variance, alpha=ALPHA).passed


@pytest.mark.parametrize("run", [simulate, reference_simulate], ids=["vectorized", "reference"])
@pytest.mark.parametrize("rule", ["opt", "target"])
def test_emitted_sequences_follow_the_output_model(run, rule):
    draft, target = random_pair(3, 3, concentration=0.5, rng=31)
    algorithm = LossySpeculative(0.1, rule)
    emitted = output_model(draft, target, algorithm)
    grid = np.array(np.meshgrid(*[np.arange(3)] * 3, indexing="ij")).reshape(3, -1).T
    law = emitted.sequence_probability(grid)
    result = run(draft, target, algorithm, n_trials=20_000, rng=3, record_tokens=True)
    check = counts_check(sequence_counts(result.tokens, 3), law, alpha=ALPHA)
    assert check.passed, str(check)
    if rule == "opt":  # negative control: rejecting into |q − b p| instead of [q − b p]₊
        wrong = run(draft, target, LossyAbsoluteGap(0.1), n_trials=20_000, rng=3,
                    record_tokens=True)
        control = counts_check(sequence_counts(wrong.tokens, 3), law, alpha=ALPHA)
        assert not control.passed, str(control)
    # and the biased output is told apart from the target law itself
    target_law = target.sequence_probability(grid)
    assert not counts_check(sequence_counts(result.tokens, 3), target_law, alpha=ALPHA).passed
