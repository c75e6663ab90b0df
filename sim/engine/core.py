r"""What every engine family shares: the row layout, output dtypes, the family registry, limits.

An *engine family* is the compiled sampler of one kind of algorithm (token-wise verifiers,
batch verification, multi-draft root verifiers, block verification): a tables class that
builds flat sampling tables once per simulation and runs its numba kernel over a chunk of
trials.  Each family module (:mod:`sim.engine.token`, :mod:`sim.engine.batch`,
:mod:`sim.engine.multidraft`, :mod:`sim.engine.block`) registers its algorithm classes with
:func:`register_family`; :func:`make_tables` looks the algorithm's class up along its MRO, so a
custom verifier subclassing ``theory.Speculative`` runs in the token-wise family with no
registration of its own.

Rows of the tables: (position n, context s) ↦ row ``n · row_stride + s`` (:class:`Layout`;
``row_stride`` = 0 for a time-homogeneous pair).  The guards :func:`check_memory` and
:func:`check_work` (the package's one work model, :mod:`theory.limits`) refuse absurd requests
before any work, against ``MEMORY_LIMIT`` (80% of the memory available at the check, unless
set) and ``WORK_LIMIT`` — set on ``sim.engine``, read at call time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.engine.cache import cached
from sim.engine.reference import run_algorithm
from sim.engine.tables import read_only_tables
from theory import MarkovLM, limits
from theory.limits import check_memory, check_work

__all__ = [
    "FAMILIES",
    "MEMORY_LIMIT",
    "WORK_LIMIT",
    "Layout",
    "check_memory",
    "check_work",
    "count_dtype",
    "draft_table",
    "drafted_dtype",
    "family_tables",
    "make_tables",
    "register_family",
    "simulation_work",
    "table_bytes",
    "token_dtype",
    "token_table_bytes",
]


def _smallest_signed(largest: int) -> np.dtype:
    return next(np.dtype(kind) for kind in (np.int8, np.int16, np.int32, np.int64)
                if np.iinfo(kind).max >= largest)


def count_dtype(horizon: int) -> np.dtype:
    """The smallest signed integer dtype that holds every count 0 … ``horizon``.

    Parameters
    ----------
    horizon : int >= 0
        T, the largest count.

    Returns
    -------
    numpy.dtype
        int8, int16, int32 or int64.
    """
    return _smallest_signed(int(horizon))


def drafted_dtype(horizon: int, per_round: int | None = None) -> np.dtype:
    """The smallest signed integer dtype that holds every drafted count of a trial.

    A trial drafts at most T + (T − 1) + … + 1 = T(T + 1)/2 tokens with windows (a window to
    the horizon, rejected at its first draft every round); a family whose round drafts up to
    ``per_round`` tokens whatever the position (a token tree's nodes: a tables class's
    ``drafts_per_round``) drafts at most T · ``per_round``.

    Parameters
    ----------
    horizon : int >= 0
        T.
    per_round : int, optional
        The most tokens one round drafts, when that is not bounded by T − n.

    Returns
    -------
    numpy.dtype
        int8, int16, int32 or int64.
    """
    largest = int(horizon) * (int(horizon) + 1) // 2
    if per_round is not None:
        largest = max(largest, int(horizon) * int(per_round))
    return _smallest_signed(largest)


def draft_table(algorithm, layout: Layout) -> np.ndarray:
    """Tokens drafted by a round starting at (n, s), flat at ``n · S + s`` (int64, (T·S,)).

    :meth:`theory.Algorithm.draft_lengths`, the convention of :func:`theory.expected_walltime`;
    the kernels add it to a trial's ``drafted`` count at each round start.

    Parameters
    ----------
    algorithm : theory.Algorithm
        The simulated algorithm.
    layout : Layout
        The pair's layout (T and S).
    """
    lengths = algorithm.draft_lengths(layout.horizon, layout.n_contexts)
    return np.ascontiguousarray(lengths, dtype=np.int64).ravel()


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest signed integer dtype that holds every token 0 … ``vocab_size`` − 1.

    Parameters
    ----------
    vocab_size : int >= 1
        V.

    Returns
    -------
    numpy.dtype
        int8, int16, int32 or int64.
    """
    return _smallest_signed(int(vocab_size) - 1)


