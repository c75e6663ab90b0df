r"""Block verification in the engines (Sun et al., ICLR 2025; :class:`theory.BlockSpeculative`).

One home for what the engines do with ``BlockSpeculative(γ)``, a round-level family (the
round's outcome depends on the whole drafted block):

* :class:`BlockTables` — alias tables of p and q and their rows as floats (the in-kernel sums
  r_i = Σ_x [π_i q − p]₊ and the residual's draw depend on the path);
* :func:`block_kernel` — the compiled loop, one round at a time per trial; every uniform of a
  round uses the round's START position as its counter position: slots 2(i − 1): draft X_i,
  2(i − 1) + 1: η_i, 2γ: the final token Y (residual or bonus);
* the reference routine — Sun et al.'s Algorithm 2 written as pseudo-code over a chooser
  (:mod:`sim.engine.reference`), with the known-wrong selection rules kept as negative controls.

Block verification's arithmetic (:func:`block_kernel`; the torch engine repeats it operation
by operation, all float64, no fused multiply-add): π_{i+1} = min(1, π_i · (q(x)/p(x)));
r_i = Σ_x [π_i q(x) − p(x)]₊ summed over x = 0 … V − 1 in order, adding only positive terms;
h_i = r_i / (r_i + (1 − π_i)), 1 when that denominator is 0; X_i passes when η_i < h_i.  The
residual Y is drawn by inverse CDF over the same ordered positive terms: the first x whose
running sum exceeds u · r_τ (the last positive term if rounding leaves none).  r_τ = 0 has
probability 0 in exact arithmetic (see :class:`theory.BlockSpeculative`); should rounding
produce it, Y is drawn the same way from q(· | X≤τ).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from sim.engine.compiled import BLOCK, _start_context, alias_draw, uniform_pair
from sim.engine.core import Layout, register_family
from sim.engine.reference import Outcome, _Trace
from sim.engine.tables import AliasTable, build_alias
from theory import BlockSpeculative, MarkovLM
from theory.onestep import positive_part

__all__ = ["BLOCK_SELECTIONS", "BlockTables", "block_kernel"]


#: Selection rules of :func:`block_kernel` ("block" is block verification; the others are
#: known-wrong rules kept as negative controls, see ``tests/mutants.py``).
BLOCK_SELECTIONS = {"block": 0, "shared_uniform": 1, "first_failure": 2,
                    "cumulative_product": 3}


@dataclass(frozen=True)
class BlockTables:
    """Tables of block verification: alias tables of p and q, and their rows as floats.

    The rows (``draft_probs``, ``target_probs``, (R·V,)) serve the in-kernel sums
    r_i = Σ_x [π_i q − p]₊ and the residual's inverse-CDF draw, whose π_i depends on the path
    and so cannot be tabulated (:func:`block_kernel`).
    """

    algorithm: BlockSpeculative
    layout: Layout
    draft: AliasTable
    target: AliasTable
    draft_probs: np.ndarray
    target_probs: np.ndarray
    selection: int  # sim.BLOCK_SELECTIONS

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> BlockTables:
        rule = algorithm.selection
        if rule not in BLOCK_SELECTIONS:
            raise TypeError(f"the engines have no block selection rule {rule!r}")
        layout = Layout.of(draft, target)
        p, q = layout.rows(draft), layout.rows(target)
        return cls(algorithm, layout, build_alias(p), build_alias(q), p.ravel(), q.ravel(),
                   BLOCK_SELECTIONS[rule])

    @classmethod
    def steps_per_position(cls, algorithm, target: MarkovLM) -> float:
        """At most γ draft steps, each with a sum over the vocabulary (V / 32 steps)."""
        return algorithm.window * (1.0 + target.vocab_size / 32)

    def run(self, key, first_trial, rejections, target_calls, drafted, tokens) -> None:
        algorithm = self.algorithm
        block_kernel(
            key[0], key[1], first_trial, *self.layout.common_arguments(), algorithm.window,
            bool(algorithm.bonus), self.selection, self.draft.entries, self.target.entries,
            self.draft_probs, self.target_probs, rejections, target_calls, drafted, tokens)


@njit(inline="always", cache=True)
def _residual_draw(draft_probs, target_probs, offset, vocab_size, pi, u):
    """Inverse CDF of [π q − p]₊ over row ``offset`` (q itself if that mass is 0)."""
    total = 0.0
    for x in range(vocab_size):
        gap = pi * target_probs[offset + x] - draft_probs[offset + x]
        total += gap if gap > 0.0 else 0.0  # adding 0.0 is exact: a select, not a branch
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
def _block_select(selection, span, h, ratio, eta):
    """τ from the weights h[1 … span] and the uniforms η_i = ``eta[i]`` (slot 2i − 1; for the
    cumulative-product rule, also the ratios)."""
    if selection == 0:  # block verification: τ = max{i : η_i < h_i}
        for i in range(span, 0, -1):
            if eta[i] < h[i]:
                return i
        return 0
    if selection == 1:  # one shared η (slot 1)
        shared = eta[1]
        for i in range(span, 0, -1):
            if shared < h[i]:
                return i
        return 0
    if selection == 2:  # upward scan, stop at the first failure
        for i in range(1, span + 1):
            if not eta[i] < h[i]:
                return i - 1
        return span
    best = 0  # cumulative products: Π ratio ≥ Π η
    ratios, etas = 1.0, 1.0
    for i in range(1, span + 1):
        ratios *= ratio[i]
        etas *= eta[i]
        if ratios >= etas:
            best = i
    return best


@njit(parallel=True, cache=True)
def block_kernel(key0, key1, first_trial, horizon, n_contexts, vocab_size, row_stride,
                 start, start_cdf, next_context, window, bonus, selection, draft, target,
                 draft_probs, target_probs, rejections, target_calls, drafted_counts, tokens):
    """Block verification (:class:`theory.BlockSpeculative`), a round at a time per trial.

    A round from position n drafts γ' = min(γ, T − n) tokens (alias draws from ``draft``),
    computes π and h (see the module docstring for the exact arithmetic), selects τ and
    emits X₁ … X_τ and then Y: from the residual (a rejection) when τ < γ', from ``target``'s
    alias table when τ = γ', ``bonus`` and a position remains.  Every uniform of the round uses
    the counter position n.  ``draft_probs``/``target_probs`` are the (R·V,) rows of p, q;
    ``drafted_counts[i]`` receives Σ γ' over trial i's rounds.
    """
    record = tokens.shape[0] > 0
    first_order = next_context.size == 0
    k0, k1 = np.uint64(key0), np.uint64(key1)
    n_trials = rejections.size
    for block in prange((n_trials + BLOCK - 1) // BLOCK):
        # Trials advance together, position by position; at each position the trials whose
        # round starts there draw all of the round's uniforms in branch-free (SIMD) loops —
        # pair i (slots 2i, 2i + 1: X_{i+1}, η_{i+1}) for i < γ', and pair γ (slot 2γ: Y) —
        # then play their rounds one by one.
        lo = block * BLOCK
        size = min(BLOCK, n_trials - lo)
        first = first_trial + lo
        contexts = np.empty(window + 1, dtype=np.int64)
        drafted = np.empty(window, dtype=np.int64)
        pi, h, ratio = np.empty(window + 1), np.empty(window + 1), np.empty(window + 1)
        eta = np.empty(window + 1)
        context = np.empty(size, dtype=np.int64)
        round_at = np.zeros(size, dtype=np.int64)  # where each trial's next round starts
        rejected = np.zeros(size, dtype=np.int64)
        calls = np.zeros(size, dtype=np.int64)
        drafts = np.zeros(size, dtype=np.int64)
        active = np.empty(size, dtype=np.int64)
        u_even, u_odd = np.empty((window + 1, size)), np.empty((window + 1, size))
        for j in range(size):
            context[j] = _start_context(k0, k1, np.uint64(first + j), start, start_cdf)
        for start_position in range(horizon):
            count = 0
            for j in range(size):  # branch-free: rounds start at unpredictable positions
                active[count] = j
                count += round_at[j] == start_position
            if count == 0:
                continue
            n = np.uint64(start_position)
            span = min(window, horizon - start_position)
            for i in range(span):
                for c in range(count):
                    u_even[i, c], u_odd[i, c] = uniform_pair(
                        k0, k1, np.uint64(first + active[c]), n, np.uint64(i))
            for c in range(count):
                u_even[window, c], u_odd[window, c] = uniform_pair(
                    k0, k1, np.uint64(first + active[c]), n, np.uint64(window))
            for c in range(count):
                j = active[c]
                position = start_position
                calls[j] += 1
                drafts[j] += span
                contexts[0] = context[j]
                pi[0] = 1.0
                h[0] = 1.0
                for i in range(span):
                    row = (position + i) * row_stride + contexts[i]
                    offset = row * vocab_size
                    if i > 0:
                        r = 0.0
                        for x in range(vocab_size):
                            gap = pi[i] * target_probs[offset + x] - draft_probs[offset + x]
                            r += gap if gap > 0.0 else 0.0  # adding 0.0 is exact: no branch
                        denominator = r + (1.0 - pi[i])
                        h[i] = r / denominator if denominator > 0.0 else 1.0
                    eta[i + 1] = u_odd[i, c]
                    token = alias_draw(draft, row, vocab_size, u_even[i, c])
                    drafted[i] = token
                    ratio[i + 1] = target_probs[offset + token] / draft_probs[offset + token]
                    product = pi[i] * ratio[i + 1]
                    pi[i + 1] = product if product < 1.0 else 1.0
                    contexts[i + 1] = token if first_order else \
                        next_context[contexts[i] * vocab_size + token]
                h[span] = pi[span]
                tau = _block_select(selection, span, h, ratio, eta)
                if record:
                    for i in range(tau):
                        tokens[lo + j, position + i] = drafted[i]
                here = contexts[tau]
                position += tau
                final = -1
                if tau < span:
                    final = _residual_draw(draft_probs, target_probs,
                                           ((position * row_stride) + here) * vocab_size,
                                           vocab_size, pi[tau], u_even[window, c])
                    rejected[j] += 1
                elif bonus and position < horizon:
                    final = alias_draw(target, position * row_stride + here, vocab_size,
                                       u_even[window, c])
                if final >= 0:
                    if record:
                        tokens[lo + j, position] = final
                    here = final if first_order else next_context[here * vocab_size + final]
                    position += 1
                context[j] = here
                round_at[j] = position
        for j in range(size):
            rejections[lo + j] = rejected[j]
            target_calls[lo + j] = calls[j]
            drafted_counts[lo + j] = drafts[j]


# ---------------------------------------------------------------------- reference routine
def _block_selection(rule: str, h: list, choose) -> int:
    """τ from the weights h[1 … γ'] (h[0] unused) under a selection rule.

    ``"block"`` is block verification: τ = max{i : η_i ≤ h_i} with independent η's, read
    downward (η_i ≤ h_i is a Bernoulli(h_i) choice; the first success from the top is the
    maximum).  The other rules are known-wrong ones kept as negative controls
    (``tests/mutants.py``): one η shared by every i, and an upward scan that stops at the first
    failure.
    """
    span = len(h) - 1
    if rule == "block":
        return next((i for i in range(span, 0, -1) if choose.bernoulli(h[i])), 0)
    if rule == "first_failure":
        return next((i - 1 for i in range(1, span + 1) if not choose.bernoulli(h[i])), span)
    if rule == "shared_uniform":  # one η: τ = max{i : η < h_i}, η's interval chosen
        edges = sorted({0, 1, *h[1:]})
        intervals = [(low, high) for low, high in itertools.pairwise(edges) if high > low]
        _, high = intervals[choose.categorical([b - a for a, b in intervals])]
        return max((i for i in range(1, span + 1) if h[i] >= high), default=0)
    raise TypeError(f"the reference engine has no selection rule {rule!r}")


def _block_speculative(algorithm: BlockSpeculative, draft, target, choose) -> Outcome:
    """Block verification (Sun et al. 2025, Algorithm 2): draft γ' tokens, weigh, select τ."""
    trace = _Trace(target, choose)
    while not trace.done:  # one round per iteration: one target call
        trace.target_calls += 1
        start = trace.position
        span = min(algorithm.window, target.horizon - start)
        trace.drafted += span
        contexts, drafts, pi = [trace.context], [], [1]
        for i in range(span):  # draft X_{i+1} ~ p(· | X≤i), update π
            p = draft.probs[start + i, contexts[i]]
            q = target.probs[start + i, contexts[i]]
            token = choose.categorical(p)
            drafts.append(token)
            pi.append(min(1, pi[i] * q[token] / p[token]))
            contexts.append(int(target.next_context[contexts[i], token]))

        def gap(i, start=start, contexts=contexts, pi=pi):  # [π_i q(·|X≤i) − p(·|X≤i)]₊
            return positive_part(pi[i] * target.probs[start + i, contexts[i]]
                                 - draft.probs[start + i, contexts[i]])

        h = [1]
        for i in range(1, span):
            r = sum(gap(i))
            denominator = r + 1 - pi[i]
            h.append(r / denominator if denominator != 0 else 1)
        h.append(pi[span])
        accepted = _block_selection(algorithm.selection, h, choose)
        for token in drafts[:accepted]:
            trace.emit(token)
        if accepted < span:  # residual draw: a rejection
            law = gap(accepted)  # r_τ > 0 whenever reached exactly; engines' float guard: q
            if sum(law) == 0:
                law = target.probs[trace.position, trace.context]
            trace.emit(choose.categorical(law))
            trace.rejections += 1
        elif algorithm.bonus and not trace.done:
            trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
    return trace.outcome()


register_family(BlockSpeculative, BlockTables, _block_speculative)
