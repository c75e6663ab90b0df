"""Engine throughput against numpy's RNG floor, compile time, DP scaling and memory.

``python -m benchmarks`` (or ``make bench``) prints

1. **engines** — for the Fig. 2 setting, a V = 1,000 first-order model and a V = 32,000
   hidden-context model, and for ``Speculative()``, ``BatchSpeculative(4, "paper")``,
   ``BatchSpeculative(4, "trie")`` and ``LossySpeculative(0.1)``: simulated positions per
   second of the compiled CPU engine (sampling tables built beforehand, all threads), the
   *floor ratio* — the engine's rate over the rate at which numpy merely draws 3 float64
   uniforms per position (``Generator.random`` into a preallocated block, one thread) — the
   time to build the tables, and the speedup over the reference sampler; then the first-call
   compile time of the kernels (fresh process, empty cache) and the load average;
2. **dp** — seconds of the exact dynamic program (``expected_rejections``) against T·S·V,
   with the fitted constant, and the trie verifier's DP cost against M;
3. **memory** — peak RSS of ``simulate`` (per-trial arrays) and ``simulate_counts`` for 10^6
   and 10^7 trials (and 10^8 with ``--full``), and of ``BatchSpeculative(10_000, "trie")``
   on a short horizon, each in a fresh process;
4. **trees** — token trees (2, 2, 2) against ``Speculative(window=3)`` on Fig. 2
   (:mod:`benchmarks.trees`).

Timings are the best of ``--repeat`` runs; nothing here is a test.  The machine may be shared:
compare ratios measured in one run, and read them beside the printed load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.trees import trees
from sim.engine import make_tables, run_chunk
from sim.engine.compiled import thread_count
from sim.engine.philox import philox_key
from sim.models import draft_at_tv, fig2_pair, hidden_context_pair, random_pair
from sim.reference import reference_simulate
from theory import BatchSpeculative, LossySpeculative, Speculative, expected_rejections

#: Uniforms per position of the floor: the issue's yardstick (draft draw, test, rejection).
FLOOR_UNIFORMS = 3


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


def floor_rate(trials: int, repeat: int) -> float:
    """Positions per second at which numpy draws FLOOR_UNIFORMS float64 uniforms each.

    The best of at least 9 runs: on a shared machine the floor is the noisiest number here,
    and its best (highest) value makes every ratio conservative.
    """
    generator = np.random.default_rng(1)
    block = np.empty((FLOOR_UNIFORMS, 1 << 15))
    steps = max(1, trials * 50 // block.shape[1])

    def draw():
        for _ in range(steps):
            generator.random(out=block)

    seconds = best_time(draw, max(repeat, 9))
    return steps * block.shape[1] / seconds


COMPILE_SCRIPT = """
import time
start = time.perf_counter()
from sim import simulate
from sim.models import fig2_pair
from theory import BatchSpeculative, Speculative
imported = time.perf_counter()
draft, target = fig2_pair(horizon=5)
for algorithm in (Speculative(), BatchSpeculative(2)):
    simulate(draft, target, algorithm, n_trials=10, rng=0)
print(imported - start, time.perf_counter() - imported)
"""


def compile_times() -> tuple[float, float, float]:
    """(import s, first calls with an empty kernel cache s, first calls with a warm cache s)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], check=True, env=env,
                              capture_output=True, text=True).stdout.split()
        warm = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], check=True, env=env,
                              capture_output=True, text=True).stdout.split()
    return float(cold[0]), float(cold[1]), float(warm[1])


