"""The torch engine on the CPU against the compiled engine (issue #30's target).

``python -m benchmarks --section torch`` prints, with one thread for both engines
(``torch.set_num_threads(1)``, ``numba.set_num_threads(1)``), the end-to-end seconds of
``simulate`` on the Fig. 2 setting (T = 50) — ``Speculative()`` with ``--torch-trials`` trials
(default 10⁶) and ``BlockSpeculative(4)`` with a tenth of them — for the compiled engine and
the torch engine with each CPU Philox backend (``"tensor"``: pure torch, the default;
``"compiled"``: the compiled engine's cipher on the tensors' memory), best of ``--repeat``,
the torch rate as a fraction of the compiled engine's, and the tensor operations the torch
engine issues per position (compute operations, and views apart; counted with a
``TorchDispatchMode`` on a 1,000-trial run).  The target is at least 1/30 for ``Speculative()``
with the default backend.  Load average and thread counts are printed beside the figures.
"""

from __future__ import annotations

import os

import numba

from sim.engine import simulate
from sim.models import fig2_pair
from theory import BlockSpeculative, Speculative

#: The issue's target: torch on the CPU at no less than this fraction of the compiled rate.
TARGET_FRACTION = 1 / 30


def operations_per_position(draft, target, algorithm, philox: str) -> tuple[float, float]:
    """(compute operations, views) the torch engine dispatches per position (1,000 trials;
    :func:`gpu_kernels.engine.count_operations`)."""
    from gpu_kernels.engine import count_operations

    compute, views = count_operations(draft, target, algorithm, n_trials=1000, philox=philox)
    return compute / target.horizon, views / target.horizon


def torch_cpu(args, best_time, machine) -> None:
    """Print the torch-on-the-CPU section (see the module docstring)."""
    import torch

    from gpu_kernels import simulate as simulate_torch

    threads = (torch.get_num_threads(), numba.get_num_threads())
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        draft, target = fig2_pair()
        print(f"\n7. torch engine on the CPU vs the compiled engine, Fig. 2 (T = 50), one "
              f"thread each, end to end, best of {args.repeat}; load average "
              f"{os.getloadavg()[0]:.2f}")
        for label, algorithm, trials in (
                ("SD", Speculative(), args.torch_trials),
                ("block 4", BlockSpeculative(4), max(1, args.torch_trials // 10))):
            simulate(draft, target, algorithm, n_trials=1000, rng=0)  # compile, tables
            compiled = best_time(lambda a=algorithm, n=trials: simulate(
                draft, target, a, n_trials=n, rng=0), args.repeat)
            print(f"   {label:8s} {trials:>9,d} trials: compiled engine {compiled:7.3f} s")
            for philox in ("tensor", "compiled"):
                simulate_torch(draft, target, algorithm, n_trials=1000, rng=0, device="cpu",
                               philox=philox)
                seconds = best_time(lambda a=algorithm, n=trials, p=philox: simulate_torch(
                    draft, target, a, n_trials=n, rng=0, device="cpu", philox=p), args.repeat)
                fraction = compiled / seconds
                compute, views = operations_per_position(draft, target, algorithm, philox)
                verdict = "" if label != "SD" or philox != "tensor" else \
                    f"  {'meets' if fraction >= TARGET_FRACTION else 'below'} the 1/30 target"
                print(f"   {'':8s} torch, philox={philox!r:10s} {seconds:7.3f} s = 1/"
                      f"{1 / fraction:5.1f} of the compiled rate; {compute:6.1f} operations "
                      f"(+ {views:5.1f} views) per position{verdict}")
        print(f"   load average after: {os.getloadavg()[0]:.2f}; torch threads "
              f"{torch.get_num_threads()}, numba threads {numba.get_num_threads()}")
        print(f"   {machine()}")
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
