r"""The per-process cache of built sampling tables: repeated simulations of a problem pay once.

:func:`sim.engine.core.make_tables` looks a problem up here before building its tables.  The key
is the problem's *content*: a SHA-1 fingerprint of both models' stored arrays (probabilities,
context map, start law — their dtypes and shapes included) and of the algorithm (its class and
its attributes, arrays by content).  So two equal models built separately (``fig2_pair()``
called twice) share their tables, and no change to a model could go unseen: models and
algorithms are immutable (their arrays are read-only copies), and the key would change with
their content anyway.  Fingerprinting reads each model's stored numbers once (≈ 2 ms per MB),
a small fraction of a build.  An attribute without a value ``repr`` (a function, a closure, a
rule object) is keyed by its identity: if such an object changes its behaviour in place, call
:func:`clear_table_cache` before simulating again.

Built tables are read-only (:func:`sim.engine.tables.read_only_tables`), so a cached set is
shared safely by every later simulation, thread or dask worker.  The cache holds at most
:data:`TABLE_CACHE_ENTRIES` problems and :data:`TABLE_CACHE_LIMIT` bytes of tables, evicting the
least recently used; a set larger than the limit is built and used but not kept.  Set
``sim.engine.TABLE_CACHE_LIMIT = 0`` to keep nothing; :func:`clear_table_cache` empties it and
:func:`table_cache_info` reports its size and hit counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict

import numpy as np

from theory import MarkovLM
from theory._arrays import compact

__all__ = ["TABLE_CACHE_ENTRIES", "TABLE_CACHE_LIMIT", "cached", "clear_table_cache",
           "problem_fingerprint", "table_cache_info", "tables_nbytes"]

#: Most bytes of tables the cache keeps (least recently used first out); 0 keeps nothing.
#: Set ``sim.engine.TABLE_CACHE_LIMIT`` to change it.
TABLE_CACHE_LIMIT = 2 * 2**30

#: Most problems the cache keeps.
TABLE_CACHE_ENTRIES = 16

_lock = threading.Lock()
_entries: OrderedDict[bytes, tuple[object, int]] = OrderedDict()
_counts = {"hits": 0, "misses": 0}


def _hash_value(digest, value) -> None:
    if isinstance(value, np.ndarray):
        stored = compact(value)
        digest.update(f"array{stored.shape}{stored.dtype.str}{value.shape}".encode())
        if stored.dtype == object:  # exact models: Fractions, immutable, hashed by value
            digest.update(repr(stored.ravel().tolist()).encode())
        else:
            digest.update(memoryview(np.ascontiguousarray(stored)).cast("B"))
    elif isinstance(value, MarkovLM):
        digest.update(b"MarkovLM")
        for part in (value.probs, value.next_context, value.start_distribution):
            _hash_value(digest, np.asarray(part))
        digest.update(repr(value.start if isinstance(value.start, int) else -1).encode())
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _hash_value(digest, item)
    else:  # scalars, strings, dataclasses by their repr; other objects by identity (repr)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _hash_object(digest, value)
        else:
            digest.update(f"{type(value).__qualname__}:{value!r}".encode())


def _hash_object(digest, value) -> None:
    kind = type(value)
    # the class by name and identity: two classes of one name (a subclass overriding a rule)
    # never share tables; the cached tables keep the class (and so its id) alive
    digest.update(f"{kind.__module__}.{kind.__qualname__}#{id(kind)}".encode())
    attributes = getattr(value, "__dict__", None)
    if attributes is None:
        attributes = {name: getattr(value, name) for name in getattr(kind, "__slots__", ())}
    for name in sorted(attributes):
        digest.update(name.encode())
        _hash_value(digest, attributes[name])


def problem_fingerprint(draft: MarkovLM, target: MarkovLM, algorithm) -> bytes:
    """The cache key of a problem: SHA-1 of both models' contents and the algorithm's.

    Parameters
    ----------
    draft, target : MarkovLM
        The model pair.
    algorithm : theory.Algorithm
        The algorithm (its class and attributes).

    Returns
    -------
    bytes
        20 bytes; equal for equal problems.
    """
    digest = hashlib.sha1(usedforsecurity=False)
    _hash_value(digest, draft)
    _hash_value(digest, target)
    _hash_object(digest, algorithm)
    return digest.digest()


def tables_nbytes(tables) -> int:
    """Bytes of the arrays a (nested) tables dataclass holds."""
    total = 0
    for field in dataclasses.fields(tables):
        value = getattr(tables, field.name)
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            total += tables_nbytes(value)
    return total


def cached(draft: MarkovLM, target: MarkovLM, algorithm, build):
    """The tables of the problem from the cache, or ``build()``'s (then kept if they fit)."""
    if TABLE_CACHE_LIMIT <= 0 or TABLE_CACHE_ENTRIES <= 0:
        return build()
    key = problem_fingerprint(draft, target, algorithm)
    with _lock:
        entry = _entries.get(key)
        if entry is not None:
            _entries.move_to_end(key)
            _counts["hits"] += 1
            return entry[0]
        _counts["misses"] += 1
    tables = build()
    size = tables_nbytes(tables)
    with _lock:
        if size <= TABLE_CACHE_LIMIT:
            _entries[key] = (tables, size)
            _entries.move_to_end(key)
        while _entries and (len(_entries) > TABLE_CACHE_ENTRIES
                            or sum(nbytes for _, nbytes in _entries.values())
                            > TABLE_CACHE_LIMIT):
            _entries.popitem(last=False)
    return tables


def clear_table_cache() -> None:
    """Empty the cache of built tables (and reset its hit counts)."""
    with _lock:
        _entries.clear()
        _counts.update(hits=0, misses=0)


def table_cache_info() -> dict:
    """``{"entries", "bytes", "hits", "misses"}`` of the cache of built tables.

    Examples
    --------
    >>> from sim.engine import clear_table_cache, make_tables, table_cache_info
    >>> from sim.models import fig2_pair
    >>> from theory import Speculative
    >>> clear_table_cache()
    >>> tables = make_tables(*fig2_pair(), Speculative())
    >>> tables is make_tables(*fig2_pair(), Speculative())  # equal models: built once
    True
    >>> {k: table_cache_info()[k] for k in ("entries", "hits", "misses")}
    {'entries': 1, 'hits': 1, 'misses': 1}
    """
    with _lock:
        return {"entries": len(_entries),
                "bytes": sum(nbytes for _, nbytes in _entries.values()), **_counts}
