r"""Torch engine: the kernels of :mod:`sim.engine`, in torch, on the CPU or a CUDA device.

The sampling tables are built once by :func:`sim.engine.make_kernel` (numpy) and moved to the
device; each position is then a fixed sequence of tensor operations.  Unlike the numpy engine,
which gathers the trials that take a branch (``flatnonzero``), these kernels evaluate every
branch for every trial and select with ``torch.where`` — no host synchronisation inside a
chunk, which is what a GPU wants.  Both engines read the same uniforms in the same layout
(:mod:`sim.engine`), and in float64 every comparison is the same IEEE operation, so fed the
same uniforms they return identical tokens, rejections and target calls.

Randomness: chunk i draws from a ``torch.Generator`` seeded with an integer taken from the
i-th child of ``numpy.random.default_rng(rng).spawn``; first the start uniforms, then a
(k, n) block per position.  Results are a function of (inputs, seed, chunk size, device type)
— CPU and CUDA generators produce different streams.
"""

from __future__ import annotations

import numbers

import numpy as np

from sim.engine import chunk_sizes, make_kernel
from sim.result import SimResult, check_problem

__all__ = ["default_device", "run_uniforms", "simulate"]

#: Trials per chunk on CUDA (the CPU uses the numpy engine's default).
CUDA_CHUNK_SIZE = 1 << 20
CPU_CHUNK_SIZE = 1 << 15


def _torch():
    import torch

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


def _to_device(array, device, integer: bool = False):
    """A copy of a numpy array on ``device`` (float64 or int64)."""
    torch = _torch()
    return torch.tensor(np.array(array), dtype=torch.int64 if integer else torch.float64,
                        device=device)


class _TorchAlias:
    """An :class:`sim.tables.AliasTable` on a device."""

    def __init__(self, table, device):
        self.threshold = _to_device(table.threshold, device)
        self.alias = _to_device(table.alias, device, integer=True)
        self.vocab_size = table.vocab_size

    def draw(self, rows, uniforms):
        torch = _torch()
        scaled = uniforms * self.vocab_size
        column = scaled.long().clamp_(max=self.vocab_size - 1)
        flat = rows * self.vocab_size + column
        keep = (scaled - column) < self.threshold[flat]
        return torch.where(keep, column, self.alias[flat])


class _TorchKernel:
    """The device-side copy of a numpy kernel and its per-position update."""

    def __init__(self, kernel, device):
        self.kernel = kernel
        self.device = device
        layout = kernel.layout
        self.vocab_size = layout.vocab_size
        self.n_uniforms = kernel.n_uniforms
        self.next_context = (None if layout.next_context is None
                             else _to_device(layout.next_context, device, integer=True))
        self.start_cdf = _to_device(kernel.start_cdf, device)

    def rows(self, position, context):
        return self.kernel.layout.row_base(position) + context

    def advance(self, context, token):
        """The next context (first order: the token itself)."""
        if self.next_context is None:
            return token
        return self.next_context[context * self.vocab_size + token]


class _TorchAutoregressive(_TorchKernel):
    def __init__(self, kernel, device):
        super().__init__(kernel, device)
        self.target_table = _TorchAlias(kernel.target_table, device)

    def step(self, position, context, state, uniforms, counts):
        counts["target_calls"] += 1
        return self.target_table.draw(self.rows(position, context), uniforms[0]), state


class _TorchSpeculative(_TorchKernel):
    def __init__(self, kernel, device):
        super().__init__(kernel, device)
        self.draft_table = _TorchAlias(kernel.draft_table, device)
        self.rejection_table = _TorchAlias(kernel.rejection_table, device)
        self.acceptance = _to_device(kernel.acceptance, device)
        self.after_accept = _to_device(kernel.after_accept, device, integer=True)
        self.bonus_state = kernel.bonus_state
        self.target_table = (_TorchAlias(kernel.target_table, device)
                             if kernel.target_table is not None else None)

    def step(self, position, context, state, uniforms, counts):
        torch = _torch()
        rows = self.rows(position, context)
        counts["target_calls"] += state == 0
        token = self.draft_table.draw(rows, uniforms[0])
        accepted = uniforms[1] < self.acceptance[rows * self.vocab_size + token]
        following = self.after_accept[state]
        if self.bonus_state is not None:
            bonus = state == self.bonus_state
            token = torch.where(bonus, self.target_table.draw(rows, uniforms[0]), token)
            accepted = accepted | bonus
            following = torch.where(bonus, 0, following)
        token = torch.where(accepted, token, self.rejection_table.draw(rows, uniforms[2]))
        counts["rejections"] += ~accepted
        return token, torch.where(accepted, following, 0)


