"""Token trees, Monte Carlo rung: the compiled engine (and the torch engine on the CPU) against
the exact round-level DP of :mod:`theory.tree`, every check at level 1e-6 with a fixed seed and
no retry, beside negative controls — ``tests.mutants.StaleResidualTree`` (rrs never updating
the residual between siblings) and ``StaleTraversalTree`` (traversal never updating M_b) —
which the same checks at the same sample size must fail.  Statistical assertions of correct
algorithms here: 31 (the rest are negative controls).

The bit-for-bit rung (compiled == torch, and traversal on a chain == block verification) is in
tests/gpu_kernels/test_torch_engine.py and tests/sim/test_engine.py.
"""

import numpy as np
import pytest

from sim import simulate
from sim.models import fig2_pair, random_pair
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import counts_check, mean_check, pmf_moments
from tests.mutants import StaleResidualTree, StaleTraversalTree
from tests.sim.test_statistical import count_checks, sequence_counts, sequence_law
from theory import (
    MarkovLM,
    Speculative,
    TreeSpeculative,
    rejection_pmf,
    target_calls_pmf,
)
from theory.exact import walltime_components


def sparse_pair(vocab_size: int, horizon: int, rng: int):
    """A time-inhomogeneous first-order pair whose rows miss tokens (entries below 0.12 of a
    Dirichlet(0.8) row set to 0): "swor" and "topk" nodes then draft fewer children where the
    draft's row has fewer tokens than the node has children, and the draft misses target
    tokens (and vice versa)."""
    models = []
    for model in random_pair(vocab_size, horizon, concentration=0.8, rng=rng):
        probs = np.array(model.probs)
        probs = np.where(probs < 0.12, 0.0, probs)
        models.append(MarkovLM(probs / probs.sum(axis=-1, keepdims=True), start=model.start))
    return tuple(models)


def tree(sampling, verifier, form, mutant=False, **options):
    """TreeSpeculative (or its negative control) from a branching tuple or a nested shape."""
    kind = TreeSpeculative
    if mutant:
        kind = StaleResidualTree if verifier == "rrs" else StaleTraversalTree
    if all(isinstance(k, int) for k in form):
        return kind(form, sampling=sampling, verifier=verifier, **options)
    return kind(shape=form, sampling=sampling, verifier=verifier, **options)


# Every sampling × verifier, regular and irregular shapes, bonus on and off.
CASES = [("iid", "rrs", (2, 2), {}),
         ("iid", "traversal", ((((),), ()), ((),)), {}),
         ("swor", "rrs", (3, 2), {}),
         ("swor", "traversal", (3, 1), {"bonus": False}),
         ("topk", "rrs", (2, 2), {"bonus": False}),
         ("topk", "traversal", (((), ()), ((),), ()), {}),
         ("topk", "rrs", (5, 1), {})]  # more children than tokens (V = 4)

# Sample size: 20,000 trials of a V = 4, T = 10 sparse pair (40% of the draft's rows have
# fewer than 3 tokens).  Measured at 40,000 trials on this pair and seed, the correct rules gave
# |z| ≤ 2.1 and the controls z between 38 and 135 on both means (so z ≥ 26 at 20,000, against
# the 1e-6 threshold 4.9): every control is caught with overwhelming probability.
N_TRIALS = 20_000


def mean_checks(result, draft, target, algorithm):
    """z-tests of the means of target calls and rejections (exact means and variances)."""
    checks = []
    for samples, pmf, name in (
            (result.target_calls, target_calls_pmf(draft, target, algorithm), "target calls"),
            (result.rejections, rejection_pmf(draft, target, algorithm), "rejections")):
        mean, variance = pmf_moments(pmf)
        checks.append(mean_check(samples, mean, variance=variance, alpha=ALPHA, name=name))
    return checks


@pytest.mark.parametrize(("sampling", "verifier", "form", "options"), CASES,
                         ids=[f"{s}-{v}-{i}" for i, (s, v, _, _) in enumerate(CASES)])
def test_compiled_engine_matches_the_exact_laws(sampling, verifier, form, options):
    """Means of target calls, rejections and drafted tokens (E[drafted] from
    ``expected_draft_lengths``, the sample variance); the control fails both count means."""
    draft, target = sparse_pair(4, 10, rng=5)
    algorithm = tree(sampling, verifier, form, **options)
    result = simulate(draft, target, algorithm, n_trials=N_TRIALS, rng=1)
    _, drafted = walltime_components(draft, target, algorithm)
    checks = [*mean_checks(result, draft, target, algorithm),
              mean_check(result.drafted, float(drafted), alpha=ALPHA, name="drafted")]
    for check in checks:
        assert check.passed, str(check)
    wrong = simulate(draft, target, tree(sampling, verifier, form, mutant=True, **options),
                     n_trials=N_TRIALS, rng=1)
    controls = mean_checks(wrong, draft, target, algorithm)
    assert not any(check.passed for check in controls), [str(c) for c in controls]


