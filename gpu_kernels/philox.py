r"""The torch engine's randomness: Philox4x32-10 (:mod:`sim.engine.philox`) on tensors.

Every uniform is Philox4x32-10 of (seed, trial, position, slot); one cipher block serves the
slot pair (2m, 2m + 1).  :func:`philox_slots` evaluates the blocks of several pairs at once —
the pairs are one more tensor axis of the counter — so a position's uniforms cost one pass of
the ten rounds.  Three backends compute the same bits:

* ``"tensor"`` (any device, the default): int64 tensor operations.  One round maps
  (c₀, c₁, c₂, c₃) to (hi(M₁c₂) ⊕ c₁ ⊕ k₀, lo(M₁c₂), hi(M₀c₀) ⊕ c₃ ⊕ k₁, lo(M₀c₀)).  The product
  of two 32-bit words is below 2⁶⁴ but may exceed 2⁶³; where int64 multiplication wraps
  around modulo 2⁶⁴ (two's complement: the stored value's bits 32–63 are hi and bits 0–31 are
  lo, whatever its sign) a round is six tensor operations on the stacked words (c₀, c₂):
  one product, one shift, two XORs with (c₁, c₃), one XOR with the round key and one mask —
  the words c₁, c₃ are the previous products themselves, their upper bits cleared by the mask
  of the next round.  C++ does not promise the wrap-around for signed integers, so it is probed
  once per device type (:func:`_wraps`); where the probe fails, each product is split into
  16-bit halves instead (:func:`_mulhilo`, every partial product below 2⁴⁸; about twenty
  operations per round).  The words live in preallocated buffers (``workspace``) and are
  written with ``out=``: a fresh tensor per operation costs more than the operation on the
  CPU.
* ``"fused"`` (CUDA): one NVRTC-compiled elementwise kernel (``torch.cuda.jiterator``; no
  Triton, no CuPy) per pair.
* ``"compiled"`` (CPU): the compiled engine's own cipher (:func:`sim.engine.compiled.uniform_slots`,
  numba) writing into the tensor's memory through its numpy view — no copy.  Not pure torch:
  with it the torch engine's run checks the tensor steps, not a second implementation of the
  cipher, so it is an option for speed, not the default.

All three are checked bit for bit against the readable numpy definition
(:func:`sim.engine.philox.uniforms`) by the tests and by ``python -m gpu_kernels.check``.
"""

from __future__ import annotations

import numpy as np

from sim.engine.philox import PHILOX_MULTIPLIERS, PHILOX_ROUNDS, PHILOX_WEYL

__all__ = ["PHILOX_BACKENDS", "philox_pair", "philox_slots"]

#: How the Philox cipher is computed: tensor operations (any device), one fused CUDA kernel,
#: or the compiled engine's cipher on the CPU tensors' memory.
PHILOX_BACKENDS = ("tensor", "fused", "compiled")

#: Pairs per pass of the tensor backend: its buffers hold 2 × this many words per trial.
PAIRS_PER_PASS = 8

_MASK = 0xFFFFFFFF


def _torch():
    import torch

    return torch


def _round_keys(key) -> list[tuple[int, int]]:
    """(k₀, k₁) of each round: the key bumped by the Weyl constants between rounds."""
    k0, k1 = key
    keys = [(k0, k1)]
    for _ in range(PHILOX_ROUNDS - 1):
        k0, k1 = (k0 + PHILOX_WEYL[0]) & _MASK, (k1 + PHILOX_WEYL[1]) & _MASK
        keys.append((k0, k1))
    return keys


# -- int64 products: wrap-around where the device does it, 16-bit halves elsewhere ---------

#: Device type → whether its int64 multiplication keeps the low 64 bits (see _wraps).
_WRAPPING: dict[str, bool] = {}


def _wraps(device) -> bool:
    """Whether int64 products on ``device`` wrap around modulo 2⁶⁴, probed once per device
    type on 1,031 words (the vectorized body and the scalar tail of the kernels) against
    numpy's uint64 products, which do wrap."""
    torch = _torch()
    device = torch.device(device)
    if device.type not in _WRAPPING:
        words = np.uint64(_MASK) - np.arange(1031, dtype=np.uint64) * np.uint64(4_194_301)
        tensor = torch.as_tensor(words.astype(np.int64), device=device)
        multipliers = torch.tensor(PHILOX_MULTIPLIERS, dtype=torch.int64, device=device)
        products = tensor[None] * multipliers[:, None]  # the stacked form of the rounds
        expected = np.stack([(words * np.uint64(m)).view(np.int64) for m in PHILOX_MULTIPLIERS])
        _WRAPPING[device.type] = np.array_equal(products.cpu().numpy(), expected)
    return _WRAPPING[device.type]


