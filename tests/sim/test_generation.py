"""Whole-stack conformance (sim.conformance.check_generation) driven by the package's engines:
the tree of prefixes is the exact law, a correct stack passes, a lossy one fails where it
deviates, the false-positive rate is calibrated, bad stacks get clear errors.

False-positive budget of this module: each `check_generation` run of a correct stack is one
level-1e-6 check per prompt (Bonferroni inside the report); the calibration test's two
binomial assertions at 1e-6 are counted in tests/conftest.py.
"""

import itertools

import numpy as np
import pytest
from scipy import stats

from sim.conformance import (
    VerifierError,
    check_generation,
    conformance_suite,
    engine_generator,
    prefix_model,
)
from sim.conformance.stack_power import detection_samples, stack_law
from theory import LossySpeculative, MarkovLM, Speculative, output_model

ALPHA = 1e-6
PAIR = conformance_suite()[0]  # non-stationary first order, V = 4
SECOND = conformance_suite()[2]  # second order (hidden contexts)


def _chain_law(model: MarkovLM, start: int):
    """The MarkovLM's next-token law after a prefix, as a callable target (prompt = [start])."""
    probs = np.asarray(model.probs, dtype=np.float64)

    def law(prefix):
        context = prefix[0]
        for token in prefix[1:]:
            context = model.next_context[context, token]
        return probs[len(prefix) - 1, context]

    return law


# ------------------------------------------------------------------ exact law
@pytest.mark.parametrize("pair", [PAIR, SECOND], ids=["first_order", "second_order"])
def test_prefix_tree_is_the_exact_law_of_whole_generations(pair):
    """Every sequence's probability under the tree equals the chain's, by enumeration."""
    length = 3
    law = prefix_model(_chain_law(pair.target, 1), [1], length)
    chain = MarkovLM(pair.target.probs[:length], pair.target.next_context, start=1)
    sequences = np.array(list(itertools.product(range(pair.target.vocab_size), repeat=length)))
    tree = np.asarray(law.model.sequence_probability(sequences), dtype=np.float64)
    exact = np.asarray(chain.sequence_probability(sequences), dtype=np.float64)
    np.testing.assert_allclose(tree, exact, rtol=1e-12, atol=1e-15)
    assert abs(tree.sum() - 1) < 1e-12


def test_prefix_tree_drops_zero_probability_branches_and_labels_prefixes():
    rows = {(): [0.5, 0.5, 0.0], (0,): [0.0, 1.0, 0.0], (1,): [0.2, 0.3, 0.5]}
    law = prefix_model(lambda prefix: rows[tuple(prefix[1:])], [9], 2)
    assert law.model.n_contexts == 4  # root, (0,), (1,), sink
    assert [law.label(s) for s in range(3)] == ["after the prompt", "after (0,)", "after (1,)"]
    with pytest.raises(ValueError, match="max_prefixes"):
        prefix_model(lambda prefix: rows[tuple(prefix[1:])], [9], 2, max_prefixes=2)
    with pytest.raises(ValueError, match="not a probability law"):
        prefix_model(lambda prefix: [0.5, 0.6, 0.0], [9], 2)


# ------------------------------------------------------------------ engines through generate
@pytest.mark.parametrize("pair", [PAIR, SECOND], ids=["first_order", "second_order"])
def test_the_package_engines_pass_as_a_stack(pair):
    """Speculative decoding through the generate convention follows the target (MarkovLM and
    callable targets alike); run sized to detect a per-position TV of 0.1."""
    generate = engine_generator(pair.draft, pair.target, Speculative(window=2), length=3)
    report = check_generation(generate, pair.target, prompts=[0, 1], length=3, n_samples=2000,
                              rng=3, min_tv=0.1, timeout=None)
    assert report.verdict == "passed", report
    callable_report = check_generation(engine_generator(pair.draft, pair.target, length=3),
                                       _chain_law(pair.target, 1), prompts=[[1]], length=3,
                                       n_samples=2000, rng=4, min_tv=0.1, timeout=None)
    assert callable_report.verdict == "passed", callable_report