def test_torch_engine_on_the_cpu_matches_the_exact_laws():
    """The torch engine's own run (its arrays equal the compiled engine's, tested bit for bit
    elsewhere): 5,000 trials, traversal with "swor" children; the control's z ≥ 12."""
    from gpu_kernels import simulate as simulate_torch

    draft, target = sparse_pair(4, 10, rng=5)
    algorithm = tree("swor", "traversal", (3, 1))
    result = simulate_torch(draft, target, algorithm, n_trials=5_000, rng=2, device="cpu")
    for check in mean_checks(result, draft, target, algorithm):
        assert check.passed, str(check)
    wrong = simulate_torch(draft, target, tree("swor", "traversal", (3, 1), mutant=True),
                           n_trials=5_000, rng=2, device="cpu")
    controls = mean_checks(wrong, draft, target, algorithm)
    assert not any(check.passed for check in controls), [str(c) for c in controls]


@pytest.mark.parametrize(("sampling", "verifier", "form"),
                         [("iid", "rrs", (2, 1)), ("swor", "traversal", (2, 1)),
                          ("topk", "rrs", (((), ()), ())), ("iid", "traversal", (2, 2))])
def test_emitted_sequences_follow_the_target(sampling, verifier, form):
    """Chi-square of whole sequences (V = 3, T = 4: 81 cells) against q: lossless for every
    sampling × verifier; both controls bias the sequence law and the same check at 50,000
    trials catches them."""
    draft, target = random_pair(3, 4, concentration=0.5, rng=31)
    law = sequence_law(target)
    result = simulate(draft, target, tree(sampling, verifier, form), n_trials=50_000, rng=5,
                      record_tokens=True)
    check = counts_check(sequence_counts(result.tokens, 3), law, alpha=ALPHA, name="sequences")
    assert check.passed, str(check)
    wrong = simulate(draft, target, tree(sampling, verifier, form, mutant=True),
                     n_trials=50_000, rng=5, record_tokens=True)
    control = counts_check(sequence_counts(wrong.tokens, 3), law, alpha=ALPHA)
    assert not control.passed, str(control)


def test_a_chain_with_rrs_has_the_law_of_a_window():
    """branching (1, 1, 1), "iid" children, rrs: the exact laws of ``Speculative(window=3)``
    (a reduction the theory proves exactly; here the kernel's rounds are checked against it),
    full pmfs of target calls and rejections.  A stale residual changes nothing on a chain
    (one child per node), so the control is another chain rule with another law: traversal,
    i.e. block verification (measured z = −18 and −24 on the two means at this size)."""
    draft, target = sparse_pair(4, 10, rng=5)
    window = Speculative(window=3)

    def checks(result):
        return [*count_checks(result.target_calls, target_calls_pmf(draft, target, window),
                              "target calls"),
                *count_checks(result.rejections, rejection_pmf(draft, target, window),
                              "rejections")]

    for check in checks(simulate(draft, target, TreeSpeculative((1, 1, 1)),
                                 n_trials=N_TRIALS, rng=3)):
        assert check.passed, str(check)
    block = simulate(draft, target, TreeSpeculative((1, 1, 1), verifier="traversal"),
                     n_trials=N_TRIALS, rng=3)
    assert not any(check.passed for check in checks(block))


def test_drafted_counts_of_wide_trees_do_not_overflow():
    """A round drafts up to N nodes, so a trial up to T · N (720 here), more than the
    T(T + 1)/2 = 55 of windows: the drafted counts get a wide enough dtype (exact, no
    statistics: "iid" rounds draft 72 nodes, 8 in a round started at T − 1).  The output
    arrays are allocated alike for both engines (``sim.engine.run._outputs``); the torch run
    spares this test a compilation of the kernel for int16 counts."""
    from gpu_kernels import simulate as simulate_torch
    from sim.engine import make_tables
    from sim.engine.run import _outputs

    draft, target = fig2_pair(horizon=10)
    algorithm = TreeSpeculative((8, 8))
    assert _outputs(make_tables(draft, target, algorithm), 1, False)[2].dtype == np.int16
    result = simulate_torch(draft, target, algorithm, n_trials=200, rng=0, device="cpu")
    calls = result.target_calls.astype(np.int64)
    assert result.drafted.dtype == np.int16 and (result.drafted > 127).all()
    assert ((result.drafted == 72 * calls) | (result.drafted == 72 * calls - 64)).all()
