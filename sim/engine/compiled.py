r"""The compiled engine's shared building blocks (numba): counter uniforms, alias draws.

The family kernels (:func:`sim.engine.token.token_kernel`, :func:`sim.engine.batch.batch_kernel`,
:func:`sim.engine.block.block_kernel`, :func:`sim.engine.tree_kernel.tree_kernel`, …) are each a
pure function of their sampling tables and the Philox key, built from the primitives here.
Trials are cut into blocks of :data:`BLOCK`; a block advances one position at a time: first
branch-free loops compute the uniforms every trial needs at this position (Philox vectorizes
over trials), then each trial takes its branches.  Uniforms whose need depends on the trial's
path — candidate m ≥ 1 of a batch, the trie's "same token" tests, the last residual's draw —
are computed only when used, so cost does not grow with untried candidates.  (The rejection
uniform and draw of token-wise verifiers are computed for every trial: branch-free, that is
about twice as fast as on demand, on small and on memory-bound tables alike.  Which uniforms
are computed never changes a result: each is a fixed function of its counter.)  Trials are
independent, so ``prange`` spreads blocks over threads and the result is identical for any
thread count, chunking or order.

Slots (the counter's last word) — the contract the torch engine reproduces:

=====================  =======================================================================
kernel                 slots at position n
=====================  =======================================================================
token-wise             0: the draft token (the token from q at a bonus position and for
                       ``Autoregressive``; from a/α at the root of a multi-draft root
                       verifier), 1: the acceptance test u < b(x̃) (u < α at such a root),
                       2: the draw from the rejection law (r/(1 − α) at such a root)
batch (M candidates)   2m, 2m + 1: draw and test candidate m; 2M: the draw from the last
                       residual after every candidate failed; trie only, 2M + i: whether untried
                       candidate i shares the accepted token (u < p(x)), 1 ≤ i < M
block verification     counter position = the round's START position n (a round consumes
                       its randomness at once): 2(i − 1): draft X_i, 2(i − 1) + 1: η_i,
                       2γ: the final token Y (residual or bonus)
token trees (N nodes)  counter position = the round's START position n; nodes numbered
                       breadth-first (root 0): 2(v − 1): draft of node v, 2(v − 1) + 1: its
                       test; 2N: the final token (residual or bonus); all N + 1 pairs of a
                       round are computed at once (:mod:`sim.engine.tree_kernel`)
start (random prompt)  position ``START_POSITION``, slot 0, by inverse CDF
=====================  =======================================================================

Alias draws (:mod:`sim.engine.tables`): with k = ⌊uV⌋ (at most V − 1), the outcome is k when
f = uV − k < θ_k, else the alias a_k.  Every u is a multiple of 2⁻⁵³ and so is f (uV is exact
below 1, and a double ≥ 1 is a multiple of 2⁻⁵²), so f < θ ⟺ 2⁵³f < t with the integer
t = ⌈2⁵³θ⌉ ∈ [0, 2⁵³]: a column's record stores t and a in one uint64 (t · 2¹⁰ + a) when
V ≤ 2¹⁰ (:data:`PACKED_VOCAB`) — 8 bytes, one random memory access per draw — and as two
consecutive uint64 words (t, a) for larger V.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np
from numba import njit

from sim.engine.philox import PHILOX_MULTIPLIERS, PHILOX_ROUNDS, PHILOX_WEYL, START_POSITION

__all__ = ["BLOCK", "PACKED_VOCAB", "alias_draw", "clear_stale_kernels", "inverse_cdf",
           "thread_count", "uniform", "uniform_pair", "uniform_slots"]

#: The file beside numba's cached kernels that names the engine sources they were built from.
KERNEL_STAMP = "kernel-sources.sha256"


def clear_stale_kernels(directory: Path, sources) -> bool:
    """Remove numba's cached kernels from ``directory`` if ``sources`` changed since they were
    cached; returns whether any were removed.

    numba keys a cached kernel on its own file's time stamp only, and the kernels inline the
    helpers of this module (and of their neighbours): after an edit here — a ``git pull`` of
    a checkout, say — the kernels of ``token.py`` and the others would load stale machine code
    and give wrong arrays silently.  So the engine's sources (every ``sim/engine/*.py``) are
    hashed at import, and the kernel cache (``*.nbi``, ``*.nbc`` of ``sim/engine/__pycache__``,
    where numba caches for a writable package) is emptied when the hash differs from the one
    recorded there, or none is.  An unwritable package has its caches elsewhere (a pip
    install writes every file anew, so numba's stamps see the change) and is left alone, and
    so is a cache moved by ``NUMBA_CACHE_DIR``.
    """
    directory = Path(directory)
    hasher = hashlib.sha256()
    for source in sorted(Path(path) for path in sources):
        hasher.update(source.name.encode() + b"\0" + source.read_bytes())
    digest = hasher.hexdigest()
    stamp = directory / KERNEL_STAMP
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    cached = [*directory.glob("*.nbi"), *directory.glob("*.nbc")]
    try:
        for path in cached:
            path.unlink(missing_ok=True)
        stamp.write_text(digest)
    except OSError:  # not ours to clean (read-only): numba caches elsewhere then
        return False
    return bool(cached)


def _check_kernel_cache() -> None:
    here = Path(__file__).parent
    try:
        (here / "__pycache__").mkdir(exist_ok=True)  # a fresh checkout: record the stamp now
    except OSError:
        return
    clear_stale_kernels(here / "__pycache__", here.glob("*.py"))


_check_kernel_cache()

_M0, _M1 = (np.uint64(m) for m in PHILOX_MULTIPLIERS)
_W0, _W1 = (np.uint64(w) for w in PHILOX_WEYL)
_MASK = np.uint64(0xFFFFFFFF)
_S32, _S21, _S11 = np.uint64(32), np.uint64(21), np.uint64(11)
_ROUNDS = PHILOX_ROUNDS
_START = np.uint64(START_POSITION)
_SCALE = 2.0**-53
_GRID = 2.0**53
_ALIAS_BITS = np.uint64(10)
_ALIAS_MASK = np.uint64((1 << 10) - 1)

#: Largest vocabulary whose alias records are one uint64 word (threshold · 2¹⁰ + alias).
PACKED_VOCAB = 1 << 10
_ZERO, _ONE = np.uint64(0), np.uint64(1)

#: Trials advanced together by one thread: the Philox pair of every trial's first two slots
#: is computed for the whole block in one branch-free (SIMD) loop, then the block's
#: trials take their branches one by one.
BLOCK = 256


@njit(inline="always", cache=True)
def uniform_pair(key0, key1, trial, position, pair):
    """The uniforms of slots (2·pair, 2·pair + 1): one Philox4x32-10 block; all uint64."""
    c0, c1, c2, c3 = trial & _MASK, trial >> _S32, position, pair
    k0, k1 = key0, key1
    for r in range(_ROUNDS):
        if r:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (p1 >> _S32) ^ c1 ^ k0, p1 & _MASK, (p0 >> _S32) ^ c3 ^ k1, p0 & _MASK
    return (np.float64((c0 << _S21) | (c1 >> _S11)) * _SCALE,
            np.float64((c2 << _S21) | (c3 >> _S11)) * _SCALE)


@njit(inline="always", cache=True)
def uniform(key0, key1, trial, position, slot):
    """:func:`sim.engine.philox.uniforms` for one (trial, position, slot); all uint64."""
    even, odd = uniform_pair(key0, key1, trial, position, slot >> _ONE)
    return odd if slot & _ONE else even


@njit(inline="always", cache=True)
def alias_draw(entries, row, vocab_size, u):
    """One draw from row ``row`` of packed alias records (:class:`sim.engine.tables.AliasTable`).

    ``steps`` = 2⁵³(uV − k) is exact (see the module docstring), so ``steps < t`` is the test
    uV − k < θ of the float threshold θ, bit for bit.
    """
    scaled = u * vocab_size
    column = min(np.int64(scaled), vocab_size - 1)
    steps = np.uint64((scaled - column) * _GRID)
    index = row * vocab_size + column
    if vocab_size <= PACKED_VOCAB:
        record = entries[index]
        threshold, alias = record >> _ALIAS_BITS, np.int64(record & _ALIAS_MASK)
    else:
        threshold, alias = entries[2 * index], np.int64(entries[2 * index + 1])
    return column if steps < threshold else alias


@njit(inline="always", cache=True)
def inverse_cdf(weights, offset, size, u):
    """A draw from the positive entries of ``weights[offset : offset + size]`` (normalized).

    The ordered sum t of the positive entries (x = 0 … size − 1, adding only positive terms),
    then the first x whose running sum exceeds u · t — the last positive entry if rounding
    leaves none; 0 when no entry is positive (the callers never ask then).
    """
    total = 0.0
    for x in range(size):
        weight = weights[offset + x]
        if weight > 0.0:
            total += weight
    goal = u * total
    running = 0.0
    chosen = 0
    for x in range(size):
        weight = weights[offset + x]
        if weight > 0.0:
            running += weight
            chosen = x
            if running > goal:
                return x
    return chosen


@njit(inline="always", cache=True)
def _start_context(key0, key1, trial, start, start_cdf):
    """The trial's first context: ``start`` (≥ 0), or a draw from the prompt law's CDF."""
    if start >= 0:
        return start
    target = uniform(key0, key1, trial, _START, _ZERO) * start_cdf[-1]
    lo, hi = 0, start_cdf.size  # first index with cdf > target (numpy side="right")
    while lo < hi:
        mid = (lo + hi) // 2
        if start_cdf[mid] <= target:
            lo = mid + 1
        else:
            hi = mid
    return min(lo, start_cdf.size - 1)


@njit(cache=True)
def uniform_slots(key0, key1, trial, position, pairs, out):
    """``out[2k + h, j]`` = the uniform of slot 2·pairs[k] + h of trial ``trial[j]`` at
    ``position[j]`` (all uint64 arrays; ``position`` may be a broadcast view): the cipher of
    :func:`uniform_pair` over whole arrays, for callers that own the memory (the torch engine's
    ``philox="compiled"`` backend fills a torch tensor through its numpy view)."""
    for k in range(pairs.size):
        for j in range(trial.size):
            out[2 * k, j], out[2 * k + 1, j] = uniform_pair(key0, key1, trial[j], position[j],
                                                            pairs[k])


def thread_count() -> int:
    """Threads the kernels use (``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``)."""
    return numba.get_num_threads()
