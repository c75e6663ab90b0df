"""The torch engine: rung 3 (compiled CPU engine ≡ torch for the same seed, bit for bit) and
rung 4 (the torch engine's randomness ≈ closed forms, with negative controls; 1e-6 per check,
3 checks per case: one case on the CPU, four on CUDA).

Every test runs on the CPU (CI) and, marked ``gpu``, on CUDA where a device exists."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_kernels import philox_pair
from gpu_kernels import simulate as simulate_torch
from sim import simulate
from sim.engine.philox import uniforms
from sim.models import fig2_pair, hidden_context_pair, random_pair
from sim.stats import DEFAULT_ALPHA as ALPHA
from sim.stats import mean_check
from sim.strategies import broadcast_layouts, model_pairs
from tests.mutants import (
    CumulativeProductBlock,
    FirstFailureBlock,
    ForgetsResidualUpdate,
    InvertedRatio,
    LossyAdditiveAcceptance,
    SharedUniformBlock,
    StaleResidualTree,
    StaleTraversalTree,
    TypicalWithoutEntropy,
)
from tests.sim.test_statistical import pmf_moments
from theory import (
    AdaptiveSpeculative,
    Autoregressive,
    BatchSpeculative,
    BlockSpeculative,
    LossySpeculative,
    Speculative,
    ThresholdStopping,
    TreeSpeculative,
    TruncatedSpeculative,
    TypicalAcceptance,
    UnbiasedSpeculative,
    rejection_pmf,
    target_calls_pmf,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
ALGORITHMS = [Autoregressive(), Speculative(), Speculative(window=2),
              Speculative(window=3, bonus=False), UnbiasedSpeculative.scaled(0.7),
              BatchSpeculative(3), BatchSpeculative(3, "trie"), LossySpeculative(0.1),
              LossySpeculative(0.3, "target"), TypicalAcceptance(0.3, 0.6),
              TypicalAcceptance(0.09, 0.3, "opt"), TruncatedSpeculative(top_k=2, window=2),
              TruncatedSpeculative(top_p=0.7),
              *(BatchSpeculative(3, verifier)  # root laws on the token kernel
                for verifier in ("swor", "spectr", "greedy", "topk", "optimal"))]


@pytest.mark.parametrize("device", DEVICES)
@given(key=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
       first=st.integers(0, 2**62), position=st.integers(0, 2**32 - 1),
       pair=st.integers(0, 2**31))
def test_torch_philox_equals_the_readable_definition(device, key, first, position, pair):
    import torch

    trial = torch.arange(first, first + 17, dtype=torch.int64, device=device)
    even, odd = philox_pair(trial, key, position, pair)
    trials = np.arange(17, dtype=np.uint64) + np.uint64(first)
    np.testing.assert_array_equal(even.cpu().numpy(), uniforms(key, trials, position, 2 * pair))
    np.testing.assert_array_equal(odd.cpu().numpy(),
                                  uniforms(key, trials, position, 2 * pair + 1))


#: The cipher's backends on each device, and the split-product form (for devices whose int64
#: products would not wrap around), forced on the CPU.
BACKENDS = [("cpu", "tensor", True), ("cpu", "tensor", False), ("cpu", "compiled", True),
            pytest.param("cuda", "tensor", True, marks=pytest.mark.gpu),
            pytest.param("cuda", "fused", True, marks=pytest.mark.gpu)]


@pytest.mark.parametrize(("device", "backend", "wrapping"), BACKENDS)
@given(key=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
       first=st.integers(0, 2**62), position=st.integers(0, 2**32 - 1),
       pairs=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=12),
       per_trial=st.booleans())
def test_every_philox_backend_equals_the_readable_definition(device, backend, wrapping, key,
                                                            first, position, pairs,
                                                            per_trial):
    """philox_slots: several pairs in one evaluation (more than PAIRS_PER_PASS: several passes),
    a position per trial or one for all."""
    import torch

    from gpu_kernels import philox

    if backend == "fused" and per_trial:
        return  # the fused kernel takes one position (round-level runs use "tensor")
    trial = torch.arange(first, first + 17, dtype=torch.int64, device=device)
    trials = np.arange(17, dtype=np.uint64) + np.uint64(first)
    positions = (np.arange(17, dtype=np.uint64) * np.uint64(7919) + np.uint64(position)) \
        % np.uint64(2**32) if per_trial else np.uint64(position)
    counter = torch.as_tensor(positions.astype(np.int64), device=device) if per_trial \
        else position
    saved = dict(philox._WRAPPING)
    philox._WRAPPING[torch.device(device).type] = wrapping and philox._wraps(device)
    try:
        u = philox.philox_slots(trial, key, counter, pairs, backend, workspace={})
    finally:
        philox._WRAPPING.clear()
        philox._WRAPPING.update(saved)
    assert u.shape == (2 * len(pairs), 17)
    for k, pair in enumerate(pairs):
        for half in (0, 1):
            np.testing.assert_array_equal(u[2 * k + half].cpu().numpy(),
                                          uniforms(key, trials, positions, 2 * pair + half))


def test_int64_products_wrap_on_the_cpu():
    """The tensor backend's six-operation round relies on it (probed, not assumed)."""
    from gpu_kernels.philox import _wraps

    assert _wraps("cpu")


