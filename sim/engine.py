r"""The CPU engine: sampling tables built once, compiled per-trial loops, counter randomness.

:func:`simulate` is the package's Monte Carlo entry point.  It

1. builds the sampling tables of the algorithm's *family* once per call (:func:`make_tables`):
   token-wise verifiers (``Speculative`` and every verifier with a table (b, 𝒫), lossy rules,
   class ℱ, ``Autoregressive``, and the root laws of :mod:`theory.multidraft`, see
   :class:`RootTables`), multi-draft root verifiers (``BatchSpeculative``) and block
   verification (``BlockSpeculative``: p and q as alias tables and as rows) — laws
   as alias tables (:mod:`sim.tables`), acceptance probabilities as flat float64 arrays;
2. runs the compiled kernel of the family (:mod:`sim.kernels`) over the trials, in chunks
   of ``chunk_size`` written straight into preallocated outputs (or reduced to histograms by
   :func:`simulate_counts`), locally on all threads or on a ``dask.distributed`` cluster.

**Reproducibility contract.**  Every uniform is Philox4x32-10 of (seed, trial, position, slot)
(:mod:`sim.philox`); the seed is drawn from ``rng`` once.  So trial i's outcome is a function of
(models, algorithm, seed, i) alone: it does not depend on ``n_trials`` (the first n trials of a
larger run are the same), ``chunk_size``, the number of threads, Dask workers, or the engine —
:func:`gpu_kernels.simulate` returns identical arrays for the same seed, on the CPU or on CUDA.

Output dtypes: counts in the smallest signed integer type that holds T, tokens in the smallest
that holds V − 1 (``int8`` for the paper's settings: 10⁷ trials cost 20 MB, not 160 MB).
Reductions (``sum``, ``mean``, ``bincount``, ``cumsum``) widen automatically in numpy; cast
before elementwise arithmetic that can exceed T.
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim import kernels
from sim.philox import philox_key
from sim.result import SimCounts, SimResult, check_problem
from sim.tables import AliasTable, build_alias
from theory import Autoregressive, BatchSpeculative, BlockSpeculative, MarkovLM, Speculative
from theory.multidraft import ROOT_VERIFIERS
from theory.onestep import _acceptance
from theory.verification import checked_verification

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MEMORY_LIMIT",
    "SCHEDULER_TIMEOUT",
    "WORK_LIMIT",
    "BatchTables",
    "BlockTables",
    "RootTables",
    "SchedulerLostError",
    "TokenTables",
    "check_memory",
    "check_work",
    "chunk_bounds",
    "count_dtype",
    "make_tables",
    "simulate",
    "simulate_counts",
    "simulation_work",
    "table_bytes",
    "token_dtype",
]

#: Trials per kernel call: the unit of progress reporting, of Dask tasks and of the
#: histograms :func:`simulate_counts` keeps.  It never changes a result.
DEFAULT_CHUNK_SIZE = 1 << 18


def _smallest_signed(largest: int) -> np.dtype:
    return next(np.dtype(kind) for kind in (np.int8, np.int16, np.int32, np.int64)
                if np.iinfo(kind).max >= largest)


def count_dtype(horizon: int) -> np.dtype:
    """The smallest signed integer dtype that holds every count 0 … ``horizon``.

    Parameters
    ----------
    horizon : int >= 0
        T, the largest count.

    Returns
    -------
    numpy.dtype
        int8, int16, int32 or int64.
    """
    return _smallest_signed(int(horizon))


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest signed integer dtype that holds every token 0 … ``vocab_size`` − 1.

    Parameters
    ----------
    vocab_size : int >= 1
        V.

    Returns
    -------
    numpy.dtype
        int8, int16, int32 or int64.
    """
    return _smallest_signed(int(vocab_size) - 1)


