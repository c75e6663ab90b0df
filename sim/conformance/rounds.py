r"""The round runner of the conformance harness: whole generations through a verifier.

For one suite pair, every generation starts in a context drawn from the prompt law; each round
drafts k = min(γ, T − n) tokens from p (or from ``draft_processor(p)``), hands the batch of
unfinished generations with the same k to the verifier in the convention of
:mod:`sim.conformance` (the bonus row at the horizon is a uniform placeholder), checks what it
returns (shape, integer dtype, tokens in range, −1 padding only after the last token; anything
else raises :class:`VerifierError` naming the call) and advances every generation by the tokens
it emitted.  It counts the tokens per (position, context), the tokens of target probability 0
(the support check), the whole sequences, and the accepted drafts beside their expected number
under standard verification from the same round starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.conformance.calls import VerifierError, call_verifier
from sim.conformance.suites import SuitePair
from theory.conformance import expected_accepted

#: Most floats of the arrays passed in one verifier call (B·(γ + 1)·V); larger batches split.
CALL_FLOATS = 1 << 22


__all__ = ["CALL_FLOATS", "VerifierError"]


def _name(verifier) -> str:
    return getattr(verifier, "__qualname__", None) or getattr(verifier, "__name__", None) \
        or type(verifier).__name__


def _sample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token from each row (rows need not be normalized; all-zero rows are refused
    upstream)."""
    cdf = np.cumsum(rows, axis=1)
    point = rng.random(rows.shape[0]) * cdf[:, -1]
    index = (cdf <= point[:, None]).sum(axis=1)
    last = rows.shape[1] - 1 - np.argmax(rows[:, ::-1] > 0, axis=1)
    return np.minimum(index, last)


def _checked_output(emitted, rows: int, k: int, vocab: int, where: str) -> np.ndarray:
    if hasattr(emitted, "detach"):  # a torch tensor
        emitted = emitted.detach().cpu().numpy()
    try:
        array = np.asarray(emitted)
    except Exception as error:
        raise VerifierError(f"{where}: returned {type(emitted).__name__}, which is not an "
                            f"array ({error})") from None
    if array.dtype.kind not in "iu":
        raise VerifierError(f"{where}: returned dtype {array.dtype}; expected integer tokens "
                            "(int64)")
    if array.shape != (rows, k + 1):
        raise VerifierError(f"{where}: returned shape {array.shape}; expected (B, drafts + 1) "
                            f"= {(rows, k + 1)}")
    # range-check in the verifier's own dtype: a cast first would turn uint64 2⁶⁴ − 1 into −1
    bad = (array >= vocab) if array.dtype.kind == "u" else (array < -1) | (array >= vocab)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise VerifierError(f"{where}: token {array[row, column]} ({array.dtype}) at row {row}, "
                            f"column {column} is outside [−1, {vocab}) (−1 only pads after the "
                            "last token)")
    array = array.astype(np.int64)
    padded = array == -1
    if padded[:, 0].any():
        raise VerifierError(f"{where}: row {np.flatnonzero(padded[:, 0])[0]} emits no token; "
                            "a round emits at least one")
    after = np.diff(padded.astype(np.int8), axis=1) < 0
    if after.any():
        raise VerifierError(f"{where}: row {np.argwhere(after)[0][0]} has a token after the "
                            "−1 padding")
    return array


@dataclass
class _PairRun:
    counts: np.ndarray  #: (T, S, V) tokens per (position, context)
    sequences: np.ndarray  #: (G, T) the generations
    starts: np.ndarray  #: (G,) their start contexts
    rounds: int = 0
    accepted: int = 0
    optimum: float = 0.0
    violations: dict = None  #: (position, context, token) → count, tokens with q = 0


