"""Robustness: every bad input gets a precise error, numerical edge cases are defined,
results are reproducible, and an interrupted ``specdec reproduce`` resumes."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpu_kernels import simulate as simulate_torch
from sim import simulate, simulate_counts
from sim.cli import main
from sim.engine.tables import build_alias, implied_law
from sim.models import fig2_pair, random_pair
from sim.reference import enumerate_outcomes, reference_simulate
from sim.strategies import markov_lms, probability_vectors
from theory import (
    BatchSpeculative,
    LossySpeculative,
    MarkovLM,
    Speculative,
    UnbiasedSpeculative,
    batch_improvement,
    batch_rejection_limit,
    expected_rejections,
    expected_target_calls,
    optimal_multidraft_acceptance,
    optimal_rejection_distribution,
    output_model,
    pareto_front,
    rejection_law,
    rejection_mass,
    rejection_pmf,
    theorem1_rejections,
    tv_distance,
    tv_loss,
)
from theory.onestep import acceptance_probability, residual_chain, residual_distribution

BAD_VALUES = [np.nan, np.inf, -np.inf, -0.25, 1.75]


# ---------------------------------------------------------------- fuzzing invalid arrays
@given(markov_lms(), st.sampled_from(BAD_VALUES), st.data())
def test_model_with_any_bad_entry_is_rejected_naming_it(lm, bad, data):
    probs = np.array(lm.probs, dtype=float)
    index = tuple(data.draw(st.integers(0, n - 1)) for n in probs.shape)
    probs[index] = bad
    with pytest.raises(ValueError, match=r"probs\[\d+, \d+(, \d+)?\]"):
        MarkovLM(probs, None if lm.is_first_order else lm.next_context, lm.start)


ONE_POSITION = [
    ("tv_distance", lambda p, q: tv_distance(p, q)),
    ("acceptance_probability", lambda p, q: acceptance_probability(p, q)),
    ("residual_distribution", lambda p, q: residual_distribution(p, q)),
    ("residual_chain", lambda p, q: residual_chain(p, q, 2)),
    ("batch_improvement", lambda p, q: batch_improvement(p, q, 2)),
    ("optimal_multidraft_acceptance", lambda p, q: optimal_multidraft_acceptance(p, q, 2)),
    ("tv_loss", lambda p, q: tv_loss(p, q, np.ones_like(np.asarray(p, float)))),
    ("optimal_rejection_distribution",
     lambda p, q: optimal_rejection_distribution(p, q, np.ones_like(np.asarray(p, float)))),
    ("pareto_front", lambda p, q: pareto_front(p, q, 0.1)),
]


@pytest.mark.parametrize(("name", "function"), ONE_POSITION, ids=[n for n, _ in ONE_POSITION])
@given(pair=st.integers(2, 5).flatmap(lambda v: st.tuples(probability_vectors(v),
                                                           probability_vectors(v))),
       bad=st.sampled_from(BAD_VALUES), which=st.sampled_from(["p", "q"]), data=st.data())
def test_one_position_functions_reject_bad_vectors(name, function, pair, bad, which, data):
    p, q = (np.array(v) for v in pair)
    target = p if which == "p" else q
    target[data.draw(st.integers(0, target.size - 1))] = bad
    with pytest.raises(ValueError, match=rf"{which}(\[\d+\])? "):
        function(p, q)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: tv_distance([0.5, 0.5], [1.0]), ValueError, "share the vocabulary axis"),
    (lambda: tv_distance([[0.5, 0.5]] * 2, [[0.5, 0.5]] * 3), ValueError, "broadcast"),
    (lambda: tv_distance("ab", "cd"), TypeError, "p must hold real numbers"),
    (lambda: tv_distance([], []), ValueError, "non-empty vocabulary"),
    (lambda: tv_loss([0.5, 0.5], [0.9, 0.1], [1.2, 0.5]), ValueError,
     r"accept\[0\] = 1.2 is not in \[0, 1\]"),
    (lambda: pareto_front([0.5, 0.5], [0.9, 0.1], -0.1), ValueError,
     "rejection_probability = -0.1 is not in"),
    (lambda: optimal_multidraft_acceptance([0.5, 0.5], [0.9, 0.1], 0), ValueError,
     "n_drafts must be an integer >= 1; got 0"),
    (lambda: optimal_multidraft_acceptance([0.5, 0.5], [0.9, 0.1], 2.5), ValueError,
     "n_drafts must be an integer >= 1; got 2.5"),
    (lambda: residual_chain([0.5, 0.5], [0.9, 0.1], True), ValueError, "n_drafts"),
    (lambda: Speculative(window=0), ValueError, "window must be >= 1 or None; got 0"),
    (lambda: Speculative(window=2.0), TypeError, "window must be a positive integer"),
    (lambda: Speculative(bonus="yes"), TypeError, "bonus must be a bool"),
    (lambda: BatchSpeculative(0), ValueError, "n_drafts must be >= 1; got 0"),
    (lambda: BatchSpeculative(1.5), TypeError, "n_drafts must be a positive integer"),
    (lambda: LossySpeculative(-0.5), ValueError, "eps must be a real number >= 0"),
    (lambda: LossySpeculative("0.1"), ValueError, "eps must be a real number >= 0"),
    (lambda: UnbiasedSpeculative.scaled(1.5), ValueError, "factor must be a real number in"),
    (lambda: batch_rejection_limit(*fig2_pair(3), "tree"), ValueError, "verifier must be"),
    (lambda: expected_rejections(*fig2_pair(3), "speculative"), TypeError,
     "algorithm must be a theory Algorithm"),
    (lambda: simulate(*fig2_pair(3), Speculative(), n_trials=-1), ValueError,
     "n_trials must be >= 1; got -1"),
    (lambda: simulate(*fig2_pair(3), Speculative(), n_trials=10.0), TypeError,
     "n_trials must be an integer"),
    (lambda: simulate_counts(*fig2_pair(3), Speculative(), n_trials=5, chunk_size=-2),
     ValueError, "chunk_size must be a positive integer"),
    (lambda: simulate(fig2_pair(3)[0], fig2_pair(4)[1], Speculative(), n_trials=5),
     ValueError, "same horizon T; got draft 3, target 4"),
    (lambda: simulate_torch(*fig2_pair(3), Speculative(), n_trials=5, device="cuda:99"),
     ValueError, "device"),
    (lambda: MarkovLM(np.full((2, 2, 2), 0.5), start=[0.5, np.nan]), ValueError,
     r"start\[1\] is nan"),
    (lambda: tv_loss([0.5, 0.5], [0.9, 0.1], None), TypeError,
     "accept must be acceptance probabilities"),
    (lambda: optimal_rejection_distribution([0.5, 0.5], [0.9, 0.1], None), TypeError,
     "accept must be acceptance probabilities"),
    (lambda: rejection_law([0.5, 0.5], [0.9, 0.1], [1, 0.5, 0.2]), ValueError,
     r"accept must broadcast with p; got shape \(3,\) for p of shape \(2,\)"),
    (lambda: rejection_mass([0.5, 0.5], [1, 0.5, 0.2]), ValueError,
     "accept must broadcast with p"),
    (lambda: MarkovLM.homogeneous([[0.5, 0.5]], 10**18, next_context=[[0, 0]]), ValueError,
     "horizon = 1000000000000000000 is too large"),
    (lambda: output_model(*fig2_pair(3), "speculative"), TypeError,
     "algorithm must be a theory Algorithm"),
    (lambda: simulate(*fig2_pair(3), Speculative(), n_trials=5, rng=True), TypeError,
     "rng must be a seed"),
    (lambda: simulate(*fig2_pair(3), Speculative(), n_trials=5, rng=-1), ValueError,
     "rng must be a seed >= 0"),
])
def test_precise_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(("argv", "message"), [
    (["simulate", "--trials", "abc"], "argument --trials: 'abc' is not a number"),
    (["simulate", "--model", "gpt"], "invalid choice: 'gpt'"),
    (["simulate", "--algorithm", "batch", "--drafts", "0"],
     "argument --drafts: 0: the number of drafts must be >= 1"),
    (["simulate", "--model", "bernoulli", "--u", "1.5"], "argument --u: 1.5: u must lie in [0, 1]"),
    (["simulate", "--model", "random", "--vocab", "0"],
     "argument --vocab: 0: the vocabulary size must be >= 1"),
    (["reproduce", "--out", "/proc/specdec-cannot-write-here", "--only", "gap",
      "--no-progress"], "error"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- numerical edge cases
def tiny_pair():
    """Rows with probabilities of 1e-300 and a denormal 5e-324."""
    draft = np.array([[0.5, 0.5 - 1e-300, 1e-300], [1.0 - 2e-300, 1e-300, 1e-300],
                      [5e-324, 0.5, 0.5]])
    target = np.array([[1e-300, 0.5, 0.5 - 1e-300], [0.5, 0.5, 0.0], [0.3, 0.7, 5e-324]])
    return (MarkovLM(np.stack([draft] * 4), start=0), MarkovLM(np.stack([target] * 4), start=0))


def test_tiny_and_denormal_probabilities():
    draft, target = tiny_pair()
    for algorithm in (Speculative(), Speculative(window=2), BatchSpeculative(3, "trie"),
                      LossySpeculative(0.05)):
        pmf = rejection_pmf(draft, target, algorithm)
        assert np.isfinite(pmf).all() and abs(pmf.sum() - 1) < 1e-12
        assert np.isfinite(expected_target_calls(draft, target, algorithm))
        law = enumerate_outcomes(draft, target, algorithm)
        np.testing.assert_allclose(law.rejection_pmf().astype(float), pmf, atol=1e-12)
        result = simulate(draft, target, algorithm, n_trials=2000, rng=0, record_tokens=True)
        assert (output_model(draft, target, algorithm).sequence_probability(result.tokens)
                > 0).all()
    assert expected_rejections(draft, target) == pytest.approx(
        theorem1_rejections(draft, target), abs=1e-15)
    table = build_alias(np.array(draft.probs[0]))
    np.testing.assert_allclose(implied_law(table), draft.probs[0], atol=1e-15)


def test_rows_within_tolerance_are_used_as_given():
    row = np.array([0.6, 0.4 + 4e-10])  # sums to 1 + 4e-10: accepted, not renormalized
    lm = MarkovLM(np.stack([[row, row]] * 3))
    assert lm.probs[0, 0, 1] == row[1]
    assert np.isfinite(expected_rejections(lm, lm)) and expected_rejections(lm, lm) == 0
    with pytest.raises(ValueError, match="sums to"):
        MarkovLM(np.stack([[row * (1 + 1e-8), row]] * 3))


# ---------------------------------------------------------------- reproducibility
SCRIPT = """
import hashlib, sys
from sim import simulate
from sim.models import fig2_pair
from theory import BatchSpeculative
r = simulate(*fig2_pair(), BatchSpeculative(3, "trie"), n_trials=5000, rng=123,
             record_tokens=True)
