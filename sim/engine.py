r"""Vectorized numpy engine: all trials advance one position per step.

Every algorithm is position-synchronous given a small per-trial round state (see
:mod:`theory.algorithms`), so a chunk of trials is a handful of integer arrays — context,
round state, counters — updated by array operations once per position.  Each position of each
trial consumes a fixed number of uniforms (``kernel.n_uniforms``), so the engine is a pure
function of the models and the uniforms it is handed (:func:`run_uniforms`); :func:`simulate`
only adds the random number generation and the chunking.

Uniform layout (shared with :mod:`gpu_kernels`, which must reproduce the results exactly):

* ``start_uniforms`` (n,) — the start context, by inverse CDF of the start law (only read when
  ``start`` is a distribution);
* ``uniforms`` (T, k, n) — at position t, for ``Speculative``: row 0 draws the draft token
  (or the token from q at a bonus position / for autoregressive sampling), row 1 is the
  acceptance test ``u < b(x̃)``, row 2 draws from the rejection law.  For
  ``BatchSpeculative(M)``: rows 2m and 2m + 1 draw and test candidate m (m < M), row 2M draws
  from the last residual when every candidate failed, and (trie only) row 2M + i decides
  whether untried candidate i shares the accepted token (``u < p(x)``), 1 ≤ i < M.  Each draw
  from a law uses its alias table (:mod:`sim.tables`), so it costs O(1) whatever V.

Random streams: trials are cut into chunks of ``chunk_size``; chunk i draws from the i-th
child of ``rng.spawn``, first its start uniforms, then position by position.  Results are
therefore a function of (models, algorithm, seed, chunk size, n_trials).
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass

import numpy as np

from sim.result import SimCounts, SimResult, check_problem
from sim.tables import AliasTable, build_alias
from theory import Autoregressive, BatchSpeculative, MarkovLM, Speculative
from theory._arrays import compact
from theory.onestep import _acceptance

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "chunk_sizes",
    "make_kernel",
    "run_uniforms",
    "simulate",
    "simulate_counts",
    "uniforms_per_position",
]

#: Trials per chunk: big enough to amortize Python overhead, small enough to stay in cache.
DEFAULT_CHUNK_SIZE = 1 << 15


@dataclass(frozen=True)
class _Layout:
    """How (position, context) pairs map to rows of the sampling tables."""

    n_contexts: int
    vocab_size: int
    homogeneous: bool
    next_context: np.ndarray | None  # (S·V,) flattened; None for first-order chains

    def row_base(self, position: int) -> int:
        return 0 if self.homogeneous else position * self.n_contexts

    def advance(self, context: np.ndarray, token: np.ndarray) -> np.ndarray:
        """The next context of every trial (first order: the token itself, no table read)."""
        if self.next_context is None:
            return token
        return self.next_context[context * self.vocab_size + token]

    def rows(self, model: MarkovLM) -> np.ndarray:
        """The (rows, V) float64 laws of ``model`` in table order."""
        probs = compact(model.probs) if self.homogeneous else model.probs
        return np.asarray(probs, dtype=np.float64).reshape(-1, self.vocab_size)


def _layout(draft: MarkovLM, target: MarkovLM) -> _Layout:
    homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
    next_context = None if target.is_first_order else \
        np.ascontiguousarray(target.next_context, dtype=np.intp).ravel()
    return _Layout(target.n_contexts, target.vocab_size, homogeneous, next_context)


class _Kernel:
    """Tables and the per-position update of one algorithm on one (draft, target) pair."""

    n_uniforms: int
    n_states: int

    def __init__(self, draft: MarkovLM, target: MarkovLM, algorithm):
        self.algorithm = algorithm
        self.layout = _layout(draft, target)
        self.horizon = target.horizon
        self.start = target.start
        self.start_cdf = np.cumsum(np.asarray(target.start_distribution, dtype=np.float64))


class _AutoregressiveKernel(_Kernel):
    n_uniforms = 1
    n_states = 1

    def __init__(self, draft, target, algorithm):
        super().__init__(draft, target, algorithm)
        self.target_table = build_alias(self.layout.rows(target))

    def step(self, position, context, state, uniforms, counts):
        rows = self.layout.row_base(position) + context
        counts.target_calls += 1
        return self.target_table.draw(rows, uniforms[0]), state


class _SpeculativeKernel(_Kernel):
    """Standard speculative decoding and every verifier with tables (b, 𝒫) (Corollary 1)."""

    n_uniforms = 3

    def __init__(self, draft, target, algorithm: Speculative):
        super().__init__(draft, target, algorithm)
        p, q = self.layout.rows(draft), self.layout.rows(target)
        accept, rejection_law = algorithm.verification(p, q)
        self.draft_table = build_alias(p)
        self.acceptance = np.ascontiguousarray(accept, dtype=np.float64).ravel()
        self.rejection_table = build_alias(rejection_law)
        self.n_states = algorithm.n_round_states()
        self.after_accept = np.array(
            [algorithm.after_accept(j) for j in range(self.n_states)], dtype=np.int16)
        self.bonus_state = algorithm.window if algorithm.has_bonus_state else None
        self.target_table: AliasTable | None = (
            build_alias(q) if self.bonus_state is not None else None)

    def step(self, position, context, state, uniforms, counts):
        vocab_size = self.layout.vocab_size
        rows = self.layout.row_base(position) + context
        counts.target_calls += state == 0
        token = self.draft_table.draw(rows, uniforms[0])
        accepted = uniforms[1] < self.acceptance[rows * vocab_size + token]
        if self.bonus_state is not None:
            bonus = state == self.bonus_state
            if bonus.any():
                where = np.flatnonzero(bonus)
                token[where] = self.target_table.draw(rows[where], uniforms[0][where])
                accepted[where] = True  # a bonus token is no rejection
        rejected = np.flatnonzero(~accepted)
        if rejected.size:
            token[rejected] = self.rejection_table.draw(rows[rejected], uniforms[2][rejected])
            counts.rejections[rejected] += 1
        following = self.after_accept[state]
        if self.bonus_state is not None:
            following[bonus] = 0
        following[rejected] = 0
        return token, following


class _BatchKernel(_Kernel):
    """Algorithm 4 ("paper") and the trie verifier: candidates tried against residual tables."""

    @staticmethod
    def uniforms_for(algorithm: BatchSpeculative) -> int:
        extra = algorithm.n_drafts - 1 if algorithm.verifier == "trie" else 0
        return 2 * algorithm.n_drafts + 1 + extra

    def __init__(self, draft, target, algorithm: BatchSpeculative):
        super().__init__(draft, target, algorithm)
        p, q = self.layout.rows(draft), self.layout.rows(target)
        self.n_drafts = algorithm.n_drafts
        self.trie = algorithm.verifier == "trie"
        self.n_uniforms = self.uniforms_for(algorithm)
        self.n_rows = p.shape[0]
        residuals, _ = algorithm.residuals(p, q)
        self.draft_table = build_alias(p)
        # acceptance of candidate m against q^{m+1}, stacked: entry (m·R + row)·V + x
        self.acceptance = np.concatenate(
            [_acceptance(p, residual).ravel() for residual in residuals[:-1]])
        # law after k failures, q^{k+1}, stacked: row (k − 1)·R + row
        self.residual_table = build_alias(np.concatenate(residuals[1:]))
        self.draft_flat = p.ravel()

    def step(self, position, context, state, uniforms, counts):
        vocab_size, n_rows, n_drafts = self.layout.vocab_size, self.n_rows, self.n_drafts
        rows = self.layout.row_base(position) + context
        counts.target_calls += state == 0
        live = np.where(state == 0, n_drafts, state)
        token = np.empty(context.size, dtype=np.intp)
        winner = np.full(context.size, -1, dtype=np.intp)
        pending = np.ones(context.size, dtype=bool)
        for m in range(n_drafts):
            trying = np.flatnonzero(pending & (live > m))
            if not trying.size:
                break
            r = rows[trying]
            candidate = self.draft_table.draw(r, uniforms[2 * m][trying])
            accepted = uniforms[2 * m + 1][trying] < \
                self.acceptance[(m * n_rows + r) * vocab_size + candidate]
            won = trying[accepted]
            token[won] = candidate[accepted]
            winner[won] = m
            pending[won] = False
        rejected = np.flatnonzero(pending)  # every live candidate failed
        if rejected.size:
            level_rows = (live[rejected] - 1) * n_rows + rows[rejected]
            token[rejected] = self.residual_table.draw(level_rows,
                                                       uniforms[2 * n_drafts][rejected])
            counts.rejections[rejected] += 1
        following = np.zeros_like(state)
        won = np.flatnonzero(~pending)
        if not self.trie:
            following[won] = 1
        elif won.size:
            share = self.draft_flat[rows[won] * vocab_size + token[won]]  # p(accepted token)
            stay = np.ones(won.size, dtype=state.dtype)
            for i in range(1, n_drafts):  # untried candidate i keeps the prefix w.p. p(x)
                untried = (i > winner[won]) & (i < live[won])
                stay += untried & (uniforms[2 * n_drafts + i][won] < share)
            following[won] = stay
        return token, following


_KERNELS = [(Autoregressive, _AutoregressiveKernel), (Speculative, _SpeculativeKernel),
            (BatchSpeculative, _BatchKernel)]


def _kernel_class(algorithm) -> type[_Kernel]:
    for kind, kernel in _KERNELS:
        if isinstance(algorithm, kind):
            return kernel
    raise TypeError(f"the vectorized engine has no kernel for {algorithm!r}")


def make_kernel(draft: MarkovLM, target: MarkovLM, algorithm) -> _Kernel:
    """Build the tables of ``algorithm`` for this pair (done once per simulation)."""
    return _kernel_class(algorithm)(draft, target, algorithm)


def uniforms_per_position(algorithm) -> int:
    """k: how many uniforms each trial consumes at each position (the layout's middle axis)."""
    kernel = _kernel_class(algorithm)
    if hasattr(kernel, "uniforms_for"):
        return kernel.uniforms_for(algorithm)
    return kernel.n_uniforms


class _Counts:
    def __init__(self, n: int):
        self.rejections = np.zeros(n, dtype=np.int64)
        self.target_calls = np.zeros(n, dtype=np.int64)


def _run_chunk(kernel: _Kernel, start_uniforms, next_uniforms, n: int,
               record_tokens: bool) -> SimResult:
    """Advance n trials through all positions; ``next_uniforms(t)`` gives the (k, n) block."""
    if isinstance(kernel.start, int):
        context = np.full(n, kernel.start, dtype=np.intp)
    else:
        index = np.searchsorted(kernel.start_cdf, start_uniforms * kernel.start_cdf[-1],
                                side="right")
        context = np.minimum(index, kernel.start_cdf.size - 1).astype(np.intp)
    state = np.zeros(n, dtype=np.int16)
    counts = _Counts(n)
    tokens = np.empty((n, kernel.horizon), dtype=np.int64) if record_tokens else None
    layout = kernel.layout
    for position in range(kernel.horizon):
        token, state = kernel.step(position, context, state, next_uniforms(position), counts)
        if tokens is not None:
            tokens[:, position] = token
        context = layout.advance(context, token)
    return SimResult(counts.rejections, counts.target_calls, tokens)


def run_uniforms(draft: MarkovLM, target: MarkovLM, algorithm, uniforms, *,
                 start_uniforms=None, record_tokens: bool = False) -> SimResult:
    """Run the engine on given uniforms: ``uniforms`` (T, k, n), ``start_uniforms`` (n,).

    A pure function of its inputs (no randomness of its own): the contract that the torch
    engine reproduces exactly.  ``k`` is ``make_kernel(...).n_uniforms``.
    """
    uniforms = np.asarray(uniforms, dtype=np.float64)
    if uniforms.ndim != 3:
        raise ValueError(f"uniforms must have shape (T, k, n); got shape {uniforms.shape}")
    n_trials = check_problem(draft, target, algorithm, uniforms.shape[-1])
    kernel = make_kernel(draft, target, algorithm)
    expected = (target.horizon, kernel.n_uniforms, n_trials)
    if uniforms.shape != expected:
        raise ValueError(f"uniforms must have shape (T, k, n) = {expected}; got {uniforms.shape}")
    if not isinstance(target.start, int):
        if start_uniforms is None:
            raise ValueError("start_uniforms (n,) are needed when the start is a distribution")
        start_uniforms = np.asarray(start_uniforms, dtype=np.float64)
        if start_uniforms.shape != (n_trials,):
            raise ValueError(
                f"start_uniforms must have shape ({n_trials},); got {start_uniforms.shape}")
    return _run_chunk(kernel, start_uniforms, lambda t: uniforms[t], n_trials, record_tokens)


def chunk_sizes(n_trials: int, chunk_size: int) -> list[int]:
    """Sizes of the consecutive chunks that ``n_trials`` trials are cut into."""
    full, rest = divmod(n_trials, chunk_size)
    return [chunk_size] * full + ([rest] if rest else [])


def _simulate_chunk(kernel: _Kernel, stream: np.random.Generator, n: int,
                    record_tokens: bool = False) -> SimResult:
    """One chunk: its start uniforms, then a (k, n) block per position, from ``stream``."""
    start_uniforms = None if isinstance(kernel.start, int) else stream.random(n)
    block = np.empty((kernel.n_uniforms, n))  # refilled in place at every position
    return _run_chunk(kernel, start_uniforms, lambda _t: stream.random(out=block), n,
                      record_tokens)


def _count_chunk(kernel: _Kernel, stream: np.random.Generator, n: int) -> SimCounts:
    return SimCounts.from_result(_simulate_chunk(kernel, stream, n), kernel.horizon)


def _prepare(draft, target, algorithm, n_trials, rng, chunk_size):
    n_trials = check_problem(draft, target, algorithm, n_trials)
    if not isinstance(chunk_size, numbers.Integral) or isinstance(chunk_size, bool) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    kernel = make_kernel(draft, target, algorithm)
    sizes = chunk_sizes(n_trials, int(chunk_size))
    return kernel, sizes, np.random.default_rng(rng).spawn(len(sizes))


def _map_chunks(function, kernel, sizes, streams, *, client=None, progress=False, label=""):
    """Yield ``function(kernel, stream_i, size_i)`` for every chunk, in chunk order.

    With a ``dask.distributed`` client the chunks run on its workers (the kernel is scattered
    once per call); every chunk still uses its own spawned stream, so results do not depend on where
    or in how many processes they ran.
    """
    if client is None:
        results = (function(kernel, stream, n) for stream, n in
                   zip(streams, sizes, strict=True))
    else:
        # A fresh key per call (hash=False): re-broadcasting an identical, already scattered
        # kernel was seen to stall distributed's worker-to-worker replication.
        shared = client.scatter(kernel, hash=False)
        futures = client.map(function, [shared] * len(sizes), streams, sizes, pure=False)
        results = (future.result() for future in futures)
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(sizes), desc=label, unit="chunk")
    yield from results


