"""The torch engine: rung 3 (numpy ≡ torch on the same uniforms) and rung 4 (torch's own
randomness ≈ closed forms, with negative controls; 1e-6 per check, 8 checks per device).

Every test runs on the CPU (CI) and, marked ``gpu``, on CUDA where a device exists."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_kernels import run_uniforms as torch_run_uniforms
from gpu_kernels import simulate as simulate_torch
from sim.engine import run_uniforms, uniforms_per_position
from sim.models import fig2_pair, hidden_context_pair
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import mean_check
from sim.strategies import model_pairs
from tests.mutants import ForgetsResidualUpdate, InvertedRatio, LossyAdditiveAcceptance
from tests.sim.test_statistical import pmf_moments
from theory import (
    Autoregressive,
    BatchSpeculative,
    LossySpeculative,
    Speculative,
    UnbiasedSpeculative,
    rejection_pmf,
    target_calls_pmf,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
ALGORITHMS = [Autoregressive(), Speculative(), Speculative(window=2),
              Speculative(window=3, bonus=False), UnbiasedSpeculative.scaled(0.7),
              BatchSpeculative(3), BatchSpeculative(3, "trie"), LossySpeculative(0.1),
              LossySpeculative(0.3, "target")]


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40)
@given(pair=model_pairs(max_vocab=4, max_horizon=4), algorithm=st.sampled_from(ALGORITHMS),
       seed=st.integers(0, 2**32 - 1))
def test_same_uniforms_same_results(device, pair, algorithm, seed):
    """Exact agreement, including ties, zero-probability tokens and p = q."""
    draft, target = pair
    rng = np.random.default_rng(seed)
    n = 64
    uniforms = rng.random((target.horizon, uniforms_per_position(algorithm), n))
    start = rng.random(n)
    expected = run_uniforms(draft, target, algorithm, uniforms, start_uniforms=start,
                            record_tokens=True)
    got = torch_run_uniforms(draft, target, algorithm, uniforms, start_uniforms=start,
                             device=device, record_tokens=True)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.rejections, expected.rejections)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)


@pytest.mark.parametrize("device", DEVICES)
def test_same_uniforms_on_a_large_vocabulary(device):
    draft, target = hidden_context_pair(32_000, 4, 8, rng=0)
    rng = np.random.default_rng(1)
    for algorithm in (Speculative(), BatchSpeculative(2, "trie")):
        uniforms = rng.random((8, uniforms_per_position(algorithm), 2000))
        a = run_uniforms(draft, target, algorithm, uniforms, record_tokens=True)
        b = torch_run_uniforms(draft, target, algorithm, uniforms, device=device,
                               record_tokens=True)
        np.testing.assert_array_equal(a.tokens, b.tokens)


CHECKED = [(Speculative(), InvertedRatio()),
           (Speculative(window=3), InvertedRatio(window=3)),
           (BatchSpeculative(4, "trie"), ForgetsResidualUpdate(4, "trie")),
           (LossySpeculative(0.1), LossyAdditiveAcceptance(0.1))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("algorithm", "mutant"), CHECKED, ids=lambda a: repr(a)[:40])
def test_torch_randomness_matches_the_exact_laws(device, algorithm, mutant):
    draft, target = fig2_pair()
    n_trials = 100_000
    rejections = pmf_moments(rejection_pmf(draft, target, algorithm))
    calls = pmf_moments(target_calls_pmf(draft, target, algorithm))
    result = simulate_torch(draft, target, algorithm, n_trials=n_trials, rng=11, device=device)
    for samples, (mean, variance) in ((result.rejections, rejections),
                                      (result.target_calls, calls)):
        check = mean_check(samples, mean, variance=variance, alpha=ALPHA)
        assert check.passed, str(check)
    wrong = simulate_torch(draft, target, mutant, n_trials=n_trials, rng=11, device=device)
    control = mean_check(wrong.rejections, rejections[0], variance=rejections[1], alpha=ALPHA)
    assert not control.passed, str(control)


@pytest.mark.parametrize("device", DEVICES)
def test_reproducible_and_chunked(device):
    draft, target = fig2_pair(horizon=10)
    a = simulate_torch(draft, target, Speculative(), n_trials=5000, rng=3, device=device,
                       chunk_size=1000, record_tokens=True)
    b = simulate_torch(draft, target, Speculative(), n_trials=5000, rng=3, device=device,
                       chunk_size=1000, record_tokens=True)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.tokens.shape == (5000, 10) and a.rejections.dtype == np.int64


def test_device_validation():
    draft, target = fig2_pair(horizon=3)
    with pytest.raises(ValueError, match="device must name a torch device"):
        simulate_torch(draft, target, Speculative(), n_trials=5, device="abacus")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        simulate_torch(draft, target, Speculative(), n_trials=5, device="cpu", chunk_size=0)
    with pytest.raises(ValueError, match="n_trials must be >= 1"):
        simulate_torch(draft, target, Speculative(), n_trials=0, device="cpu")


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, theory, sim, gpu_kernels; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.slow
def test_check_script_runs_on_this_machine(capsys):
    from gpu_kernels.check import main

    assert main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "DIFFERENT" not in out and "MISSED" not in out