print(hashlib.sha256(r.tokens.tobytes() + r.rejections.tobytes()).hexdigest())
"""


def test_same_seed_same_bits_across_processes():
    r = simulate(*fig2_pair(), BatchSpeculative(3, "trie"), n_trials=5000, rng=123,
                 record_tokens=True)
    here = hashlib.sha256(r.tokens.tobytes() + r.rejections.tobytes()).hexdigest()
    there = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert here == there


def test_reference_sampler_is_reproducible():
    draft, target = random_pair(3, 4, rng=1)
    a = reference_simulate(draft, target, Speculative(), n_trials=50, rng=9, record_tokens=True)
    b = reference_simulate(draft, target, Speculative(), n_trials=50, rng=9, record_tokens=True)
    np.testing.assert_array_equal(a.tokens, b.tokens)


# ---------------------------------------------------------------- interrupted runs resume
def _strip(path):
    record = json.loads(path.read_text())
    record.pop("seconds")
    return record


@pytest.mark.slow
def test_interrupted_reproduce_resumes_with_identical_results(tmp_path):
    command = [sys.executable, "-m", "sim.cli", "reproduce", "--quick", "--no-progress",
               "--only", "fig2a", "fig2b", "fig3", "pmf", "walltime"]
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*command, "--out", str(interrupted)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (interrupted / "data" / "fig2b.json").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {p.name for p in (interrupted / "data").glob("*.json")}
    assert "fig2a.json" in done_before and "walltime.json" not in done_before
    stamps = {name: (interrupted / "data" / name).stat().st_mtime_ns for name in done_before}

    assert subprocess.run([*command, "--out", str(interrupted)], check=False,
                          capture_output=True).returncode == 0
    for name, stamp in stamps.items():  # completed experiments were not run again
        assert (interrupted / "data" / name).stat().st_mtime_ns == stamp
    fresh = tmp_path / "fresh"
    assert subprocess.run([*command, "--out", str(fresh)], check=False,
                          capture_output=True).returncode == 0
    for path in sorted((fresh / "data").glob("*.json")):
        assert _strip(interrupted / "data" / path.name) == _strip(path)
    resumed, recomputed = ((folder / "report.md").read_text() for folder in (interrupted, fresh))
    reused = [name for name in command[command.index("--only") + 1:]
              if f"{name}.json" in done_before]
    assert "Reused from a previous run in this folder (same seed and sizes, not recomputed): " \
           f"{', '.join(reused)}." in resumed  # the resumed report says what it reused
    assert resumed.splitlines()[2] == recomputed.splitlines()[2]  # the same verdicts
    assert resumed.split("## Figures")[1] == recomputed.split("## Figures")[1]  # and checks


def test_kl_with_denormal_reference_probabilities_is_finite():
    from theory.lossy import sequence_kl

    model = MarkovLM([[[0.5, 0.5]]], next_context=[[0, 0]])
    reference = MarkovLM([[[1 - 5e-324, 5e-324]]], next_context=[[0, 0]])
    # 0.5 log(0.5 / 1) + 0.5 log(0.5 / 5e-324); the ratio alone would overflow to inf
    expected = 0.5 * np.log(0.5) + 0.5 * (np.log(0.5) - np.log(5e-324))
    assert sequence_kl(model, reference) == pytest.approx(expected, rel=1e-12)
