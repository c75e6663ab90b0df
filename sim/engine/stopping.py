r"""Adaptive draft length in the engines (:class:`theory.AdaptiveSpeculative`).

The readable reference routine only: a round drafts while the stopping rule says continue,
then verifies token-wise (:mod:`theory.stopping` gives the round, its exact law and the
rules).  The rule sees the drafted tokens, so every draft of a round is drawn *before* any is
verified — unlike :mod:`sim.engine.token`'s lazy drafts — and every drafted token counts in the
wall time, also those after the first rejection.  There is no compiled kernel yet: the family is
registered with ``tables_class=None`` (:func:`sim.engine.core.register_family`), so
:func:`sim.reference.enumerate_outcomes` and :func:`sim.reference.reference_simulate` run it
and :func:`sim.simulate` refuses it with a ``TypeError``.
"""

from __future__ import annotations

from sim.engine.core import register_family
from sim.engine.reference import Outcome, _Trace
from theory import AdaptiveSpeculative
from theory.onestep import positive_part

__all__: list[str] = []


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


register_family(AdaptiveSpeculative, None, _adaptive_speculative)
