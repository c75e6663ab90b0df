r"""Compiled CPU kernels (numba): one fused loop per trial, randomness from counters.

Each kernel is a pure function of the sampling tables of :mod:`sim.engine` and the Philox key.
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
start (random prompt)  position ``START_POSITION``, slot 0, by inverse CDF
=====================  =======================================================================

Block verification's arithmetic (:func:`block_kernel`; the torch engine repeats it operation
by operation, all float64, no fused multiply-add): π_{i+1} = min(1, π_i · (q(x)/p(x)));
r_i = Σ_x [π_i q(x) − p(x)]₊ summed over x = 0 … V − 1 in order, adding only positive terms;
h_i = r_i / (r_i + (1 − π_i)), 1 when that denominator is 0; X_i passes when η_i < h_i.  The
residual Y is drawn by inverse CDF over the same ordered positive terms: the first x whose
running sum exceeds u · r_τ (the last positive term if rounding leaves none).  r_τ = 0 has
probability 0 in exact arithmetic (see :class:`theory.BlockSpeculative`); should rounding
produce it, Y is drawn the same way from q(· | X≤τ).

Alias draws (:mod:`sim.tables`): with k = ⌊uV⌋ (at most V − 1), the outcome is k when
uV − k < θ_k, else the alias a_k; the (θ, a) pair of a column is one complex128 record.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from sim.philox import PHILOX_MULTIPLIERS, PHILOX_ROUNDS, PHILOX_WEYL, START_POSITION

__all__ = ["alias_draw", "batch_kernel", "block_kernel", "token_kernel", "uniform",
           "uniform_pair"]

_M0, _M1 = (np.uint64(m) for m in PHILOX_MULTIPLIERS)
_W0, _W1 = (np.uint64(w) for w in PHILOX_WEYL)
_MASK = np.uint64(0xFFFFFFFF)
_S32, _S21, _S11 = np.uint64(32), np.uint64(21), np.uint64(11)
_ROUNDS = PHILOX_ROUNDS
_START = np.uint64(START_POSITION)
_SCALE = 2.0**-53
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
    """:func:`sim.philox.uniforms` for one (trial, position, slot); all uint64."""
    even, odd = uniform_pair(key0, key1, trial, position, slot >> _ONE)
    return odd if slot & _ONE else even


@njit(inline="always", cache=True)
def alias_draw(entries, row, vocab_size, u):
    """One draw from row ``row`` of packed alias records (see :class:`sim.tables.AliasTable`)."""
    scaled = u * vocab_size
    column = min(np.int64(scaled), vocab_size - 1)
    record = entries[row * vocab_size + column]
    alias = np.int64(record.imag)
    return column if scaled - column < record.real else alias


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


@njit(inline="always", cache=True)
def _first_pairs(key0, key1, first, position, even, odd):
    """Slots 0 and 1 of trials first, first + 1, … at ``position``: a branch-free loop."""
    for j in range(even.size):
        even[j], odd[j] = uniform_pair(key0, key1, np.uint64(first + j), position, _ZERO)


@njit(parallel=True, cache=True)
def token_kernel(key0, key1, first_trial, horizon, n_contexts, vocab_size, row_stride,
                 start, start_cdf, next_context, proposal, acceptance, rejection,
                 after_accept, bonus_state, bonus_offset, rejection_offset, round_start,
                 rejections, target_calls, tokens):
    """Token-wise verification (``Speculative`` and every (b, 𝒫) verifier; ``Autoregressive``).

    Round state j: 0 = a round (target call) starts; ``after_accept[j]`` follows an accepted
    token.  At a bonus position (state ``bonus_state``) the token comes from q with no test:
    the tables stack q's rows ``bonus_offset`` rows after p's in ``proposal``, with
    acceptance 1 there, so a bonus is the same branch-free step as a draft (``Autoregressive``
    is bonus_state = 0 with only q's rows and offset 0).  Every trial draws its candidate
    rejection token too and keeps it when the test fails — no data-dependent branch, so the
    table reads of many trials are in flight at once.  ``next_context`` of size 0 means a
    first-order chain; ``tokens`` of size 0 means "do not record".  A non-empty
    ``round_start[n·S + s]`` is the state a round starting at (n, s) begins in (a window
    policy: its window, or the bonus state for a plain target step).  In the bonus state the
    rejection law's row is ``rejection_offset`` rows later (0 except for the root verifiers of
    :class:`sim.engine.RootTables`, whose root is the bonus state: proposal a/α, acceptance α,
    rejection r/(1 − α)).
    """
    record = tokens.shape[0] > 0
    first_order = next_context.size == 0
    policy = round_start.size > 0
    k0, k1 = np.uint64(key0), np.uint64(key1)
    n_trials = rejections.size
    for block in prange((n_trials + BLOCK - 1) // BLOCK):
        # The block set-up is written out in each kernel on purpose: moving it into a shared
        # inline helper made LLVM's code for this loop 2-3x slower (measured).
        lo = block * BLOCK
        size = min(BLOCK, n_trials - lo)
        first = first_trial + lo
        context = np.empty(size, dtype=np.int64)
        state = np.zeros(size, dtype=np.int64)
        rejected = np.zeros(size, dtype=np.int64)
        calls = np.zeros(size, dtype=np.int64)
        u_token, u_test, u_rejection = np.empty(size), np.empty(size), np.empty(size)
        for j in range(size):
            context[j] = _start_context(k0, k1, np.uint64(first + j), start, start_cdf)
        for position in range(horizon):
            n = np.uint64(position)
            _first_pairs(k0, k1, first, n, u_token, u_test)
            for j in range(size):
                u_rejection[j] = uniform(k0, k1, np.uint64(first + j), n, np.uint64(2))
            for j in range(size):
                row = position * row_stride + context[j]
                current = state[j]
                calls[j] += current == 0
                if policy and current == 0:
                    current = round_start[position * n_contexts + context[j]]
                proposed_row = row + bonus_offset * (current == bonus_state)
                token = alias_draw(proposal, proposed_row, vocab_size, u_token[j])
                accepted = u_test[j] < acceptance[proposed_row * vocab_size + token]
                fallback = alias_draw(rejection, row + rejection_offset * (current == bonus_state),
                                      vocab_size, u_rejection[j])
                token = token if accepted else fallback
                state[j] = after_accept[current] if accepted else 0
                rejected[j] += not accepted
                if record:
                    tokens[lo + j, position] = token
                context[j] = token if first_order else \
                    next_context[context[j] * vocab_size + token]
        for j in range(size):
            rejections[lo + j] = rejected[j]
            target_calls[lo + j] = calls[j]


@njit(parallel=True, cache=True)
def batch_kernel(key0, key1, first_trial, horizon, n_contexts, vocab_size, row_stride,
                 start, start_cdf, next_context, n_drafts, trie, n_rows, draft, draft_probs,
                 acceptance, residual, rejections, target_calls, tokens):
    """Algorithm 4 (``trie=False``) and the trie verifier with M = ``n_drafts`` candidates.

    Round state k: 0 = a round starts with M candidates, k ≥ 1 = k live candidates.
    Candidate m (0-based) is tested against q^{m+1}: ``acceptance[(m·R + row)·V + x]``; after
    k failures the token comes from row (k − 1)·R + row of ``residual`` (q^{k+1}).  Only the
    candidates actually tried draw uniforms, so the cost does not grow with untried ones.
    """
    record = tokens.shape[0] > 0
    first_order = next_context.size == 0
    k0, k1 = np.uint64(key0), np.uint64(key1)
    last = np.uint64(2 * n_drafts)
    n_trials = rejections.size
    for block in prange((n_trials + BLOCK - 1) // BLOCK):
        lo = block * BLOCK
        size = min(BLOCK, n_trials - lo)
        first = first_trial + lo
        context = np.empty(size, dtype=np.int64)
        state = np.zeros(size, dtype=np.int64)
        rejected = np.zeros(size, dtype=np.int64)
        calls = np.zeros(size, dtype=np.int64)
        u_draw, u_test = np.empty(size), np.empty(size)
        for j in range(size):
            context[j] = _start_context(k0, k1, np.uint64(first + j), start, start_cdf)
        for position in range(horizon):
            n = np.uint64(position)
            _first_pairs(k0, k1, first, n, u_draw, u_test)
            for j in range(size):
                trial = np.uint64(first + j)
                row = position * row_stride + context[j]
                live = n_drafts
                if state[j] == 0:
                    calls[j] += 1
                else:
                    live = state[j]
                winner = -1
                token = 0
                draw, test = u_draw[j], u_test[j]
                for m in range(live):
                    if m:
                        draw, test = uniform_pair(k0, k1, trial, n, np.uint64(m))
                    candidate = alias_draw(draft, row, vocab_size, draw)
                    if test < acceptance[(m * n_rows + row) * vocab_size + candidate]:
                        token = candidate
                        winner = m
                        break
                if winner < 0:
                    token = alias_draw(residual, (live - 1) * n_rows + row, vocab_size,
                                       uniform(k0, k1, trial, n, last))
                    rejected[j] += 1
                    state[j] = 0
                elif not trie:
                    state[j] = 1
                else:
                    share = draft_probs[row * vocab_size + token]
                    stay = 1
                    for untried in range(winner + 1, live):
                        if uniform(k0, k1, trial, n, last + np.uint64(untried)) < share:
                            stay += 1
                    state[j] = stay
                if record:
                    tokens[lo + j, position] = token
                context[j] = token if first_order else \
                    next_context[context[j] * vocab_size + token]
        for j in range(size):
            rejections[lo + j] = rejected[j]
            target_calls[lo + j] = calls[j]


#: Selection rules of :func:`block_kernel` ("block" is block verification; the others are
#: known-wrong rules kept as negative controls, see ``tests/mutants.py``).
BLOCK_SELECTIONS = {"block": 0, "shared_uniform": 1, "first_failure": 2,
                    "cumulative_product": 3}


@njit(inline="always", cache=True)
def _residual_draw(draft_probs, target_probs, offset, vocab_size, pi, u):
    """Inverse CDF of [π q − p]₊ over row ``offset`` (q itself if that mass is 0)."""
    total = 0.0
    for x in range(vocab_size):
        gap = pi * target_probs[offset + x] - draft_probs[offset + x]
        if gap > 0.0:
            total += gap
    use_target = not total > 0.0
    if use_target:
        total = 0.0
        for x in range(vocab_size):
            weight = target_probs[offset + x]
            if weight > 0.0:
                total += weight
    goal = u * total
    running = 0.0
    chosen = 0
    for x in range(vocab_size):
        weight = target_probs[offset + x] if use_target else \
            pi * target_probs[offset + x] - draft_probs[offset + x]
        if weight > 0.0:
            running += weight
            chosen = x
            if running > goal:
                return x
    return chosen


@njit(inline="always", cache=True)
def _block_select(selection, key0, key1, trial, position, span, h, ratio):
    """τ from the weights h[1 … span] (and, for the cumulative-product rule, the ratios)."""
    if selection == 0:  # block verification: τ = max{i : η_i < h_i}
        for i in range(span, 0, -1):
            if uniform(key0, key1, trial, position, np.uint64(2 * i - 1)) < h[i]:
                return i
        return 0
    if selection == 1:  # one shared η (slot 1)
        shared = uniform(key0, key1, trial, position, _ONE)
        for i in range(span, 0, -1):
            if shared < h[i]:
                return i
        return 0
    if selection == 2:  # upward scan, stop at the first failure
        for i in range(1, span + 1):
            if not uniform(key0, key1, trial, position, np.uint64(2 * i - 1)) < h[i]:
                return i - 1
        return span
    best = 0  # cumulative products: Π ratio ≥ Π η
    ratios, etas = 1.0, 1.0
    for i in range(1, span + 1):
        ratios *= ratio[i]
        etas *= uniform(key0, key1, trial, position, np.uint64(2 * i - 1))
        if ratios >= etas:
            best = i
    return best


@njit(parallel=True, cache=True)
def block_kernel(key0, key1, first_trial, horizon, n_contexts, vocab_size, row_stride,
                 start, start_cdf, next_context, window, bonus, selection, draft, target,
                 draft_probs, target_probs, rejections, target_calls, tokens):
    """Block verification (:class:`theory.BlockSpeculative`), one round at a time per trial.

    A round from position n drafts γ' = min(γ, T − n) tokens (alias draws from ``draft``),
    computes π and h (see the module docstring for the exact arithmetic), selects τ and
    emits X₁ … X_τ and then Y: from the residual (a rejection) when τ < γ', from ``target``'s
    alias table when τ = γ', ``bonus`` and a position remains.  Every uniform of the round uses
    the counter position n.  ``draft_probs``/``target_probs`` are the (R·V,) rows of p, q.
    """
    record = tokens.shape[0] > 0
    first_order = next_context.size == 0
    k0, k1 = np.uint64(key0), np.uint64(key1)
    last = np.uint64(2 * window)
    n_trials = rejections.size
    for block in prange((n_trials + BLOCK - 1) // BLOCK):
        lo = block * BLOCK
        size = min(BLOCK, n_trials - lo)
        first = first_trial + lo
        contexts = np.empty(window + 1, dtype=np.int64)
        drafted = np.empty(window, dtype=np.int64)
        pi, h, ratio = np.empty(window + 1), np.empty(window + 1), np.empty(window + 1)
        for j in range(size):
            trial = np.uint64(first + j)
            context = _start_context(k0, k1, trial, start, start_cdf)
            position, rejected, calls = 0, 0, 0
            while position < horizon:
                calls += 1
                n = np.uint64(position)
                span = min(window, horizon - position)
                contexts[0] = context
                pi[0] = 1.0
                h[0] = 1.0
                for i in range(span):
                    row = (position + i) * row_stride + contexts[i]
                    offset = row * vocab_size
                    if i > 0:
                        r = 0.0
                        for x in range(vocab_size):
                            gap = pi[i] * target_probs[offset + x] - draft_probs[offset + x]
                            if gap > 0.0:
                                r += gap
                        denominator = r + (1.0 - pi[i])
                        h[i] = r / denominator if denominator > 0.0 else 1.0
                    token = alias_draw(draft, row, vocab_size,
                                       uniform(k0, k1, trial, n, np.uint64(2 * i)))
                    drafted[i] = token
                    ratio[i + 1] = target_probs[offset + token] / draft_probs[offset + token]
                    product = pi[i] * ratio[i + 1]
                    pi[i + 1] = product if product < 1.0 else 1.0
                    contexts[i + 1] = token if first_order else \
                        next_context[contexts[i] * vocab_size + token]
                h[span] = pi[span]
                tau = _block_select(selection, k0, k1, trial, n, span, h, ratio)
                if record:
                    for i in range(tau):
                        tokens[lo + j, position + i] = drafted[i]
                context = contexts[tau]
                position += tau
                final = -1
                if tau < span:
                    final = _residual_draw(draft_probs, target_probs,
                                           ((position * row_stride) + context) * vocab_size,
                                           vocab_size, pi[tau], uniform(k0, k1, trial, n, last))
                    rejected += 1
                elif bonus and position < horizon:
                    final = alias_draw(target, position * row_stride + context, vocab_size,
                                       uniform(k0, k1, trial, n, last))
                if final >= 0:
                    if record:
                        tokens[lo + j, position] = final
                    context = final if first_order else \
                        next_context[context * vocab_size + final]
                    position += 1
            rejections[lo + j] = rejected
            target_calls[lo + j] = calls


def thread_count() -> int:
    """Threads the kernels use (``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``)."""
    return numba.get_num_threads()
