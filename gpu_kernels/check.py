"""Device checks of the torch engine: ``python -m gpu_kernels.check [--quick]``.

Prints the device, then

1. exact agreement — numpy and torch engines fed the same uniforms return identical tokens,
   rejections and target calls, for every algorithm, on the Fig. 2 setting and a
   V = 32,000 hidden-context model;
2. statistical checks — the torch engine with its own generator against the exact laws
   (z-tests at level 1e-6), each with a negative control that must fail;
3. throughput — simulated positions per second of one chunk (tables built beforehand) for
   numpy (2^15 trials), torch on the CPU (2^15) and torch on CUDA (2^22, when present).

Exits non-zero if any check fails.  Sized to finish in a few minutes on one GPU; ``--quick``
shrinks everything for a CPU-only machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from gpu_kernels.engine import default_device, run_uniforms, simulate
from sim.engine import make_kernel, uniforms_per_position
from sim.engine import run_uniforms as numpy_run_uniforms
from sim.models import fig2_pair, hidden_context_pair
from sim.stats import mean_check
from theory import (
    Autoregressive,
    BatchSpeculative,
    LossySpeculative,
    Speculative,
    rejection_pmf,
)
from theory.onestep import acceptance_probability, residual_distribution

ALGORITHMS = [Autoregressive(), Speculative(), Speculative(window=4),
              Speculative(window=4, bonus=False), BatchSpeculative(4),
              BatchSpeculative(4, "trie"), LossySpeculative(0.1),
              LossySpeculative(0.1, "target")]


def _moments(pmf):
    k = np.arange(len(pmf))
    mean = float(k @ pmf)
    return mean, float(k**2 @ pmf - mean**2)


@dataclass(frozen=True)
class _InvertedRatio(Speculative):
    """Known-wrong: accepts with min(1, p/q) instead of min(1, q/p)."""

    def verification(self, p, q):
        return acceptance_probability(q, p), residual_distribution(p, q)


def _wrong(algorithm):
    """A known-wrong variant: the negative control of each statistical check."""
    if isinstance(algorithm, BatchSpeculative):
        return BatchSpeculative(1, algorithm.verifier)  # M = 1 rejects more than M = 4
    if isinstance(algorithm, LossySpeculative):
        return LossySpeculative(algorithm.eps * 2, algorithm.rejection)
    return _InvertedRatio(window=algorithm.window, bonus=algorithm.bonus)


def _rate(engine: str, draft, target, algorithm, n: int, device) -> float:
    """Positions per second of one chunk of n trials, tables built beforehand (not timed)."""
    import torch

    from gpu_kernels import engine as torch_engine
    from sim import engine as numpy_engine

    kernel = make_kernel(draft, target, algorithm)
    k = kernel.n_uniforms
    if engine == "numpy":
        rng = np.random.default_rng(3)
        start_uniforms, block = rng.random(n), np.empty((k, n))

        def run():
            numpy_engine._run_chunk(kernel, start_uniforms, lambda _t: rng.random(out=block),
                                    n, False)
    else:
        where = torch.device("cpu") if engine == "torch cpu" else device
        device_kernel = torch_engine._torch_kernel(kernel, where)
        generator = torch.Generator(device=where)
        generator.manual_seed(3)
        start_uniforms = torch.rand(n, generator=generator, dtype=torch.float64, device=where)
        block = torch.empty((k, n), dtype=torch.float64, device=where)

        def run():
            torch_engine._run_chunk(device_kernel, start_uniforms, lambda _t: torch.rand(
                block.shape, generator=generator, out=block, dtype=torch.float64,
                device=where), n, False)
            if where.type == "cuda":
                torch.cuda.synchronize()
    run()  # warm-up
    start = time.perf_counter()
    run()
    return n * target.horizon / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU-only machines)")
    args = parser.parse_args(argv)
    import torch

    device = default_device()
    trials = 20_000 if args.quick else 1_000_000
    print(f"torch {torch.__version__}; device: {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    settings = {"Fig. 2 (V=7, T=50)": fig2_pair(),
                "hidden context (V=32,000, S=8, T=64)": hidden_context_pair(32_000, 8, 64,
                                                                            rng=0)}
    failures = 0

    print("\n1. exact agreement, numpy vs torch on the same uniforms")
    rng = np.random.default_rng(0)
    for name, (draft, target) in settings.items():
        n = 2_000 if args.quick else 50_000
        for algorithm in ALGORITHMS:
            uniforms = rng.random((target.horizon, uniforms_per_position(algorithm), n))
            start = rng.random(n)
            a = numpy_run_uniforms(draft, target, algorithm, uniforms, start_uniforms=start,
                                   record_tokens=True)
            b = run_uniforms(draft, target, algorithm, uniforms, start_uniforms=start,
                             device=device, record_tokens=True)
            same = (np.array_equal(a.tokens, b.tokens) and np.array_equal(a.rejections,
                                                                          b.rejections)
                    and np.array_equal(a.target_calls, b.target_calls))
            failures += not same
            print(f"   {name:38s} {algorithm!r:55s} {'identical' if same else 'DIFFERENT'}")

    print(f"\n2. torch randomness vs exact E[N_rej] ({trials:,} trials, level 1e-6)")
    draft, target = settings["Fig. 2 (V=7, T=50)"]
    for algorithm in ALGORITHMS[1:]:
        mean, variance = _moments(rejection_pmf(draft, target, algorithm))
        result = simulate(draft, target, algorithm, n_trials=trials, rng=1, device=device)
        check = mean_check(result.rejections, mean, variance=variance)
        wrong = simulate(draft, target, _wrong(algorithm), n_trials=trials, rng=1,
                         device=device)
        control = mean_check(wrong.rejections, mean, variance=variance)
        failures += (not check.passed) + control.passed
        print(f"   {algorithm!r:55s} z = {check.statistic:+6.2f} "
              f"{'pass' if check.passed else 'FAIL'}; control z = {control.statistic:+8.1f} "
              f"{'caught' if not control.passed else 'MISSED'}")

    print("\n3. throughput (simulated positions per second; one chunk, tables built beforehand)")
    sizes = {"numpy": 1 << 15, "torch cpu": 1 << 15}
    if device.type == "cuda":
        sizes["torch cuda"] = 1 << 22
    for name, (draft, target) in settings.items():
        for algorithm in (Speculative(), BatchSpeculative(4, "trie")):
            rates = [f"{engine} {_rate(engine, draft, target, algorithm, n, device):.2e}"
                     for engine, n in sizes.items()]
            print(f"   {name:38s} {algorithm!r:45s} " + "  ".join(rates))
    print(f"\n{'all checks passed' if not failures else f'{failures} check(s) FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
