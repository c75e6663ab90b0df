r"""Finite-context Markov language models.

The paper (Yin, Chen, Huang, Wang 2024, §2) views autoregressive decoding as a Markov chain over
prefixes.  For computation we use a *finite-context* representation of a language model over a
vocabulary of V tokens and horizon T:

* a set of S contexts; ``start`` is the context before the first token (an index or a law μ₀),
* ``probs[n, s, x]`` = P(x_{n+1} = x | context s at position n), 0 ≤ n < T,
* ``next_context[s, x]`` = the context after emitting x in context s.

A prefix x_{1:n} determines the context s_n (given the start context), so the model is the
Markov chain on prefixes of the paper with the sufficient statistic s_n.  A first-order chain
has S = V and ``next_context[s, x] = x``; an order-k n-gram model has S = V^k (or the contexts
seen in a corpus); a hidden-context model may use any map.

The law of the context at each position follows by pushing the start law forward,

.. math::  μ_{n+1}(s') = \sum_{s, x:\ \mathrm{next}(s, x) = s'} μ_n(s)\, P_n(x \mid s),

and a sequence has probability :math:`\sum_{s_0} μ_0(s_0) \prod_n P_n(x_{n+1} \mid s_n)`.

Draft (p) and target (q) models of a speculative decoding problem share T, S, V,
``next_context`` and ``start`` (:func:`check_compatible`).  All arrays may hold
``fractions.Fraction`` entries (object dtype), in which case every quantity computed from the
model is exact.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import numpy as np

from theory._arrays import (
    as_probability_array,
    as_scalar,
    check_distributions,
    compact,
    frozen_copy,
    is_exact,
    zeros_like_kind,
)

__all__ = ["MarkovLM", "check_compatible", "context_transition"]


class MarkovLM:
    r"""A language model given by a finite context chain (docs/architecture.md §1).

    Parameters
    ----------
    probs : array_like, shape (T, S, V)
        ``probs[n, s, x]`` is the probability of token ``x`` at position ``n`` (0-based) in
        context ``s``.  Rows must be finite, non-negative and sum to 1 within 1e-9 (float) or
        exactly (``fractions.Fraction`` entries, which make the model exact).  A broadcast view
        (e.g. ``np.broadcast_to(kernel, (T, S, V))``) is stored without expanding it.
    next_context : array_like of int, shape (S, V), optional
        Context reached after emitting ``x`` in context ``s``.  ``None`` (default) means a
        first-order chain: S must equal V and the context is the last token.
    start : int or array_like, shape (S,)
        The initial context, or a probability distribution over contexts (default 0).

    Raises
    ------
    ValueError
        Wrong shapes, non-finite or negative entries, rows not summing to 1, contexts out of
        range, ``start`` not a context or not a distribution.  Messages name the argument, the
        index and the offending value.
    TypeError
        Non-numeric entries, non-integer ``next_context``, or a float ``start`` law for an exact
        model.

    Notes
    -----
    The model is immutable: arrays are copied on construction and exposed read-only.  Rows are
    not renormalized: a float row may sum to 1 ± 1e-9 and every algorithm in this package treats
    it as given (see the README's section on edge cases).

    Examples
    --------
    >>> import numpy as np
    >>> from theory import MarkovLM
    >>> kernel = np.array([[0.9, 0.1], [0.5, 0.5]])
    >>> lm = MarkovLM(np.stack([kernel] * 3), start=0)
    >>> lm.horizon, lm.n_contexts, lm.vocab_size
    (3, 2, 2)
    >>> lm.context_marginals()[1]
    array([0.9, 0.1])
    """

    __slots__ = ("_exact", "_first_order", "_next_context", "_probs", "_start", "_start_law")

    def __init__(self, probs, next_context=None, start=0):
        probs = as_probability_array(probs, "probs")
        if probs.ndim != 3:
            raise ValueError(
                f"probs must have shape (T, S, V) = (horizon, n_contexts, vocab_size); "
                f"got shape {probs.shape}"
            )
        _, n_contexts, vocab_size = probs.shape
        if min(probs.shape) < 1:
            raise ValueError(f"probs must have T, S, V >= 1; got shape {probs.shape}")
        check_distributions(probs, "probs")
        exact = is_exact(probs)

        if next_context is None:
            if n_contexts != vocab_size:
                raise ValueError(
                    "next_context=None means a first-order chain, which needs n_contexts == "
                    f"vocab_size; got n_contexts={n_contexts}, vocab_size={vocab_size}"
                )
            next_context = np.broadcast_to(np.arange(vocab_size), (n_contexts, vocab_size))
            first_order = True
        else:
            next_context = _as_context_map(next_context, n_contexts, vocab_size)
            first_order = False

        start_value, start_law = _as_start(start, n_contexts, exact)

        self._probs = frozen_copy(probs)
        self._next_context = frozen_copy(next_context)
        self._start = start_value
        self._start_law = start_law
        self._exact = exact
        self._first_order = first_order

    # ------------------------------------------------------------------ constructors
    @classmethod
    def homogeneous(cls, kernel, horizon: int, next_context=None, start=0) -> MarkovLM:
        """A time-homogeneous model: the same ``kernel`` (S, V) at every position.

        The (T, S, V) array is a broadcast view, so memory is O(S·V), not O(T·S·V).

        Examples
        --------
        >>> from theory import MarkovLM
        >>> MarkovLM.homogeneous([[0.5, 0.5]], horizon=4, next_context=[[0, 0]]).horizon
        4
        """
        horizon = _positive_int(horizon, "horizon")
        kernel = as_probability_array(kernel, "kernel")
        if kernel.ndim != 2:
            raise ValueError(f"kernel must have shape (S, V); got shape {kernel.shape}")
        try:
            probs = np.broadcast_to(kernel, (horizon, *kernel.shape))
        except ValueError as error:  # numpy refuses shapes beyond its index range
            raise ValueError(f"horizon = {horizon} is too large for a kernel of shape "
                             f"{kernel.shape}: {error}") from None
        return cls(probs, next_context=next_context, start=start)

    # ------------------------------------------------------------------ attributes
    @property
    def probs(self) -> np.ndarray:
        """Read-only (T, S, V) next-token probabilities."""
        return self._probs

    @property
    def next_context(self) -> np.ndarray:
        """Read-only (S, V) context map (the identity on tokens for first-order chains)."""
        return self._next_context

    @property
    def start(self):
        """The start context (int) or the start law over contexts (read-only array)."""
        return self._start

    @property
    def start_distribution(self) -> np.ndarray:
        """The start law μ₀ as an (S,) array (one-hot when ``start`` is an index)."""
        return self._start_law

    @property
    def horizon(self) -> int:
        """T, the number of tokens generated."""
        return self._probs.shape[0]

    @property
    def n_contexts(self) -> int:
        """S, the number of contexts."""
        return self._probs.shape[1]

    @property
    def vocab_size(self) -> int:
        """V, the vocabulary size."""
        return self._probs.shape[2]

    @property
    def is_exact(self) -> bool:
        """True when the model holds Fractions and computations on it are exact."""
        return self._exact

    @property
    def is_first_order(self) -> bool:
        """True when ``next_context`` was omitted (S == V, context = last token)."""
        return self._first_order

    @property
    def is_time_homogeneous(self) -> bool:
        """True when ``probs`` is stored once for all positions (a broadcast view)."""
        return self.horizon == 1 or compact(self._probs).shape[0] == 1

    def __repr__(self) -> str:
        kind = "first-order" if self._first_order else "hidden-context"
        arithmetic = "exact" if self._exact else "float64"
        return (
            f"MarkovLM(T={self.horizon}, S={self.n_contexts}, V={self.vocab_size}, "
            f"{kind}, {arithmetic})"
        )

    # ------------------------------------------------------------------ computations
    def push_forward(self, position: int, context_law: np.ndarray) -> np.ndarray:
        r"""One step of the context chain: μ_{n+1}(s') = Σ_{s,x: next(s,x)=s'} μ_n(s) P_n(x|s).

        ``context_law`` may carry leading batch axes: shape (..., S) → (..., S).
        """
        return context_law @ self.transition_matrix(position)

    def transition_matrix(self, position: int) -> np.ndarray:
        """The (S, S) context transition matrix of position ``position`` (rows sum to 1)."""
        return context_transition(self._probs[position], self._next_context,
                                  first_order=self._first_order)

    def context_marginals(self) -> np.ndarray:
        """The exact law of the context at each position, shape (T, S).

        Row ``n`` is the law of the context in which token ``n`` (0-based) is drawn, so row 0 is
        the start law.  Exact (Fractions) for exact models.

        Examples
        --------
        >>> from fractions import Fraction as F
        >>> from theory import MarkovLM
        >>> half = F(1, 2)
        >>> lm = MarkovLM([[[half, half], [1, 0]]] * 2, start=0)
        >>> [str(v) for v in lm.context_marginals()[1]]
        ['1/2', '1/2']
        """
        out = zeros_like_kind((self.horizon, self.n_contexts), self._exact)
        out[0] = self._start_law
        for n in range(self.horizon - 1):
            out[n + 1] = self.push_forward(n, out[n])
        return out

    def sequence_probability(self, tokens) -> np.ndarray | float | Fraction:
        r"""Probability of complete sequences: Σ_{s₀} μ₀(s₀) Π_n P_n(x_{n+1} | s_n).

        Parameters
        ----------
        tokens : array_like of int, shape (..., T)

        Returns
        -------
        float, Fraction or array of shape (...)
            Exact (Fraction) for exact models.

        Examples
        --------
        >>> import numpy as np
        >>> from theory import MarkovLM
        >>> lm = MarkovLM(np.full((2, 2, 2), 0.5))
        >>> float(lm.sequence_probability([0, 1]))
        0.25
        """
        tokens = self._check_tokens(tokens)
        contexts, weights = self._start_support()
        contexts = np.broadcast_to(contexts, (*tokens.shape[:-1], contexts.size))
        prob = np.broadcast_to(weights, contexts.shape).copy()
        for n in range(self.horizon):
            x = tokens[..., n, None]
            prob = prob * self._probs[n][contexts, x]
            contexts = self._next_context[contexts, x]
        return as_scalar(prob.sum(axis=-1))

    def sequence_log_probability(self, tokens) -> np.ndarray | float:
        """Natural log of :meth:`sequence_probability`, computed without underflow.

        Zero-probability sequences give ``-inf``.  Float even for exact models.

        Examples
        --------
        >>> import numpy as np
        >>> from theory import MarkovLM
        >>> lm = MarkovLM(np.full((2, 2, 2), 0.5))
        >>> float(lm.sequence_log_probability([0, 1])) == float(np.log(0.25))
        True
        """
        tokens = self._check_tokens(tokens)
        contexts, weights = self._start_support()
        contexts = np.broadcast_to(contexts, (*tokens.shape[:-1], contexts.size))
        log_weights = np.array([_log(w) for w in weights])
        logp = np.broadcast_to(log_weights, contexts.shape).copy()
        for n in range(self.horizon):
            x = tokens[..., n, None]
            step = self._probs[n][contexts, x]
            logp = logp + (_log_array(step))
            contexts = self._next_context[contexts, x]
        peak = logp.max(axis=-1, keepdims=True)
        finite_peak = np.where(np.isfinite(peak), peak, 0.0)
        with np.errstate(divide="ignore"):
            total = np.log(np.exp(logp - finite_peak).sum(axis=-1)) + finite_peak[..., 0]
        return as_scalar(total)

    def to_float(self) -> MarkovLM:
        """A float64 copy of an exact model (returns ``self`` for float models)."""
        if not self._exact:
            return self
        start = self._start if isinstance(self._start, int) else self._start.astype(float)
        probs = np.broadcast_to(compact(self._probs).astype(float), self._probs.shape)
        return MarkovLM(probs, None if self._first_order else self._next_context, start)

    # ------------------------------------------------------------------ helpers
    def _check_tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.dtype.kind not in "iu":
            raise TypeError(f"tokens must be integers; got dtype {tokens.dtype}")
        if tokens.ndim < 1 or tokens.shape[-1] != self.horizon:
            raise ValueError(
                f"tokens must have shape (..., T) with T = {self.horizon}; got {tokens.shape}"
            )
        bad = np.argwhere((tokens < 0) | (tokens >= self.vocab_size))
        if bad.size:
            where = tuple(bad[0])
            raise ValueError(
                f"tokens[{', '.join(map(str, where))}] = {tokens[where]} is not a token "
                f"in range(0, {self.vocab_size})"
            )
        return tokens

    def _start_support(self):
        law = self._start_law
        support = np.flatnonzero(law != 0)
        return support, law[support]


def context_transition(weights: np.ndarray, next_context: np.ndarray, *,
                       first_order: bool = False) -> np.ndarray:
    """The (S, S) matrix M[s, s'] = Σ_{x: next_context[s, x] = s'} weights[s, x].

    ``weights[s, x]`` is a (sub-)probability of emitting x in context s; a context law μ (row
    vector) is carried to the next position by μ @ M.  Works for floats and Fractions.

    Parameters
    ----------
    weights : ndarray, shape (S, V)
        Sub-probabilities of emitting token x in context s (floats or Fractions).
    next_context : ndarray, shape (S, V)
        The context after emitting x in context s.
    first_order : bool
        True when next_context[s, x] = x (S = V): M is then ``weights`` itself, no scatter.

    Returns
    -------
    ndarray, shape (S, S)
        M[s, s'], same arithmetic as ``weights``.
    """
    if first_order:
        return np.asarray(weights)
    n_contexts, vocab_size = next_context.shape
    rows = np.repeat(np.arange(n_contexts), vocab_size)
    flat_index = rows * n_contexts + np.asarray(next_context).ravel()
    if weights.dtype != object:
        counts = np.bincount(flat_index, weights=np.asarray(weights).ravel(),
                             minlength=n_contexts * n_contexts)
        return counts.reshape(n_contexts, n_contexts)
    out = zeros_like_kind(n_contexts * n_contexts, exact=True)
    np.add.at(out, flat_index, weights.ravel())
    return out.reshape(n_contexts, n_contexts)


def check_compatible(draft: MarkovLM, target: MarkovLM) -> None:
    """Raise unless ``draft`` and ``target`` can form a speculative decoding problem.

    They must be :class:`MarkovLM` instances with the same horizon, contexts, vocabulary,
    ``next_context`` and start law, and the same arithmetic (both exact or both float).

    Parameters
    ----------
    draft, target : MarkovLM
        The pair to check.

    Raises
    ------
    TypeError
        If either is not a :class:`MarkovLM`.
    ValueError
        Naming the first attribute that differs (horizon, contexts, vocabulary, context map,
        start law, arithmetic) and both values.

    Examples
    --------
    >>> import numpy as np
    >>> from theory import MarkovLM, check_compatible
    >>> a = MarkovLM(np.full((2, 2, 2), 0.5)); b = MarkovLM(np.full((3, 2, 2), 0.5))
    >>> check_compatible(a, b)
    Traceback (most recent call last):
    ...
    ValueError: draft and target must have the same horizon T; got draft 2, target 3
    """
    for name, model in (("draft", draft), ("target", target)):
        if not isinstance(model, MarkovLM):
            raise TypeError(f"{name} must be a MarkovLM; got {type(model).__name__}")
    for label, attribute in (("horizon T", "horizon"), ("number of contexts S", "n_contexts"),
                             ("vocabulary size V", "vocab_size")):
        a, b = getattr(draft, attribute), getattr(target, attribute)
        if a != b:
            raise ValueError(
                f"draft and target must have the same {label}; got draft {a}, target {b}"
            )
    if not np.array_equal(compact(draft.next_context), compact(target.next_context)) and \
            not np.array_equal(draft.next_context, target.next_context):
        where = tuple(np.argwhere(draft.next_context != target.next_context)[0])
        raise ValueError(
            f"draft and target must share next_context; they differ at [{where[0]}, {where[1]}]:"
            f" draft {draft.next_context[where]}, target {target.next_context[where]}"
        )
    if draft.is_exact != target.is_exact:
        raise TypeError(
            "draft and target must both be exact (Fraction) or both float; got draft "
            f"{'exact' if draft.is_exact else 'float'}, target "
            f"{'exact' if target.is_exact else 'float'}"
        )
    if not np.array_equal(draft.start_distribution, target.start_distribution):
        where = int(np.argwhere(draft.start_distribution != target.start_distribution)[0, 0])
        raise ValueError(
            f"draft and target must share the start law; they differ at context {where}: "
            f"draft {draft.start_distribution[where]!r}, target "
            f"{target.start_distribution[where]!r}"
        )


# ---------------------------------------------------------------------- validation helpers
def _positive_int(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return int(value)


def _as_context_map(next_context, n_contexts: int, vocab_size: int) -> np.ndarray:
    array = np.asarray(next_context)
    if array.dtype.kind not in "iu":
        raise TypeError(f"next_context must hold integers; got dtype {array.dtype}")
    if array.shape != (n_contexts, vocab_size):
        raise ValueError(
            f"next_context must have shape (S, V) = ({n_contexts}, {vocab_size}); "
            f"got {array.shape}"
        )
    bad = np.argwhere((array < 0) | (array >= n_contexts))
    if bad.size:
        s, x = bad[0]
        raise ValueError(
            f"next_context[{s}, {x}] = {array[s, x]} is not a context in range(0, {n_contexts})"
        )
    return array.astype(np.intp, copy=False)


def _as_start(start, n_contexts: int, exact: bool):
    if isinstance(start, numbers.Integral) and not isinstance(start, bool):
        if not 0 <= start < n_contexts:
            raise ValueError(f"start = {start} is not a context in range(0, {n_contexts})")
        law = zeros_like_kind(n_contexts, exact)
        law[int(start)] = 1
        law.flags.writeable = False
        return int(start), law
    if isinstance(start, bool):
        raise TypeError("start must be a context index or a distribution over contexts; got bool")
    law = as_probability_array(start, "start")
    if law.shape != (n_contexts,):
        raise ValueError(
            f"start must be a context index or a distribution of shape (S,) = ({n_contexts},);"
            f" got shape {law.shape}"
        )
    if exact and not is_exact(law):
        raise TypeError("an exact model (Fraction probs) needs an exact (Fraction) start law")
    if not exact and is_exact(law):
        law = law.astype(np.float64)
    check_distributions(law, "start")
    law = np.array(law, copy=True)
    law.flags.writeable = False
    return law, law


def _log(value) -> float:
    """Natural log of a float or Fraction (exact ratio of big integers, no underflow)."""
    if isinstance(value, Fraction):
        if value == 0:
            return -math.inf
        return math.log(value.numerator) - math.log(value.denominator)
    with np.errstate(divide="ignore"):
        return float(np.log(value))


def _log_array(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.vectorize(_log, otypes=[float])(values)
    with np.errstate(divide="ignore"):
        return np.log(values)
