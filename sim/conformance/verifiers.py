"""Verifiers in the convention of :mod:`sim.conformance`.

:func:`reference_verifier` is standard speculative verification in numpy (accept dᵢ iff
uᵢ · p(dᵢ) < q(dᵢ), resample the first failure from [q − p]₊, bonus from q) — the convention's
worked example; :func:`rule_verifier` samples the exact round law E[j, v] = P(emit d₁ … d_j,
then v) of a round rule of :mod:`theory.conformance`; :func:`failure_verifier` is a known bug
(:data:`theory.conformance.FAILURE_MODES`) sampled from its exact law; :func:`torch_verifier`
adapts a torch verifier to the convention.
"""

from __future__ import annotations

import numpy as np

from sim.conformance.rounds import _name, _sample
from theory.conformance import FAILURE_MODES, FailureMode


def reference_verifier(draft_tokens, draft_probs, target_probs, rng):
    """Standard speculative verification in numpy — the convention's worked example.

    Draft i is kept iff uᵢ · p(dᵢ) < q(dᵢ) (i.e. uᵢ < min(1, q/p)); at the first failure the
    round emits a token from [q − p]₊ normalized; if every draft is kept, a bonus token from
    the last target row.

    Parameters
    ----------
    draft_tokens, draft_probs, target_probs, rng :
        The convention (:mod:`sim.conformance`).

    Examples
    --------
    >>> import numpy as np
    >>> from sim.conformance import reference_verifier
    >>> p = np.array([[[0.5, 0.5]]]); q = np.array([[[0.0, 1.0], [0.3, 0.7]]])
    >>> reference_verifier(np.array([[0]]), p, q, np.random.default_rng(0))  # 0 is rejected
    array([[ 1, -1]])
    """
    draft_tokens = np.asarray(draft_tokens, dtype=np.int64)
    rows, k = draft_tokens.shape
    p_x = np.take_along_axis(draft_probs, draft_tokens[..., None], axis=-1)[..., 0]
    q_x = np.take_along_axis(target_probs[:, :k], draft_tokens[..., None], axis=-1)[..., 0]
    kept = rng.random((rows, k)) * p_x < q_x
    accepted = np.where(kept.all(axis=1), k, np.argmin(kept, axis=1))
    everything = accepted == k
    law = np.empty((rows, draft_probs.shape[-1]))
    law[everything] = target_probs[everything, k]
    failed = np.flatnonzero(~everything)
    at = accepted[failed]
    law[failed] = np.maximum(target_probs[failed, at] - draft_probs[failed, at], 0.0)
    emitted = np.full((rows, k + 1), -1, dtype=np.int64)
    columns = np.arange(k)[None, :]
    emitted[:, :k] = np.where(columns < accepted[:, None], draft_tokens, -1)
    emitted[np.arange(rows), accepted] = _sample(law, rng)
    return emitted


def rule_verifier(rule, name: str | None = None):
    """A verifier in the convention that samples the exact round law of ``rule``
    (:mod:`theory.conformance`): E[j, v] = P(emit d₁ … d_j, then v).

    Parameters
    ----------
    rule : callable
        A round rule (:func:`theory.conformance.standard_rule`, a failure mode's rule, …).
    name : str, optional
        The verifier's name in reports.

    Examples
    --------
    >>> from sim.conformance import check_verifier, rule_verifier
    >>> from theory.conformance import block_rule
    >>> check_verifier(rule_verifier(block_rule), window=3, n_rounds=4000, rng=2,
    ...                min_tv=0.2).verdict
    'passed'
    """
    def verifier(draft_tokens, draft_probs, target_probs, rng):
        draft_tokens = np.asarray(draft_tokens, dtype=np.int64)
        rows, k = draft_tokens.shape
        law = np.asarray(rule(draft_tokens, np.asarray(draft_probs, dtype=np.float64),
                              np.asarray(target_probs, dtype=np.float64)))
        vocab = law.shape[-1]
        outcome = _sample(law.reshape(rows, -1), rng)
        accepted, token = np.divmod(outcome, vocab)
        emitted = np.full((rows, k + 1), -1, dtype=np.int64)
        emitted[:, :k] = np.where(np.arange(k)[None, :] < accepted[:, None], draft_tokens, -1)
        emitted[np.arange(rows), accepted] = token
        return emitted

    verifier.__qualname__ = name or f"rule_verifier({getattr(rule, '__qualname__', rule)})"
    return verifier


def _mode(failure) -> FailureMode:
    if isinstance(failure, FailureMode):
        return failure
    if failure not in FAILURE_MODES:
        raise ValueError(f"failure must be one of {sorted(FAILURE_MODES)} or a FailureMode; "
                         f"got {failure!r}")
    return FAILURE_MODES[failure]


def failure_verifier(failure):
    """A verifier with a known bug (:data:`theory.conformance.FAILURE_MODES`), sampled from its
    exact law.  A mode whose bug is in the drafting (``drafter``) returns the correct verifier:
    run it with ``check_verifier(..., draft_processor=mode.drafter)``.

    Parameters
    ----------
    failure : str or FailureMode
        A key of :data:`theory.conformance.FAILURE_MODES`, or a mode.
    """
    mode = _mode(failure)
    return rule_verifier(mode.rule, name=f"failure_verifier({mode.name!r})")


def torch_verifier(function, *, device=None):
    """Adapt a torch verifier ``function(draft_tokens, draft_probs, target_probs, generator)``
    (tensors of the convention's shapes on ``device``, float64; a ``torch.Generator`` seeded
    from the harness's rng) to the convention.

    Parameters
    ----------
    function : callable
        The torch verifier; returns an integer tensor (B, γ + 1).
    device : str or torch.device, optional
        Where the tensors go (default: the CPU).

    Examples
    --------
    >>> import torch
    >>> from sim.conformance import check_verifier, torch_verifier
    >>> def greedy_bonus(tokens, p, q, generator):  # not lossless: always emits argmax q
    ...     return torch.cat([q[:, :1].argmax(-1), torch.full_like(tokens, -1)], dim=1)
    >>> check_verifier(torch_verifier(greedy_bonus), window=2, n_rounds=2000, rng=0).passed
    False
    """
    import torch

    def verifier(draft_tokens, draft_probs, target_probs, rng):
        generator = torch.Generator(device=device or "cpu")
        generator.manual_seed(int(rng.integers(2 ** 63)))
        tensors = (torch.as_tensor(draft_tokens, device=device),
                   torch.as_tensor(draft_probs, device=device),
                   torch.as_tensor(target_probs, device=device))
        return function(*tensors, generator)

    verifier.__qualname__ = f"torch_verifier({_name(function)})"
    return verifier
