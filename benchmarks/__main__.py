"""Engine throughput, distance from the RNG floor, DP scaling and memory.

``python -m benchmarks`` (or ``make bench``) prints

1. **engines** — for the Fig. 2 setting, a V = 1,000 first-order model and a V = 32,000
   hidden-context model, and for ``Speculative()``, ``BatchSpeculative(4, "paper")``,
   ``BatchSpeculative(4, "trie")`` and ``LossySpeculative(0.1)``: simulated positions per
   second of the vectorized engine (sampling tables built beforehand), the *floor ratio* —
   engine time over the time numpy takes merely to draw the uniforms the engine consumes (same
   generator, same chunks and block shapes, filled in place) — the time to build the tables,
   and the speedup over the reference sampler;
2. **dp** — seconds of the exact dynamic program (``expected_rejections``) against T·S·V,
   with the fitted constant (nanoseconds per T·S·V);
3. **memory** — peak RSS of ``simulate_counts`` for 10^6 and 10^7 trials (and 10^8 with
   ``--full``), each in a fresh process.

Timings are the best of ``--repeat`` runs; nothing here is a test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

from sim.engine import DEFAULT_CHUNK_SIZE, _simulate_chunk, chunk_sizes, make_kernel
from sim.models import draft_at_tv, fig2_pair, hidden_context_pair, random_pair
from sim.reference import reference_simulate
from theory import BatchSpeculative, LossySpeculative, Speculative, expected_rejections


def best_time(function, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def settings():
    _, sparse_target = random_pair(1000, 50, concentration=0.1, time_homogeneous=True, rng=0)
    return {
        "Fig. 2 (V=7, S=7, T=50)": fig2_pair(),
        "first order V=1000, TV=0.3, T=50": (draft_at_tv(sparse_target, 0.3, rng=1),
                                             sparse_target),
        "hidden V=32000, S=8, T=64": hidden_context_pair(32_000, 8, 64, rng=0),
    }


ALGORITHMS = {"Speculative()": Speculative(), "Batch(4, paper)": BatchSpeculative(4),
              "Batch(4, trie)": BatchSpeculative(4, "trie"),
              "Lossy(0.1)": LossySpeculative(0.1)}


def engines(args) -> None:
    print(f"\n1. engines: {args.trials:,} trials, chunk {DEFAULT_CHUNK_SIZE:,}, "
          f"best of {args.repeat}")
    header = (f"{'setting':36s} {'algorithm':16s} {'positions/s':>12s} {'floor ratio':>11s} "
              f"{'tables s':>9s} {'vs reference':>12s}")
    print(header)
    print("-" * len(header))
    for name, (draft, target) in settings().items():
        for label, algorithm in ALGORITHMS.items():
            start = time.perf_counter()
            kernel = make_kernel(draft, target, algorithm)
            tables = time.perf_counter() - start
            sizes = chunk_sizes(args.trials, DEFAULT_CHUNK_SIZE)

            def run(kernel=kernel, sizes=sizes):
                for stream, n in zip(np.random.default_rng(1).spawn(len(sizes)), sizes,
                                     strict=True):
                    _simulate_chunk(kernel, stream, n)

            def floor(kernel=kernel, sizes=sizes, horizon=target.horizon):
                for stream, n in zip(np.random.default_rng(1).spawn(len(sizes)), sizes,
                                     strict=True):
                    if not isinstance(kernel.start, int):
                        stream.random(n)
                    block = np.empty((kernel.n_uniforms, n))
                    for _ in range(horizon):
                        stream.random(out=block)

            engine = best_time(run, args.repeat)
            lowest = best_time(floor, args.repeat)
            reference = best_time(lambda a=algorithm, d=draft, t=target: reference_simulate(
                d, t, a, n_trials=args.reference_trials, rng=1), 1)
            rate = args.trials * target.horizon / engine
            reference_rate = args.reference_trials * target.horizon / reference
            print(f"{name:36s} {label:16s} {rate:12.3e} {engine / lowest:11.2f} "
                  f"{tables:9.3f} {rate / reference_rate:11.0f}x")


def dynamic_program(args) -> None:
    print("\n2. exact DP cost (expected_rejections, Speculative()) against T·S·V")
    rows = []
    for vocab, horizon in ((2000, 16), (8000, 16), (8000, 64), (32000, 64)):
        draft, target = hidden_context_pair(vocab, 8, horizon, rng=0)
        # hidden-context models are time-homogeneous: the DP would cache one position, so the
        # benchmark expands them to make every position count
        draft = type(draft)(np.array(draft.probs), draft.next_context, draft.start)
        target = type(target)(np.array(target.probs), target.next_context, target.start)
        seconds = best_time(lambda d=draft, t=target: expected_rejections(d, t), args.repeat)
        size = horizon * 8 * vocab
        rows.append((size, seconds))
        print(f"   T={horizon:3d} S=8 V={vocab:6d}  T·S·V={size:11,d}  {seconds:7.3f} s  "
              f"{seconds / size * 1e9:6.1f} ns per T·S·V")
    sizes, times = np.array(rows).T
    slope = np.polyfit(np.log(sizes), np.log(times), 1)[0]
    print(f"   log-log slope {slope:.2f} (1 = linear)")


# VmHWM (this process's own high-water mark): ru_maxrss would carry the parent's peak over
# fork + exec on Linux.
MEMORY_SCRIPT = """
import sys
from sim import simulate_counts
from sim.models import fig2_pair
from theory import Speculative
counts = simulate_counts(*fig2_pair(), Speculative(), n_trials=int(sys.argv[1]), rng=0)
status = open('/proc/self/status').read().split('VmHWM:')[1].split()
print(float(status[0]) / 1024, counts.n_trials)
"""


def memory(args) -> None:
    print("\n3. peak memory of simulate_counts (Fig. 2 setting, Speculative())")
    sizes = [10**6, 10**7] + ([10**8] if args.full else [])
    for n in sizes:
        start = time.perf_counter()
        output = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(n)], check=True,
                                capture_output=True, text=True).stdout.split()
        print(f"   {n:>11,d} trials: peak RSS {float(output[0]):7.1f} MiB, "
              f"{time.perf_counter() - start:7.1f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200_000)
    parser.add_argument("--reference-trials", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--section", choices=("engines", "dp", "memory"), nargs="+",
                        default=("engines", "dp", "memory"))
    parser.add_argument("--full", action="store_true", help="include the 10^8-trial run")
    args = parser.parse_args(argv)
    sections = {"engines": engines, "dp": dynamic_program, "memory": memory}
    for section in args.section:
        sections[section](args)


if __name__ == "__main__":
    main()