@pytest.mark.parametrize("algorithm", [Speculative(), Speculative(window=3),
                                       BatchSpeculative(5, "trie"), LossySpeculative(0.1),
                                       BlockSpeculative(3), TreeSpeculative((2, 2)),
                                       AdaptiveSpeculative(ThresholdStopping(0.5),
                                                           max_window=3)], ids=repr)
def test_the_compiled_philox_backend_gives_the_same_arrays(algorithm):
    """philox="compiled" (the compiled engine's cipher on the tensors' memory) changes no
    bit, for position-level and round-level families."""
    draft, target = fig2_pair(horizon=12)
    expected = simulate(draft, target, algorithm, n_trials=1500, rng=5, record_tokens=True)
    got = simulate_torch(draft, target, algorithm, n_trials=1500, rng=5, device="cpu",
                         record_tokens=True, philox="compiled", chunk_size=700)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.rejections, expected.rejections)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)
    np.testing.assert_array_equal(got.drafted, expected.drafted)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25)
@given(pair=model_pairs(max_vocab=4, max_horizon=4, max_contexts=4),
       algorithm=st.sampled_from(ALGORITHMS), seed=st.integers(0, 2**32 - 1),
       chunk_size=st.integers(1, 100))
def test_same_seed_same_results_as_the_cpu_engine(device, pair, algorithm, seed, chunk_size):
    """Exact agreement, including ties, zero-probability tokens, p = q and random prompts,
    for any chunk size."""
    draft, target = pair
    expected = simulate(draft, target, algorithm, n_trials=64, rng=seed, record_tokens=True)
    got = simulate_torch(draft, target, algorithm, n_trials=64, rng=seed, device=device,
                         chunk_size=chunk_size, record_tokens=True)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.rejections, expected.rejections)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)
    np.testing.assert_array_equal(got.drafted, expected.drafted)
    assert got.tokens.dtype == expected.tokens.dtype
    assert got.rejections.dtype == expected.rejections.dtype



@pytest.mark.parametrize("algorithm", ALGORITHMS[-4:], ids=repr)
def test_lossy_zoo_identical_on_fig2(algorithm):
    """Typical acceptance and truncated SD (bonus from q̂): torch == CPU engine, bit for bit
    (each algorithm once on a real pair, beside the hypothesis draws above)."""
    draft, target = fig2_pair()
    expected = simulate(draft, target, algorithm, n_trials=2000, rng=3, record_tokens=True)
    got = simulate_torch(draft, target, algorithm, n_trials=2000, rng=3, device="cpu",
                         record_tokens=True)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.rejections, expected.rejections)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)
    np.testing.assert_array_equal(got.drafted, expected.drafted)


