r"""Batch verification in the engines: Algorithm 4 ("paper") and the trie, M i.i.d. drafts.

One home for what the engines do with ``BatchSpeculative(M, "paper" | "trie")`` (the paper's
Algorithm 4 and the SpecInfer-style trie of docs/architecture.md §1):

* :class:`BatchTables` — the draft's alias table and rows, the stacked acceptances
  min(1, q^{m+1}/p) of candidates m = 0 … M − 1 and the residuals q^{k+1} after k failures;
* :func:`batch_kernel` — the compiled per-trial loop (slots 2m, 2m + 1: draw and test
  candidate m; 2M: the last residual's draw; trie only, 2M + i: whether untried candidate i
  shares the accepted token);
* the reference routine — candidates tried in order against the recursive residuals, written
  as pseudo-code over a chooser (:mod:`sim.engine.reference`).

The root verifiers ("swor", "spectr", "greedy", "topk", "optimal") of the same class live in
:mod:`sim.engine.multidraft`; :meth:`BatchTables.build` and the reference routine hand them
over there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from sim.engine.compiled import (
    _ONE,
    _ZERO,
    BLOCK,
    _start_context,
    alias_draw,
    uniform_pair,
)
from sim.engine.core import Layout, draft_table, register_family
from sim.engine.multidraft import ROOT_PROCEDURES, RootTables, rooted_rounds
from sim.engine.reference import Outcome, _Trace
from sim.engine.tables import AliasTable, build_alias
from theory import BatchSpeculative, MarkovLM
from theory.multidraft import ROOT_VERIFIERS
from theory.onestep import _acceptance

__all__ = ["BatchTables", "batch_kernel"]


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
    draft_lengths: np.ndarray  # (T·S,) tokens drafted by a round from (n, s)

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
                   build_alias(np.concatenate(residuals[1:])), draft_table(algorithm, layout))

    @classmethod
    def steps_per_position(cls, algorithm, target: MarkovLM) -> float:
        """At most M candidate tests ("paper", "trie"; an upper bound: only the tried ones
        are drawn); one step for a root verifier (the token-wise kernel)."""
        if algorithm.verifier in ROOT_VERIFIERS:
            return 1.0
        return float(algorithm.n_drafts)

    def run(self, key, first_trial, rejections, target_calls, drafted, tokens) -> None:
        algorithm = self.algorithm
        batch_kernel(
            key[0], key[1], first_trial, *self.layout.common_arguments(),
            algorithm.n_drafts, algorithm.verifier == "trie", self.n_rows, self.draft.entries,
            self.draft_probs, self.acceptance, self.residual.entries, self.draft_lengths,
            rejections, target_calls, drafted, tokens)


@njit(inline="always", cache=True)
def _later_shares(key0, key1, trial, position, pair_m, first_untried, live, share):
    """How many of the trie's untried candidates ``first_untried`` … ``live − 1`` share the
    accepted token: candidate i's test is u < p(token) with u in slot 2M + i (pairs from M on,
    one cipher call for two candidates)."""
    count = 0
    even = odd = 0.0
    for untried in range(first_untried, live):
        if untried == first_untried or (untried & 1) == 0:
            even, odd = uniform_pair(key0, key1, trial, position,
                                     pair_m + np.uint64(untried >> 1))
        count += (odd if untried & 1 else even) < share
    return count


#: Untried trie candidates (1 … SHARES_AHEAD) whose "same token" uniforms (slots 2M + 1 …
#: 2M + 3) every trial computes in the branch-free loops; later ones draw them when tested.
SHARES_AHEAD = 3


@njit(parallel=True, cache=True)
def batch_kernel(key0, key1, first_trial, horizon, n_contexts, vocab_size, row_stride,
                 start, start_cdf, next_context, n_drafts, trie, n_rows, draft, draft_probs,
                 acceptance, residual, draft_lengths, rejections, target_calls, drafted,
                 tokens):
    """Algorithm 4 (``trie=False``) and the trie verifier with M = ``n_drafts`` candidates.

    Round state k: 0 = a round starts with M candidates, k ≥ 1 = k live candidates.
    Candidate m (0-based) is tested against q^{m+1}: ``acceptance[(m·R + row)·V + x]``; after
    k failures the token comes from row (k − 1)·R + row of ``residual`` (q^{k+1}).

    A position is worked like the token-wise kernel's, in short branch-free loops over the
    block's trials: the uniforms, candidate 0's draw and test, and the draw from the residual
    after every live candidate failed are made for every trial (slots 0, 1, 2M; the trie's
    "same token" uniforms of untried candidates 1 … :data:`SHARES_AHEAD` too).  Only the
    trials whose candidate 0 failed with more candidates live are then listed and finished one
    by one, drawing the uniforms of the candidates they try (slots 2m, 2m + 1), so the cost
    does not grow with untried candidates.  Apart from that list, no loop branches on a
    trial's outcome (no short-circuit ``and``/``or`` either: they branch too, measured 3x
    slower), which keeps many trials' table reads in flight at once.
    """
    record = tokens.shape[0] > 0
    first_order = next_context.size == 0
    k0, k1 = np.uint64(key0), np.uint64(key1)
    pair_m = np.uint64(n_drafts)  # slots 2M (the last residual's draw) and 2M + 1
    shares_ahead = trie and n_drafts > 2  # slots 2M + 2, 2M + 3 computed for every trial
    n_trials = rejections.size
    for block in prange((n_trials + BLOCK - 1) // BLOCK):
        lo = block * BLOCK
        size = min(BLOCK, n_trials - lo)
        first = first_trial + lo
        context = np.empty(size, dtype=np.int64)
        state = np.zeros(size, dtype=np.int64)
        rejected = np.zeros(size, dtype=np.int64)
        calls = np.zeros(size, dtype=np.int64)
        drafts = np.zeros(size, dtype=np.int64)
        u_draw, u_test = np.empty(size), np.empty(size)
        u_last, u_share1 = np.empty(size), np.empty(size)
        u_share2, u_share3 = np.zeros(size), np.zeros(size)
        rows, live = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
        chosen, fallbacks = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
        candidates, winners = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
        pending = np.empty(size, dtype=np.int64)  # trials whose candidates so far all failed
        for j in range(size):
            context[j] = _start_context(k0, k1, np.uint64(first + j), start, start_cdf)
        for position in range(horizon):
            n = np.uint64(position)
            for j in range(size):
                trial = np.uint64(first + j)
                u_draw[j], u_test[j] = uniform_pair(k0, k1, trial, n, _ZERO)
                u_last[j], u_share1[j] = uniform_pair(k0, k1, trial, n, pair_m)
            if shares_ahead:
                for j in range(size):
                    u_share2[j], u_share3[j] = uniform_pair(k0, k1, np.uint64(first + j), n,
                                                            pair_m + _ONE)
            for j in range(size):
                row = position * row_stride + context[j]
                current = state[j]
                starts = current == 0
                calls[j] += starts
                drafts[j] += starts * draft_lengths[position * n_contexts + context[j]]
                live[j] = current + starts * n_drafts
                rows[j] = row
                fallbacks[j] = row + (live[j] - 1) * n_rows
            for j in range(size):
                candidates[j] = alias_draw(draft, rows[j], vocab_size, u_draw[j])
            for j in range(size):  # the draw after every live candidate failed
                fallbacks[j] = alias_draw(residual, fallbacks[j], vocab_size, u_last[j])
            for j in range(size):
                token = candidates[j]
                failed = not u_test[j] < acceptance[rows[j] * vocab_size + token]
                chosen[j] = fallbacks[j] if failed else token
                winners[j] = -1 if failed else 0
                rejected[j] += failed & (live[j] == 1)
            # (the lists are made in loops of their own: writing one beside other arrays
            # makes LLVM reload them all, measured 1.6x slower)
            n_pending = 0
            for j in range(size):
                pending[n_pending] = j
                n_pending += (winners[j] < 0) & (live[j] > 1)
            for index in range(n_pending):  # candidates 1, 2, … until one is accepted
                j = pending[index]
                trial = np.uint64(first + j)
                for m in range(1, live[j]):
                    draw, test = uniform_pair(k0, k1, trial, n, np.uint64(m))
                    candidate = alias_draw(draft, rows[j], vocab_size, draw)
                    if test < acceptance[(m * n_rows + rows[j]) * vocab_size + candidate]:
                        chosen[j] = candidate
                        winners[j] = m
                        break
                rejected[j] += winners[j] < 0
            if trie:  # the untried candidates sharing the accepted token stay live
                for j in range(size):
                    winner = winners[j]
                    share = draft_probs[rows[j] * vocab_size + chosen[j]]
                    stay = 1 + (u_share1[j] < share) * (winner < 1) * (live[j] > 1) + \
                        (u_share2[j] < share) * (winner < 2) * (live[j] > 2) + \
                        (u_share3[j] < share) * (winner < 3) * (live[j] > 3)
                    state[j] = stay * (winner >= 0)
                if n_drafts > SHARES_AHEAD + 1:
                    for j in range(size):
                        if winners[j] >= 0 and live[j] > SHARES_AHEAD + 1:
                            state[j] += _later_shares(
                                k0, k1, np.uint64(first + j), n, pair_m,
                                max(SHARES_AHEAD + 1, winners[j] + 1), live[j],
                                draft_probs[rows[j] * vocab_size + chosen[j]])
            else:
                for j in range(size):
                    state[j] = winners[j] >= 0
            for j in range(size):
                token = chosen[j]
                if record:
                    tokens[lo + j, position] = token
                context[j] = token if first_order else \
                    next_context[context[j] * vocab_size + token]
        for j in range(size):
            rejections[lo + j] = rejected[j]
            target_calls[lo + j] = calls[j]
            drafted[lo + j] = drafts[j]


# ---------------------------------------------------------------------- reference routine
def _try_candidates(algorithm, n_candidates: int, p, q, choose):
    """Try candidate drafts in order against the recursive residuals q¹ = q, q^{m+1}.

    Returns ``(token, index)`` of the first accepted candidate, or ``(token, None)`` with the
    token drawn from the last residual when every candidate failed.
    """
    residual = q
    for index in range(n_candidates):
        token = choose.categorical(p)  # this candidate's token, drawn when it is read
        if choose.bernoulli(_acceptance(p, residual)[token]):
            return token, index
        residual = algorithm.next_residual(p, residual)  # [residual − p]₊, normalized
    return choose.categorical(residual), None


def _batch_speculative(algorithm: BatchSpeculative, draft, target, choose) -> Outcome:
    """Algorithm 4 ("paper") and the trie verifier, with M i.i.d. drafts per round; the root
    verifiers of :mod:`sim.engine.multidraft` ("swor", "spectr", …) by their literal routines."""
    trace = _Trace(target, choose)
    if algorithm.verifier in ROOT_PROCEDURES:
        root = functools.partial(ROOT_PROCEDURES[algorithm.verifier],
                                 n_drafts=algorithm.n_drafts)
        return rooted_rounds(draft, target, choose, lambda p, q, c: root(p, q, choose=c), trace)
    while not trace.done:  # one round per iteration: one target call, M fresh drafts
        trace.target_calls += 1
        trace.drafted += target.horizon - trace.position  # drafts run to the horizon
        live = algorithm.n_drafts  # drafts whose prefix equals the accepted prefix
        while not trace.done:
            p = draft.probs[trace.position, trace.context]
            q = target.probs[trace.position, trace.context]
            token, winner = _try_candidates(algorithm, live, p, q, choose)
            trace.emit(token)
            if winner is None:  # every candidate failed: rejection, new round
                trace.rejections += 1
                break
            if algorithm.verifier == "paper":
                live = 1  # Algorithm 4 follows the accepted draft alone
            else:  # trie: the untried candidates whose token here is also `token` stay
                untried = live - winner - 1
                live = 1 + sum(choose.bernoulli(p[token]) for _ in range(untried))
    return trace.outcome()


register_family(BatchSpeculative, BatchTables, _batch_speculative)
