"""Engine throughput and its distance from the random-number floor.

Run ``python -m benchmarks`` (or ``make bench``).  For each setting it prints

* simulated positions per second (trials × T / seconds) of the vectorized numpy engine and of
  the reference sampler, and the engine's speedup over the reference;
* the *floor ratio*: the engine's time (table construction included) over the time numpy takes
  merely to draw the uniforms the engine consumes (same generator, same chunks, same block
  shapes, filled in place).  1.0 would mean the engine costs nothing beyond its random numbers;
* the same ratio without the time to build the sampling tables (once per ``simulate`` call),
  and that time itself.

Timings are the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sim import simulate
from sim.engine import DEFAULT_CHUNK_SIZE, chunk_sizes, make_kernel, uniforms_per_position
from sim.models import draft_at_tv, fig2_pair, random_pair
from sim.reference import reference_simulate
from theory import BatchSpeculative, Speculative


def best_time(function, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def uniform_floor(draft, target, algorithm, n_trials: int, seed: int) -> None:
    """Draw exactly the uniforms :func:`sim.simulate` consumes, and nothing else."""
    k = uniforms_per_position(algorithm)
    sizes = chunk_sizes(n_trials, DEFAULT_CHUNK_SIZE)
    for stream, n in zip(np.random.default_rng(seed).spawn(len(sizes)), sizes, strict=True):
        if not isinstance(target.start, int):
            stream.random(n)
        block = np.empty((k, n))
        for _ in range(target.horizon):
            stream.random(out=block)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400_000)
    parser.add_argument("--reference-trials", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    _, sparse_target = random_pair(1000, 50, concentration=0.1, time_homogeneous=True, rng=0)
    settings = {
        "Fig. 2 (V=7, T=50, inhomogeneous)": fig2_pair(),
        "V=1000 first order, TV≈0.9 (homogeneous)": random_pair(
            1000, 50, concentration=0.1, time_homogeneous=True, rng=0),
        "V=1000 first order, TV=0.3 (homogeneous)": (
            draft_at_tv(sparse_target, 0.3, rng=1), sparse_target),
    }
    algorithms = {"Speculative()": Speculative(), "Speculative(window=4)": Speculative(window=4),
                  "BatchSpeculative(4)": BatchSpeculative(4),
                  "BatchSpeculative(4, 'trie')": BatchSpeculative(4, "trie")}
    print(f"trials = {args.trials:,}; best of {args.repeat}; chunk = {DEFAULT_CHUNK_SIZE:,}")
    header = (f"{'setting':42s} {'algorithm':28s} {'engine pos/s':>13s} {'ref pos/s':>11s} "
              f"{'speedup':>8s} {'floor ratio':>11s} {'w/o tables':>10s} {'tables s':>9s}")
    print(header)
    print("-" * len(header))
    for setting_name, (draft, target) in settings.items():
        positions = args.trials * target.horizon
        for name, algorithm in algorithms.items():
            engine = best_time(lambda a=algorithm, d=draft, t=target: simulate(
                d, t, a, n_trials=args.trials, rng=1), args.repeat)
            floor = best_time(lambda a=algorithm, d=draft, t=target: uniform_floor(
                d, t, a, args.trials, 1), args.repeat)
            tables = best_time(lambda a=algorithm, d=draft, t=target: make_kernel(d, t, a), 1)
            reference = best_time(lambda a=algorithm, d=draft, t=target: reference_simulate(
                d, t, a, n_trials=args.reference_trials, rng=1), 1)
            engine_rate = positions / engine
            reference_rate = args.reference_trials * target.horizon / reference
            print(f"{setting_name:42s} {name:28s} {engine_rate:13.3e} {reference_rate:11.3e} "
                  f"{engine_rate / reference_rate:8.0f} {engine / floor:11.2f} "
                  f"{(engine - tables) / floor:10.2f} {tables:9.3f}")


if __name__ == "__main__":
    main()
