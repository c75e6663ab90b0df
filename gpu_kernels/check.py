"""Device checks of the torch engine: ``python -m gpu_kernels.check [--quick]``.

Prints the device, then

1. Philox — the torch cipher (tensor operations; on CUDA the fused jiterator kernel, on the
   CPU the compiled engine's cipher on the tensors' memory) is bit-identical to the readable
   numpy definition (:mod:`sim.engine.philox`);
2. exact agreement — for the same seed the torch engine on the device returns the compiled CPU
   engine's tokens, rejections and target calls, for every algorithm, on the Fig. 2 setting
   and a V = 32,000 hidden-context model (both Philox backends of the device);
3. statistical checks — the torch engine on the device against the exact laws (z-tests at
   level 1e-6), each with a known-wrong negative control that must fail;
4. throughput — simulated positions per second of one chunk (tables built beforehand) for the
   compiled CPU engine (all threads), torch on the CPU and on CUDA with each Philox backend,
   with the ratio to the CPU engine measured in the same run (``python -m benchmarks
   --section torch`` measures the CPU at one thread, end to end).

Exits non-zero if any check fails.  Sized to finish in about two minutes on one GPU;
``--quick`` shrinks everything for a CPU-only machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from gpu_kernels.engine import _RUNS, _torch, default_device, philox_pair, simulate
from sim.engine import make_tables
from sim.engine import simulate as simulate_cpu
from sim.engine.philox import philox_key, uniforms
from sim.models import fig2_pair, hidden_context_pair
from sim.stats import mean_check, pmf_moments
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
              LossySpeculative(0.1, "target"),
              BatchSpeculative(4, "spectr"), BatchSpeculative(4, "greedy")]  # root laws


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


def _rate(engine: str, draft, target, algorithm, n: int, device, philox="tensor") -> float:
    """Positions per second of one chunk of n trials, tables built beforehand (not timed)."""
    torch = _torch()

    tables = make_tables(draft, target, algorithm)
    key = philox_key(3)
    if engine == "cpu engine":
        from sim.engine import run_chunk

        def run():
            run_chunk(tables, key, 0, n)
    else:
        where = torch.device("cpu") if engine == "torch cpu" else device
        device_run = _RUNS[type(tables)](tables, where, philox)

        def run():
            device_run.run(key, 0, n, False)
            if where.type == "cuda":
                torch.cuda.synchronize()
    run()  # warm-up (and compilation)
    start = time.perf_counter()
    run()
    return n * target.horizon / (time.perf_counter() - start)


def _backends(device) -> list[str]:
    return ["tensor", "fused"] if device.type == "cuda" else ["tensor", "compiled"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU-only machines)")
    args = parser.parse_args(argv)
    torch = _torch()

    device = default_device()
    trials = 20_000 if args.quick else 1_000_000
    print(f"torch {torch.__version__}; device: {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    # --quick (a smoke run on a CPU-only machine): a smaller hidden-context vocabulary and
    # 16x smaller throughput chunks; the checks themselves are unchanged.
    vocab = 4_000 if args.quick else 32_000
    settings = {"Fig. 2 (V=7, T=50)": fig2_pair(),
                f"hidden context (V={vocab:,}, S=8, T=64)": hidden_context_pair(vocab, 8, 64,
                                                                                rng=0)}
    failures = 0

    print("\n1. Philox4x32-10 on the device vs the readable numpy definition")
    key = philox_key(7)
    first = 2**40 - 5
    trial = torch.arange(first, first + 100_000, dtype=torch.int64, device=device)
    for backend in _backends(device):
        even, odd = philox_pair(trial, key, 12, 3, backend)
        expected = [uniforms(key, np.arange(100_000, dtype=np.uint64) + np.uint64(first), 12,
                             slot) for slot in (6, 7)]
        same = (np.array_equal(even.cpu().numpy(), expected[0])
                and np.array_equal(odd.cpu().numpy(), expected[1]))
        failures += not same
        print(f"   {backend:7s} {'identical' if same else 'DIFFERENT'}")

    print("\n2. exact agreement, compiled CPU engine vs torch on the device, same seed")
    for name, (draft, target) in settings.items():
        n = 500 if args.quick else 50_000
        for algorithm in ALGORITHMS:
            a = simulate_cpu(draft, target, algorithm, n_trials=n, rng=0, record_tokens=True)
            for backend in _backends(device):
                b = simulate(draft, target, algorithm, n_trials=n, rng=0, device=device,
                             record_tokens=True, philox=backend)
                same = (np.array_equal(a.tokens, b.tokens)
                        and np.array_equal(a.rejections, b.rejections)
                        and np.array_equal(a.target_calls, b.target_calls))
                failures += not same
                print(f"   {name:38s} {algorithm!r:55s} {backend:7s} "
                      f"{'identical' if same else 'DIFFERENT'}")

    print(f"\n3. torch engine vs exact E[N_rej] ({trials:,} trials, level 1e-6)")
    draft, target = settings["Fig. 2 (V=7, T=50)"]
    backend = _backends(device)[-1]
    # --quick (a CPU-only machine, where the torch engine is slower): two algorithms only
    for algorithm in ALGORITHMS[1:3] if args.quick else ALGORITHMS[1:]:
        mean, variance = pmf_moments(rejection_pmf(draft, target, algorithm))
        result = simulate(draft, target, algorithm, n_trials=trials, rng=1, device=device,
                          philox=backend)
        check = mean_check(result.rejections, mean, variance=variance)
        wrong = simulate(draft, target, _wrong(algorithm), n_trials=trials, rng=1,
                         device=device, philox=backend)
        control = mean_check(wrong.rejections, mean, variance=variance)
        failures += (not check.passed) + control.passed
        print(f"   {algorithm!r:55s} z = {check.statistic:+6.2f} "
              f"{'pass' if check.passed else 'FAIL'}; control z = {control.statistic:+8.1f} "
              f"{'caught' if not control.passed else 'MISSED'}")

    print("\n4. throughput (positions per second; one chunk, tables built beforehand; "
          "ratio to the compiled CPU engine in this run)")
    engines = [("cpu engine", 1 << (16 if args.quick else 20), "tensor"),
               *(("torch cpu", 1 << (10 if args.quick else 14), backend)
                 for backend in ("tensor", "compiled"))]
    if device.type == "cuda":
        engines += [("torch cuda", 1 << 22, backend) for backend in _backends(device)]
    for name, (draft, target) in settings.items():
        for algorithm in (Speculative(), BatchSpeculative(4), BatchSpeculative(4, "trie")):
            rates = [(engine if engine == "cpu engine" else f"{engine}/{backend}",
                      _rate(engine, draft, target, algorithm, n, device, backend))
                     for engine, n, backend in engines]
            cpu = rates[0][1]
            print(f"   {name:38s} {algorithm!r:45s} " + "  ".join(
                f"{label} {rate:.2e} ({rate / cpu:.2f}x)" for label, rate in rates))
    print(f"\n{'all checks passed' if not failures else f'{failures} check(s) FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
