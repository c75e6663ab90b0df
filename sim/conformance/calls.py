r"""How the harness calls a verifier it does not trust: errors, hangs and threads.

**Errors.**  Anything the verifier raises — any ``BaseException``, ``SystemExit`` from
``sys.exit`` and ``GeneratorExit`` included — becomes one :class:`VerifierError` naming the
call; only ``KeyboardInterrupt`` (the user's Ctrl-C) passes through unchanged.

**Hangs.**  With ``timeout`` seconds (default :data:`DEFAULT_TIMEOUT`), every call runs in a
fresh daemon thread and the harness stops waiting after ``timeout``: the run ends with a
one-line :class:`VerifierTimeout`.  A Python thread cannot be killed, so the hung call keeps
running in the background (a daemon thread: it does not keep the interpreter alive at exit);
``specdec check-verifier`` therefore ends the process at once (``os._exit``) after printing
the line.  A call that holds the GIL without ever releasing it (a C extension spinning) blocks
the waiting thread too; no timeout can help there.  ``timeout=None`` calls the verifier in the
harness's own thread, with no limit.

**Threads.**  torch uses every core by default; on a loaded machine that makes a conformance
run many times slower (a 26 s run took 11 min on two busy cores).  :func:`bounded_threads`
bounds, for the length of a run, torch's intra-op threads (``torch.set_num_threads`` in the
harness's thread and in every verifier call's thread; the previous value is restored at the
end) and — when the optional ``threadpoolctl`` is installed — the BLAS and OpenMP pools of
numpy and scipy.  Without threadpoolctl, numpy's BLAS follows ``OPENBLAS_NUM_THREADS`` /
``OMP_NUM_THREADS`` as set before Python started.  torch must be imported when the bound is
applied: a verifier that imports torch inside its first call is bounded from its second call
on (the client adapters of :mod:`sim.conformance.clients` apply the bound when they import
torch, so they are bounded from the first).
"""

from __future__ import annotations

import contextlib
import sys
import threading

#: Default seconds a single verifier call may take (``check_verifier(timeout=...)``).
DEFAULT_TIMEOUT = 60.0
#: Default bound on torch's (and, with threadpoolctl, BLAS's) threads during a run.
DEFAULT_THREADS = 1

_active: list[int] = []  # bounds of the runs in progress (innermost last)


class VerifierError(ValueError):
    """The verifier under test raised, or returned something outside the convention."""


class VerifierTimeout(VerifierError):
    """A verifier call did not return within ``timeout`` seconds; it may still be running in a
    background thread (Python cannot stop a thread)."""


def apply_torch_limit(torch=None) -> None:
    """Set torch's intra-op threads to the bound of the run in progress (if any) in the calling
    thread; ``torch`` the module if the caller has it, else it is looked up if imported."""
    threads = _active[-1] if _active else None
    if threads is None:
        return
    torch = torch if torch is not None else sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def bounded_threads(threads: int | None):
    """Bound torch's threads (and BLAS's, with threadpoolctl) to ``threads`` for a run; None
    leaves them alone."""
    if threads is None:
        yield
        return
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    _active.append(threads)
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            stack.enter_context(threadpool_limits(limits=threads))
        try:
            apply_torch_limit(torch)
            yield
        finally:
            _active.pop()
            if before is not None and torch.get_num_threads() != before:
                torch.set_num_threads(before)


def call_verifier(verifier, arguments: tuple, timeout: float | None, where: str):
    """``verifier(*arguments)`` under the rules of the module doc."""
    if timeout is None:
        try:
            return verifier(*arguments)
        except KeyboardInterrupt:
            raise
        except BaseException as error:
            raise _error(error, where) from error
    outcome: dict = {}
    threads = _active[-1] if _active else None

    def run():
        try:
            if threads is not None:
                apply_torch_limit()
            outcome["value"] = verifier(*arguments)
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=run, name="specdec-verifier-call", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise VerifierTimeout(f"{where} did not return within timeout = {timeout:g} s; the run "
                              "ends here (the call still runs in a background thread: Python "
                              "cannot stop a thread)")
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, KeyboardInterrupt):
            raise error
        raise _error(error, where) from error
    return outcome["value"]


def _error(error: BaseException, where: str) -> VerifierError:
    text = str(error).replace("\n", " ")
    if isinstance(error, SystemExit):
        return VerifierError(f"{where} called sys.exit({error.code!r}) (SystemExit); a "
                             "verifier must return its tokens")
    return VerifierError(f"{where} raised {type(error).__name__}: {text}")


def checked_timeout(timeout) -> float | None:
    """``timeout`` validated: None or a positive number of seconds."""
    import math
    import numbers

    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) \
            or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds or None; got "
                         f"{timeout!r}")
    return float(timeout)


def checked_threads(threads) -> int | None:
    """``threads`` validated: None or an integer >= 1."""
    import numbers

    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 or None; got {threads!r}")
    return int(threads)
