r"""The work model: what a request would cost on this machine, refused before any work if absurd.

Every entry point that can be asked for something absurd — the exact dynamic programs, the
compiled and torch engines, the table builders, the command line — estimates two numbers
before it starts, in the same units, and compares them with the same two limits:

* **memory** (bytes at the peak): refused above :func:`memory_limit`, which is
  :data:`MEMORY_LIMIT` when a user set it, else 80% of the memory *available* on this machine
  at the moment of the check (``MemAvailable`` of ``/proc/meminfo``; the physical memory where
  that cannot be read), so a request that would push a loaded machine into swap or the OOM
  killer is refused, not started;
* **work** (steps; one step ≈ one position of the compiled engine's per-trial loop, 10–100 ns
  of one core, ``make bench``): refused above :data:`WORK_LIMIT` (10¹², hours of CPU).  Costs
  that are not engine positions are converted with :data:`ARRAY_CALL_STEPS` (one numpy or
  torch call: microseconds) and :data:`ENTRY_STEPS` (one entry of an array operation:
  about a nanosecond); :data:`EXACT_ENTRY_STEPS` for an entry of a ``Fraction`` array.

Each refusal is one line — ``MemoryError`` or ``ValueError`` — naming what was asked, the
estimate, the limit and what to do instead.  Users set the limits on ``sim.engine``
(``sim.engine.MEMORY_LIMIT = 64 * 2**30``; ``sim.engine.WORK_LIMIT = 10**13``), which sets
them here, where every check reads them at call time.
"""

from __future__ import annotations

import os

__all__ = [
    "ARRAY_CALL_STEPS",
    "ENTRY_STEPS",
    "EXACT_ENTRY_STEPS",
    "MEMORY_LIMIT",
    "WORK_LIMIT",
    "available_memory",
    "check_memory",
    "check_work",
    "memory_limit",
    "size",
]

#: Bytes a request may plan to hold; None (the default): 80% of the memory available now.
MEMORY_LIMIT: int | None = None

#: Steps a request may plan (≈ engine positions, 10–100 ns each): 10¹², hours of CPU; every
#: run of the package (tests, ``specdec reproduce``, benchmarks) stays below 10¹⁰.
WORK_LIMIT = 10**12

#: Steps of one numpy or torch call (its Python and dispatch overhead, a few µs).
ARRAY_CALL_STEPS = 300
#: Steps of one float64 entry of an array operation (about 1 ns).
ENTRY_STEPS = 0.1
#: Steps of one ``Fraction`` entry of an array operation (Python arithmetic, about 1 µs).
EXACT_ENTRY_STEPS = 100


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 16 GiB
        return 16 * 2**30


def available_memory() -> int:
    """Bytes of memory available on this machine now (``MemAvailable``; else physical)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _physical_memory()


def memory_limit() -> int:
    """The memory limit in force: :data:`MEMORY_LIMIT` if set, else 80% of
    :func:`available_memory` (read now)."""
    if MEMORY_LIMIT is not None:
        return int(MEMORY_LIMIT)
    return int(0.8 * available_memory())


def size(n_bytes: float) -> str:
    """``n_bytes`` for a message: '37.3 GiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:.3g} {unit}" if unit != "bytes" else f"{int(n_bytes)} bytes"
        n_bytes /= 1024
    return f"{n_bytes:.3g} PiB"  # pragma: no cover - the loop always returns


def check_memory(estimate: float, what: str, advice: str) -> None:
    """Refuse, with a one-line ``MemoryError``, to allocate more than :func:`memory_limit`.

    Parameters
    ----------
    estimate : float
        Bytes the request would hold at its peak.
    what : str
        What would be allocated (the message's subject).
    advice : str
        What the user can do instead (the message's end).

    Raises
    ------
    MemoryError
        If ``estimate`` exceeds the limit.

    Examples
    --------
    >>> from theory.limits import check_memory
    >>> check_memory(2.0**80, "a table", "use a smaller one")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    MemoryError: a table would need about 1.07e+09 PiB, over the limit of ...
    """
    limit = memory_limit()
    if estimate > limit:
        source = "80% of the memory available now; set sim.engine.MEMORY_LIMIT to change it" \
            if MEMORY_LIMIT is None else "sim.engine.MEMORY_LIMIT"
        raise MemoryError(f"{what} would need about {size(estimate)}, over the limit of "
                          f"{size(limit)} ({source}); {advice}")


def check_work(estimate: float, what: str, advice: str) -> None:
    """Refuse, with a one-line ``ValueError``, to start more than :data:`WORK_LIMIT` steps.

    Parameters
    ----------
    estimate : float
        Steps the request would take (module docstring).
    what : str
        What would run (the message's subject).
    advice : str
        What the user can do instead (the message's end, before how to raise the limit).

    Raises
    ------
    ValueError
        If ``estimate`` exceeds :data:`WORK_LIMIT` (read at call time).
    """
    if estimate > WORK_LIMIT:
        raise ValueError(f"{what} would take about {estimate:.3g} position-steps, over the "
                         f"limit of {WORK_LIMIT:.3g} (sim.engine.WORK_LIMIT); {advice}, or "
                         f"assign a larger sim.engine.WORK_LIMIT")