def test_a_lossy_stack_fails_located_with_its_mixture_named():
    """Negative control of the same check and size: lossy decoding (ε = 0.3) emits the output
    chain of theory.exact.output_model, whose exact detection size is far below 2,000."""
    algorithm = LossySpeculative(0.3, rejection="target")
    started = [MarkovLM(m.probs[:3], start=1) for m in (PAIR.draft, PAIR.target)]
    lossy = output_model(*started, algorithm)
    vocab = PAIR.target.vocab_size
    sequences = np.array(list(itertools.product(range(vocab), repeat=3)))
    joint = np.asarray(lossy.sequence_probability(sequences), dtype=np.float64)
    joint = joint.reshape(vocab, vocab, vocab)
    law = prefix_model(_chain_law(PAIR.target, 1), [1], 3)

    def row(prefix):  # the lossy stack's next-token law after a prefix, from its joint law
        if prefix is None:
            return np.full(vocab, 1 / vocab)
        marginal = joint.sum(axis=tuple(range(len(prefix) + 1, 3)))[tuple(prefix)]
        return marginal / marginal.sum()

    rows = np.vstack([row(prefix) for prefix in law.labels])
    assert detection_samples([law], [stack_law(law, rows)]) < 200
    generate = engine_generator(PAIR.draft, PAIR.target, algorithm, length=3)
    report = check_generation(generate, _chain_law(PAIR.target, 1), prompts=[[1]], length=3,
                              n_samples=2000, rng=3, min_tv=0.1,
                              draft=_chain_law(PAIR.draft, 1), timeout=None)
    assert report.verdict == "failed"
    assert report.deviations and report.where[0].startswith("after")
    assert "w·q + (1 − w)·p" in str(report)


def test_inconclusive_runs_state_the_generations_needed():
    generate = engine_generator(PAIR.draft, PAIR.target, length=3)
    small = check_generation(generate, PAIR.target, prompts=[0], length=3, n_samples=200, rng=0,
                             timeout=None)
    assert small.verdict == "inconclusive" and small.samples_needed > 200
    big = check_generation(generate, PAIR.target, prompts=[0], length=3,
                           n_samples=small.samples_needed, rng=1, timeout=None)
    assert big.detectable_tv <= 0.05 and big.verdict == "passed", big


# ------------------------------------------------------------------ calibration
def test_check_generation_false_positive_rate_is_calibrated():
    """Over 100 seeds of the engine stack (3 prompts each), a prompt's χ² p-value is below
    0.05 about 5% of the time (300 tests: 1e-6 binomial bounds ≈ 1.6%–10.7%), and the
    report's Bonferroni level-0.05 verdict fails at most 5% of the runs.  (min_tv = 1: the
    verdict's power line is not what is calibrated here.)"""
    seeds, level, prompts = 100, 0.05, [0, 1, 2]
    prompt_failures = report_failures = 0
    for seed in range(seeds):
        generate = engine_generator(PAIR.draft, PAIR.target, length=3, block=300)
        report = check_generation(generate, PAIR.target, prompts=prompts, length=3,
                                  n_samples=300, rng=seed, alpha=level, min_tv=1.0,
                                  timeout=None)
        prompt_failures += sum(check.p_value < level for check in report.checks)
        report_failures += report.verdict == "failed"
    assert stats.binomtest(prompt_failures, seeds * len(prompts), level).pvalue >= ALPHA, \
        prompt_failures
    assert stats.binomtest(report_failures, seeds, level,
                           alternative="greater").pvalue >= ALPHA, report_failures


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("generate, message", [
    (lambda prompt, rng: np.zeros(2, dtype=np.int64), "expected 3 integer tokens"),
    (lambda prompt, rng: np.zeros(3), "expected 3 integer tokens"),
    (lambda prompt, rng: np.full(3, 9), "outside"),
    (lambda prompt, rng: 1 / 0, "ZeroDivisionError"),
])
def test_bad_stacks_get_one_clear_error(generate, message):
    with pytest.raises(VerifierError, match=message):
        check_generation(generate, PAIR.target, prompts=[0], length=3, n_samples=5, rng=0)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"prompts": [7]}, ValueError, "start context"),
    ({"prompts": []}, ValueError, "at least one"),
    ({"length": 99}, ValueError, "horizon"),
    ({"n_samples": 0}, ValueError, "n_samples"),
    ({"rng": True}, TypeError, "rng must be"),
    ({"draft": lambda prefix: None}, TypeError, "same kind"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    options = {"prompts": [0], "length": 3, "n_samples": 5, "rng": 0, **kwargs}
    with pytest.raises(error, match=message):
        check_generation(lambda prompt, rng: np.zeros(3, dtype=np.int64), PAIR.target,
                         **options)
