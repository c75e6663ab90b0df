r"""Adapters to packages whose verifier takes the rows themselves: transformers, flashspec,
economize.

Each is called on the harness's drafts and probability rows as the package documents them —
logits (``log p``, ``-inf`` at zeros) for transformers, float32 log-probabilities for flashspec,
probabilities for economize (through a token selector that hands them back) — with torch seeded
from the harness's ``rng`` once per call, and its answer turned into the convention's (B, γ + 1)
emitted tokens.  Each package is imported inside its adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from sim.conformance.clients.common import (
    Verifier,
    _emitted,
    _from_count_and_token,
    _generator,
    _log,
    _patched,
    _require_onehot,
    _seed_global,
    _shapes,
    _torch,
)

# ---------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------

def _transformers(weight: float | None) -> Verifier:
    def verifier(draft_tokens, draft_probs, target_probs, rng):
        from transformers.generation.utils import _speculative_sampling

        torch = _torch()
        draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
        gamma = draft_tokens.shape[1]
        _seed_global(rng)
        draft_logits = torch.from_numpy(_log(draft_probs))
        target_logits = torch.from_numpy(_log(target_probs))
        rows = []
        for b in range(draft_tokens.shape[0]):
            ids = torch.from_numpy(np.concatenate([[0], draft_tokens[b]]))[None, :]
            kwargs = {} if weight is None else {"assistant_ensemble_weight": weight}
            valid, _n = _speculative_sampling(ids, draft_logits[b: b + 1], gamma,
                                              target_logits[b: b + 1], **kwargs)
            rows.append(valid[0].tolist())
        return _emitted(rows, gamma)

    return verifier


_transformers_lossless = _transformers(None)


def transformers_speculative_sampling(draft_tokens, draft_probs, target_probs, rng):
    r"""transformers' ``_speculative_sampling`` (assisted generation with sampling).

    Called once per batch row (the function handles B = 1 only: it squeezes the batch axis and
    counts matches over the whole tensor) as ``_speculative_sampling(candidate_input_ids=[[0,
    d_1..d_γ]], candidate_logits=log p[b] (1, γ, V), candidate_length=γ, new_logits=log q[b]
    (1, γ + 1, V))``: it takes *logits* and softmaxes them (float64 here; zeros are ``-inf``).
    Its own names are swapped: its ``q`` is our draft ``p``, its ``p`` our target ``q``.
    Randomness: ``torch.rand_like`` and ``torch.multinomial`` on torch's global generator,
    seeded from ``rng`` once per call.  Returns ``valid_tokens`` (accepted drafts then the
    correction or bonus token).
    """
    return _transformers_lossless(draft_tokens, draft_probs, target_probs, rng)


def transformers_ensemble(weight: float) -> Verifier:
    r"""transformers' ``_speculative_sampling`` with ``assistant_ensemble_weight=weight`` (lossy).

    The weight is the ``GenerationConfig.assistant_ensemble_weight`` that ``_assisted_decoding``
    passes to ``_speculative_sampling``.  The verifier accepts against ``v = w·q + (1 − w)·p``
    (ratio ``1 − w + w·q(x)/p(x)``) and resamples from the usual residual ``[q − p]₊`` (the
    normalised ``[v − p]₊``), so every drafted position emits ``v``; the bonus position emits
    ``q``.  Called like :func:`transformers_speculative_sampling`.
    """
    if not 0.0 < weight < 1.0:
        raise ValueError("assistant_ensemble_weight must be in (0, 1)")
    return _transformers(weight)


# ---------------------------------------------------------------------------------------------
# flashspec
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _flashspec_backend(backend: str) -> Iterator[None]:
    from flashspec.sampling import rejection

    if backend == "asm":
        if rejection.active_residual_backend() != "asm":
            raise RuntimeError("flashspec's asm residual backend is not active here: "
                               f"{rejection.residual_backend_status()}")
        yield
    elif backend == "pytorch":
        with _patched(rejection, "_ASM_AVAILABLE", False):
            yield
    else:
        raise ValueError(f"backend must be 'asm' or 'pytorch'; got {backend!r}")


def _f32_logprobs(probs: np.ndarray):
    return _torch().from_numpy(_log(probs).astype(np.float32))


def flashspec_rejection_step(backend: str = "pytorch") -> Verifier:
    r"""flashspec's ``sampling.rejection.rejection_step`` (batched, no host sync).

    Called once for the whole batch as ``rejection_step(draft_token_ids (B, γ),
    draft_logprobs=log p (B, γ, V) float32, target_logprobs=log q (B, γ + 1, V) float32,
    generator=g)``: it takes *log-probabilities* (float32, its documented dtype; ``-inf`` for
    zeros), and returns ``[n_accepted, next_token]`` per row.  ``g`` is a ``torch.Generator``
    seeded from ``rng``.  ``backend="pytorch"`` forces the pure-PyTorch residual (the adapter
    clears ``flashspec.sampling.rejection._ASM_AVAILABLE`` during the call); ``backend="asm"``
    requires the flashspec-asm-kernel AVX2 residual to be the active CPU backend.
    """

    def verifier(draft_tokens, draft_probs, target_probs, rng):
        from flashspec.sampling.rejection import rejection_step

        torch = _torch()
        draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
        with _flashspec_backend(backend):
            out = rejection_step(torch.from_numpy(draft_tokens), _f32_logprobs(draft_probs),
                                 _f32_logprobs(target_probs), generator=_generator(rng))
        out = out.numpy()
        return _from_count_and_token(draft_tokens, out[:, 0], out[:, 1])

    return verifier


def flashspec_rejection_sample(backend: str = "pytorch") -> Verifier:
    r"""flashspec's ``sampling.rejection.rejection_sample`` plus the engine's bonus draw.

    Called once for the batch as ``rejection_sample(input_ids=zeros (B, 1), log p (B, γ, V),
    log q[:, :γ] (B, γ, V), draft_token_ids, gamma=γ, generator=g)`` (float32 log-probs).  It
    returns the accepted drafts and the residual token, ``-1``-padded to ``(B, γ)``, and no bonus
    token: for the rows that accepted all γ drafts the adapter draws the bonus as flashspec's
    engine does, ``torch.multinomial(q[:, γ], 1, generator=g)`` with the same generator.
    ``backend`` as in :func:`flashspec_rejection_step`.
    """

    def verifier(draft_tokens, draft_probs, target_probs, rng):
        from flashspec.sampling.rejection import rejection_sample

        torch = _torch()
        draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
        batch, gamma = draft_tokens.shape
        g = _generator(rng)
        target = _f32_logprobs(target_probs)
        with _flashspec_backend(backend):
            ids, first, _rate = rejection_sample(
                torch.zeros(batch, 1, dtype=torch.long), _f32_logprobs(draft_probs),
                target[:, :gamma].contiguous(), torch.from_numpy(draft_tokens), gamma,
                generator=g)
        bonus = torch.multinomial(torch.from_numpy(target_probs[:, gamma]), 1, generator=g)[:, 0]
        out = np.full((batch, gamma + 1), -1, dtype=np.int64)
        out[:, :gamma] = ids.numpy()
        full = first.numpy() == gamma
        out[full, gamma] = bonus.numpy()[full]
        return out

    return verifier


def flashspec_rejection_step_onehot(draft_tokens, draft_probs, target_probs, rng):
    r"""flashspec's ``sampling.rejection.rejection_step_onehot`` (deterministic drafter).

    Only for one-hot draft rows (each ``draft_probs[b, i]`` one-hot on ``draft_tokens[b, i]``;
    anything else raises ``ValueError``): the function never sees ``p``.  Called as
    ``rejection_step_onehot(draft_tokens, log q (B, γ + 1, V) float32, generator=g)``.
    """
    from flashspec.sampling.rejection import rejection_step_onehot

    torch = _torch()
    draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
    _require_onehot(draft_tokens, draft_probs, "flashspec.rejection_step_onehot")
    out = rejection_step_onehot(torch.from_numpy(draft_tokens), _f32_logprobs(target_probs),
                                generator=_generator(rng)).numpy()
    return _from_count_and_token(draft_tokens, out[:, 0], out[:, 1])


# ---------------------------------------------------------------------------------------------
# economize
# ---------------------------------------------------------------------------------------------

class _ProbSelector:
    """An economize token selector whose "logits" are already the probabilities.

    economize's ``RejectionVerifier`` asks the selector for the distribution behind its choice
    (``distribution`` / ``distributions``) and for its generator; this one returns the
    probabilities it is handed, so the verifier sees the harness's rows exactly (economize
    itself casts them to float32).  ``__call__`` (the bonus draw of the single-row path) samples
    them with the same generator.
    """

    greedy = False

    def __init__(self, generator):
        self.generator = generator

    def __call__(self, logits, history) -> int:
        return int(_torch().multinomial(logits, 1, generator=self.generator)[0])

    def distribution(self, logits, history):
        return logits

    def distributions(self, logits):
        return logits


def _economize_verifier():
    from economize.decoding.config import DecodeConfig
    from economize.decoding.verifiers import RejectionVerifier

    return RejectionVerifier(DecodeConfig(verifier="rejection"))


def economize_single(draft_tokens, draft_probs, target_probs, rng):
    r"""economize's ``RejectionVerifier.verify`` (one row at a time).

    For each row: ``verify(logits=q[b] (γ + 1, V), drafts=list(d[b]), probs=p[b] (γ, V),
    selector, history=d[b], end=0)`` → ``(accepted, next_token)``.  The verifier is built as
    ``RejectionVerifier(DecodeConfig(verifier="rejection"))``; the selector (:class:`_ProbSelector`)
    returns the probabilities it is given as its distribution, and its ``generator`` (a
    ``torch.Generator`` seeded from ``rng``) drives every coin and draw.  Probabilities, not
    logits; economize casts them to float32.
    """
    torch = _torch()
    draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
    verifier = _economize_verifier()
    selector = _ProbSelector(_generator(rng))
    accepted, following = [], []
    for b in range(draft_tokens.shape[0]):
        a, token = verifier.verify(torch.from_numpy(target_probs[b]), draft_tokens[b].tolist(),
                                   torch.from_numpy(draft_probs[b]), selector,
                                   torch.from_numpy(draft_tokens[b]), 0)
        accepted.append(a)
        following.append(token)
    return _from_count_and_token(draft_tokens, accepted, following)


def _economize_batch(draft_tokens, draft_probs, target_probs, rng, onehot: bool):
    from economize.decoding.protocols import Draft

    torch = _torch()
    batch, gamma = draft_tokens.shape
    verifier = _economize_verifier()
    selector = _ProbSelector(_generator(rng))
    draft = Draft(torch.from_numpy(draft_tokens), [gamma] * batch,
                  probs=None if onehot else torch.from_numpy(draft_probs))
    accepted, following = verifier.verify_batch(torch.from_numpy(target_probs), draft, selector,
                                                torch.from_numpy(draft_tokens), [0] * batch)
    return _from_count_and_token(draft_tokens, accepted.numpy(), following.numpy())


def economize_verify_batch(draft_tokens, draft_probs, target_probs, rng):
    r"""economize's ``RejectionVerifier.verify_batch`` (the batched chain path).

    One call for the batch: ``verify_batch(logits=q (B, γ + 1, V), Draft(tokens=d, lengths=[γ]·B,
    probs=p), selector, seq=d, ends=[0]·B)`` → ``(accepted (B,), next_token (B,))``.  Verifier,
    selector and generator as in :func:`economize_single`.
    """
    arrays = _shapes(draft_tokens, draft_probs, target_probs)
    return _economize_batch(*arrays, rng, onehot=False)


def economize_verify_batch_onehot(draft_tokens, draft_probs, target_probs, rng):
    r"""economize's ``RejectionVerifier.verify_batch`` with ``Draft.probs=None`` (one-hot drafts).

    The deterministic-drafter path: economize treats every draft as drawn from a one-hot on
    itself.  Only for one-hot draft rows (anything else raises ``ValueError``).  Otherwise called
    like :func:`economize_verify_batch`.
    """
    draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
    _require_onehot(draft_tokens, draft_probs, "economize one-hot verify_batch")
    return _economize_batch(draft_tokens, draft_probs, target_probs, rng, onehot=True)


def economize_verify_tree_chain(draft_tokens, draft_probs, target_probs, rng):
    r"""economize's ``RejectionVerifier.verify_tree`` on a chain-shaped tree.

    One call for the batch: ``verify_tree(logits=q (B, γ + 1, V), Draft(tokens=d,
    lengths=[γ]·B, parents=[-1, 0, 1, …, γ − 2] per row, probs=p), selector)`` → ``(paths,
    next_tokens)``; the emitted tokens are ``d[b][path]`` then the next token.  Row ``k`` of
    ``logits`` is the target after tree node ``k − 1`` (row 0 after the committed token), which
    for a chain is the harness's row ``k``.  Selector and generator as in
    :func:`economize_single`.
    """
    from economize.decoding.protocols import Draft

    torch = _torch()
    draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
    batch, gamma = draft_tokens.shape
    verifier = _economize_verifier()
    selector = _ProbSelector(_generator(rng))
    parents = torch.arange(-1, gamma - 1).repeat(batch, 1)
    draft = Draft(torch.from_numpy(draft_tokens), [gamma] * batch, parents=parents,
                  probs=torch.from_numpy(draft_probs))
    paths, following = verifier.verify_tree(torch.from_numpy(target_probs), draft, selector)
    rows = [[int(draft_tokens[b, i]) for i in path] + [following[b]]
            for b, path in enumerate(paths)]
    return _emitted(rows, gamma)