BLOCK_ALGORITHMS = [BlockSpeculative(1), BlockSpeculative(2), BlockSpeculative(3, bonus=False),
                    BlockSpeculative(5), SharedUniformBlock(3), FirstFailureBlock(3),
                    CumulativeProductBlock(3)]


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=15)
@given(pair=model_pairs(max_vocab=4, max_horizon=5, max_contexts=4),
       algorithm=st.sampled_from(BLOCK_ALGORITHMS), seed=st.integers(0, 2**32 - 1),
       chunk_size=st.integers(1, 100))
def test_block_verification_same_seed_same_results(device, pair, algorithm, seed, chunk_size):
    """Block verification (rounds per trial, in-kernel residual sums) bit for bit, incl. the
    negative-control rules, horizons shorter than the window and random prompts."""
    draft, target = pair
    expected = simulate(draft, target, algorithm, n_trials=64, rng=seed, record_tokens=True)
    got = simulate_torch(draft, target, algorithm, n_trials=64, rng=seed, device=device,
                         chunk_size=chunk_size, record_tokens=True)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.rejections, expected.rejections)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)
    np.testing.assert_array_equal(got.drafted, expected.drafted)


TREE_ALGORITHMS = [
    TreeSpeculative((2, 2)), TreeSpeculative((2, 1), verifier="traversal"),
    TreeSpeculative((3,), sampling="swor"), TreeSpeculative((1, 1, 1), verifier="traversal"),
    TreeSpeculative(shape=((((),), ()), ((),)), sampling="swor", verifier="traversal"),
    TreeSpeculative((2, 2), sampling="topk", bonus=False),
    TreeSpeculative(shape=(((), ()), ((),), ()), sampling="topk", verifier="traversal"),
    TreeSpeculative((2, 2), sampling="swor", verifier="traversal", bonus=False),
    TreeSpeculative((5, 1), sampling="topk"),  # more children than tokens (V <= 4)
    StaleResidualTree((2, 2)), StaleResidualTree((3, 1), sampling="swor"),
    StaleTraversalTree((2, 1), sampling="topk", verifier="traversal")]


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25)
@given(pair=model_pairs(max_vocab=4, max_horizon=5, max_contexts=4),
       algorithm=st.sampled_from(TREE_ALGORITHMS), seed=st.integers(0, 2**32 - 1),
       chunk_size=st.integers(1, 100))
def test_token_trees_same_seed_same_results(device, pair, algorithm, seed, chunk_size):
    """Token trees (rounds per trial, tabulated and in-kernel residuals, eager and lazy
    drafting) bit for bit: every sampling × verifier, irregular shapes, horizon cuts, bonus
    off, the negative controls, hidden contexts, zeros and random prompts."""
    draft, target = pair
    expected = simulate(draft, target, algorithm, n_trials=64, rng=seed, record_tokens=True)
    got = simulate_torch(draft, target, algorithm, n_trials=64, rng=seed, device=device,
                         chunk_size=chunk_size, record_tokens=True)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.rejections, expected.rejections)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)
    np.testing.assert_array_equal(got.drafted, expected.drafted)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampling", ["iid", "swor", "topk"])
@pytest.mark.parametrize("verifier", ["rrs", "traversal"])
def test_token_trees_identical_on_fig2(device, sampling, verifier):
    """Each sampling × verifier once on a real pair (V = 7, random prompt), beside the
    hypothesis draws above."""
    draft, target = fig2_pair(horizon=12)
    algorithm = TreeSpeculative((2, 1), sampling=sampling, verifier=verifier)
    expected = simulate(draft, target, algorithm, n_trials=400, rng=4, record_tokens=True)
    got = simulate_torch(draft, target, algorithm, n_trials=400, rng=4, device=device,
                         record_tokens=True)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)
    np.testing.assert_array_equal(got.drafted, expected.drafted)