@dataclass(frozen=True)
class Layout:
    """How (position, context) pairs map to rows of the sampling tables, and the start.

    Row of (n, s) is ``n · row_stride + s``: ``row_stride`` is 0 when both models are
    time-homogeneous (one set of rows serves every position), else S.
    """

    horizon: int
    n_contexts: int
    vocab_size: int
    row_stride: int
    next_context: np.ndarray  # (S·V,) int32; empty for first-order chains (next = token)
    start: int  # the start context, or -1 when the prompt is random
    start_cdf: np.ndarray  # CDF of the prompt law (float64)

    @classmethod
    def of(cls, draft: MarkovLM, target: MarkovLM) -> Layout:
        homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
        first_order = target.is_first_order
        next_context = np.empty(0, dtype=np.int32) if first_order else \
            np.ascontiguousarray(target.next_context, dtype=np.int32).ravel()
        start = target.start if isinstance(target.start, int) else -1
        return cls(target.horizon, target.n_contexts, target.vocab_size,
                   0 if homogeneous else target.n_contexts, next_context, start,
                   np.cumsum(np.asarray(target.start_distribution, dtype=np.float64)))

    def rows(self, model: MarkovLM) -> np.ndarray:
        """The (rows, V) float64 laws of ``model`` in table order (broadcast axes expanded)."""
        probs = model.probs if self.row_stride else model.probs[:1]
        return np.ascontiguousarray(probs, dtype=np.float64).reshape(-1, self.vocab_size)

    def common_arguments(self) -> tuple:
        return (self.horizon, self.n_contexts, self.vocab_size, self.row_stride, self.start,
                self.start_cdf, self.next_context)


@dataclass(frozen=True)
class TokenTables:
    """Tables of a token-wise verifier: proposals, acceptance b, rejection law 𝒫.

    ``proposal`` holds the draft's rows and, when the algorithm has a bonus position, the
    bonus law's rows (``algorithm.bonus_law(q)``: the target's, or the truncated target's)
    ``bonus_offset`` rows later, with acceptance 1 there; ``after_accept`` of the bonus state
    is 0 (the round ends).  ``round_start`` (a :class:`theory.WindowPolicy`) gives the state a
    round starting at (n, s) is in at its first position.  ``Autoregressive`` is the special
    case of q's rows only, ``bonus_state = 0`` and offset 0: every position a target call that
    draws from q.
    """

    algorithm: object
    layout: Layout
    proposal: AliasTable
    acceptance: np.ndarray  # (rows · V,) aligned with ``proposal``
    rejection: AliasTable
    after_accept: np.ndarray  # (round states,) int64
    bonus_state: int  # -1: none
    bonus_offset: int
    round_start: np.ndarray  # (T·S,) state a round starting at (n, s) is in; empty: state 0
    #: rows of ``rejection`` used in the bonus state are ``rejection_offset`` rows later
    #: (:class:`RootTables`); 0 for every token-wise verifier
    rejection_offset: int = 0

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> TokenTables:
        layout = Layout.of(draft, target)
        q = layout.rows(target)
        if isinstance(algorithm, Autoregressive):
            table = build_alias(q)
            return cls(algorithm, layout, table, np.ones(q.size), table,
                       np.zeros(1, dtype=np.int64), 0, 0, np.empty(0, dtype=np.int64))
        p = layout.rows(draft)
        accept, rejection_law = checked_verification(algorithm, p, q, position=0,
                                                     n_contexts=layout.n_contexts)
        accept = np.ascontiguousarray(accept, dtype=np.float64).ravel()
        after_accept = np.array([algorithm.after_accept(j)
                                 for j in range(algorithm.n_round_states())], dtype=np.int64)
        starts = algorithm.round_start_states()
        round_start = np.empty(0, dtype=np.int64) if starts is None else \
            np.ascontiguousarray(starts, dtype=np.int64).ravel()
        if not algorithm.has_bonus_state:
            return cls(algorithm, layout, build_alias(p), accept, build_alias(rejection_law),
                       after_accept, -1, 0, round_start)
        after_accept[algorithm.bonus_state] = 0
        bonus = np.asarray(algorithm.bonus_law(q), dtype=np.float64)  # q, or q̂ (truncation)
        return cls(algorithm, layout, build_alias(np.concatenate([p, bonus])),
                   np.concatenate([accept, np.ones(q.size)]), build_alias(rejection_law),
                   after_accept, algorithm.bonus_state, p.shape[0], round_start)

    def run(self, key, first_trial, rejections, target_calls, tokens) -> None:
        kernels.token_kernel(
            key[0], key[1], first_trial, *self.layout.common_arguments(),
            self.proposal.entries, self.acceptance, self.rejection.entries, self.after_accept,
            self.bonus_state, self.bonus_offset, self.rejection_offset, self.round_start,
            rejections, target_calls, tokens)