def engines(args) -> None:
    floor = floor_rate(args.trials, args.repeat)
    print(f"\n1. engines: {args.trials:,} trials, {thread_count()} threads, best of "
          f"{args.repeat}; numpy floor ({FLOOR_UNIFORMS} uniforms per position) "
          f"{floor:.3e} positions/s; load average {os.getloadavg()[0]:.2f}")
    header = (f"{'setting':34s} {'algorithm':16s} {'positions/s':>12s} {'x floor':>8s} "
              f"{'tables s':>9s} {'vs reference':>12s}")
    print(header)
    print("-" * len(header))
    key = philox_key(1)
    for name, (draft, target) in settings().items():
        for label, algorithm in ALGORITHMS.items():
            start = time.perf_counter()
            tables = make_tables(draft, target, algorithm)
            built = time.perf_counter() - start
            run_chunk(tables, key, 0, 1000)  # compile outside the timing
            engine = best_time(lambda t=tables: run_chunk(t, key, 0, args.trials), args.repeat)
            reference = best_time(lambda a=algorithm, d=draft, t=target: reference_simulate(
                d, t, a, n_trials=args.reference_trials, rng=1), 1)
            rate = args.trials * target.horizon / engine
            reference_rate = args.reference_trials * target.horizon / reference
            print(f"{name:34s} {label:16s} {rate:12.3e} {rate / floor:8.2f} "
                  f"{built:9.3f} {rate / reference_rate:11.0f}x")
    imported, cold, warm = compile_times()
    print(f"   kernels: import {imported:.2f} s; first calls (Speculative, Batch) with an empty "
          f"cache {cold:.2f} s, with the on-disk cache {warm:.2f} s; load average "
          f"{os.getloadavg()[0]:.2f}")


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
    print("   trie verifier on Fig. 2: expected_rejections(BatchSpeculative(M, 'trie')) vs M")
    draft, target = fig2_pair()
    base = None
    for n_drafts in (1, 2, 4, 8, 16, 32):
        seconds = best_time(lambda m=n_drafts: expected_rejections(
            draft, target, BatchSpeculative(m, "trie")), args.repeat)
        base = base or seconds
        print(f"   M={n_drafts:3d}  {seconds:8.4f} s  {seconds / base:7.1f}x M=1  "
              f"(M² = {n_drafts**2})")


# VmHWM (this process's own high-water mark): ru_maxrss would carry the parent's peak over
# fork + exec on Linux.
MEMORY_SCRIPT = """
import sys
from sim import simulate, simulate_counts
from sim.models import fig2_pair, random_pair
from theory import BatchSpeculative, Speculative
kind, n = sys.argv[1], int(sys.argv[2])
if kind == "counts":
    simulate_counts(*fig2_pair(), Speculative(), n_trials=n, rng=0)
elif kind == "arrays":
    simulate(*fig2_pair(), Speculative(), n_trials=n, rng=0)
else:
    simulate(*random_pair(3, 3, rng=0), BatchSpeculative(10_000, "trie"), n_trials=n, rng=0)
status = open('/proc/self/status').read().split('VmHWM:')[1].split()
print(float(status[0]) / 1024)
"""


def memory(args) -> None:
    print("\n3. peak memory (fresh process each; Fig. 2 setting, Speculative())")
    runs = [("simulate", "arrays", n) for n in (10**6, 10**7)]
    runs += [("simulate_counts", "counts", n) for n in [10**6, 10**7] + [10**8] * args.full]
    runs += [("Batch(10,000, trie), V=3, T=3", "huge-batch", 10)]
    for label, kind, n in runs:
        start = time.perf_counter()
        output = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, kind, str(n)],
                                check=True, capture_output=True, text=True).stdout.split()
        print(f"   {label:30s} {n:>11,d} trials: peak RSS {float(output[0]):7.1f} MiB, "
              f"{time.perf_counter() - start:7.1f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200_000)
    parser.add_argument("--reference-trials", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--section", choices=("engines", "dp", "memory", "trees"), nargs="+",
                        default=("engines", "dp", "memory", "trees"))
    parser.add_argument("--full", action="store_true", help="include the 10^8-trial run")
    args = parser.parse_args(argv)
    sections = {"engines": engines, "dp": dynamic_program, "memory": memory,
                "trees": lambda arguments: trees(arguments, best_time)}
    for section in args.section:
        sections[section](args)


if __name__ == "__main__":
    main()