def _run_pair(pair: SuitePair, generations: int, draft_rng, player, batch_rows) -> _PairRun:
    """Whole generations of ``pair`` through ``player`` (:class:`PathRounds`, or
    :class:`sim.conformance.trees.TreeRounds`): rounds whose span ``player.span(n)`` (drafts
    for a path, depth for a tree) is equal are batched into one verifier call."""
    target = pair.target
    horizon, vocab = target.horizon, target.vocab_size
    q_all = np.asarray(target.probs, dtype=np.float64)
    following = target.next_context
    start = np.asarray(target.start_distribution, dtype=np.float64)
    context = draft_rng.choice(start.size, size=generations, p=start)
    position = np.zeros(generations, dtype=np.int64)
    run = _PairRun(np.zeros((horizon, target.n_contexts, vocab), dtype=np.int64),
                   np.full((generations, horizon), -1, dtype=np.int64), context.copy(),
                   violations={})
    while True:
        active = np.flatnonzero(position < horizon)
        if active.size == 0:
            return run
        windows = player.span(position[active])
        for k in np.unique(windows):
            rows = active[windows == k]
            size = max(1, batch_rows // player.width(int(k)))
            for first in range(0, rows.size, size):
                chunk = rows[first:first + size]
                start_n, start_s = position[chunk], context[chunk]
                emitted, accepted, optimum = player.play(int(k), start_n, start_s)
                length = (emitted >= 0).sum(axis=1)
                usable = np.minimum(length, horizon - start_n)
                state = start_s.copy()
                for i in range(emitted.shape[1]):
                    live = np.flatnonzero(i < usable)
                    if live.size == 0:
                        break
                    token, at, here = emitted[live, i], start_n[live] + i, state[live]
                    for j in np.flatnonzero(q_all[at, here, token] == 0):
                        key = (int(at[j]), int(here[j]), int(token[j]))
                        run.violations[key] = run.violations.get(key, 0) + 1
                    np.add.at(run.counts, (at, here, token), 1)
                    run.sequences[chunk[live], at] = token
                    state[live] = following[here, token]
                position[chunk] = start_n + usable
                context[chunk] = state
                run.accepted += int(accepted.sum())
                run.optimum += float(optimum)
                run.rounds += chunk.size


class PathRounds:
    """Rounds of the path convention: k = min(γ, T − n) drafts from p (or from
    ``draft_processor(p)``); accepted drafts = the common prefix of the emitted tokens and the
    drafts (at most emitted − 1); optimum = standard verification's expected accepted drafts
    from the same round starts."""

    def __init__(self, verifier, name, pair, window, draft_rng, verify_rng, draft_processor,
                 timeout=None):
        self.verifier, self.name, self.pair, self.window = verifier, name, pair, window
        self.draft_rng, self.verify_rng = draft_rng, verify_rng
        self.draft_processor, self.timeout = draft_processor, timeout
        self.p_all = np.asarray(pair.draft.probs, dtype=np.float64)
        self.q_all = np.asarray(pair.target.probs, dtype=np.float64)
        self.draft_cdf = _RowSampler(self.p_all)
        self.optimum_table = expected_accepted(pair.draft, pair.target, window)

    def span(self, positions: np.ndarray) -> np.ndarray:
        return np.minimum(self.window, self.pair.target.horizon - positions)

    @staticmethod
    def width(k: int) -> int:
        return k + 1

    def play(self, k: int, start_n, start_s):
        emitted, drafts = _one_round(self.verifier, self.name, self.pair, k, start_n, start_s,
                                     self.p_all, self.q_all, self.pair.target.next_context,
                                     self.draft_rng, self.verify_rng, self.draft_processor,
                                     self.draft_cdf, self.window, self.timeout)
        length = (emitted >= 0).sum(axis=1)
        same = np.cumprod(emitted[:, :k] == drafts, axis=1).sum(axis=1)
        return (emitted, np.minimum(same, length - 1),
                self.optimum_table[start_n, start_s].sum())


class _RowSampler:
    """Draws from the rows of a (T, S, V) table in O(log(T·S·V)) per draw: the CDFs of all rows
    laid end to end, row r's shifted by r, so one ``searchsorted`` finds every token."""

    def __init__(self, probs: np.ndarray):
        rows = probs.reshape(-1, probs.shape[-1])
        self.vocab, self.n_contexts = probs.shape[-1], probs.shape[1]
        cdf = np.cumsum(rows, axis=1)
        self.ends = cdf[:, -1].copy()
        self.flat = (cdf + np.arange(rows.shape[0])[:, None]).ravel()
        self.last = rows.shape[1] - 1 - np.argmax(rows[:, ::-1] > 0, axis=1)

    def sample(self, positions, contexts, rng) -> np.ndarray:
        row = positions * self.n_contexts + contexts
        point = row + rng.random(row.size) * self.ends[row]
        token = np.searchsorted(self.flat, point, side="right") - row * self.vocab
        return np.minimum(token, self.last[row])


def _one_round(verifier, name, pair, k, start_n, start_s, p_all, q_all, following, draft_rng,
               verify_rng, draft_processor, draft_cdf, window, timeout=None):
    rows, horizon, vocab = start_n.size, pair.target.horizon, pair.target.vocab_size
    along = np.empty((rows, k + 1), dtype=np.int64)
    along[:, 0] = start_s
    drafts = np.empty((rows, k), dtype=np.int64)
    p_rows = np.empty((rows, k, vocab))
    q_rows = np.empty((rows, k + 1, vocab))
    for i in range(k):
        p_rows[:, i] = p_all[start_n + i, along[:, i]]
        q_rows[:, i] = q_all[start_n + i, along[:, i]]
        if draft_processor is None:
            drafts[:, i] = draft_cdf.sample(start_n + i, along[:, i], draft_rng)
        else:
            drafts[:, i] = _sample(processed_rows(draft_processor, p_rows[:, i], pair.name),
                                   draft_rng)
        along[:, i + 1] = following[along[:, i], drafts[:, i]]
    bonus = start_n + k
    inside = bonus < horizon
    q_rows[:, k] = 1.0 / vocab  # no bonus position at the horizon: a placeholder row
    q_rows[inside, k] = q_all[bonus[inside], along[inside, k]]
    cut = "" if int(start_n.max()) + window <= horizon else f", γ = {window} cut at the horizon"
    where = (f"verifier {name} on suite pair {pair.name!r} (B = {rows}, {k} drafts{cut}, "
             f"V = {vocab})")
    emitted = call_verifier(verifier, (drafts.copy(), p_rows, q_rows, verify_rng), timeout, where)
    return _checked_output(emitted, rows, k, vocab, where), drafts


def processed_rows(draft_processor, rows: np.ndarray, pair_name: str) -> np.ndarray:
    """``draft_processor(rows)`` checked: a (B, V) array of finite, non-negative rows with a
    positive sum (not necessarily 1) — anything else is a ``ValueError`` blaming the
    processor, not the verifier."""
    where = (f"draft_processor on suite pair {pair_name!r} (B = {rows.shape[0]}, "
             f"V = {rows.shape[1]})")
    try:
        out = np.asarray(draft_processor(rows.copy()), dtype=np.float64)
    except KeyboardInterrupt:
        raise
    except Exception as error:
        raise ValueError(f"{where} raised {type(error).__name__}: {error}") from error
    if out.shape != rows.shape:
        raise ValueError(f"{where} returned shape {out.shape}; expected {rows.shape}")
    bad = ~np.isfinite(out) | (out < 0)
    if bad.any():
        row, token = np.argwhere(bad)[0]
        raise ValueError(f"{where} returned {out[row, token]} at row {row}, token {token}; "
                         "expected finite, non-negative weights")
    empty = out.sum(axis=1) <= 0
    if empty.any():
        raise ValueError(f"{where} returned an all-zero row {np.flatnonzero(empty)[0]}; every "
                         "row needs a positive sum")
    return out