@dataclass(frozen=True)
class RootTables(TokenTables):
    """Tables of a root verifier of :mod:`theory.multidraft` ("swor", "spectr", …), run by the
    token-wise kernel.

    The engines sample the verifier's **exact root law** (a, r) — validated against its literal
    routine (:mod:`sim.root_reference`) by exact enumeration — not its draw-by-draw procedure.
    At a root (round state 0, used as the kernel's bonus state) the token is proposed from
    a/α (α = Σa), accepted with probability α (the same for every token of the row) and else
    replaced by a draw from r/(1 − α): P(token x, accepted) = a(x), P(token x, rejected) = r(x),
    exactly the root law.  The root rows sit ``bonus_offset`` = R rows after the draft's rows in
    ``proposal`` and ``rejection_offset`` = R rows after the residuals [q − p]₊ in
    ``rejection``; state 1 is standard speculative sampling.  Where α = 0 (or 1) the unused
    law is q.
    """

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> RootTables:
        layout = Layout.of(draft, target)
        p, q = layout.rows(draft), layout.rows(target)
        accepted, rejected = (np.asarray(law, dtype=np.float64)
                              for law in algorithm.root_law(p, q))
        alpha = np.clip(accepted.sum(axis=-1, keepdims=True), 0.0, 1.0)
        root_proposal = np.where(alpha > 0, accepted / np.where(alpha > 0, alpha, 1.0), q)
        root_rejection = np.where(alpha < 1, rejected / np.where(alpha < 1, 1 - alpha, 1.0), q)
        standard = Speculative()
        accept, residual = standard.verification(p, q)
        acceptance = np.concatenate([np.ascontiguousarray(accept, dtype=np.float64).ravel(),
                                     np.repeat(alpha.ravel(), layout.vocab_size)])
        rows = p.shape[0]
        return cls(algorithm, layout, build_alias(np.concatenate([p, root_proposal])),
                   acceptance, build_alias(np.concatenate([residual, root_rejection])),
                   np.ones(2, dtype=np.int64), 0, rows, np.empty(0, dtype=np.int64), rows)


@dataclass(frozen=True)
class BatchTables:
    """Tables of M-candidate root verification: draft, stacked acceptances and residuals.

    ``acceptance[(m·R + row)·V + x]`` = min(1, q^{m+1}(x)/p(x)) for candidate m;
    row (k − 1)·R + row of ``residual`` is q^{k+1}, the law after k failures.
    """

    algorithm: BatchSpeculative
    layout: Layout
    n_rows: int
    draft: AliasTable
    draft_probs: np.ndarray  # (R·V,) p itself (the trie's "same token" test)
    acceptance: np.ndarray  # (M·R·V,)
    residual: AliasTable  # M·R rows

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> BatchTables | RootTables:
        if algorithm.verifier in ROOT_VERIFIERS:  # a root law, then standard SD
            return RootTables.build(draft, target, algorithm)
        layout = Layout.of(draft, target)
        p, q = layout.rows(draft), layout.rows(target)
        residuals, _ = algorithm.residuals(p, q)
        acceptance = np.concatenate(
            [_acceptance(p, residual).ravel() for residual in residuals[:-1]])
        return cls(algorithm, layout, p.shape[0], build_alias(p), p.ravel(), acceptance,
                   build_alias(np.concatenate(residuals[1:])))

    def run(self, key, first_trial, rejections, target_calls, tokens) -> None:
        algorithm = self.algorithm
        kernels.batch_kernel(
            key[0], key[1], first_trial, *self.layout.common_arguments(),
            algorithm.n_drafts, algorithm.verifier == "trie", self.n_rows, self.draft.entries,
            self.draft_probs, self.acceptance, self.residual.entries, rejections,
            target_calls, tokens)


@dataclass(frozen=True)
class BlockTables:
    """Tables of block verification: alias tables of p and q, and their rows as floats.

    The rows (``draft_probs``, ``target_probs``, (R·V,)) serve the in-kernel sums
    r_i = Σ_x [π_i q − p]₊ and the residual's inverse-CDF draw, whose π_i depends on the path
    and so cannot be tabulated (:func:`sim.kernels.block_kernel`).
    """

    algorithm: BlockSpeculative
    layout: Layout
    draft: AliasTable
    target: AliasTable
    draft_probs: np.ndarray
    target_probs: np.ndarray
    selection: int  # sim.kernels.BLOCK_SELECTIONS

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> BlockTables:
        rule = algorithm.selection
        if rule not in kernels.BLOCK_SELECTIONS:
            raise TypeError(f"the engines have no block selection rule {rule!r}")
        layout = Layout.of(draft, target)
        p, q = layout.rows(draft), layout.rows(target)
        return cls(algorithm, layout, build_alias(p), build_alias(q), p.ravel(), q.ravel(),
                   kernels.BLOCK_SELECTIONS[rule])

    def run(self, key, first_trial, rejections, target_calls, tokens) -> None:
        algorithm = self.algorithm
        kernels.block_kernel(
            key[0], key[1], first_trial, *self.layout.common_arguments(), algorithm.window,
            bool(algorithm.bonus), self.selection, self.draft.entries, self.target.entries,
            self.draft_probs, self.target_probs, rejections, target_calls, tokens)


