r"""Counter-based randomness: every uniform is a pure function of (seed, trial, position, slot).

All engines draw their randomness from **Philox4x32-10** (Salmon, Moraes, Dror, Shaw,
"Parallel random numbers: as easy as 1, 2, 3", SC 2011), the counter-based generator behind
cuRAND's default and JAX's and Random123's Philox.  A block cipher maps a 128-bit *counter*
under a 64-bit *key* to 128 random bits; here

.. math::

   (w_0, w_1, w_2, w_3) = \mathrm{Philox4x32\text{-}10}\bigl(
       \text{counter} = (i \bmod 2^{32},\ \lfloor i / 2^{32} \rfloor,\ n,\ \lfloor j/2 \rfloor),\
       \text{key} = (k_0, k_1)\bigr),
   \qquad u_j = \bigl(2^{21} w_{2h} + \lfloor w_{2h+1} / 2^{11} \rfloor\bigr) \, 2^{-53},
   \quad h = j \bmod 2,

for trial i, position n and slot j: one block of the cipher serves the slot pair (2m, 2m + 1)
(the draft draw and its acceptance test, or a batch candidate's draw and test), and u is one
of the 2^53 evenly spaced doubles of [0, 1), exactly as fine as numpy's ``Generator.random``.
The key (k₀, k₁) comes from the user's ``rng`` once (:func:`philox_key`).  The slot says which
random choice of the position the uniform serves (the engines document their slots); the prompt
of a trial with a random start uses position :data:`START_POSITION`.

Consequences, each tested: trial i's outcome depends on nothing but (key, i) — not on the
number of trials, the chunk size, the number of threads or Dask workers, nor on the engine
(the compiled CPU engine and the torch engine return identical arrays) — and an engine only
computes the uniforms it uses.

One round of Philox4x32 with the multipliers M₀ = 0xD2511F53, M₁ = 0xCD9E8D57 maps
(c₀, c₁, c₂, c₃) to (hi(M₁c₂) ⊕ c₁ ⊕ k₀, lo(M₁c₂), hi(M₀c₀) ⊕ c₃ ⊕ k₁, lo(M₀c₀)), hi/lo the
upper and lower 32 bits of the 64-bit product; ten rounds, the key bumped by the Weyl
constants (0x9E3779B9, 0xBB67AE85) between rounds.  :func:`philox4x32` is this module's
readable numpy implementation, checked against the published known-answer vectors; the
compiled kernels (:mod:`sim.engine.compiled`) and the torch engine (:mod:`gpu_kernels`) carry their
own copies, checked against it bit for bit.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "PHILOX_MULTIPLIERS",
    "PHILOX_WEYL",
    "START_POSITION",
    "philox4x32",
    "philox_key",
    "uniforms",
]

#: Round multipliers (M₀, M₁) of Philox4x32.
PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
#: Key increments (Weyl constants) between rounds.
PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)
#: Rounds of Philox4x32-10.
PHILOX_ROUNDS = 10
#: The counter's position word for the draw of a random prompt (start context).
START_POSITION = 0xFFFFFFFF

_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(counter, key, rounds: int = PHILOX_ROUNDS):
    """Philox4x32-``rounds`` of counters and keys (arrays of uint32 words, broadcasting).

    Parameters
    ----------
    counter : sequence of 4 integer arrays
        The counter words (c₀, c₁, c₂, c₃), each < 2³².
    key : sequence of 2 integer arrays
        The key words (k₀, k₁), each < 2³².

    Returns
    -------
    tuple of 4 uint64 arrays holding 32-bit words.

    Examples
    --------
    The first known-answer vector of the Random123 distribution (counter and key zero):

    >>> [f"{int(w):08x}" for w in philox4x32((0, 0, 0, 0), (0, 0))]
    ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
    """
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = (np.asarray(k, dtype=np.uint64) for k in key)
    m0, m1 = (np.uint64(m) for m in PHILOX_MULTIPLIERS)
    w0, w1 = (np.uint64(w) for w in PHILOX_WEYL)
    for round_index in range(rounds):
        if round_index:
            k0, k1 = (k0 + w0) & _MASK32, (k1 + w1) & _MASK32
        product0, product1 = m0 * c0, m1 * c2  # < 2⁶⁴: exact in uint64
        c0, c1, c2, c3 = ((product1 >> np.uint64(32)) ^ c1 ^ k0, product1 & _MASK32,
                          (product0 >> np.uint64(32)) ^ c3 ^ k1, product0 & _MASK32)
    return c0, c1, c2, c3


def uniforms(key, trial, position, slot) -> np.ndarray:
    """The uniform every engine uses for (key, trial, position, slot); arguments broadcast.

    Parameters
    ----------
    key : (int, int)
        From :func:`philox_key`.
    trial : int array
        Trial indices, 0 ≤ i < 2⁶⁴.
    position : int array
        Positions 0 ≤ n < T, or :data:`START_POSITION` for the random prompt.
    slot : int array
        Which random choice of the position (see the engines' slot tables).

    Examples
    --------
    >>> from sim.engine.philox import uniforms
    >>> u = uniforms((1, 2), trial=[0, 1, 2], position=0, slot=0)
    >>> bool(((0 <= u) & (u < 1)).all()), u.dtype
    (True, dtype('float64'))
    """
    trial = np.asarray(trial, dtype=np.uint64)
    slot = np.asarray(slot, dtype=np.uint64)
    words = philox4x32((trial & _MASK32, trial >> np.uint64(32), position, slot >> np.uint64(1)),
                       key)
    odd = (slot & np.uint64(1)).astype(bool)
    high, low = np.where(odd, words[2], words[0]), np.where(odd, words[3], words[1])
    bits = (high << np.uint64(21)) | (low >> np.uint64(11))
    return bits.astype(np.float64) * 2.0**-53


def philox_key(rng=None) -> tuple[int, int]:
    """The Philox key (k₀, k₁) of a user's ``rng``: drawn once, then everything is counters.

    Parameters
    ----------
    rng : None, int or numpy.random.Generator
        An int seed (≥ 0) is hashed by ``numpy.random.SeedSequence`` into the key, so nearby
        seeds give unrelated streams; a Generator gives one 64-bit draw; None takes fresh OS
        entropy.

    Raises
    ------
    TypeError
        For any other type (booleans included: ``rng=True`` is a mistake, not seed 1).
    ValueError
        For a negative seed.

    Examples
    --------
    >>> from sim.engine.philox import philox_key
    >>> philox_key(0) == philox_key(0), philox_key(0) == philox_key(1)
    (True, False)
    """
    if isinstance(rng, np.random.Generator):
        words = rng.integers(0, 2**32, size=2, dtype=np.uint64)
    elif rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        if rng is not None and rng < 0:
            raise ValueError(f"rng must be a seed >= 0, a numpy Generator or None; got {rng}")
        words = np.random.SeedSequence(None if rng is None else int(rng)).generate_state(
            2, dtype=np.uint32)
    else:
        raise TypeError(f"rng must be a seed (int >= 0), a numpy Generator or None; "
                        f"got {rng!r}")
    return int(words[0]), int(words[1])
