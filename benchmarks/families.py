"""Every algorithm family's throughput against numpy's RNG floor, one thread and all threads.

One line of :data:`FAMILIES` per family (a label and a function of the model pair that returns
the algorithm): a new family is benchmarked by adding its line.  For each setting of
:func:`settings` and each family, :func:`measure` reports

* the **kernel rate** — simulated positions per second of the compiled kernel on tables built
  beforehand (``run_chunk``), and
* the **end-to-end rate** — ``simulate`` with an empty table cache, so the tables are built in
  the call (and the result arrays allocated),

each as a ratio to the **floor**: the rate at which numpy merely draws 3 float64 uniforms per
position (``Generator.random`` into a preallocated block, one thread).  The load of a shared
machine drifts during a run, so every timing is divided by a floor measured just before it,
and a row reports the median of ``repeat`` such ratios.  Both
rates are measured with one kernel thread and with all of them (``numba.set_num_threads``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np

from sim.engine import clear_table_cache, make_tables, run_chunk, simulate
from sim.engine.philox import philox_key
from sim.models import draft_at_tv, fig2_pair, random_pair
from sim.reference import reference_simulate
from theory import (
    AdaptiveSpeculative,
    BatchSpeculative,
    BlockSpeculative,
    LossySpeculative,
    Speculative,
    ThresholdStopping,
    TruncatedSpeculative,
    TypicalAcceptance,
    optimal_window_policy,
)

#: Uniforms per position of the floor: the yardstick of docs (draft draw, test, rejection).
FLOOR_UNIFORMS = 3

#: (label, algorithm from (draft, target)): one line per family.
FAMILIES = [
    ("SD", lambda d, t: Speculative()),
    ("window 4", lambda d, t: Speculative(window=4)),
    ("batch 4 paper", lambda d, t: BatchSpeculative(4)),
    ("batch 4 trie", lambda d, t: BatchSpeculative(4, "trie")),
    ("batch 4 swor", lambda d, t: BatchSpeculative(4, "swor")),
    ("batch 4 spectr", lambda d, t: BatchSpeculative(4, "spectr")),
    ("block 4", lambda d, t: BlockSpeculative(4)),
    ("lossy 0.1", lambda d, t: LossySpeculative(0.1)),
    ("typical", lambda d, t: TypicalAcceptance()),
    ("truncated p=0.9", lambda d, t: TruncatedSpeculative(top_p=0.9)),
    ("window policy", lambda d, t: optimal_window_policy(d, t, cost_ratio=0.2, max_window=4)),
    ("stopping 0.5", lambda d, t: AdaptiveSpeculative(ThresholdStopping(0.5), max_window=4)),
]

#: The issue's targets (one thread, ratios): (setting, family, measure, bound, relative to).
TARGETS = [
    ("Fig. 2", "SD", "e2e", 1.0, None),
    ("V=1000", "SD", "e2e", 0.5, None),
    ("Fig. 2", "batch 4 paper", "e2e", 0.5, "window 4"),
    ("Fig. 2", "batch 4 trie", "e2e", 0.5, "window 4"),
    ("Fig. 2", "block 4", "e2e", 0.5, "window 4"),
]


def settings() -> dict:
    """The model pairs: the paper's Fig. 2 and a sparse first-order V = 1,000 chain."""
    _, sparse_target = random_pair(1000, 50, concentration=0.1, time_homogeneous=True, rng=0)
    return {"Fig. 2": fig2_pair(),
            "V=1000": (draft_at_tv(sparse_target, 0.3, rng=1), sparse_target)}


