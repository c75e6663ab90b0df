r"""Running the compiled engine: :func:`simulate`, :func:`simulate_counts`, chunks, dask.

:func:`simulate` validates the request and refuses absurd ones before any work
(:func:`sim.engine.core.check_work`, :func:`sim.engine.core.check_memory`), builds the sampling
tables of the algorithm's family once (:func:`sim.engine.core.make_tables`), then runs the
family's compiled kernel over the trials in chunks of ``chunk_size``, written straight into
preallocated outputs (or reduced to histograms by :func:`simulate_counts`), locally on all
threads or on a ``dask.distributed`` cluster.  A chunk's result is a pure function of (tables,
key, its trial indices), so chunking, threads, workers and reruns never change a result.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence

import numpy as np

from sim.engine.compiled import BLOCK
from sim.engine.core import (
    check_memory,
    check_work,
    count_dtype,
    drafted_dtype,
    make_tables,
    simulation_work,
    token_dtype,
)
from sim.engine.philox import philox_key
from sim.engine.result import SimCounts, SimResult, check_problem
from sim.engine.tables import read_only_tables
from theory import MarkovLM

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SCHEDULER_TIMEOUT",
    "ChunkBounds",
    "SchedulerLostError",
    "chunk_bounds",
    "run_chunk",
    "simulate",
    "simulate_counts",
]

#: Trials per kernel call: the unit of progress reporting, of Dask tasks and of the
#: histograms :func:`simulate_counts` keeps.  It never changes a result.
DEFAULT_CHUNK_SIZE = 1 << 18


class ChunkBounds(Sequence):
    """(first trial, number of trials) of the consecutive chunks of ``n_trials``: a lazy
    sequence, so a huge ``n_trials`` costs nothing until its chunks run."""

    def __init__(self, n_trials: int, chunk_size: int):
        self.n_trials, self.chunk_size = int(n_trials), int(chunk_size)

    def __len__(self) -> int:
        return -(-self.n_trials // self.chunk_size)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        first = index * self.chunk_size
        return first, min(self.chunk_size, self.n_trials - first)


def chunk_bounds(n_trials: int, chunk_size: int) -> ChunkBounds:
    """(first trial, number of trials) of the consecutive chunks of ``n_trials``.

    Parameters
    ----------
    n_trials : int >= 1
        Trials in all.
    chunk_size : int >= 1
        Trials per chunk (the last chunk may be shorter).

    Returns
    -------
    ChunkBounds
        A lazy sequence of (first, n) pairs.

    Examples
    --------
    >>> from sim.engine import chunk_bounds
    >>> list(chunk_bounds(10, 4))
    [(0, 4), (4, 4), (8, 2)]
    """
    return ChunkBounds(n_trials, chunk_size)


def _check_outputs(horizon: int, vocab_size: int, n: int, record_tokens: bool) -> None:
    per_trial = 2 * count_dtype(horizon).itemsize + drafted_dtype(horizon).itemsize + (
        horizon * token_dtype(vocab_size).itemsize if record_tokens else 0)
    check_memory(float(n) * per_trial, f"the results of {n:,} trials",
                 "use fewer trials, simulate_counts (histograms only), or record_tokens=False")


def _outputs(tables, n: int, record_tokens: bool):
    """The per-trial output arrays of ``n`` trials of ``tables``'s family (empty)."""
    layout = tables.layout
    counts = count_dtype(layout.horizon)
    _check_outputs(layout.horizon, layout.vocab_size, n, record_tokens)
    tokens_shape = (n, layout.horizon) if record_tokens else (0, 0)
    drafted = drafted_dtype(layout.horizon, getattr(tables, "drafts_per_round", None))
    return (np.empty(n, dtype=counts), np.empty(n, dtype=counts), np.empty(n, dtype=drafted),
            np.empty(tokens_shape, dtype=token_dtype(layout.vocab_size)))


#: Bytes of the wide scratch outputs a kernel writes per call when the result dtypes are
#: narrower (:func:`run_kernel`): enough trials per call for every thread, bounded memory.
KERNEL_SCRATCH_BYTES = 1 << 24


def kernel_dtype(dtype) -> np.dtype:
    """The dtype a compiled kernel writes an integer output in: int32, or int64 if needed."""
    return np.dtype(np.int32) if np.dtype(dtype).itemsize <= 4 else np.dtype(np.int64)


