"""Engine throughput against numpy's RNG floor, table building, compile time, DPs, memory.

``python -m benchmarks`` (or ``make bench``; about 2–3 minutes, and under a minute more for
the torch section) prints, after the machine's load (``uptime``) and thread counts:

1. **engines** — for every algorithm family (:data:`benchmarks.families.FAMILIES`, one line
   each) on the Fig. 2 setting and a sparse first-order V = 1,000 chain: the compiled kernel's
   rate and ``simulate``'s end-to-end rate (tables built in the call), each as a ratio to the
   numpy RNG floor (3 float64 uniforms per position) measured in the same run, with one thread
   and with all threads; the table-building time; the speedup over the reference sampler; then
   the issue's targets with their verdicts (``--markdown`` prints the table for the README);
2. **tables** — building per-position tables for V = 1,000 (T = 10 and T = 50, ``Speculative()``)
   in a fresh process: seconds and peak memory above the imported baseline;
3. **compile** — first calls in a fresh process with an empty and with a warm kernel cache;
4. **dp** — seconds of the exact dynamic program against T·S·V, and the trie's DP against M;
5. **memory** — peak RSS of ``simulate`` and ``simulate_counts`` (``--full``: 10^8 trials).
6. **trees** — token trees (2, 2, 2) against ``Speculative(window=3)`` on Fig. 2
   (:mod:`benchmarks.trees`).
7. **torch** — the torch engine on the CPU against the compiled engine, one thread each, on
   Fig. 2 (``Speculative()`` at 10⁶ trials, ``BlockSpeculative(4)``), with each CPU Philox
   backend and the tensor operations per position (:mod:`benchmarks.torch_cpu`; needs torch).

Timings are the best of ``--repeat`` runs; nothing here is a test.  The machine may be shared:
compare ratios measured in one run, and read them beside the printed load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from benchmarks.families import (
    best_time,
    check_targets,
    format_rows,
    run_families,
    thread_counts,
)
from benchmarks.torch_cpu import torch_cpu
from benchmarks.trees import trees
from sim.models import fig2_pair, hidden_context_pair
from theory import BatchSpeculative, expected_rejections


def machine() -> str:
    """``uptime`` and the thread counts in force."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    names = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    threads = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in names)
    return (f"{uptime}\n{os.cpu_count()} CPUs; numba threads {numba.config.NUMBA_NUM_THREADS} "
            f"(benchmarked: {thread_counts()}); {threads}")


def engines(args) -> None:
    print(f"\n1. engines: ratios to the numpy RNG floor (3 uniforms per position, one thread), "
          f"kernel and end to end (tables built in the call), median of {args.repeat} ratios")
    rows, refused = run_families(args, only=args.family)
    floors = [row.floor for row in rows]
    print(f"   floor (measured beside each timing) {min(floors):.2e}–{max(floors):.2e} "
          f"positions/s")
    print(format_rows(rows, markdown=args.markdown))
    print("\n".join(refused))
    print("   targets:")
    print("\n".join(check_targets(rows)))
    print(f"   {machine()}")


TABLES_SCRIPT = """
import sys, time
from sim.engine import make_tables
from sim.engine.cache import tables_nbytes
from sim.models import random_pair
from theory import Speculative
def rss(field):
    return float(open('/proc/self/status').read().split(field + ':')[1].split()[0]) / 1024
make_tables(*random_pair(40, 2, rng=0), Speculative())  # load the kernels
draft, target = random_pair(1000, int(sys.argv[1]), concentration=0.1, rng=0)
baseline = rss('VmRSS')
start = time.perf_counter()
tables = make_tables(draft, target, Speculative())
print(time.perf_counter() - start, rss('VmHWM') - baseline, tables_nbytes(tables) / 2**20)
"""


def tables(args) -> None:
    print("\n2. per-position tables, V = 1,000 first order, Speculative() (fresh process each; "
          "peak RSS above the baseline after the models are built)")
    for horizon in (10, 50):
        output = subprocess.run([sys.executable, "-c", TABLES_SCRIPT, str(horizon)], check=True,
                                capture_output=True, text=True).stdout.split()
        seconds, peak, size = (float(value) for value in output)
        print(f"   T = {horizon:2d}: built in {seconds:6.2f} s, peak {peak:7.0f} MiB above "
              f"the baseline (the tables themselves: {size:5.0f} MiB)")
    print(f"   {machine()}")


COMPILE_SCRIPT = """
import time
start = time.perf_counter()
from sim import simulate
from sim.models import fig2_pair
from theory import BatchSpeculative, Speculative
times = [time.perf_counter() - start]
draft, target = fig2_pair(horizon=5)
for algorithm in (Speculative(), Speculative(window=4), BatchSpeculative(2)):
    start = time.perf_counter()
    simulate(draft, target, algorithm, n_trials=10, rng=0)
    times.append(time.perf_counter() - start)
print(*times)
"""


def compile_times() -> tuple[list[float], list[float]]:
    """(import, Speculative(), Speculative(window=4), Batch(2)) seconds in a fresh process, with
    an empty kernel cache, then with the cache it left."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = [subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], check=True, env=env,
                               capture_output=True, text=True).stdout.split() for _ in range(2)]
    return [float(x) for x in runs[0]], [float(x) for x in runs[1]]


def compiling(args) -> None:
    cold, warm = compile_times()
    print("\n3. first calls in a fresh process (import; Speculative(); Speculative(window=4), "
          "which shares its kernel; BatchSpeculative(2))")
    for label, run in (("empty kernel cache", cold), ("warm kernel cache", warm)):
        print(f"   {label:18s}: import {run[0]:.2f} s; first calls {run[1]:.2f} s, "
              f"{run[2]:.2f} s, {run[3]:.2f} s")
    print(f"   {machine()}")


def dynamic_program(args) -> None:
    print("\n4. exact DP cost (expected_rejections, Speculative()) against T·S·V")
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
    print("\n5. peak memory (fresh process each; Fig. 2 setting, Speculative())")
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
    parser.add_argument("--trials", type=int, default=200_000,
                        help="most trials per engine measurement")
    parser.add_argument("--seconds", type=float, default=0.25,
                        help="fewer trials where the kernel would take longer than this")
    parser.add_argument("--reference-trials", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--family", nargs="+", help="only these families (labels)")
    parser.add_argument("--markdown", action="store_true", help="the engine table in markdown")
    sections = {"engines": engines, "tables": tables, "compile": compiling,
                "dp": dynamic_program, "memory": memory,
                "trees": lambda arguments: trees(arguments, best_time),
                "torch": lambda arguments: torch_cpu(arguments, best_time, machine)}
    parser.add_argument("--section", choices=tuple(sections), nargs="+",
                        default=tuple(sections))
    parser.add_argument("--full", action="store_true", help="include the 10^8-trial run")
    parser.add_argument("--torch-trials", type=int, default=1_000_000,
                        help="trials of the torch section's Speculative() line")
    args = parser.parse_args(argv)
    print(machine())
    for section in args.section:
        sections[section](args)


if __name__ == "__main__":
    main()
