r"""The engines: counter randomness, sampling tables, compiled kernels, the reference engine.

:func:`simulate` is the package's Monte Carlo entry point (the compiled CPU engine).  The
subpackage is organised by *engine family* — the compiled sampler of one kind of algorithm —
with one module per family holding its tables, its numba kernel and its readable reference
routine side by side:

==========================  ===================================================================
module                      holds
==========================  ===================================================================
:mod:`~sim.engine.token`    token-wise verifiers (``Speculative``, class ℱ, lossy rules, window
                            policies, ``Autoregressive``)
:mod:`~sim.engine.batch`    ``BatchSpeculative`` "paper" (Algorithm 4) and "trie"
:mod:`~sim.engine.multidraft`  the multi-draft root verifiers ("swor", "spectr", "greedy",
                            "topk", "optimal"): exact root laws sampled, literal routines
:mod:`~sim.engine.block`    block verification (a round-level family)
:mod:`~sim.engine.stopping` adaptive draft length (``AdaptiveSpeculative``)
:mod:`~sim.engine.tree`     token trees (``TreeSpeculative``): reference routine and
                            registration; tables and kernel in :mod:`~sim.engine.tree_kernel`
:mod:`~sim.engine.core`     what families share: row layout, dtypes, the family registry
                            (:func:`register_family`), memory and work guards
:mod:`~sim.engine.compiled` numba building blocks: Philox uniforms, alias draws, start contexts
:mod:`~sim.engine.philox`   the readable Philox4x32-10 definition and the key from ``rng``
:mod:`~sim.engine.tables`   Walker/Vose alias tables, built in compiled code
:mod:`~sim.engine.cache`    the per-process cache of built tables (keyed by content)
:mod:`~sim.engine.run`      :func:`simulate`, :func:`simulate_counts`, chunks, dask clusters
:mod:`~sim.engine.reference`  the reference drivers: Monte Carlo and exact enumeration
:mod:`~sim.engine.result`   :class:`SimResult`, :class:`SimCounts`, the input checks
==========================  ===================================================================

**Reproducibility contract.**  Every uniform is Philox4x32-10 of (seed, trial, position, slot)
(:mod:`sim.engine.philox`); the seed is drawn from ``rng`` once.  So trial i's outcome is a
function of (models, algorithm, seed, i) alone: it does not depend on ``n_trials`` (the first n
trials of a larger run are the same), ``chunk_size``, the number of threads, Dask workers, or
the engine — :func:`gpu_kernels.simulate` returns identical arrays for the same seed, on the
CPU or on CUDA.

Output dtypes: counts in the smallest signed integer type that holds T, tokens in the smallest
that holds V − 1 (``int8`` for the paper's settings: 10⁷ trials cost 20 MB, not 160 MB).
Reductions (``sum``, ``mean``, ``bincount``, ``cumsum``) widen automatically in numpy; cast
before elementwise arithmetic that can exceed T.

The limits :data:`MEMORY_LIMIT` (None: 80% of the memory available at each check),
:data:`WORK_LIMIT`, :data:`SCHEDULER_TIMEOUT` and the table cache's :data:`TABLE_CACHE_LIMIT`
and :data:`TABLE_CACHE_ENTRIES` (:mod:`sim.engine.cache`) are set here, on ``sim.engine``
(``sim.engine.WORK_LIMIT = 10**13``); the modules that read them (:mod:`theory.limits`, the
package's one work model, for the first two) see the new value at once.
"""

import sys
import types

# Importing a family module registers its family with the engines (register_family): the
# imports of batch, block, multidraft, stopping, tree and token below are the families' registration
# lines.
from sim.engine import (  # noqa: F401 (stopping, tree: their registration)
    cache,
    core,
    run,
    stopping,
    tree,
)
from sim.engine.batch import BatchTables
from sim.engine.block import BlockTables
from sim.engine.cache import (
    TABLE_CACHE_ENTRIES,
    TABLE_CACHE_LIMIT,
    clear_table_cache,
    table_cache_info,
)
from sim.engine.core import (
    FAMILIES,
    MEMORY_LIMIT,
    WORK_LIMIT,
    Layout,
    check_memory,
    check_work,
    count_dtype,
    family_tables,
    make_tables,
    register_family,
    simulation_work,
    table_bytes,
    token_dtype,
    token_table_bytes,
)
from sim.engine.multidraft import RootTables
from sim.engine.result import SimCounts, SimResult
from sim.engine.run import (
    DEFAULT_CHUNK_SIZE,
    SCHEDULER_TIMEOUT,
    ChunkBounds,
    SchedulerLostError,
    chunk_bounds,
    run_chunk,
    simulate,
    simulate_counts,
)
from sim.engine.token import TokenTables
from theory import limits

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FAMILIES",
    "MEMORY_LIMIT",
    "SCHEDULER_TIMEOUT",
    "TABLE_CACHE_ENTRIES",
    "TABLE_CACHE_LIMIT",
    "WORK_LIMIT",
    "BatchTables",
    "BlockTables",
    "ChunkBounds",
    "Layout",
    "RootTables",
    "SchedulerLostError",
    "SimCounts",
    "SimResult",
    "TokenTables",
    "check_memory",
    "check_work",
    "chunk_bounds",
    "clear_table_cache",
    "count_dtype",
    "family_tables",
    "make_tables",
    "register_family",
    "run_chunk",
    "simulate",
    "simulate_counts",
    "simulation_work",
    "table_bytes",
    "table_cache_info",
    "token_dtype",
    "token_table_bytes",
]

#: Where each user-settable limit is read (at call time).
_LIMITS = {"MEMORY_LIMIT": limits, "WORK_LIMIT": limits, "SCHEDULER_TIMEOUT": run,
           "TABLE_CACHE_LIMIT": cache, "TABLE_CACHE_ENTRIES": cache}


class _EngineModule(types.ModuleType):
    """``sim.engine`` itself: assigning one of its limits also sets it where it is read."""

    def __setattr__(self, name, value):
        if name in _LIMITS:
            setattr(_LIMITS[name], name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _EngineModule