def run_kernel(tables, key, first_trial: int, rejections, target_calls, drafted,
               tokens) -> None:
    """``tables.run`` into the given outputs, the kernel writing :func:`kernel_dtype` arrays.

    numba compiles a kernel once per combination of argument types, and the outputs' dtypes
    follow T and V (:func:`sim.engine.core.count_dtype`, ``drafted_dtype``, ``token_dtype``:
    int8 … int64), so the suite and a user's session would compile each family's kernel up
    to three times over.  Here the kernel always writes int32 (int64 where an output needs
    it) into scratch arrays of at most :data:`KERNEL_SCRATCH_BYTES`, run over consecutive
    trial ranges, and the values are copied into the narrow outputs — the same values, since
    a range's result is a pure function of its trial indices and every value fits the output.
    """
    outputs = (rejections, target_calls, drafted, tokens)
    wide = [kernel_dtype(array.dtype) for array in outputs]
    if all(array.dtype == dtype for array, dtype in zip(outputs, wide, strict=True)):
        tables.run(key, first_trial, *outputs)
        return
    n, record = rejections.size, tokens.shape[0] > 0
    per_trial = sum(dtype.itemsize for dtype in wide[:3]) + tokens.shape[1] * wide[3].itemsize
    step = max(1, min(n, max(16 * BLOCK, KERNEL_SCRATCH_BYTES // per_trial)))
    scratch = [np.empty(step, dtype=dtype) for dtype in wide[:3]]
    scratch.append(np.empty((step if record else 0, tokens.shape[1]), dtype=wide[3]))
    for lo in range(0, n, step):
        m = min(step, n - lo)
        parts = [array[:m] for array in scratch[:3]] + [scratch[3][:m] if record else scratch[3]]
        tables.run(key, first_trial + lo, *parts)
        for output, part in zip(outputs[:3], parts[:3], strict=True):
            output[lo:lo + m] = part
        if record:
            tokens[lo:lo + m] = parts[3]


def run_chunk(tables, key, first_trial: int, n: int, record_tokens: bool = False) -> SimResult:
    """Trials ``first_trial`` … ``first_trial + n − 1``: a pure function of its arguments.

    Parameters
    ----------
    tables : TokenTables, BatchTables, RootTables or BlockTables
        Built by :func:`sim.engine.make_tables`.
    key : tuple of two ints
        The Philox key (:func:`sim.engine.philox.philox_key`).
    first_trial : int
        Index of the first trial of the chunk.
    n : int
        Number of trials.
    record_tokens : bool
        Also return the emitted sequences.

    Returns
    -------
    SimResult
        The chunk's per-trial counts (and tokens).
    """
    rejections, target_calls, drafted, tokens = _outputs(tables, n, record_tokens)
    # read-only again after a trip through pickle (dask): one compiled kernel per family
    tables = read_only_tables(tables)
    run_kernel(tables, key, first_trial, rejections, target_calls, drafted, tokens)
    return SimResult(rejections, target_calls, tokens if record_tokens else None, drafted)


def _count_chunk(tables, key, first_trial: int, n: int) -> SimCounts:
    return SimCounts.from_result(run_chunk(tables, key, first_trial, n), tables.layout.horizon)


def _prepare(draft, target, algorithm, n_trials, rng, chunk_size, record_tokens=None):
    """Validate a request and refuse absurd ones before any work (``record_tokens``: the
    per-trial outputs of :func:`simulate` must fit in memory too); build the tables."""
    n_trials = check_problem(draft, target, algorithm, n_trials)
    if not isinstance(chunk_size, numbers.Integral) or isinstance(chunk_size, bool) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    if record_tokens is not None:
        _check_outputs(target.horizon, target.vocab_size, n_trials, record_tokens)
    algorithm.check_cost(draft, target, "engine")  # absurd algorithm sizes, named as such
    check_work(simulation_work(target, algorithm, n_trials),
               f"{algorithm!r} on T = {target.horizon} with n_trials = {n_trials:,}",
               "use fewer trials")
    key = philox_key(rng)
    return make_tables(draft, target, algorithm), key, chunk_bounds(n_trials, int(chunk_size))


def _map_chunks(function, tables, key, bounds, *, client=None, progress=False, label=""):
    """Yield ``function(tables, key, first, n)`` for every chunk, in chunk order.

    With a ``dask.distributed`` client the chunks run on its workers (:func:`_on_cluster`).
    A chunk's result depends only on its trial indices, so it does not matter where, in how
    many processes, or how many times it ran.
    """
    if client is None:
        results = (function(tables, key, first, n) for first, n in bounds)
    else:
        results = iter(_on_cluster(client, function, tables, key, bounds))
    yield from _progress(results, label, len(bounds)) if progress else results


#: Rounds of re-scattering and resubmitting chunks whose tables or worker were lost.
CLUSTER_ATTEMPTS = 4

#: Seconds a dask scheduler may leave a ping unanswered, while no chunk finishes, before a run
#: gives it up (:class:`SchedulerLostError`).  A scheduler that dies is noticed at once (its
#: connection closes); this bounds the wait for one that hangs or whose machine vanished.
#: Set ``sim.engine.SCHEDULER_TIMEOUT`` to allow more (or less).
SCHEDULER_TIMEOUT = 5.0

#: Seconds between two checks of the scheduler while waiting for a chunk.
_POLL_SECONDS = 1.0


class SchedulerLostError(ConnectionError):
    """The dask scheduler went away (died, hung, or became unreachable) during a run.

    The chunks that finished are lost with the call; every result depends only on (seed,
    trial), so rerunning once a scheduler is back gives the same result.
    """


def _scheduler_address(client) -> str:
    return str(getattr(getattr(client, "scheduler", None), "address", None) or "its address")


def _scheduler_lost(client, reason: str, done: int, total: int) -> SchedulerLostError:
    return SchedulerLostError(
        f"dask: lost the scheduler at {_scheduler_address(client)} during the run ({reason}; "
        f"{done} of {total} chunks done); restart it and rerun")


def _check_scheduler(client, done: int, total: int, ping: bool = False) -> None:
    """Raise :class:`SchedulerLostError` unless ``client`` is connected to its scheduler
    (and, with ``ping``, the scheduler answers within :data:`SCHEDULER_TIMEOUT`)."""
    if client.status != "running":  # "connecting" (reconnecting after a loss), "closed", …
        raise _scheduler_lost(client, "the connection closed", done, total)
    if ping:
        try:
            # callback_timeout bounds this thread's wait even if the call cannot be cancelled
            client.sync(client.scheduler.identity, callback_timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError) as error:
            reason = (f"no answer within {SCHEDULER_TIMEOUT:g} s"
                      if isinstance(error, TimeoutError) else "the connection closed")
            raise _scheduler_lost(client, reason, done, total) from None


def _wait_for(client, future, done: int, total: int) -> None:
    """Wait until ``future`` finishes (or is cancelled), checking every second that the
    scheduler is there."""
    from concurrent.futures import CancelledError

    from distributed import wait

    while True:
        try:
            wait([future], timeout=_POLL_SECONDS)
            return
        except CancelledError:  # future.result() tells why
            return
        except TimeoutError:
            _check_scheduler(client, done, total, ping=True)


def _on_cluster(client, function, tables, key, bounds) -> list:
    """Run the chunks on a dask cluster, surviving the loss of any worker.

    The tables are scattered to every worker (``broadcast=True``), so losing one — even while it
    holds them — leaves copies; a chunk whose worker died is rerun by the scheduler.  If the
    tables are lost everywhere (``FutureCancelledError``) or a chunk keeps killing workers
    (``KilledWorker``), the unfinished chunks are resubmitted with freshly scattered tables, up
    to :data:`CLUSTER_ATTEMPTS` rounds.  Reruns give identical results (counter randomness).

    Losing the scheduler cannot be survived: it raises :class:`SchedulerLostError` at once
    if the connection closes, or after :data:`SCHEDULER_TIMEOUT` seconds without an answer.
    """
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    results: list = [None] * len(bounds)
    pending = list(range(len(bounds)))
    total = len(bounds)
    for _ in range(CLUSTER_ATTEMPTS):
        done = total - len(pending)
        _check_scheduler(client, done, total)  # before a scatter that would wait to reconnect
        # A fresh key per round (hash=False): re-broadcasting identical, already scattered
        # tables was seen to stall distributed's worker-to-worker replication.
        try:
            shared = client.scatter(tables, broadcast=True, hash=False)
        except (OSError, TimeoutError):
            _check_scheduler(client, done, total)  # the scheduler left during the scatter?
            raise
        futures = {i: client.submit(function, shared, key, *bounds[i], pure=False)
                   for i in pending}
        lost = []
        for i, future in futures.items():
            _wait_for(client, future, done, total)
            try:
                results[i] = future.result()
            except (CancelledError, KilledWorker, OSError) as error:
                _check_scheduler(client, done, total)  # cancelled because the scheduler left?
                if isinstance(error, OSError):
                    raise
                lost.append(i)
                cause = error
            else:
                done += 1
        if not lost:
            return results
        pending = lost
    raise RuntimeError(f"dask: {len(pending)} of {len(bounds)} chunks were lost in "
                       f"{CLUSTER_ATTEMPTS} attempts (last error: {cause!r})")


def _progress(iterable, label: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=label, unit="chunk")


def simulate(draft: MarkovLM, target: MarkovLM, algorithm, *, n_trials: int, rng=None,
             record_tokens: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
             progress: bool = False, client=None) -> SimResult:
    """Monte Carlo simulation of ``algorithm`` on (draft, target) with the compiled CPU engine.

    Parameters
    ----------
    draft, target : MarkovLM
        Compatible models (:func:`theory.check_compatible`).
    algorithm : theory.Algorithm
        ``Autoregressive()``, ``Speculative(...)``, ``BatchSpeculative(...)``,
        ``LossySpeculative(...)`` or any verifier built on them.
    n_trials : int
        Number of independent runs.
    rng : int seed, numpy Generator or None
        The Philox seed is drawn from it once (:func:`sim.engine.philox.philox_key`); trial i then
        depends on (seed, i) only.
    record_tokens : bool
        Also return the emitted sequences, (n_trials, T).
    chunk_size : int
        Trials per kernel call (progress bar and Dask granularity); never changes a result.
    progress : bool
        Show a tqdm progress bar over chunks.
    client : dask.distributed.Client, optional
        Run the chunks on a dask cluster; the result is identical, bit for bit.

    Returns
    -------
    SimResult
        ``rejections`` and ``target_calls`` in the smallest integer dtype holding T,
        ``drafted`` (the draft tokens of each trial: walltime = target_calls + c · drafted) in
        the smallest holding T(T + 1)/2; ``tokens``
        in the smallest holding V − 1.

    Raises
    ------
    ValueError, TypeError
        For invalid arguments, and (``ValueError``) before any work when the run would take
        more than :data:`WORK_LIMIT` position-steps (:func:`simulation_work`).
    MemoryError
        Before any work, when the tables or the results would exceed :data:`MEMORY_LIMIT`.
    SchedulerLostError
        When the ``client``'s scheduler dies, hangs or becomes unreachable during the run.

    See Also
    --------
    simulate_counts : the same simulation keeping only histograms (memory independent of
        ``n_trials``).
    gpu_kernels.simulate : the torch engine (CPU or CUDA), identical arrays for the same seed.

    Examples
    --------
    >>> from sim import simulate
    >>> from sim.models import fig2_pair
    >>> from theory import Speculative, expected_rejections
    >>> draft, target = fig2_pair()
    >>> result = simulate(draft, target, Speculative(), n_trials=20_000, rng=1)
    >>> theory_value = expected_rejections(draft, target)
    >>> bool(abs(result.rejections.mean() - theory_value) < 0.1)
    True
    """
    tables, key, bounds = _prepare(draft, target, algorithm, n_trials, rng, chunk_size,
                                   record_tokens=bool(record_tokens))
    rejections, target_calls, drafted, tokens = _outputs(tables, int(n_trials), record_tokens)
    if client is None:  # each chunk writes straight into its slice of the outputs
        chunks = bounds if not progress else _progress(bounds, type(algorithm).__name__)
        for first, n in chunks:
            last = first + n
            run_kernel(tables, key, first, rejections[first:last], target_calls[first:last],
                       drafted[first:last], tokens[first:last] if record_tokens else tokens)
    else:
        parts = _map_chunks(functools.partial(run_chunk, record_tokens=record_tokens),
                            tables, key, bounds, client=client, progress=progress,
                            label=type(algorithm).__name__)
        for (first, n), part in zip(bounds, parts, strict=True):
            rejections[first:first + n] = part.rejections
            target_calls[first:first + n] = part.target_calls
            drafted[first:first + n] = part.drafted
            if record_tokens:
                tokens[first:first + n] = part.tokens
    return SimResult(rejections, target_calls, tokens if record_tokens else None, drafted)


def simulate_counts(draft: MarkovLM, target: MarkovLM, algorithm, *, n_trials: int,
                    rng=None, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool = False,
                    client=None) -> SimCounts:
    """:func:`simulate`, keeping only the histograms of rejections and target calls.

    Parameters
    ----------
    draft, target, algorithm, n_trials, rng, progress, client :
        As for :func:`simulate`.
    chunk_size : int
        Trials per kernel call; memory is O(chunk_size) however large ``n_trials`` is.

    Returns
    -------
    SimCounts
        Equal to ``np.bincount`` of :func:`simulate`'s arrays for the same seed.

    Examples
    --------
    >>> from sim.engine import simulate_counts
    >>> from sim.models import fig2_pair
    >>> from theory import Speculative
    >>> counts = simulate_counts(*fig2_pair(), Speculative(), n_trials=1000, rng=0)
    >>> int(counts.rejection_counts.sum()), counts.rejection_counts.shape
    (1000, (51,))
    """
    tables, key, bounds = _prepare(draft, target, algorithm, n_trials, rng, chunk_size)
    total = SimCounts.empty(tables.layout.horizon)
    for part in _map_chunks(_count_chunk, tables, key, bounds, client=client,
                            progress=progress, label=type(algorithm).__name__):
        total = total + part
    return total