@dataclass(frozen=True)
class Layout:
    """How (position, context) pairs map to rows of the sampling tables, and the start.

    Row of (n, s) is ``n · row_stride + s``: ``row_stride`` is 0 when both models are
    time-homogeneous (one set of rows serves every position), else S.
    """

    horizon: int
    n_contexts: int
    vocab_size: int
    row_stride: int
    next_context: np.ndarray  # (S·V,) int32; empty for first-order chains (next = token)
    start: int  # the start context, or -1 when the prompt is random
    start_cdf: np.ndarray  # CDF of the prompt law (float64)

    @classmethod
    def of(cls, draft: MarkovLM, target: MarkovLM) -> Layout:
        homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
        first_order = target.is_first_order
        next_context = np.empty(0, dtype=np.int32) if first_order else \
            np.ascontiguousarray(target.next_context, dtype=np.int32).ravel()
        start = target.start if isinstance(target.start, int) else -1
        return cls(target.horizon, target.n_contexts, target.vocab_size,
                   0 if homogeneous else target.n_contexts, next_context, start,
                   np.cumsum(np.asarray(target.start_distribution, dtype=np.float64)))

    def rows(self, model: MarkovLM) -> np.ndarray:
        """The (rows, V) float64 laws of ``model`` in table order (broadcast axes expanded)."""
        return np.ascontiguousarray(self.exact_rows(model), dtype=np.float64)

    def exact_rows(self, model: MarkovLM) -> np.ndarray:
        """The (rows, V) laws of ``model`` in table order, in the model's own numbers.

        ``Fraction`` rows for an exact model, float64 for a float one.  Tables computed from
        the rows — a verifier's (b, 𝒫), a bonus law, a root law — are computed on these and
        converted to float64 afterwards, so a cut or a tie (truncation, top-k) falls exactly
        where the exact dynamic programs put it.
        """
        probs = model.probs if self.row_stride else model.probs[:1]
        return np.ascontiguousarray(probs).reshape(-1, self.vocab_size)

    def common_arguments(self) -> tuple:
        return (self.horizon, self.n_contexts, self.vocab_size, self.row_stride, self.start,
                self.start_cdf, self.next_context)


#: Algorithm class → the tables class of its engine family (:func:`register_family`),
#: looked up along the algorithm's class MRO, so a subclass runs in its parent's family.
FAMILIES: dict[type, type | None] = {}


def register_family(algorithm_class: type, tables_class: type, routine=None) -> None:
    """Register an algorithm family with the engines: the one line a family module adds.

    Parameters
    ----------
    algorithm_class : type
        The :class:`theory.Algorithm` subclass (its subclasses inherit the registration).
    tables_class : type or None
        None for a family with a reference routine only (no compiled kernel yet: the compiled
        engines refuse it, :func:`make_tables`).  Otherwise it builds the sampling tables
        (``tables_class.build(draft, target, algorithm)``), runs the compiled kernel on them
        (``tables.run(key, first_trial, rejections, target_calls, drafted, tokens)``) and
        bounds the work of one position (``tables_class.steps_per_position(algorithm,
        target)``, position-steps for :func:`simulation_work`).
    routine : callable, optional
        The family's readable reference routine ``routine(algorithm, draft, target, choose)
        -> Outcome`` (:mod:`sim.engine.reference`), registered for this class.
    """
    FAMILIES[algorithm_class] = tables_class
    if routine is not None:
        run_algorithm.register(algorithm_class, routine)


_UNREGISTERED = object()


def _registry_entry(algorithm):
    """The entry of ``algorithm``'s class or nearest registered base: a tables class, None (a
    reference routine only) or ``_UNREGISTERED``."""
    return next((FAMILIES[kind] for kind in type(algorithm).__mro__ if kind in FAMILIES),
                _UNREGISTERED)


def family_tables(algorithm) -> type | None:
    """The tables class registered for ``algorithm``'s class or its nearest base; None if none
    (or if that family has a reference routine only).

    Parameters
    ----------
    algorithm : theory.Algorithm
        Any algorithm.
    """
    family = _registry_entry(algorithm)
    return None if family is _UNREGISTERED else family


def make_tables(draft: MarkovLM, target: MarkovLM, algorithm):
    """The sampling tables of ``algorithm`` on this pair: built once per process and problem.

    Built tables are read-only and kept in a per-process cache keyed by the problem's content
    (:mod:`sim.engine.cache`): later calls on an equal problem return the same object.

    Parameters
    ----------
    draft, target : MarkovLM
        The model pair.
    algorithm : Algorithm
        ``Autoregressive``, any ``Speculative`` verifier, or ``BatchSpeculative``.

    Returns
    -------
    TokenTables, BatchTables or BlockTables
        The tables of the algorithm's family.

    Raises
    ------
    TypeError
        If the engine has no family for ``algorithm``.
    ValueError
        If the tables would be absurdly large (``BatchSpeculative.check_cost``).
    MemoryError
        If they would not fit in :data:`MEMORY_LIMIT` (:func:`check_memory`).
    InvalidVerification
        If a custom verifier's (b, 𝒫) is invalid (:mod:`theory.verification`).
    """
    family = _registry_entry(algorithm)
    if family is _UNREGISTERED:
        raise TypeError(f"the engines have no kernel for {algorithm!r}")
    if family is None:  # a reference routine only
        raise TypeError(f"the compiled engines have no kernel for {algorithm!r} yet; use "
                        "sim.reference.reference_simulate or the exact functions of theory")
    algorithm.check_cost(draft, target, "engine")  # absurd sizes fail fast, clearly
    check_memory(table_bytes(draft, target, algorithm),
                 f"the sampling tables of {algorithm!r} on {target!r}",
                 "use a smaller model or fewer drafts")
    return cached(draft, target, algorithm,
                  lambda: read_only_tables(family.build(draft, target, algorithm)))