@pytest.mark.parametrize("device", DEVICES)
def test_same_results_on_a_large_vocabulary_and_many_candidates(device):
    draft, target = hidden_context_pair(32_000, 4, 8, rng=0)
    for algorithm in (Speculative(), BatchSpeculative(2, "trie"), BatchSpeculative(9, "trie")):
        a = simulate(draft, target, algorithm, n_trials=500, rng=1, record_tokens=True)
        b = simulate_torch(draft, target, algorithm, n_trials=500, rng=1, device=device,
                           record_tokens=True)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.target_calls, b.target_calls)


# On the CPU one case suffices: the torch engine's arrays are bit-identical to the compiled
# engine's (tested above), whose statistics rung 2 checks for every algorithm.  CUDA runs
# them all.
CHECKED = [pytest.param(Speculative(), InvertedRatio(), "cpu", id="Speculative-cpu")] + [
    pytest.param(algorithm, mutant, "cuda", marks=pytest.mark.gpu, id=f"{label}-cuda")
    for label, algorithm, mutant in (
        ("Speculative", Speculative(), InvertedRatio()),
        ("window3", Speculative(window=3), InvertedRatio(window=3)),
        ("trie4", BatchSpeculative(4, "trie"), ForgetsResidualUpdate(4, "trie")),
        ("lossy", LossySpeculative(0.1), LossyAdditiveAcceptance(0.1)),
        ("typical", TypicalAcceptance(), TypicalWithoutEntropy()))]


@pytest.mark.parametrize(("algorithm", "mutant", "device"), CHECKED)
def test_torch_randomness_matches_the_exact_laws(device, algorithm, mutant):
    draft, target = fig2_pair()
    # CPU: 20,000 trials (the torch engine is slower there); the control min(1, p/q) moves the
    # mean by ~200 standard errors even at that size.  CUDA: 100,000.
    n_trials = 20_000 if device == "cpu" else 100_000
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
    assert a.tokens.shape == (5000, 10) and a.rejections.dtype == np.int8


def test_device_validation():
    draft, target = fig2_pair(horizon=3)
    with pytest.raises(ValueError, match="device must name a torch device"):
        simulate_torch(draft, target, Speculative(), n_trials=5, device="abacus")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        simulate_torch(draft, target, Speculative(), n_trials=5, device="cpu", chunk_size=0)
    with pytest.raises(ValueError, match="n_trials must be >= 1"):
        simulate_torch(draft, target, Speculative(), n_trials=0, device="cpu")
    with pytest.raises(ValueError, match="philox must be one of"):
        simulate_torch(draft, target, Speculative(), n_trials=5, device="cpu", philox="x")
    with pytest.raises(ValueError, match="philox='fused' needs a CUDA device"):
        simulate_torch(draft, target, Speculative(), n_trials=5, device="cpu",
                       philox="fused")
    if torch_cuda_available():
        with pytest.raises(ValueError, match="philox='compiled' needs the CPU device"):
            simulate_torch(draft, target, Speculative(), n_trials=5, device="cuda",
                           philox="compiled")


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


@settings(max_examples=20)
@given(data=st.data(), pair=model_pairs(max_vocab=4, max_horizon=4, max_contexts=4),
       algorithm=st.sampled_from(ALGORITHMS))
def test_broadcast_layouts_on_the_torch_engine(data, pair, algorithm):
    draft, target = (data.draw(broadcast_layouts(model)) for model in pair)
    seed = data.draw(st.integers(0, 2**32 - 1))
    expected = simulate(draft, target, algorithm, n_trials=50, rng=seed, record_tokens=True)
    got = simulate_torch(draft, target, algorithm, n_trials=50, rng=seed, device="cpu",
                         record_tokens=True)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)
    np.testing.assert_array_equal(got.drafted, expected.drafted)