def _mulhilo(value, multiplier: int):
    """(hi, lo) 32-bit words of value · multiplier, value < 2³² (int64 tensor or int), from
    16-bit halves: no product reaches 2⁶³."""
    low_half, high_half = multiplier & 0xFFFF, multiplier >> 16
    low = value * low_half  # < 2⁴⁸
    high = value * high_half  # < 2⁴⁸
    return (high + (low >> 16)) >> 16, (((high & 0xFFFF) << 16) + low) & _MASK


def _split_words(trial, key, position, pair):
    """The four output words (clean 32-bit values) for counters (trial, position, pair),
    int64 tensors that broadcast, with split products: the form for devices that do not
    wrap."""
    c0, c1, c2, c3 = trial & _MASK, trial >> 32, position, pair
    m0, m1 = PHILOX_MULTIPLIERS
    for k0, k1 in _round_keys(key):
        hi0, lo0 = _mulhilo(c0, m0)
        hi1, lo1 = _mulhilo(c2, m1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _buffers(workspace, shape, device):
    """Four int64 buffers of ``shape`` from ``workspace`` (a dict kept by the caller), made
    on first use and reused by every later call with that shape."""
    torch = _torch()
    if workspace is None:
        workspace = {}
    key = (tuple(shape), str(device))
    if key not in workspace:
        workspace[key] = [torch.empty(shape, dtype=torch.int64, device=device)
                          for _ in range(4)]
    return workspace[key]


def _wrapping_bits(trial, key, position, pairs, workspace):
    """The 53-bit integers of the slots (int64, shape (2, P) + trial.shape: [h, k] is slot
    2·pairs[k] + h) with wrap-around products, six tensor operations per round."""
    torch = _torch()
    device, count = trial.device, len(pairs)
    shape = (2, count, *trial.shape)
    ones = (1,) * trial.dim()
    words, high, *products = _buffers(workspace, shape, device)
    multipliers = torch.tensor(PHILOX_MULTIPLIERS, dtype=torch.int64, device=device)
    multipliers = multipliers.view(2, 1, *ones)
    keys = torch.tensor(_round_keys(key), dtype=torch.int64, device=device)
    keys = keys.view(PHILOX_ROUNDS, 2, 1, *ones)
    c0, c2 = words.unbind(0)  # views of the stacked words (c₀, c₂)
    high0, high1 = high.unbind(0)
    halves = [product.unbind(0) for product in products]
    c0.copy_(trial & _MASK)
    if isinstance(position, int):
        c2.fill_(position)
    else:
        c2.copy_(position)
    c1 = trial >> 32
    c3 = torch.tensor(pairs, dtype=torch.int64, device=device).view(count, *ones)
    for round_index, round_key in enumerate(keys.unbind(0)):
        product = products[round_index & 1]  # the other holds c₁, c₃ of this round
        torch.mul(words, multipliers, out=product)  # (M₀c₀, M₁c₂) mod 2⁶⁴
        torch.bitwise_right_shift(product, 32, out=high)  # (hi₀, hi₁) in bits 0–31
        torch.bitwise_xor(high1, c1, out=c0)
        torch.bitwise_xor(high0, c3, out=c2)
        words ^= round_key
        words &= _MASK
        c3, c1 = halves[round_index & 1]  # lo₀, lo₁ in bits 0–31
    low = products[(PHILOX_ROUNDS - 1) & 1]  # (c₃, c₁)
    low &= _MASK
    low >>= 11
    torch.bitwise_left_shift(words, 21, out=high)  # (c₀, c₂) · 2²¹
    high0 |= c1
    high1 |= c3
    return high


def _compiled_uniforms(trial, key, position, pairs):
    """The ``"compiled"`` backend: the compiled engine's cipher on the CPU tensors' memory."""
    from sim.engine.compiled import uniform_slots

    torch = _torch()
    out = torch.empty((2 * len(pairs), trial.numel()), dtype=torch.float64)
    trials = trial.contiguous().view(-1).numpy().view(np.uint64)
    if isinstance(position, int):
        positions = np.broadcast_to(np.uint64(position), trials.shape)
    else:
        positions = position.contiguous().view(-1).numpy().view(np.uint64)
    uniform_slots(np.uint64(key[0]), np.uint64(key[1]), trials, positions,
                  np.asarray(pairs, dtype=np.uint64), out.numpy())
    return out.view(2 * len(pairs), *trial.shape)


_FUSED_SOURCE = """
template <typename T> void specdec_philox_pair(T trial, T key0, T key1, T position, T pair,
                                               T& even, T& odd) {
  unsigned int c0 = (unsigned int)(trial & 0xFFFFFFFFLL), c1 = (unsigned int)(trial >> 32);
  unsigned int c2 = (unsigned int)position, c3 = (unsigned int)pair;
  unsigned int k0 = (unsigned int)key0, k1 = (unsigned int)key1;
  for (int r = 0; r < ROUNDS; ++r) {
    if (r) { k0 += W0u; k1 += W1u; }
    unsigned int hi0 = __umulhi(M0u, c0), lo0 = M0u * c0;
    unsigned int hi1 = __umulhi(M1u, c2), lo1 = M1u * c2;
    c0 = hi1 ^ c1 ^ k0; c1 = lo1; c2 = hi0 ^ c3 ^ k1; c3 = lo0;
  }
  even = (T)(((unsigned long long)c0 << 21) | (unsigned long long)(c1 >> 11));
  odd = (T)(((unsigned long long)c2 << 21) | (unsigned long long)(c3 >> 11));
}
"""
for _name, _value in (("ROUNDS", PHILOX_ROUNDS), ("W0", PHILOX_WEYL[0]), ("W1", PHILOX_WEYL[1]),
                      ("M0", PHILOX_MULTIPLIERS[0]), ("M1", PHILOX_MULTIPLIERS[1])):
    _FUSED_SOURCE = _FUSED_SOURCE.replace(_name, str(_value))
_fused = None


def _fused_kernel():
    global _fused
    if _fused is None:
        from torch.cuda.jiterator import _create_multi_output_jit_fn

        _fused = _create_multi_output_jit_fn(_FUSED_SOURCE, num_outputs=2, key0=0, key1=0,
                                             position=0, pair=0)
    return _fused


def philox_slots(trial, key, position, pairs, backend: str = "tensor", workspace=None):
    """The uniforms of slots 2·m and 2·m + 1 for every m in ``pairs`` (float64), one cipher
    evaluation for all of them: a tensor of shape (2·len(pairs),) + trial.shape whose row
    2k + h is slot 2·pairs[k] + h.  Bit-identical to :func:`sim.engine.philox.uniforms`
    (and so to the CPU engine).

    Parameters
    ----------
    trial : int64 tensor
        Trial indices (0 ≤ i < 2⁶³).
    key : (int, int)
        From :func:`sim.engine.philox.philox_key`.
    position : int or int64 tensor shaped like ``trial``
        The counter's position word (round-level families: each trial's round start; then the
        ``"fused"`` backend is not available).
    pairs : sequence of int
        Slot pairs (each < 2³²).
    backend : {'tensor', 'fused', 'compiled'}
        See the module docstring.
    workspace : dict, optional
        Buffers of the ``"tensor"`` backend, kept between calls by the caller: four int64
        words per trial and pair, for up to :data:`PAIRS_PER_PASS` pairs at a time.

    Examples
    --------
    >>> import torch
    >>> from gpu_kernels.philox import philox_slots
    >>> from sim.engine.philox import uniforms
    >>> u = philox_slots(torch.arange(3), (5, 6), position=2, pairs=(0, 1))
    >>> tuple(u.shape), bool((u[3].numpy() == uniforms((5, 6), [0, 1, 2], 2, 3)).all())
    ((4, 3), True)
    """
    torch = _torch()
    pairs = [int(pair) for pair in pairs]
    if backend == "compiled":
        return _compiled_uniforms(trial, key, position, pairs)
    shape = (len(pairs), 2, *trial.shape)
    out = torch.empty(shape, dtype=torch.float64, device=trial.device)
    if backend == "fused":
        kernel = _fused_kernel()
        for k, pair in enumerate(pairs):
            even, odd = kernel(trial, key0=key[0], key1=key[1], position=position, pair=pair)
            out[k, 0], out[k, 1] = even, odd
    elif _wraps(trial.device):  # at most PAIRS_PER_PASS pairs per pass (bounded buffers)
        for first in range(0, len(pairs), PAIRS_PER_PASS):
            group = pairs[first:first + PAIRS_PER_PASS]
            out[first:first + len(group)].transpose(0, 1).copy_(
                _wrapping_bits(trial, key, position, group, workspace))
    else:
        counter = torch.tensor(pairs, dtype=torch.int64, device=trial.device)
        c0, c1, c2, c3 = _split_words(trial, key, position,
                                      counter.view(-1, *(1,) * trial.dim()))
        out[:, 0] = (c0 << 21) | (c1 >> 11)
        out[:, 1] = (c2 << 21) | (c3 >> 11)
    return out.mul_(2.0**-53).view(2 * len(pairs), *trial.shape)


def philox_pair(trial, key, position: int, pair: int, backend: str = "tensor"):
    """The uniforms of slots (2·pair, 2·pair + 1) for int64 ``trial`` indices (float64):
    :func:`philox_slots` of one pair.

    Examples
    --------
    >>> import torch
    >>> from gpu_kernels.engine import philox_pair
    >>> from sim.engine.philox import uniforms
    >>> even, odd = philox_pair(torch.arange(3), (5, 6), position=2, pair=0)
    >>> bool((even.numpy() == uniforms((5, 6), [0, 1, 2], 2, 0)).all())
    True
    """
    even, odd = philox_slots(trial, key, position, (pair,), backend)
    return even, odd
