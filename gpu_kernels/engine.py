r"""Torch engine: the CPU engine's algorithms and randomness, on the CPU or a CUDA device.

The engine's core: device handling, alias draws, the position loop (:class:`_Run`) and
:func:`simulate`; the cipher lives in :mod:`gpu_kernels.philox` and each engine family's step
in its own module (:mod:`gpu_kernels.token`, :mod:`gpu_kernels.batch`, :mod:`gpu_kernels.block`,
…), registered with :func:`register_run`.

The sampling tables are built once by :func:`sim.engine.make_tables` (numpy) and copied to the
device; then all trials of a chunk advance one position per step, every branch evaluated for
every trial and selected with ``torch.where`` — no host synchronisation inside the position
loop except, for batches of more than :data:`SYNC_FROM` candidates, one check per extra
candidate that some trial still needs it (so untried candidates cost nothing).  The
multi-draft root verifiers ("swor", "spectr", "greedy", "topk", "optimal") run on the token
step with :class:`sim.engine.multidraft.RootTables`: like the CPU engine, they sample each
verifier's exact root law, not its draw-by-draw procedure.

**Same randomness as the CPU engine, bit for bit.**  Every uniform is Philox4x32-10 of
(seed, trial, position, slot) with the slots of :mod:`sim.engine.compiled`, and float64
comparisons are the same IEEE operations as in the compiled kernels, so for the same seed
:func:`simulate` returns exactly the arrays of :func:`sim.simulate`, on any device, for any
chunk size and Philox backend.

**Cost.**  A step asks for all the slots of its position (a round-level run: of its round) in
one cipher evaluation (:meth:`_Run.slots`): the pairs are a tensor axis of the counter, and
with wrap-around int64 products a round of the cipher is six tensor operations written into
buffers that the run keeps (:mod:`gpu_kernels.philox`).  On the Fig. 2 setting a position of
``Speculative()`` costs about 107 tensor operations (plus 17 views) — 497 with the earlier
cipher of one evaluation per pair and 16-bit split products — of which about 73 are the
cipher; ``philox="compiled"`` (CPU) computes the cipher with the compiled engine's code on the
tensors' memory (34 operations per position), ``philox="fused"`` (CUDA) in one jiterator
kernel per pair; both must give the same bits, which the tests and ``python -m
gpu_kernels.check`` verify.  ``python -m benchmarks --section torch`` measures the CPU rates
against the compiled engine.
"""

from __future__ import annotations

import numbers

import numpy as np

from gpu_kernels.philox import PHILOX_BACKENDS, philox_pair, philox_slots
from sim.engine import (
    check_work,
    chunk_bounds,
    count_dtype,
    family_tables,
    make_tables,
    simulation_work,
    token_dtype,
)
from sim.engine.core import drafted_dtype
from sim.engine.philox import START_POSITION, philox_key
from sim.engine.result import SimResult, check_problem
from sim.engine.run import _outputs
from theory.limits import ARRAY_CALL_STEPS

__all__ = ["PHILOX_BACKENDS", "default_device", "philox_pair", "philox_slots", "simulate"]

#: Trials per chunk on CUDA and on the CPU.
CUDA_CHUNK_SIZE = 1 << 22
CPU_CHUNK_SIZE = 1 << 16
#: Batch candidates beyond this many are only computed while some trial still tries them.
SYNC_FROM = 4

def _torch():
    """torch, imported on first use; a clear message names the extra when it is missing."""
    try:
        import torch
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "the torch engine (gpu_kernels) needs torch, an optional extra; install it from "
            "the checkout with pip install -e '.[torch]'", name=error.name) from None
    return torch