#: Algorithm family → its tables (and kernel), looked up along the algorithm's class MRO.
FAMILIES = {Autoregressive: TokenTables, Speculative: TokenTables,
            BatchSpeculative: BatchTables, BlockSpeculative: BlockTables}


def make_tables(draft: MarkovLM, target: MarkovLM, algorithm):
    """Build the sampling tables of ``algorithm`` on this pair (once per simulation).

    Parameters
    ----------
    draft, target : MarkovLM
        The model pair.
    algorithm : Algorithm
        ``Autoregressive``, any ``Speculative`` verifier, or ``BatchSpeculative``.

    Returns
    -------
    TokenTables, BatchTables or BlockTables
        The tables of the algorithm's family.

    Raises
    ------
    TypeError
        If the engine has no family for ``algorithm``.
    ValueError
        If the tables would be absurdly large (``BatchSpeculative.check_cost``).
    MemoryError
        If they would not fit in :data:`MEMORY_LIMIT` (:func:`check_memory`).
    InvalidVerification
        If a custom verifier's (b, 𝒫) is invalid (:mod:`theory.verification`).
    """
    for kind in type(algorithm).__mro__:
        if kind in FAMILIES:
            algorithm.check_cost(draft, target, "engine")  # absurd sizes fail fast, clearly
            check_memory(table_bytes(draft, target, algorithm),
                         f"the sampling tables of {algorithm!r} on {target!r}",
                         "use a smaller model or fewer drafts")
            return FAMILIES[kind].build(draft, target, algorithm)
    raise TypeError(f"the engines have no kernel for {algorithm!r}")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 16 GiB
        return 16 * 2**30


#: Largest memory (bytes) a simulation may plan to allocate: 80% of this machine's memory.
#: Set ``sim.engine.MEMORY_LIMIT`` to allow more (or less).
MEMORY_LIMIT = int(0.8 * _physical_memory())


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:.3g} {unit}" if unit != "bytes" else f"{int(n_bytes)} bytes"
        n_bytes /= 1024
    return f"{n_bytes:.3g} PiB"  # pragma: no cover - the loop always returns


def check_memory(estimate: float, what: str, advice: str) -> None:
    """Refuse, with a one-line ``MemoryError``, to allocate more than :data:`MEMORY_LIMIT`.

    Parameters
    ----------
    estimate : float
        Bytes the allocation would take.
    what : str
        What would be allocated (the message's subject).
    advice : str
        What the user can do instead (the message's end).

    Raises
    ------
    MemoryError
        If ``estimate`` exceeds :data:`MEMORY_LIMIT` (read at call time: users may set it).
    """
    if estimate > MEMORY_LIMIT:
        raise MemoryError(f"{what} would need about {_size(estimate)}, over the limit of "
                          f"{_size(MEMORY_LIMIT)} (sim.engine.MEMORY_LIMIT); {advice}")


#: Largest work a CPU simulation may plan (:func:`simulation_work`, in position-steps): 10¹²,
#: hours of CPU at the compiled engine's 10–100 ns per step and core (``make bench``); every
#: run of the package (tests, ``specdec reproduce``, benchmarks) stays below 10¹⁰.
#: Set ``sim.engine.WORK_LIMIT`` to allow more (or less).
WORK_LIMIT = 10**12


def simulation_work(target: MarkovLM, algorithm, n_trials: int) -> float:
    """A generous estimate of the work of simulating ``n_trials`` trials (position-steps).

    Parameters
    ----------
    target : MarkovLM
        The target model (its horizon T and vocabulary size V).
    algorithm : Algorithm
        The simulated algorithm.
    n_trials : int
        Number of trials.

    Returns
    -------
    float
        n_trials · T · (the most steps one position can take).

    Notes
    -----
    A position takes one step for token-wise verifiers (``Speculative``, lossy rules,
    ``Autoregressive``, the root verifiers of ``BatchSpeculative``); at most M candidate tests
    for ``BatchSpeculative(M)`` with the "paper" or "trie" verifier (an upper bound: only the
    tried candidates are drawn, usually a few); at most γ draft steps, each with a sum over the
    vocabulary (counted as V / 32 steps), for ``BlockSpeculative(γ)``.

    Examples
    --------
    >>> from sim.engine import simulation_work
    >>> from sim.models import fig2_pair
    >>> from theory import BatchSpeculative
    >>> draft, target = fig2_pair()
    >>> simulation_work(target, BatchSpeculative(4), 1000)  # 1000 trials · T = 50 · M = 4
    200000.0
    """
    per_position = 1.0
    if isinstance(algorithm, BatchSpeculative) and algorithm.verifier not in ROOT_VERIFIERS:
        per_position = float(algorithm.n_drafts)
    elif isinstance(algorithm, BlockSpeculative):
        per_position = algorithm.window * (1.0 + target.vocab_size / 32)
    return float(n_trials) * target.horizon * per_position


