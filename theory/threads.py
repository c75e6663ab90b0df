r"""The BLAS threads of the exact dynamic programs: one by default.

The dynamic programs (:mod:`theory.exact`, :mod:`theory.rounds`) move probability mass with
many small matrix products.  A multi-threaded BLAS gains nothing on these sizes and, on a
machine whose cores are busy, loses much: OpenBLAS spinning two threads made ``rejection_pmf``
(V = 100, T = 100) take 0.66–1.1 s instead of 0.10 s on one thread, on a loaded 2-core machine.
So every pass of a DP runs with BLAS bounded to :data:`DP_THREADS` threads (through
``threadpoolctl``, a dependency of the package), then restores the previous setting.

Set ``theory.threads.DP_THREADS`` to another count, or to ``None`` to leave BLAS alone.  The
bound is process-wide while a pass runs (BLAS thread pools are), and nested passes set it once.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading

__all__ = ["DP_THREADS", "bounded_blas", "with_bounded_blas"]

#: BLAS threads while a dynamic program runs; None leaves BLAS's own setting alone.
DP_THREADS: int | None = 1

_state = threading.local()
_controller: list = [None, -1]  # (threadpoolctl controller, len(sys.modules) when made)


def _blas_controller():
    """A threadpoolctl controller of the loaded BLAS libraries, remade when modules were
    imported since (a library loaded later, e.g. scipy's, is then seen too)."""
    modules = len(sys.modules)
    if _controller[1] != modules:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a dependency; leave BLAS alone without it
            return None
        _controller[0], _controller[1] = ThreadpoolController(), modules
    return _controller[0]


@contextlib.contextmanager
def bounded_blas():
    """Run the block with BLAS bounded to :data:`DP_THREADS` threads (nested: once).

    Examples
    --------
    >>> import numpy as np
    >>> from theory.threads import bounded_blas
    >>> with bounded_blas():
    ...     product = np.ones((3, 3)) @ np.ones(3)
    >>> product.tolist()
    [3.0, 3.0, 3.0]
    """
    threads = DP_THREADS
    if threads is None or getattr(_state, "depth", 0):
        yield
        return
    controller = _blas_controller()
    _state.depth = 1
    try:
        if controller is None:
            yield
        else:
            with controller.limit(limits=int(threads), user_api="blas"):
                yield
    finally:
        _state.depth = 0


def with_bounded_blas(function):
    """Decorate a DP pass: it runs under :func:`bounded_blas`."""

    @functools.wraps(function)
    def bounded(*args, **kwargs):
        with bounded_blas():
            return function(*args, **kwargs)

    return bounded