@settings(max_examples=20)
@given(data=st.data(), pair=model_pairs(max_vocab=3, max_horizon=5, max_contexts=3))
def test_window_policies_on_the_torch_engine(data, pair):
    from theory import WindowPolicy

    draft, target = pair
    shape = (target.horizon, target.n_contexts)
    table = data.draw(st.lists(st.integers(0, 3), min_size=shape[0] * shape[1],
                               max_size=shape[0] * shape[1]))
    policy = WindowPolicy(np.reshape(table, shape))
    seed = data.draw(st.integers(0, 2**32 - 1))
    expected = simulate(draft, target, policy, n_trials=50, rng=seed, record_tokens=True)
    got = simulate_torch(draft, target, policy, n_trials=50, rng=seed, device="cpu",
                         record_tokens=True)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.rejections, expected.rejections)
    np.testing.assert_array_equal(got.target_calls, expected.target_calls)
    np.testing.assert_array_equal(got.drafted, expected.drafted)


def test_the_torch_engine_refuses_what_would_not_fit():
    draft, target = fig2_pair(horizon=5)
    with pytest.raises(MemoryError, match="results of 100,000,000,000 trials"):
        simulate_torch(draft, target, Speculative(), n_trials=10**11, rng=0, device="cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("verifier", ["swor", "spectr", "greedy", "topk", "optimal"])
def test_multidraft_root_verifiers_match_the_cpu_engine(device, verifier):
    """Every multi-draft root verifier, M = 4 on Fig. 2 (and its known-wrong control too)."""
    from tests.sim.test_multidraft_statistical import CONTROLS

    draft, target = fig2_pair(horizon=20)
    for algorithm in (BatchSpeculative(4, verifier), CONTROLS[verifier](4)):
        a = simulate(draft, target, algorithm, n_trials=3000, rng=7, record_tokens=True)
        b = simulate_torch(draft, target, algorithm, n_trials=3000, rng=7, device=device,
                           chunk_size=1000, record_tokens=True)
        np.testing.assert_array_equal(b.tokens, a.tokens)
        np.testing.assert_array_equal(b.rejections, a.rejections)
        np.testing.assert_array_equal(b.target_calls, a.target_calls)


def _operation_cases():
    """(label, algorithm) over every family and the sizes its operation count grows with."""
    # (the lossy rules, Autoregressive and the root verifiers run the token-wise step of
    # Speculative(): the same operations)
    cases = [Speculative(), Speculative(window=4),
             AdaptiveSpeculative(ThresholdStopping(0.5), max_window=4),
             BlockSpeculative(1), BlockSpeculative(6)]
    cases += [BatchSpeculative(m, verifier) for m in (2, 9) for verifier in ("paper", "trie")]
    cases += [TreeSpeculative(shape, sampling=sampling, verifier=verifier)
              for shape, sampling, verifier in (((2, 2), "iid", "rrs"), ((3, 2), "swor", "rrs"),
                                                ((2, 2), "topk", "rrs"), ((2,), "iid", "traversal"),
                                                ((2,), "swor", "traversal"),
                                                ((1, 1), "topk", "traversal"))]
    return cases


def test_the_work_model_covers_the_tensor_operations_of_every_family():
    """``tensor_calls`` (what the work model charges a torch chunk) is an upper bound on the
    operations the engine dispatches, counted, and not a wild one (within 20x), on a small and
    a larger vocabulary, for every kind of step and the sizes its count grows with.  Control:
    the old token-wise estimate (60 per position) is exceeded by the count."""
    from gpu_kernels.engine import _RUNS, count_operations
    from sim.engine.core import family_tables

    pairs = [fig2_pair(horizon=4), random_pair(40, 3, rng=0)]
    for draft, target in pairs:
        for algorithm in _operation_cases():
            compute, views = count_operations(draft, target, algorithm, n_trials=300)
            estimate = _RUNS[family_tables(algorithm)].tensor_calls(algorithm, target)
            assert compute + views <= estimate < 20 * (compute + views), (algorithm, target)
    compute, views = count_operations(*pairs[0], Speculative(), n_trials=300)
    assert compute + views > 60 * pairs[0][1].horizon