class _TorchBatch(_TorchKernel):
    def __init__(self, kernel, device):
        super().__init__(kernel, device)
        self.n_drafts, self.trie, self.n_rows = kernel.n_drafts, kernel.trie, kernel.n_rows
        self.draft_table = _TorchAlias(kernel.draft_table, device)
        self.residual_table = _TorchAlias(kernel.residual_table, device)
        self.acceptance = _to_device(kernel.acceptance, device)
        self.draft_flat = _to_device(kernel.draft_flat, device)

    def step(self, position, context, state, uniforms, counts):
        torch = _torch()
        vocab_size, n_rows, n_drafts = self.vocab_size, self.n_rows, self.n_drafts
        rows = self.rows(position, context)
        counts["target_calls"] += state == 0
        live = torch.where(state == 0, n_drafts, state)
        token = torch.zeros_like(context)
        winner = torch.full_like(context, -1)
        pending = torch.ones_like(context, dtype=torch.bool)
        for m in range(n_drafts):
            candidate = self.draft_table.draw(rows, uniforms[2 * m])
            accepted = pending & (live > m) & (
                uniforms[2 * m + 1] < self.acceptance[(m * n_rows + rows) * vocab_size
                                                      + candidate])
            token = torch.where(accepted, candidate, token)
            winner = torch.where(accepted, m, winner)
            pending = pending & ~accepted
        level_rows = (live - 1) * n_rows + rows
        token = torch.where(pending, self.residual_table.draw(level_rows,
                                                              uniforms[2 * n_drafts]), token)
        counts["rejections"] += pending
        if not self.trie:
            return token, torch.where(pending, 0, 1)
        share = self.draft_flat[rows * vocab_size + token]
        stay = torch.ones_like(context)
        for i in range(1, n_drafts):
            stay += (i > winner) & (i < live) & (uniforms[2 * n_drafts + i] < share)
        return token, torch.where(pending, 0, stay)


def _torch_kernel(kernel, device):
    from sim.engine import _AutoregressiveKernel, _BatchKernel, _SpeculativeKernel

    for numpy_kind, torch_kind in ((_AutoregressiveKernel, _TorchAutoregressive),
                                   (_SpeculativeKernel, _TorchSpeculative),
                                   (_BatchKernel, _TorchBatch)):
        if isinstance(kernel, numpy_kind):
            return torch_kind(kernel, device)
    raise TypeError(f"the torch engine has no kernel for {kernel.algorithm!r}")


def _run_chunk(kernel: _TorchKernel, start_uniforms, next_uniforms, n: int,
               record_tokens: bool) -> SimResult:
    torch = _torch()
    device = kernel.device
    if isinstance(kernel.kernel.start, int):
        context = torch.full((n,), kernel.kernel.start, dtype=torch.int64, device=device)
    else:
        index = torch.searchsorted(kernel.start_cdf, start_uniforms * kernel.start_cdf[-1],
                                   right=True)
        context = index.clamp_(max=kernel.start_cdf.numel() - 1)
    state = torch.zeros(n, dtype=torch.int64, device=device)
    counts = {"rejections": torch.zeros(n, dtype=torch.int64, device=device),
              "target_calls": torch.zeros(n, dtype=torch.int64, device=device)}
    horizon = kernel.kernel.horizon
    tokens = torch.empty((n, horizon), dtype=torch.int64, device=device) \
        if record_tokens else None
    for position in range(horizon):
        token, state = kernel.step(position, context, state, next_uniforms(position), counts)
        if tokens is not None:
            tokens[:, position] = token
        context = kernel.advance(context, token)
    return SimResult(counts["rejections"].cpu().numpy(), counts["target_calls"].cpu().numpy(),
                     tokens.cpu().numpy() if tokens is not None else None)