def simulate(draft: MarkovLM, target: MarkovLM, algorithm, *, n_trials: int, rng=None,
             record_tokens: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
             progress: bool = False, client=None) -> SimResult:
    """Monte Carlo simulation of ``algorithm`` on (draft, target) with the vectorized engine.

    Parameters
    ----------
    draft, target : MarkovLM
        Compatible models (:func:`theory.check_compatible`).
    algorithm : theory.Algorithm
        ``Autoregressive()``, ``Speculative(...)``, ``BatchSpeculative(...)``,
        ``LossySpeculative(...)`` or any verifier built on them.
    n_trials : int
        Number of independent runs.
    rng : seed or numpy Generator, optional
        Chunk i uses the i-th child of ``rng.spawn``; same seed and chunk size, same result.
    record_tokens : bool
        Also return the emitted sequences, (n_trials, T).
    chunk_size : int
        Trials advanced together; memory is O(chunk_size · (T if tokens are recorded else 1))
        per chunk in flight.
    progress : bool
        Show a tqdm progress bar over chunks.
    client : dask.distributed.Client, optional
        Run the chunks on a dask cluster.  The result is identical, bit for bit, to the
        single-process one (and independent of the number of workers).

    Returns
    -------
    SimResult

    See Also
    --------
    simulate_counts : the same simulation keeping only histograms (memory independent of
        ``n_trials``).

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
    kernel, sizes, streams = _prepare(draft, target, algorithm, n_trials, rng, chunk_size)
    function = functools.partial(_simulate_chunk, record_tokens=record_tokens)
    return SimResult.concatenate(list(_map_chunks(
        function, kernel, sizes, streams, client=client, progress=progress,
        label=type(algorithm).__name__)))


def simulate_counts(draft: MarkovLM, target: MarkovLM, algorithm, *, n_trials: int,
                    rng=None, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool = False,
                    client=None) -> SimCounts:
    """:func:`simulate`, keeping only the histograms of rejections and target calls.

    Chunks are reduced as they finish, so memory stays flat however large ``n_trials`` is
    (10^8 trials of the Fig. 2 setting run in a few minutes on 2 cores).  The histograms equal
    ``np.bincount`` of :func:`simulate`'s arrays for the same seed and chunk size.

    Examples
    --------
    >>> from sim.engine import simulate_counts
    >>> from sim.models import fig2_pair
    >>> from theory import Speculative
    >>> counts = simulate_counts(*fig2_pair(), Speculative(), n_trials=1000, rng=0)
    >>> int(counts.rejection_counts.sum()), counts.rejection_counts.shape
    (1000, (51,))
    """
    kernel, sizes, streams = _prepare(draft, target, algorithm, n_trials, rng, chunk_size)
    total = SimCounts.empty(kernel.horizon)
    for part in _map_chunks(_count_chunk, kernel, sizes, streams, client=client,
                            progress=progress, label=type(algorithm).__name__):
        total = total + part
    return total