def default_device():
    """CUDA when available, else the CPU."""
    torch = _torch()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device(device):
    torch = _torch()
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must name a torch device; got {device!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but CUDA is not available")
    return device


def _torch_dtype(dtype: np.dtype):
    """The torch dtype of a numpy integer dtype."""
    return _torch().from_numpy(np.zeros(0, dtype=dtype)).dtype


def running_sums(terms):
    """Running sums of the positive parts of the columns of ``terms`` (n, V), x = 0 … V − 1 in
    order, one tensor operation per column (``torch.cumsum`` is sequential on the CPU but not
    on CUDA): the compiled kernels' ordered sums, bit for bit."""
    torch = _torch()
    out = torch.empty_like(terms)
    running = torch.zeros_like(terms[:, 0])
    for x in range(terms.shape[1]):
        running = running + terms[:, x].clamp(min=0.0)
        out[:, x] = running
    return out


def inverse_cdf(terms, uniforms):
    """:func:`sim.engine.compiled.inverse_cdf` per row of ``terms`` (n, V): the first x whose
    running sum of positive terms exceeds u · (their sum), else the last positive term (0 if
    none)."""
    torch = _torch()
    running = running_sums(terms)
    above = running > (uniforms * running[:, -1])[:, None]
    positive = terms > 0.0
    last_positive = terms.shape[1] - 1 - torch.flip(positive, [1]).long().argmax(1)
    last_positive = torch.where(positive.any(1), last_positive, 0)
    return torch.where(above.any(1), above.long().argmax(1), last_positive)


# -- tables on the device ------------------------------------------------------------------

class _Alias:
    """An :class:`sim.engine.tables.AliasTable` on a device: thresholds and aliases."""

    def __init__(self, table, device, index_dtype):
        torch = _torch()
        self.threshold = torch.as_tensor(np.array(table.threshold), device=device)
        self.alias = torch.as_tensor(table.alias.astype(np.int64), device=device).to(
            index_dtype)
        self.vocab_size = table.vocab_size

    def draw(self, rows, uniforms):
        torch = _torch()
        scaled = uniforms * self.vocab_size
        column = scaled.to(rows.dtype).clamp_(max=self.vocab_size - 1)
        flat = rows * self.vocab_size + column
        keep = (scaled - column) < self.threshold.index_select(0, flat)
        return torch.where(keep, column, self.alias.index_select(0, flat))


class _Run:
    """The device copy of a family's tables and its per-position step."""

    def __init__(self, tables, device, philox: str):
        torch = _torch()
        self.tables, self.device, self.philox = tables, device, philox
        self.workspace = {}  # the tensor Philox's buffers (gpu_kernels.philox)
        layout = tables.layout
        self.layout = layout
        largest = max(array.size for array in self._flat_arrays(tables))
        self.index_dtype = torch.int32 if largest < 2**31 else torch.int64
        self.next_context = torch.as_tensor(layout.next_context.astype(np.int64),
                                            device=device).to(self.index_dtype)
        self.start_cdf = self.tensor(layout.start_cdf)

    @classmethod
    def tensor_calls(cls, algorithm, target) -> float:
        """A generous count of the tensor operations one chunk issues (each costs
        ``theory.limits.ARRAY_CALL_STEPS`` of the work model, whatever the chunk's size):
        200 per position for a token-wise step (124–135 counted with views, Fig. 2 and
        V = 40; ``tests/gpu_kernels/test_torch_engine.py`` checks every family's count
        against its estimate with :func:`count_operations`)."""
        return 200.0 * target.horizon

    @staticmethod
    def _flat_arrays(tables):
        for value in vars(tables).values():
            if isinstance(value, np.ndarray):
                yield value
            elif hasattr(value, "entries"):
                yield value.entries

    def alias(self, table):
        return None if table is None else _Alias(table, self.device, self.index_dtype)

    def floats(self, array):
        return _torch().as_tensor(np.array(array, dtype=np.float64), device=self.device)

    def tensor(self, array):
        """A device copy of a table array (tables are read-only: torch must not share them)."""
        return _torch().as_tensor(np.array(array), device=self.device)

    def pair(self, trial, position, pair):
        u = self.slots(trial, position, (pair,))
        return u[0], u[1]

    def pair_table(self, trial, position, pairs) -> dict:
        """{pair: (even, odd)} for ``pairs`` at ``position``, one cipher evaluation."""
        u = self.slots(trial, position, pairs)
        return {pair: (u[2 * k], u[2 * k + 1]) for k, pair in enumerate(pairs)}

    def slots(self, trial, position, pairs):
        """The uniforms of ``pairs``' slots at ``position``, one cipher evaluation
        (:func:`philox_slots`: row 2k + h is slot 2·pairs[k] + h), the tensor backend's
        buffers kept from call to call.  A tensor ``position`` (each trial's round start)
        takes the tensor backend when ``philox`` is ``"fused"``."""
        backend = self.philox
        if backend == "fused" and not isinstance(position, int):
            backend = "tensor"
        return philox_slots(trial, self.key, position, pairs, backend, self.workspace)

    def start(self, trial):
        torch = _torch()
        layout = self.layout
        if layout.start >= 0:
            return torch.full(trial.shape, layout.start, dtype=self.index_dtype,
                              device=self.device)
        uniform = self.pair(trial, START_POSITION, 0)[0]
        index = torch.searchsorted(self.start_cdf, uniform * self.start_cdf[-1], right=True)
        return index.clamp_(max=self.start_cdf.numel() - 1).to(self.index_dtype)

    def advance(self, context, token):
        if self.layout.next_context.size == 0:
            return token
        return self.next_context.index_select(0, context * self.layout.vocab_size + token)

    def emit_last(self, tokens, record_tokens: bool, emitted, position, context, final):
        """The last token of a round (round-level families): recorded and the context advanced
        where ``emitted``; returns (context, position) after it."""
        if record_tokens:
            tokens[emitted, position[emitted]] = final[emitted].to(tokens.dtype)
        context = _torch().where(emitted, self.advance(context, final).long(), context)
        return context, position + emitted

    def round_setup(self, first: int, n: int, record_tokens: bool,
                    per_round: int | None = None):
        """The tensors a round-level run starts from (block, stopping, trees): trial indices,
        row indices 0 … n − 1, start contexts, positions (0), rejections, target calls and
        drafted counts (0; dtypes as in the compiled engine, ``per_round`` as in
        :func:`sim.engine.core.drafted_dtype`) and the token buffer."""
        torch = _torch()
        horizon, device = self.layout.horizon, self.device
        trial = torch.arange(first, first + n, dtype=torch.int64, device=device)
        counts = _torch_dtype(count_dtype(horizon))
        return (trial, torch.arange(n, device=device), self.start(trial).long(),
                torch.zeros(n, dtype=torch.int64, device=device),
                torch.zeros(n, dtype=counts, device=device),
                torch.zeros(n, dtype=counts, device=device),
                torch.zeros(n, dtype=_torch_dtype(drafted_dtype(horizon, per_round)),
                            device=device),
                torch.empty((n, horizon) if record_tokens else (0, 0),
                            dtype=_torch_dtype(token_dtype(self.layout.vocab_size)),
                            device=device))

    @staticmethod
    def result(rejections, calls, tokens, drafted, record_tokens: bool) -> SimResult:
        """The chunk's counters as a :class:`SimResult` of host arrays."""
        return SimResult(rejections.cpu().numpy(), calls.cpu().numpy(),
                         tokens.cpu().numpy() if record_tokens else None, drafted.cpu().numpy())

    def run(self, key, first: int, n: int, record_tokens: bool) -> SimResult:
        torch = _torch()
        self.key = key
        layout = self.layout
        trial = torch.arange(first, first + n, dtype=torch.int64, device=self.device)
        context = self.start(trial)
        state = torch.zeros(n, dtype=self.index_dtype, device=self.device)
        counts = _torch_dtype(count_dtype(layout.horizon))
        rejections = torch.zeros(n, dtype=counts, device=self.device)
        calls = torch.zeros(n, dtype=counts, device=self.device)
        drafted = torch.zeros(n, dtype=_torch_dtype(drafted_dtype(layout.horizon)),
                              device=self.device)
        draft_lengths = self.tensor(self.tables.draft_lengths)
        tokens = torch.empty((n, layout.horizon) if record_tokens else (0, 0),
                             dtype=_torch_dtype(token_dtype(layout.vocab_size)),
                             device=self.device)
        for position in range(layout.horizon):
            rows = context + position * layout.row_stride
            starts = state == 0
            calls += starts
            lengths = self.tables.draft_lengths[position * layout.n_contexts:
                                                (position + 1) * layout.n_contexts]
            if lengths.size and (lengths == lengths[0]).all():  # the same for every context
                drafted.add_(starts, alpha=int(lengths[0]))
            else:
                drafted += (starts * draft_lengths.index_select(
                    0, context + position * layout.n_contexts)).to(drafted.dtype)
            token, state, rejected = self.step(trial, position, rows, state)
            rejections += rejected
            if record_tokens:
                tokens[:, position] = token
            context = self.advance(context, token)
        return self.result(rejections, calls, tokens, drafted, record_tokens)


def count_operations(draft, target, algorithm, n_trials: int = 1000, **options) -> tuple:
    """(compute operations, views) the torch engine dispatches for one ``simulate`` call.

    Counted with a ``TorchDispatchMode`` on the CPU (each operation torch dispatches, after
    a first call that does the one-time set-up outside the count); ``options`` go to
    :func:`simulate` (``philox``, ``chunk_size``, ...).  The work model's per-chunk estimate
    (``tensor_calls`` of the family's run class) must cover their sum.

    Examples
    --------
    >>> from sim.models import fig2_pair
    >>> from theory import Speculative
    >>> compute, views = count_operations(*fig2_pair(horizon=4), Speculative(), n_trials=10)
    >>> 0 < compute + views <= _RUNS[family_tables(Speculative())].tensor_calls(
    ...     Speculative(), fig2_pair(horizon=4)[1])
    True
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.compute = self.views = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.is_view:
                self.views += 1
            else:
                self.compute += 1
            return func(*args, **(kwargs or {}))

    options = {"rng": 0, "device": "cpu", **options}
    simulate(draft, target, algorithm, n_trials=n_trials, **options)
    with _Count() as count:
        simulate(draft, target, algorithm, n_trials=n_trials, **options)
    return count.compute, count.views


#: Tables class (an engine family of :mod:`sim.engine`) → the class that runs it on a device;
#: filled by the family modules of this package (:func:`register_run`).
_RUNS: dict[type, type] = {}


def register_run(tables_class: type, run_class: type) -> None:
    """Register the torch step of an engine family: the one line a family module adds.

    Parameters
    ----------
    tables_class : type
        The family's tables class in :mod:`sim.engine` (what :func:`sim.engine.make_tables`
        builds).
    run_class : type
        A :class:`_Run` subclass: the device copy of those tables and their per-position
        ``step`` (or a whole ``run`` for round-level families).
    """
    _RUNS[tables_class] = run_class


def simulate(draft, target, algorithm, *, n_trials: int, rng=None, device=None,
             record_tokens: bool = False, chunk_size: int | None = None,
             progress: bool = False, philox: str = "tensor") -> SimResult:
    """Monte Carlo with the torch engine; same arguments and result as :func:`sim.simulate`.

    For the same ``rng`` the arrays equal :func:`sim.simulate`'s exactly, on every device and
    for every chunk size (see the module docstring).

    Parameters
    ----------
    device : torch.device or str, optional
        Default: CUDA when available, else the CPU.
    chunk_size : int, optional
        Trials per chunk; default 2^22 on CUDA, 2^16 on the CPU.  Device memory is
        O(chunk_size · (T if tokens are recorded else 1)).
    philox : {'tensor', 'fused', 'compiled'}
        How the cipher is computed (:mod:`gpu_kernels.philox`): tensor operations (any
        device); ``'fused'`` (CUDA only) one jiterator kernel; ``'compiled'`` (CPU only) the
        compiled engine's cipher written into the tensors' memory.

    Examples
    --------
    >>> import numpy as np
    >>> from gpu_kernels import simulate as simulate_torch
    >>> from sim import simulate
    >>> from sim.models import fig2_pair
    >>> from theory import Speculative
    >>> draft, target = fig2_pair(horizon=8)
    >>> a = simulate_torch(draft, target, Speculative(), n_trials=500, rng=0, device="cpu")
    >>> b = simulate(draft, target, Speculative(), n_trials=500, rng=0)
    >>> bool((a.rejections == b.rejections).all() and (a.target_calls == b.target_calls).all())
    True
    """
    n_trials = check_problem(draft, target, algorithm, n_trials)
    device = _device(device)
    if philox not in PHILOX_BACKENDS:
        raise ValueError(f"philox must be one of {PHILOX_BACKENDS}; got {philox!r}")
    if philox == "fused" and device.type != "cuda":
        raise ValueError(f"philox='fused' needs a CUDA device; got device {device}")
    if philox == "compiled" and device.type != "cpu":
        raise ValueError(f"philox='compiled' needs the CPU device; got device {device}")
    if chunk_size is None:
        chunk_size = CUDA_CHUNK_SIZE if device.type == "cuda" else CPU_CHUNK_SIZE
    if not isinstance(chunk_size, numbers.Integral) or isinstance(chunk_size, bool) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    run_class = _RUNS.get(family_tables(algorithm))
    if run_class is not None:  # the CPU engine's guards, and the cost of the torch calls
        algorithm.check_cost(draft, target, "engine")
        chunks = -(-n_trials // int(chunk_size))
        check_work(simulation_work(target, algorithm, n_trials)
                   + chunks * run_class.tensor_calls(algorithm, target) * ARRAY_CALL_STEPS,
                   f"{algorithm!r} on the torch engine, T = {target.horizon}, V = "
                   f"{target.vocab_size}, n_trials = {n_trials:,}",
                   "use fewer trials or a smaller window")
    key = philox_key(rng)
    tables = make_tables(draft, target, algorithm)
    if type(tables) not in _RUNS:
        raise TypeError(f"the torch engine has no kernel for {algorithm!r}")
    run = _RUNS[type(tables)](tables, device, philox)
    bounds = chunk_bounds(n_trials, int(chunk_size))
    if progress:
        from tqdm.auto import tqdm

        bounds = tqdm(bounds, desc=f"{type(algorithm).__name__} [{device}]", unit="chunk")
    rejections, calls, drafted, tokens = _outputs(tables, n_trials, record_tokens)
    for first, n in bounds:
        part = run.run(key, first, n, record_tokens)
        rejections[first:first + n] = part.rejections
        calls[first:first + n] = part.target_calls
        drafted[first:first + n] = part.drafted
        if record_tokens:
            tokens[first:first + n] = part.tokens
    return SimResult(rejections, calls, tokens if record_tokens else None, drafted)