def run_uniforms(draft, target, algorithm, uniforms, *, start_uniforms=None, device=None,
                 record_tokens: bool = False) -> SimResult:
    """The torch engine on given uniforms — same contract as :func:`sim.engine.run_uniforms`.

    ``uniforms`` (T, k, n) and ``start_uniforms`` (n,) may be numpy arrays or tensors; they are
    moved to ``device`` as float64.
    """
    torch = _torch()
    device = _device(device)
    uniforms = (uniforms.to(device=device, dtype=torch.float64) if torch.is_tensor(uniforms)
                else _to_device(uniforms, device))
    if uniforms.ndim != 3:
        raise ValueError(f"uniforms must have shape (T, k, n); got shape {tuple(uniforms.shape)}")
    n_trials = check_problem(draft, target, algorithm, int(uniforms.shape[-1]))
    kernel = _torch_kernel(make_kernel(draft, target, algorithm), device)
    expected = (target.horizon, kernel.n_uniforms, n_trials)
    if tuple(uniforms.shape) != expected:
        raise ValueError(f"uniforms must have shape (T, k, n) = {expected}; "
                         f"got {tuple(uniforms.shape)}")
    if not isinstance(target.start, int):
        if start_uniforms is None:
            raise ValueError("start_uniforms (n,) are needed when the start is a distribution")
        start_uniforms = (start_uniforms.to(device=device, dtype=torch.float64)
                          if torch.is_tensor(start_uniforms)
                          else _to_device(start_uniforms, device))
        if tuple(start_uniforms.shape) != (n_trials,):
            raise ValueError(f"start_uniforms must have shape ({n_trials},); "
                             f"got {tuple(start_uniforms.shape)}")
    return _run_chunk(kernel, start_uniforms, lambda t: uniforms[t], n_trials, record_tokens)


def simulate(draft, target, algorithm, *, n_trials: int, rng=None, device=None,
             record_tokens: bool = False, chunk_size: int | None = None,
             progress: bool = False) -> SimResult:
    """Monte Carlo with the torch engine; same arguments and result as :func:`sim.simulate`.

    Parameters
    ----------
    device : torch.device or str, optional
        Default: CUDA when available, else the CPU.
    chunk_size : int, optional
        Trials per chunk; default 2^20 on CUDA, 2^15 on the CPU.  GPU memory is
        O(chunk_size · (T if tokens are recorded else 1)).

    Examples
    --------
    >>> from gpu_kernels import simulate as simulate_torch
    >>> from sim.models import fig2_pair
    >>> from theory import Speculative
    >>> draft, target = fig2_pair()
    >>> result = simulate_torch(draft, target, Speculative(), n_trials=1000, rng=0, device="cpu")
    >>> result.rejections.shape
    (1000,)
    """
    torch = _torch()
    n_trials = check_problem(draft, target, algorithm, n_trials)
    device = _device(device)
    if chunk_size is None:
        chunk_size = CUDA_CHUNK_SIZE if device.type == "cuda" else CPU_CHUNK_SIZE
    if not isinstance(chunk_size, numbers.Integral) or isinstance(chunk_size, bool) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    kernel = _torch_kernel(make_kernel(draft, target, algorithm), device)
    sizes = chunk_sizes(n_trials, int(chunk_size))
    streams = np.random.default_rng(rng).spawn(len(sizes))
    chunks = range(len(sizes))
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"{type(algorithm).__name__} [{device}]", unit="chunk")
    parts = []
    for i in chunks:
        n = sizes[i]
        generator = torch.Generator(device=device)
        generator.manual_seed(int(streams[i].integers(2**63)))
        start_uniforms = None
        if not isinstance(target.start, int):
            start_uniforms = torch.rand(n, generator=generator, dtype=torch.float64,
                                        device=device)
        block = torch.empty((kernel.n_uniforms, n), dtype=torch.float64, device=device)
        parts.append(_run_chunk(
            kernel, start_uniforms,
            lambda _t, b=block, g=generator: torch.rand(b.shape, generator=g, out=b,
                                                        dtype=torch.float64, device=device),
            n, record_tokens))
    return SimResult.concatenate(parts)