def check_work(estimate: float, what: str, advice: str) -> None:
    """Refuse, with a one-line ``ValueError``, to start more work than :data:`WORK_LIMIT`.

    Parameters
    ----------
    estimate : float
        Position-steps the run would take (:func:`simulation_work`).
    what : str
        What would run (the message's subject).
    advice : str
        What the user can do instead (the message's end, before how to raise the limit).

    Raises
    ------
    ValueError
        If ``estimate`` exceeds :data:`WORK_LIMIT` (read at call time: users may set it).
    """
    if estimate > WORK_LIMIT:
        raise ValueError(f"{what} would take about {estimate:.3g} position-steps, over the "
                         f"limit of {WORK_LIMIT:.3g} (sim.engine.WORK_LIMIT); {advice}, or "
                         f"assign a larger sim.engine.WORK_LIMIT")


def table_bytes(draft: MarkovLM, target: MarkovLM, algorithm) -> float:
    """A generous estimate of the memory that building the sampling tables takes (bytes).

    Parameters
    ----------
    draft, target : MarkovLM
        The model pair.
    algorithm : Algorithm
        The algorithm whose tables are estimated.

    Returns
    -------
    float
        Bytes.

    Notes
    -----
    An algorithm that knows its tables (``BatchSpeculative.table_bytes``) gives its own
    estimate; otherwise rows R = S (time-homogeneous pair) or T·S, and ≈ 80 bytes per row and
    token (alias records of proposals and rejection law, acceptance, and the temporaries of
    their construction).
    """
    if hasattr(algorithm, "table_bytes"):  # the algorithm's own (calibrated) estimate
        return float(algorithm.table_bytes(draft, target, "engine"))
    homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
    cells = (1 if homogeneous else target.horizon) * target.n_contexts * target.vocab_size
    return float(cells) * 80


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
    per_trial = 2 * count_dtype(horizon).itemsize + (
        horizon * token_dtype(vocab_size).itemsize if record_tokens else 0)
    check_memory(float(n) * per_trial, f"the results of {n:,} trials",
                 "use fewer trials, simulate_counts (histograms only), or record_tokens=False")


def _outputs(layout: Layout, n: int, record_tokens: bool):
    counts = count_dtype(layout.horizon)
    _check_outputs(layout.horizon, layout.vocab_size, n, record_tokens)
    tokens_shape = (n, layout.horizon) if record_tokens else (0, 0)
    return (np.empty(n, dtype=counts), np.empty(n, dtype=counts),
            np.empty(tokens_shape, dtype=token_dtype(layout.vocab_size)))


def run_chunk(tables, key, first_trial: int, n: int, record_tokens: bool = False) -> SimResult:
    """Trials ``first_trial`` … ``first_trial + n − 1``: a pure function of its arguments."""
    rejections, target_calls, tokens = _outputs(tables.layout, n, record_tokens)
    tables.run(key, first_trial, rejections, target_calls, tokens)
    return SimResult(rejections, target_calls, tokens if record_tokens else None)


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
        The Philox seed is drawn from it once (:func:`sim.philox.philox_key`); trial i then
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
        ``rejections`` and ``target_calls`` in the smallest integer dtype holding T; ``tokens``
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
    rejections, target_calls, tokens = _outputs(tables.layout, int(n_trials), record_tokens)
    if client is None:  # each chunk writes straight into its slice of the outputs
        chunks = bounds if not progress else _progress(bounds, type(algorithm).__name__)
        for first, n in chunks:
            last = first + n
            tables.run(key, first, rejections[first:last], target_calls[first:last],
                       tokens[first:last] if record_tokens else tokens)
    else:
        parts = _map_chunks(functools.partial(run_chunk, record_tokens=record_tokens),
                            tables, key, bounds, client=client, progress=progress,
                            label=type(algorithm).__name__)
        for (first, n), part in zip(bounds, parts, strict=True):
            rejections[first:first + n] = part.rejections
            target_calls[first:first + n] = part.target_calls
            if record_tokens:
                tokens[first:first + n] = part.tokens
    return SimResult(rejections, target_calls, tokens if record_tokens else None)


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