def best_time(function, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def floor_rate(trials: int = 50_000, repeat: int = 9) -> float:
    """Positions per second at which numpy draws FLOOR_UNIFORMS float64 uniforms each.

    The best of ``repeat`` runs: on a shared machine the floor is the noisiest number here, and
    its best (highest) value makes every ratio conservative.
    """
    generator = np.random.default_rng(1)
    block = np.empty((FLOOR_UNIFORMS, 1 << 15))
    steps = max(1, trials * 50 // block.shape[1])

    def draw():
        for _ in range(steps):
            generator.random(out=block)

    return steps * block.shape[1] / best_time(draw, repeat)


@dataclass
class Row:
    setting: str
    family: str
    trials: int
    tables_seconds: float
    kernel: dict  # threads -> median ratio to the floor
    end_to_end: dict  # threads -> median ratio to the floor
    reference: float  # positions/s of the reference sampler (nan: not measured)
    floor: float  # the median floor measured beside this row's timings (positions/s)


def thread_counts() -> list[int]:
    """1 and every thread numba may use (NUMBA_NUM_THREADS)."""
    return sorted({1, numba.config.NUMBA_NUM_THREADS})


def measure(setting: str, draft, target, family: str, algorithm, *, trials: int,
            seconds: float, repeat: int, reference_trials: int) -> Row:
    """One family on one setting: tables, kernel and end-to-end rates at each thread count."""
    key = philox_key(1)
    clear_table_cache()
    start = time.perf_counter()
    tables = make_tables(draft, target, algorithm)
    built = time.perf_counter() - start
    run_chunk(tables, key, 0, 100)  # compile (or load) outside the timing
    n = min(trials, 2000)  # grow until a run takes a quarter of ``seconds``, then scale
    while True:
        took = best_time(lambda n=n: run_chunk(tables, key, 0, n), 1)
        if n >= trials or took >= seconds / 4:
            break
        n = min(trials, 4 * n)
    n = int(max(min(n, 1000), min(trials, n * seconds / max(took, 1e-9))))
    positions = n * target.horizon

    def cold():
        clear_table_cache()
        simulate(draft, target, algorithm, n_trials=n, rng=1)

    kernel, end_to_end, floors = {}, {}, []
    before = numba.get_num_threads()
    try:
        for threads in thread_counts():
            numba.set_num_threads(threads)
            kernel_ratios, end_to_end_ratios = [], []
            for _ in range(repeat):  # each timing beside its own floor: the load drifts
                floors.append(floor_rate(repeat=3))
                kernel_ratios.append(positions / best_time(
                    lambda: run_chunk(tables, key, 0, n), 1) / floors[-1])
                end_to_end_ratios.append(positions / best_time(cold, 1) / floors[-1])
            kernel[threads] = float(np.median(kernel_ratios))
            end_to_end[threads] = float(np.median(end_to_end_ratios))
    finally:
        numba.set_num_threads(before)
    reference = np.nan
    if reference_trials:
        reference = reference_trials * target.horizon / best_time(
            lambda: reference_simulate(draft, target, algorithm, n_trials=reference_trials,
                                       rng=1), 1)
    return Row(setting, family, n, built, kernel, end_to_end, reference, float(np.median(floors)))


def run_families(args, only=None) -> tuple[list[Row], list[str]]:
    """A :class:`Row` per (setting, family), and a line per refused one."""
    warm_up = random_pair(3, 2, rng=0)  # load the table builder's kernel outside the timing
    clear_table_cache()
    make_tables(*warm_up, Speculative())
    rows, refused = [], []
    for setting, (draft, target) in settings().items():
        for family, make in FAMILIES:
            if only and family not in only:
                continue
            try:
                algorithm = make(draft, target)
                rows.append(measure(setting, draft, target, family, algorithm,
                                    trials=args.trials, seconds=args.seconds,
                                    repeat=args.repeat, reference_trials=args.reference_trials))
            except ValueError as error:  # refused up front (e.g. a root law too large to sum)
                refused.append(f"   {setting} {family}: refused ({str(error)[:110]}…)")
    return rows, refused


def format_rows(rows: list[Row], markdown: bool = False) -> str:
    """The table of ratios to the floor (plain text, or a markdown table for the README)."""
    counts = sorted(rows[0].kernel) if rows else [1]
    heads = ["setting", "family", "trials", "tables s"]
    for threads in counts:
        heads += [f"kernel {threads}t", f"e2e {threads}t"]
    heads.append("vs reference")
    lines = []
    for row in rows:
        cells = [row.setting, row.family, f"{row.trials:,}", f"{row.tables_seconds:.3f}"]
        for threads in counts:
            cells += [f"{row.kernel[threads]:.2f}", f"{row.end_to_end[threads]:.2f}"]
        speedup = row.kernel[1] * row.floor / row.reference
        cells.append("-" if np.isnan(row.reference) else f"{speedup:.0f}x")
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(heads)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*heads), "-" * (sum(widths) + 2 * len(widths))]
    out += [fmt.format(*cells) for cells in lines]
    return "\n".join(out)


def check_targets(rows: list[Row]) -> list[str]:
    """One line per target of :data:`TARGETS`: the measured one-thread ratio and its verdict."""
    by_key = {(row.setting, row.family): row for row in rows}
    lines = []
    for setting, family, kind, bound, relative in TARGETS:
        row = by_key.get((setting, family))
        base = by_key.get((setting, relative)) if relative else None
        if row is None or (relative and base is None):
            continue
        ratio = (row.end_to_end if kind == "e2e" else row.kernel)[1]
        if base:  # ratio of the two rows' ratios to their floors
            ratio /= (base.end_to_end if kind == "e2e" else base.kernel)[1]
        name = f"{relative}'s rate" if relative else "the floor"
        lines.append(f"   {setting} {family}, {kind}, 1 thread: {ratio:.2f}x {name} "
                     f"(target >= {bound}): {'holds' if ratio >= bound else 'MISSED'}")
    return lines
