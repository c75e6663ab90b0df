r"""The token-wise family in the engines: ``Speculative`` and every (b, 𝒫) verifier.

One home for everything the engines do with token-wise verification — standard speculative
decoding (the paper's Algorithm 1, any window, with or without bonus), class ℱ, the lossy rules
(``LossySpeculative``, ``TypicalAcceptance``, ``TruncatedSpeculative``), window policies
(``WindowPolicy``) and ``Autoregressive``:

* :class:`TokenTables` — alias tables of the proposals (p, and the bonus law's rows) and of the
  rejection law 𝒫, the acceptance b as a flat float64 array, the round-state transitions;
* :func:`token_kernel` — the compiled per-trial loop (slots 0, 1, 2 of the counter: the draft
  token, the test u < b(x̃), the rejection draw; :mod:`sim.engine.compiled`);
* the reference routines — Algorithm 1 written as pseudo-code over a chooser
  (:mod:`sim.engine.reference`), a window policy's rounds, and plain sampling from q.

The multi-draft root verifiers reuse :class:`TokenTables` and :func:`token_kernel` with a
root row set (:class:`sim.engine.multidraft.RootTables`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from sim.engine.compiled import _ONE, _ZERO, BLOCK, _start_context, alias_draw, uniform_pair
from sim.engine.core import Layout, draft_table, register_family
from sim.engine.reference import Outcome, _Trace
from sim.engine.tables import AliasTable, build_alias, build_alias_blocks
from theory import Autoregressive, MarkovLM, Speculative, WindowPolicy
from theory.verification import checked_verification

__all__ = ["TokenTables", "token_kernel"]


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
    #: (T·S,) tokens drafted by a round starting at (n, s) (:func:`sim.engine.core.draft_table`)
    draft_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> TokenTables:
        layout = Layout.of(draft, target)
        q = layout.rows(target)
        drafts = draft_table(algorithm, layout)
        if isinstance(algorithm, Autoregressive):
            table = build_alias(q)
            return cls(algorithm, layout, table, np.ones(q.size), table,
                       np.zeros(1, dtype=np.int64), 0, 0, np.empty(0, dtype=np.int64),
                       draft_lengths=drafts)
        # (b, 𝒫) and the bonus law on the models' own rows (exact for exact models), rounded
        # to float64 afterwards: a cut (truncation) falls where the exact DPs put it.
        exact_p, exact_q = layout.exact_rows(draft), layout.exact_rows(target)
        p = np.ascontiguousarray(exact_p, dtype=np.float64)
        accept = np.ones(p.size + (q.size if algorithm.has_bonus_state else 0))
        rejection = build_alias_blocks(_verified_blocks(algorithm, exact_p, exact_q, layout,
                                                        accept), *p.shape)
        after_accept = np.array([algorithm.after_accept(j)
                                 for j in range(algorithm.n_round_states())], dtype=np.int64)
        starts = algorithm.round_start_states()
        round_start = np.empty(0, dtype=np.int64) if starts is None else \
            np.ascontiguousarray(starts, dtype=np.int64).ravel()
        if not algorithm.has_bonus_state:
            return cls(algorithm, layout, build_alias(p), accept, rejection, after_accept, -1, 0,
                       round_start, draft_lengths=drafts)
        after_accept[algorithm.bonus_state] = 0
        bonus = np.asarray(algorithm.bonus_law(exact_q), dtype=np.float64)  # q, or q̂
        return cls(algorithm, layout, build_alias(p, bonus), accept, rejection, after_accept,
                   algorithm.bonus_state, p.shape[0], round_start, draft_lengths=drafts)

    @classmethod
    def steps_per_position(cls, algorithm, target: MarkovLM) -> float:
        """One step per position: a draft, its test and the rejection draw."""
        return 1.0

    def run(self, key, first_trial, rejections, target_calls, drafted, tokens) -> None:
        token_kernel(
            key[0], key[1], first_trial, *self.layout.common_arguments(),
            self.proposal.entries, self.acceptance, self.rejection.entries, self.after_accept,
            self.bonus_state, self.bonus_offset, self.rejection_offset, self.round_start,
            self.draft_lengths, rejections, target_calls, drafted, tokens)


@njit(parallel=True, cache=True)
def token_kernel(key0, key1, first_trial, horizon, n_contexts, vocab_size, row_stride,
                 start, start_cdf, next_context, proposal, acceptance, rejection,
                 after_accept, bonus_state, bonus_offset, rejection_offset, round_start,
                 draft_lengths, rejections, target_calls, drafted, tokens):
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
    :class:`sim.engine.multidraft.RootTables`, whose root is the bonus state: proposal a/α,
    acceptance α, rejection r/(1 − α)).  At each round start the trial's ``drafted`` count
    grows by ``draft_lengths[n·S + s]``.
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
        drafts = np.zeros(size, dtype=np.int64)
        u_token, u_test, u_rejection = np.empty(size), np.empty(size), np.empty(size)
        live, proposed_rows = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
        proposed, fallbacks = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
        for j in range(size):
            context[j] = _start_context(k0, k1, np.uint64(first + j), start, start_cdf)
        for position in range(horizon):
            n = np.uint64(position)
            # The position's work in short loops over the block's trials: Philox (SIMD), the
            # rows, each table's draws, then the tests — every loop's table reads independent
            # of each other, so many are in flight at once (1.5x on tables beyond the cache).
            for j in range(size):
                trial = np.uint64(first + j)
                u_token[j], u_test[j] = uniform_pair(k0, k1, trial, n, _ZERO)
                u_rejection[j], _ = uniform_pair(k0, k1, trial, n, _ONE)  # slot 2
            for j in range(size):
                row = position * row_stride + context[j]
                current = state[j]
                starts = current == 0
                calls[j] += starts  # branch-free: the draft table is small and cached
                drafts[j] += starts * draft_lengths[position * n_contexts + context[j]]
                if policy and starts:
                    current = round_start[position * n_contexts + context[j]]
                bonus = current == bonus_state
                live[j] = current
                proposed_rows[j] = row + bonus_offset * bonus
                fallbacks[j] = row + rejection_offset * bonus  # the rejection law's row
            for j in range(size):
                proposed[j] = alias_draw(proposal, proposed_rows[j], vocab_size, u_token[j])
            for j in range(size):
                fallbacks[j] = alias_draw(rejection, fallbacks[j], vocab_size, u_rejection[j])
            for j in range(size):
                token = proposed[j]
                accepted = u_test[j] < acceptance[proposed_rows[j] * vocab_size + token]
                token = token if accepted else fallbacks[j]
                state[j] = after_accept[live[j]] if accepted else 0
                rejected[j] += not accepted
                if record:
                    tokens[lo + j, position] = token
                context[j] = token if first_order else \
                    next_context[context[j] * vocab_size + token]
        for j in range(size):
            rejections[lo + j] = rejected[j]
            target_calls[lo + j] = calls[j]
            drafted[lo + j] = drafts[j]


#: Entries of (b, 𝒫) computed at once while building tables (whole positions): the float64
#: temporaries of a verification stay a few tens of MB however many rows the tables have.
VERIFICATION_BLOCK = 1 << 22


def _verified_blocks(algorithm, exact_p, exact_q, layout: Layout, accept: np.ndarray):
    """Yield the rejection law 𝒫 a block of whole positions at a time, writing b into the
    start of ``accept`` as it goes (the verifiers are row-wise, so every block's rows are those
    of one call on all rows: :func:`theory.verification.checked_verification`)."""
    n_rows, vocab_size = exact_p.shape
    n_contexts = layout.n_contexts
    step = n_contexts * max(1, VERIFICATION_BLOCK // (n_contexts * vocab_size))
    for first in range(0, n_rows, step):
        rows = slice(first, min(first + step, n_rows))
        # (b, 𝒫) on the models' own rows (exact for exact models), rounded to float64
        # afterwards: a cut (truncation) falls where the exact DPs put it.
        block_accept, law = checked_verification(
            algorithm, exact_p[rows], exact_q[rows], position=first // n_contexts,
            n_contexts=n_contexts)
        accept[first * vocab_size:rows.stop * vocab_size] = \
            np.asarray(block_accept, dtype=np.float64).ravel()
        yield np.asarray(law, dtype=np.float64)


# ---------------------------------------------------------------------- reference routines
def _autoregressive(algorithm: Autoregressive, draft, target, choose) -> Outcome:
    trace = _Trace(target, choose)
    while not trace.done:
        trace.target_calls += 1
        trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
    return trace.outcome()


def _token_wise_round(algorithm, draft, target, trace, choose, window, bonus) -> None:
    """One round of token-wise verification: draft and test up to ``window`` tokens (None: to
    the horizon), (b, 𝒫) from ``algorithm.verification``; when every draft was accepted and
    ``bonus`` holds, one free token from ``algorithm.bonus_law(q)`` (q, or q̂ when truncated)."""
    trace.target_calls += 1
    remaining = target.horizon - trace.position  # the round drafts min(window, T − n) tokens
    trace.drafted += remaining if window is None else min(window, remaining)
    drafted = 0
    while not trace.done:
        q = target.probs[trace.position, trace.context]
        if window is not None and drafted == window:
            if bonus:  # every draft accepted (or none asked for): one free token
                trace.emit(choose.categorical(algorithm.bonus_law(q)))
            return
        p = draft.probs[trace.position, trace.context]
        accept, rejection_law = checked_verification(
            algorithm, p, q, position=trace.position, context=trace.context)
        draft_token = choose.categorical(p)  # drafted lazily, when verification reads it
        drafted += 1
        if choose.bernoulli(accept[draft_token]):
            trace.emit(draft_token)
        else:
            trace.emit(choose.categorical(rejection_law))
            trace.rejections += 1
            return


def _speculative(algorithm: Speculative, draft, target, choose) -> Outcome:
    """Algorithm 1 (and its finite-window variants); ``algorithm.verification`` gives (b, 𝒫)."""
    trace = _Trace(target, choose)
    while not trace.done:  # one round per iteration: one target call
        _token_wise_round(algorithm, draft, target, trace, choose, algorithm.window,
                          algorithm.bonus)
    return trace.outcome()


def _window_policy(algorithm: WindowPolicy, draft, target, choose) -> Outcome:
    """Rounds of ``Speculative(window=table[n, s], bonus=True)``, the window read at each
    round's start; a window of 0 is one plain target step (a token from q)."""
    trace = _Trace(target, choose)
    while not trace.done:  # one round per iteration: one target call
        window = int(algorithm.table[trace.position, trace.context])
        _token_wise_round(algorithm, draft, target, trace, choose, window, True)
    return trace.outcome()


register_family(Autoregressive, TokenTables, _autoregressive)
register_family(Speculative, TokenTables, _speculative)
register_family(WindowPolicy, TokenTables, _window_policy)
