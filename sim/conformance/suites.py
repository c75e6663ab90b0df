"""The suites of the conformance harness: the Markov-chain pairs a verifier is run on.

:func:`conformance_suite` is the default, token-level suite (fixed seed; T = 8): a
non-stationary first-order pair, a pair with exact zeros and one-hot rows in p and q, a
second-order pair (hidden context), a context-free pair and a pair with a 10⁴-token vocabulary
whose target rows are 90% exact zeros (floors and epsilons show there).
:func:`precision_suite` holds designed pairs on which the precision bugs of
:data:`theory.conformance.PRECISION_FAILURES` move the output law far enough to be caught.
:func:`sequence_suite` holds pairs small enough (S · V^T categories) to test the law of whole
sequences.  :class:`SuitePair` names a (draft, target) pair for reports; ``_pairs`` turns the
``models`` argument of the public checks into validated pairs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from theory.models import MarkovLM, check_compatible


@dataclass(frozen=True)
class SuitePair:
    """One (draft, target) pair of the suite, with a name for reports."""

    name: str
    draft: MarkovLM
    target: MarkovLM
    description: str = ""
    #: Whether the pair is held to ``min_tv`` for a "passed" verdict
    #: (:mod:`sim.conformance.verdicts`); its test runs and can fail the run either way.
    powered: bool = True


def _dirichlet(rng, shape, concentration, zero_share=0.0, one_hot_share=0.0):
    """Dirichlet rows along the last axis; a share of entries zeroed (each row keeps ≥ 1) and a
    share of rows made one-hot."""
    rows = rng.dirichlet(np.full(shape[-1], concentration), size=shape[:-1])
    if zero_share:
        mask = rng.random(shape) < zero_share
        keep = rng.integers(shape[-1], size=shape[:-1])
        np.put_along_axis(mask, keep[..., None], False, axis=-1)
        rows = np.where(mask, 0.0, rows)
    if one_hot_share:
        hot = rng.random(shape[:-1]) < one_hot_share
        index = rows.argmax(axis=-1)
        one_hot = np.zeros(shape)
        np.put_along_axis(one_hot, index[..., None], 1.0, axis=-1)
        rows = np.where(hot[..., None], one_hot, rows)
    return rows / rows.sum(axis=-1, keepdims=True)


@functools.lru_cache(maxsize=1)
def conformance_suite() -> tuple[SuitePair, ...]:
    """The harness's default pairs (fixed seeds; T = 8; the prompt is context 0, except for
    ``second_order``, whose start context is uniform over its 9 contexts):

    * ``nonstationary`` — first order, V = 4, a different kernel at every position;
    * ``zeros`` — first order, V = 5, 35% of entries zero in p and in q independently (so q
      has mass where p has none and the reverse), 15% one-hot rows, p = q at position 3;
    * ``second_order`` — V = 3 with S = 9 contexts (the last two tokens): hidden state;
    * ``context_free`` — S = 1, V = 6, non-stationary (the next law depends on the position
      only), peaked rows;
    * ``large_vocab`` — S = 1, V = 10,000, T = 4, 9,000 exact zeros in every target row
      (floors and epsilons show here).  It is there for the support check: its χ² test runs
      and can fail the run, but it is not held to ``min_tv`` (``powered=False``: its rows
      spread over 1,000 tokens, so a per-position TV of 0.05 needs ≈ 2·10⁵ rounds).

    Examples
    --------
    >>> from sim.conformance import conformance_suite
    >>> [(pair.name, pair.target.vocab_size, pair.target.n_contexts)
    ...  for pair in conformance_suite()]  # doctest: +NORMALIZE_WHITESPACE
    [('nonstationary', 4, 4), ('zeros', 5, 5), ('second_order', 3, 9),
     ('context_free', 6, 1), ('large_vocab', 10000, 1)]
    """
    rng = np.random.default_rng(20241101)
    horizon = 8
    pairs = []
    shape = (horizon, 4, 4)
    pairs.append(SuitePair("nonstationary", MarkovLM(_dirichlet(rng, shape, 1.0)),
                           MarkovLM(_dirichlet(rng, shape, 1.0)),
                           "first order, V = 4, a kernel per position"))
    shape = (horizon, 5, 5)
    p = _dirichlet(rng, shape, 0.8, zero_share=0.35, one_hot_share=0.15)
    q = _dirichlet(rng, shape, 0.8, zero_share=0.35, one_hot_share=0.15)
    p[3] = q[3]
    pairs.append(SuitePair("zeros", MarkovLM(p), MarkovLM(q),
                           "first order, V = 5, zeros, one-hot rows, p = q at n = 3"))
    vocab = 3
    contexts = vocab * vocab
    next_context = (np.arange(contexts)[:, None] % vocab) * vocab + np.arange(vocab)[None, :]
    shape = (horizon, contexts, vocab)
    start = np.full(contexts, 1 / contexts)
    pairs.append(SuitePair(
        "second_order", MarkovLM(_dirichlet(rng, shape, 1.0), next_context, start),
        MarkovLM(_dirichlet(rng, shape, 1.0), next_context, start),
        "V = 3, context = the last two tokens (S = 9)"))
    shape = (horizon, 1, 6)
    free = np.zeros((1, 6), dtype=np.int64)
    pairs.append(SuitePair("context_free", MarkovLM(_dirichlet(rng, shape, 0.5), free),
                           MarkovLM(_dirichlet(rng, shape, 0.5), free),
                           "S = 1, V = 6, position-dependent, peaked"))
    pairs.append(_large_vocab_pair(rng))
    return tuple(pairs)


#: Vocabulary, support of each target row and target support shared by the draft, of the
#: suite's ``large_vocab`` pair.
LARGE_VOCAB, LARGE_SUPPORT, LARGE_SHARED = 10_000, 1_000, 700


def _large_vocab_pair(rng) -> SuitePair:
    """V = 10⁴, S = 1, T = 4: every target row puts Dirichlet(0.5) mass on 1,000 tokens (9,000
    exact zeros); the draft row on 700 of them and 300 others.  Floors and epsilons added to a
    law show here: each exact zero of q is a token a lossless verifier never emits."""
    horizon, vocab = 4, LARGE_VOCAB
    p, q = np.zeros((horizon, 1, vocab)), np.zeros((horizon, 1, vocab))
    for n in range(horizon):
        tokens = rng.permutation(vocab)
        target_support = tokens[:LARGE_SUPPORT]
        draft_support = np.concatenate([target_support[:LARGE_SHARED],
                                        tokens[LARGE_SUPPORT:2 * LARGE_SUPPORT - LARGE_SHARED]])
        q[n, 0, target_support] = rng.dirichlet(np.full(LARGE_SUPPORT, 0.5))
        p[n, 0, draft_support] = rng.dirichlet(np.full(LARGE_SUPPORT, 0.5))
    free = np.zeros((1, vocab), dtype=np.int64)
    return SuitePair("large_vocab", MarkovLM(p, free), MarkovLM(q, free),
                     f"S = 1, V = {vocab}, {vocab - LARGE_SUPPORT} zeros in every target row",
                     powered=False)


#: The near-tie rows of :func:`precision_suite`: the draft's law over the tokens it proposes
#: (dyadic, so exact in bfloat16 and float16) and, per pair, the share δ of it that the target
#: moves to one token the draft never proposes.
NEAR_TIE_DRAFT = (0.5, 0.25, 0.125, 0.125)
PRECISION_GAPS = {"bfloat16_ties": 3 * 2.0 ** -11, "float16_ties": 3 * 2.0 ** -14,
                  "floor_ties": 2.0 ** -8}
#: Vocabulary of the precision suite's ``floor_ties`` pair (the others have V = 8).
FLOOR_VOCAB = 4096


@functools.lru_cache(maxsize=1)
def precision_suite() -> tuple[SuitePair, ...]:
    r"""Designed pairs on which precision bugs (:data:`theory.conformance.PRECISION_FAILURES`)
    move the output law by a TV the default suite cannot see (fixed seed; T = 8; S = 1).

    **Near-ties.**  At every position the draft proposes four tokens with probabilities
    (½, ¼, ⅛, ⅛) and the target gives each of them (1 − δ) times that — every proposed draft
    is a near-tie, q/p = 1 − δ — and δ to a fifth token the draft never proposes; the other
    tokens are exact zeros of both.  A correct verifier rejects with probability δ and then
    emits the fifth token (the residual [q − p]₊ is all there).  A verifier whose ratio
    q/p rounds to 1 (or exceeds 1) never rejects and never emits it: the per-position TV is
    δ at every drafted position, and the χ² divergence ≈ δ per drafted token — as large as a
    shift of δ can make it, because all of it falls on a token of probability δ.  The token
    ids are drawn per position.

    * ``bfloat16_ties`` — V = 8, δ = 3·2⁻¹¹ ≈ 0.0015 < 2⁻⁹: in bfloat16, (1 − δ)·p rounds to p
      and the ratio to 1; in float16 every number of the pair is exact;
    * ``float16_ties`` — V = 8, δ = 3·2⁻¹⁴ ≈ 0.00018 < 2⁻¹²: rounds to 1 in float16 (and in
      bfloat16);
    * ``floor_ties`` — V = 4,096, δ = 2⁻⁸ ≈ 0.0039, exact in both formats; a verifier given
      the draft row floored at ε = 10⁻⁶, (p + ε)/(1 + V ε) (:func:`theory.conformance.floor`),
      sees every ratio raised by ≈ V ε ≈ 0.0041 > δ, past 1.

    How far each bug moves the law, exactly, and the rounds that catch it with power 0.9:
    :func:`sim.conformance.precision_table` (the README's precision table).

    Examples
    --------
    >>> from sim.conformance import precision_suite
    >>> [(pair.name, pair.target.vocab_size) for pair in precision_suite()]
    [('bfloat16_ties', 8), ('float16_ties', 8), ('floor_ties', 4096)]
    """
    rng = np.random.default_rng(20241103)
    horizon, near = 8, np.array(NEAR_TIE_DRAFT)
    pairs = []
    for name, gap in PRECISION_GAPS.items():
        vocab = FLOOR_VOCAB if name == "floor_ties" else 8
        p, q = np.zeros((horizon, 1, vocab)), np.zeros((horizon, 1, vocab))
        for n in range(horizon):
            tokens = rng.choice(vocab, size=near.size + 1, replace=False)
            p[n, 0, tokens[:-1]] = near
            q[n, 0, tokens[:-1]] = near * (1 - gap)
            q[n, 0, tokens[-1]] = gap
        free = np.zeros((1, vocab), dtype=np.int64)
        pairs.append(SuitePair(name, MarkovLM(p, free), MarkovLM(q, free),
                               f"S = 1, V = {vocab}, near-ties q/p = 1 − {gap:.2g}"))
    return tuple(pairs)


@functools.lru_cache(maxsize=1)
def sequence_suite() -> tuple[SuitePair, ...]:
    """Small pairs for the sequence-level test (``check_verifier(..., level="sequence")``):

    * ``context_free_small`` — S = 1, V = 3, T = 6 (729 sequences): every row depends on the
      position only, so verifiers that re-query models at positions the harness did not draft
      (hierarchical schemes) get exact rows from position-indexed stand-ins;
    * ``binary`` — first order, V = 2, T = 7, random prompt (2 × 128 sequences).

    Examples
    --------
    >>> from sim.conformance import sequence_suite
    >>> [pair.name for pair in sequence_suite()]
    ['context_free_small', 'binary']
    """
    rng = np.random.default_rng(20241102)
    free = np.zeros((1, 3), dtype=np.int64)
    shape = (6, 1, 3)
    small = SuitePair("context_free_small", MarkovLM(_dirichlet(rng, shape, 1.0), free),
                      MarkovLM(_dirichlet(rng, shape, 1.0), free), "S = 1, V = 3, T = 6")
    shape = (7, 2, 2)
    binary = SuitePair("binary", MarkovLM(_dirichlet(rng, shape, 1.0), start=[0.5, 0.5]),
                       MarkovLM(_dirichlet(rng, shape, 1.0), start=[0.5, 0.5]),
                       "first order, V = 2, T = 7, random prompt")
    return small, binary


def _pairs(models) -> tuple[SuitePair, ...]:
    if models is None:
        return conformance_suite()
    if isinstance(models, SuitePair) or (isinstance(models, tuple) and len(models) in (2, 3)
                                         and isinstance(models[-1], MarkovLM)):
        models = [models]
    pairs = []
    for index, item in enumerate(models):
        if isinstance(item, SuitePair):
            pair = item
        elif isinstance(item, tuple) and len(item) == 2:
            pair = SuitePair(f"pair {index}", *item)
        elif isinstance(item, tuple) and len(item) == 3:
            pair = SuitePair(*item)
        else:
            raise TypeError(f"models[{index}] must be a (draft, target) or (name, draft, "
                            f"target) tuple of MarkovLM or a SuitePair; got {item!r}")
        if not isinstance(pair.draft, MarkovLM) or not isinstance(pair.target, MarkovLM):
            raise TypeError(f"models[{index}] must hold MarkovLM models")
        try:
            check_compatible(pair.draft, pair.target)
        except ValueError as error:
            raise ValueError(f"models[{index}] ({pair.name}): {error}") from None
        pairs.append(pair)
    if not pairs:
        raise ValueError("models must hold at least one (draft, target) pair")
    return tuple(pairs)
