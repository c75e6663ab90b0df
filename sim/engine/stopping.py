r"""Adaptive draft length in the engines (:class:`theory.AdaptiveSpeculative`).

A round from (n, s) drafts while the stopping rule says continue (at most W′ = min(W, T − n)
tokens), then verifies token-wise (:mod:`theory.stopping` gives the round, its exact law and the
rules).  The rule sees the drafted tokens, so every draft of a round is drawn *before* any is
verified — unlike :mod:`sim.engine.token`'s lazy drafts — and every drafted token counts in
``drafted`` (the walltime), also those after the first rejection.

* :class:`StoppingTables` — alias tables of p, of the residual [q − p]₊ and of q, the rows of p
  and q as floats (the ratios), and the rule in one of three kernel forms: ``"threshold"``
  (:class:`theory.ThresholdStopping` on float models, evaluated in the kernel as
  1 − Π min(1, q/p) > threshold in float64), ``"row"`` (:class:`theory.EntropyStopping`,
  whose decision depends only on the row the next draft is drawn from: one flag per (n, s)),
  and ``"table"`` (any other rule, :class:`theory.StoppingTable` included, and a threshold on
  exact models, whose ties must be decided exactly: the rule's decision at every drafted path
  a round can reach — each token of positive draft probability, below a "continue" — evaluated
  in Python once and stored in a table of T·S·(1 + V + … + V^{W−1}) flags, refused above
  :data:`MAX_DECISIONS`; unreachable paths are never asked and never read);
* :func:`stopping_kernel` — the compiled loop, one round at a time per trial; every uniform of
  a round uses the round's START position n as its counter position (as block verification
  does): slot 2i: draft X_{i+1}, 2i + 1: its test u < min(1, q/p), 2W: the round's last
  token (the residual draw, the bonus, or the plain target step when nothing was drafted);
* the reference routine — the round written as pseudo-code over a chooser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from sim.engine.compiled import BLOCK, _start_context, alias_draw, uniform
from sim.engine.core import Layout, register_family
from sim.engine.reference import Outcome, _Trace
from sim.engine.tables import AliasTable, build_alias
from theory import (
    AdaptiveSpeculative,
    EntropyStopping,
    MarkovLM,
    Speculative,
    ThresholdStopping,
)
from theory.onestep import positive_part

__all__ = ["MAX_DECISIONS", "StoppingTables", "stopping_kernel"]

#: Most decisions a ``"table"`` rule may tabulate (T·S·(1 + V + … + V^{W−1})): each is one
#: Python call of the rule, ≈ 1–10 µs.
MAX_DECISIONS = 5_000_000

_FORMS = {"threshold": 0, "table": 1, "row": 2}


def _tree_offsets(vocab_size: int, window: int) -> np.ndarray:
    """offsets[k] = 1 + V + … + V^{k−1}: index of the first drafted path of length k."""
    offsets = np.zeros(window + 1, dtype=np.int64)
    for k in range(1, window + 1):
        offsets[k] = offsets[k - 1] + vocab_size ** (k - 1)
    return offsets


@dataclass(frozen=True)
class StoppingTables:
    """Tables of adaptive drafting: p, the residual and q as alias tables, p and q as rows,
    and the stopping rule in a kernel form (see the module docstring)."""

    algorithm: AdaptiveSpeculative
    layout: Layout
    draft: AliasTable
    residual: AliasTable
    target: AliasTable
    draft_probs: np.ndarray  # (R·V,)
    target_probs: np.ndarray  # (R·V,)
    form: int  # _FORMS
    threshold: float
    decisions: np.ndarray  # int8 (T·S·D,) "table": 1 = stop; empty otherwise
    offsets: np.ndarray  # (W + 1,) int64, "table" only
    stop_rows: np.ndarray  # int8 (T·S,) "row": 1 = stop before a draft from (n, s)

    @classmethod
    def build(cls, draft: MarkovLM, target: MarkovLM, algorithm) -> StoppingTables:
        layout = Layout.of(draft, target)
        p, q = layout.rows(draft), layout.rows(target)
        _, residual = Speculative().verification(p, q)
        rule, window = algorithm.rule, algorithm.max_window
        horizon, n_contexts, vocab = layout.horizon, layout.n_contexts, layout.vocab_size
        empty = np.zeros(0, dtype=np.int8)
        offsets, decisions, stop_rows, threshold = np.zeros(1, dtype=np.int64), empty, empty, 0.0
        bound = algorithm.bound_rule(draft, target)
        if isinstance(rule, ThresholdStopping) and not (draft.is_exact or target.is_exact):
            form, threshold = "threshold", float(rule.threshold)
        elif isinstance(rule, EntropyStopping):  # decided by the next draft's row alone
            form = "row"
            stop_rows = np.array([_stop(bound, n, s, ()) for n in range(horizon)
                                  for s in range(n_contexts)], dtype=np.int8)
        else:
            form = "table"
            offsets = _tree_offsets(vocab, window)
            size = horizon * n_contexts * int(offsets[window])
            if size > MAX_DECISIONS:
                raise ValueError(
                    f"{algorithm!r}: the compiled engines would tabulate the rule at about "
                    f"{size:.3g} drafted paths (T·S·(1 + V + … + V^(W−1)) on T = {horizon}, "
                    f"S = {n_contexts}, V = {vocab}, W = {window}), above "
                    f"sim.engine.stopping.MAX_DECISIONS = {MAX_DECISIONS:.3g}; use a smaller "
                    f"max_window, sim.reference.reference_simulate, or a ThresholdStopping rule "
                    f"(evaluated in the kernel)")
            decisions = _tabulate(bound, draft, target, window, offsets)
        return cls(algorithm, layout, build_alias(p), build_alias(residual), build_alias(q),
                   p.ravel(), q.ravel(), _FORMS[form], threshold, decisions, offsets,
                   stop_rows)

    @classmethod
    def steps_per_position(cls, algorithm, target: MarkovLM) -> float:
        """At most W draft steps and tests per round (an upper bound per position)."""
        return float(algorithm.max_window)

    def run(self, key, first_trial, rejections, target_calls, drafted, tokens) -> None:
        algorithm = self.algorithm
        stopping_kernel(
            key[0], key[1], first_trial, *self.layout.common_arguments(),
            algorithm.max_window, bool(algorithm.bonus), self.form, self.threshold,
            self.decisions, self.offsets, self.stop_rows, self.draft.entries,
            self.residual.entries, self.target.entries, self.draft_probs, self.target_probs,
            rejections, target_calls, drafted, tokens)


def _tabulate(rule, draft: MarkovLM, target: MarkovLM, window: int,
              offsets: np.ndarray) -> np.ndarray:
    """The rule's decisions (1 = stop) at every drafted path a round can reach, flat at
    ``(n·S + s)·D + offsets[k] + Σ x_i V^{k−i}`` (D = ``offsets[window]``); a path is reached
    when the rule continued at each of its prefixes and each token has positive draft
    probability.  Other entries stay 1 and are never read by the kernel."""
    horizon, n_contexts, vocab = target.horizon, target.n_contexts, target.vocab_size
    width = int(offsets[window])
    decisions = np.ones(horizon * n_contexts * width, dtype=np.int8)
    for n in range(horizon):
        span = min(window, horizon - n)
        for s in range(n_contexts):
            base = (n * n_contexts + s) * width
            pending = [((), 0, s)]  # (drafted path, its code, the context after it)
            while pending:
                path, code, context = pending.pop()
                k = len(path)
                if k == span:  # the round stops without asking
                    continue
                stop = _stop(rule, n, s, path)
                decisions[base + offsets[k] + code] = stop
                if stop:
                    continue
                row = draft.probs[n + k, context]
                pending.extend(((*path, x), code * vocab + x,
                                int(target.next_context[context, x]))
                               for x in range(vocab) if row[x] != 0)
    return decisions


def _stop(rule, position, context, drafted) -> bool:
    decision = rule(position, context, drafted)
    if not isinstance(decision, bool | np.bool_):
        raise TypeError(f"a stopping rule must return a bool; got {decision!r} at position "
                        f"{position}, context {context}, drafted {drafted}")
    return bool(decision)


@njit(parallel=True, cache=True)
def stopping_kernel(key0, key1, first_trial, horizon, n_contexts, vocab_size, row_stride,
                    start, start_cdf, next_context, max_window, bonus, form, threshold,
                    decisions, offsets, stop_rows, draft, residual, target, draft_probs,
                    target_probs, rejections, target_calls, drafted_counts, tokens):
    """Adaptive drafting then token-wise verification, one round at a time per trial.

    A round from position n in context s: while k < min(W, T − n) and the rule continues,
    draft X_{k+1} (alias draw from ``draft``, slot 2k), a = min(1, q/p) at its row; the rule's
    decision comes from ``form`` (0: 1 − Π a > ``threshold`` once k ≥ 1; 1: ``decisions`` at
    the drafted path's index ``offsets[k] + Σ x_i V^{k−i}`` within the round start's block;
    2: ``stop_rows`` at the next draft's row).  Then X_i is kept while u_{2i−1} < a_i; the
    first failure emits a draw from ``residual`` (a rejection), else a bonus from ``target``
    when ``bonus`` and a position remains; k = 0 emits one token from ``target``.  All three
    use slot 2W.  The trial's ``drafted_counts`` grows by k each round.
    """
    record = tokens.shape[0] > 0
    first_order = next_context.size == 0
    k0, k1 = np.uint64(key0), np.uint64(key1)
    last = np.uint64(2 * max_window)
    width = offsets[max_window] if form == 1 else 0
    n_trials = rejections.size
    for block in prange((n_trials + BLOCK - 1) // BLOCK):
        lo = block * BLOCK
        size = min(BLOCK, n_trials - lo)
        first = first_trial + lo
        contexts = np.empty(max_window + 1, dtype=np.int64)
        drafted = np.empty(max_window, dtype=np.int64)
        accept = np.empty(max_window)
        for j in range(size):
            trial = np.uint64(first + j)
            context = _start_context(k0, k1, trial, start, start_cdf)
            position, rejected, calls, drafts = 0, 0, 0, 0
            while position < horizon:
                calls += 1
                n = np.uint64(position)
                span = min(max_window, horizon - position)
                contexts[0] = context
                block_start = (position * n_contexts + context) * width
                k, code, product = 0, 0, 1.0
                while k < span:
                    if form == 0:
                        stop = k >= 1 and 1.0 - product > threshold
                    elif form == 1:
                        stop = decisions[block_start + offsets[k] + code] != 0
                    else:
                        stop = stop_rows[(position + k) * n_contexts + contexts[k]] != 0
                    if stop:
                        break
                    row = (position + k) * row_stride + contexts[k]
                    token = alias_draw(draft, row, vocab_size,
                                       uniform(k0, k1, trial, n, np.uint64(2 * k)))
                    drafted[k] = token
                    ratio = target_probs[row * vocab_size + token] / \
                        draft_probs[row * vocab_size + token]
                    accept[k] = ratio if ratio < 1.0 else 1.0
                    product *= accept[k]
                    code = code * vocab_size + token
                    contexts[k + 1] = token if first_order else \
                        next_context[contexts[k] * vocab_size + token]
                    k += 1
                drafts += k
                kept = 0
                while kept < k and uniform(k0, k1, trial, n, np.uint64(2 * kept + 1)) \
                        < accept[kept]:
                    kept += 1
                if record:
                    for i in range(kept):
                        tokens[lo + j, position + i] = drafted[i]
                context = contexts[kept]
                position += kept
                row = position * row_stride + context
                final = -1
                if kept < k:  # the first failure: a residual draw, a rejection
                    final = alias_draw(residual, row, vocab_size,
                                       uniform(k0, k1, trial, n, last))
                    rejected += 1
                elif k == 0 or (bonus and position < horizon):  # plain step, or the bonus
                    final = alias_draw(target, row, vocab_size, uniform(k0, k1, trial, n, last))
                if final >= 0:
                    if record:
                        tokens[lo + j, position] = final
                    context = final if first_order else \
                        next_context[context * vocab_size + final]
                    position += 1
            rejections[lo + j] = rejected
            target_calls[lo + j] = calls
            drafted_counts[lo + j] = drafts


def draft_round(rule, draft, target, trace, choose, max_window) -> tuple[list, list]:
    """Draft from (n, s) = the trace's position and context while ``rule`` says continue (at
    most min(W, T − n) tokens): returns (drafted tokens, contexts c₀ … c_k)."""
    start, context = trace.position, trace.context
    window = min(max_window, target.horizon - start)
    drafted, contexts = [], [context]
    while len(drafted) < window and not rule(start, context, tuple(drafted)):
        token = choose.categorical(draft.probs[start + len(drafted), contexts[-1]])
        drafted.append(token)
        contexts.append(int(target.next_context[contexts[-1], token]))
    return drafted, contexts


def _adaptive_speculative(algorithm: AdaptiveSpeculative, draft, target, choose) -> Outcome:
    """Rounds of: draft while the rule continues, then verify in order (accept x with
    probability min(1, q(x)/p(x)), first failure → a token from [q − p]₊, all accepted → a
    bonus token from q); no draft at all → one token from q."""
    rule = algorithm.bound_rule(draft, target)
    trace = _Trace(target, choose)
    while not trace.done:  # one round per iteration: one target call
        trace.target_calls += 1
        drafted, contexts = draft_round(rule, draft, target, trace, choose,
                                        algorithm.max_window)
        trace.drafted += len(drafted)  # every draft counts, also those after a rejection
        if not drafted:  # a plain target step
            trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
            continue
        for token, context in zip(drafted, contexts, strict=False):
            p = draft.probs[trace.position, context]
            q = target.probs[trace.position, context]
            if choose.bernoulli(min(1, q[token] / p[token])):
                trace.emit(token)
            else:
                trace.emit(choose.categorical(positive_part(q - p)))
                trace.rejections += 1
                break
        else:
            if algorithm.bonus and not trace.done:
                trace.emit(choose.categorical(target.probs[trace.position, trace.context]))
    return trace.outcome()


register_family(AdaptiveSpeculative, StoppingTables, _adaptive_speculative)
