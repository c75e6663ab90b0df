"""What every client adapter shares: the convention's argument checks and return arrays.

``_shapes`` checks and converts the harness's arrays (int64 drafts (B, γ), float64 draft rows
(B, γ, V) and target rows (B, γ + 1, V)); ``_log`` gives the logits a package softmaxes back
(``-inf`` at exact zeros); ``_seed_global`` and ``_generator`` seed torch from the harness's
``rng`` once per call; ``_emitted`` and ``_from_count_and_token`` build the (B, γ + 1) emitted
tokens, ``-1``-padded; ``_require_onehot`` guards the deterministic-drafter paths; ``_patched``
replaces an attribute of a package for the length of a call.  torch is imported lazily.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

Verifier = Callable[..., np.ndarray]


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def _torch():
    import torch

    from sim.conformance.calls import apply_torch_limit

    apply_torch_limit(torch)  # the run's thread bound holds from the first call
    return torch


def _shapes(draft_tokens, draft_probs, target_probs):
    draft_tokens = np.asarray(draft_tokens, dtype=np.int64)
    draft_probs = np.asarray(draft_probs, dtype=np.float64)
    target_probs = np.asarray(target_probs, dtype=np.float64)
    if draft_tokens.ndim != 2:
        raise ValueError(f"draft_tokens must be (B, γ); got shape {draft_tokens.shape}")
    batch, gamma = draft_tokens.shape
    if gamma < 1:
        raise ValueError("these adapters need γ ≥ 1")
    if draft_probs.ndim != 3 or draft_probs.shape[:2] != (batch, gamma):
        raise ValueError(f"draft_probs must be ({batch}, {gamma}, V); got {draft_probs.shape}")
    vocab = draft_probs.shape[2]
    if target_probs.shape != (batch, gamma + 1, vocab):
        raise ValueError(f"target_probs must be ({batch}, {gamma + 1}, {vocab}); "
                         f"got {target_probs.shape}")
    return draft_tokens, draft_probs, target_probs


def _log(probs: np.ndarray) -> np.ndarray:
    """``log(probs)`` with ``-inf`` at exact zeros (the logits a package softmaxes back)."""
    with np.errstate(divide="ignore"):
        return np.log(probs)


def _seed(rng) -> int:
    return int(rng.integers(2**63))


def _seed_global(rng) -> None:
    _torch().manual_seed(_seed(rng))


def _generator(rng):
    torch = _torch()
    return torch.Generator(device="cpu").manual_seed(_seed(rng))


def _emitted(rows: list[list[int]], gamma: int) -> np.ndarray:
    out = np.full((len(rows), gamma + 1), -1, dtype=np.int64)
    for b, row in enumerate(rows):
        if not 1 <= len(row) <= gamma + 1:
            raise RuntimeError(f"adapter bug: row {b} emitted {len(row)} tokens")
        out[b, : len(row)] = row
    return out


def _from_count_and_token(draft_tokens: np.ndarray, accepted, following) -> np.ndarray:
    """Emitted tokens from per-row accepted-draft counts and the following token."""
    accepted = np.asarray(accepted, dtype=np.int64)
    following = np.asarray(following, dtype=np.int64)
    batch, gamma = draft_tokens.shape
    out = np.full((batch, gamma + 1), -1, dtype=np.int64)
    cols = np.arange(gamma)
    keep = cols[None, :] < accepted[:, None]
    out[:, :gamma][keep] = draft_tokens[keep]
    out[np.arange(batch), accepted] = following
    return out


def _require_onehot(draft_tokens: np.ndarray, draft_probs: np.ndarray, name: str) -> None:
    at = np.take_along_axis(draft_probs, draft_tokens[..., None], axis=2)[..., 0]
    if not (np.all(at == 1.0) and np.all(draft_probs.sum(axis=2) == 1.0)):
        raise ValueError(f"{name} is the deterministic-drafter path: every draft_probs row must be "
                         "one-hot on its drafted token")


@contextlib.contextmanager
def _patched(obj, name: str, value) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)