#: The limits, read at call time where they live (:mod:`theory.limits`, the one work model of
#: the package; set them on ``sim.engine``).  These names are the defaults, for reading.
MEMORY_LIMIT = limits.MEMORY_LIMIT
WORK_LIMIT = limits.WORK_LIMIT


def simulation_work(target: MarkovLM, algorithm, n_trials: int) -> float:
    """A generous estimate of the work of simulating ``n_trials`` trials (position-steps).

    Parameters
    ----------
    target : MarkovLM
        The target model (its horizon T and vocabulary size V).
    algorithm : Algorithm
        The simulated algorithm.
    n_trials : int
        Number of trials.

    Returns
    -------
    float
        n_trials · T · (the most steps one position can take).

    Notes
    -----
    A position takes one step for token-wise verifiers (``Speculative``, lossy rules,
    ``Autoregressive``, the root verifiers of ``BatchSpeculative``); at most M candidate tests
    for ``BatchSpeculative(M)`` with the "paper" or "trie" verifier (an upper bound: only the
    tried candidates are drawn, usually a few); at most γ draft steps, each with a sum over the
    vocabulary (counted as V / 32 steps), for ``BlockSpeculative(γ)``; one for a family with a
    reference routine only (no tables class).

    Examples
    --------
    >>> from sim.engine import simulation_work
    >>> from sim.models import fig2_pair
    >>> from theory import BatchSpeculative
    >>> draft, target = fig2_pair()
    >>> simulation_work(target, BatchSpeculative(4), 1000)  # 1000 trials · T = 50 · M = 4
    200000.0
    """
    family = family_tables(algorithm)
    per_position = 1.0 if family is None else family.steps_per_position(algorithm, target)
    return float(n_trials) * target.horizon * per_position


def table_bytes(draft: MarkovLM, target: MarkovLM, algorithm) -> float:
    """A generous estimate of the memory that building the sampling tables takes (bytes).

    Parameters
    ----------
    draft, target : MarkovLM
        The model pair.
    algorithm : Algorithm
        The algorithm whose tables are estimated.

    Returns
    -------
    float
        Bytes.

    Notes
    -----
    An algorithm that knows its tables (``BatchSpeculative.table_bytes``) gives its own
    estimate; otherwise rows R = S (time-homogeneous pair) or T·S, and ≈ 80 bytes per row and
    token (alias records of proposals and rejection law, acceptance, and the temporaries of
    their construction).  Every family adds 32 bytes per (position, context): the draft
    lengths of a round start (:func:`draft_table`).
    """
    # the draft lengths of a round start, one int64 per (position, context) even for a
    # time-homogeneous pair (with the temporaries of draft_table): T = 10⁹ needs 32 GB
    per_start = 32.0 * target.horizon * target.n_contexts
    return token_table_bytes(draft, target, algorithm) + per_start


def token_table_bytes(draft, target, algorithm) -> float:
    """The per-token part of :func:`table_bytes`: the sampling tables of every row and token.

    It reads only the pair's shape (``horizon``, ``n_contexts``, ``vocab_size``,
    ``is_time_homogeneous``), so a caller can size a pair before building it (the command
    line does).  Building the tables takes a few position-steps per entry (V = 10⁷, S = 8:
    40 s on one core): before the work of any table reached :data:`WORK_LIMIT` its memory
    would be terabytes, so memory is the limit that binds.

    Parameters
    ----------
    draft, target : MarkovLM or any object with the four attributes above
        The model pair, or its shape.
    algorithm : Algorithm
        The algorithm whose tables are estimated.

    Returns
    -------
    float
        Bytes (:func:`table_bytes` without the per-(position, context) draft lengths).
    """
    if hasattr(algorithm, "table_bytes"):  # the algorithm's own (calibrated) estimate
        return float(algorithm.table_bytes(draft, target, "engine"))
    homogeneous = draft.is_time_homogeneous and target.is_time_homogeneous
    cells = (1 if homogeneous else target.horizon) * target.n_contexts * target.vocab_size
    return float(cells) * 80
