r"""Adapters that run real PyPI speculative-decoding verifiers in the simulator's convention.

Every adapter is a verifier ``verifier(draft_tokens, draft_probs, target_probs, rng) -> emitted``:

* ``draft_tokens`` int64 ``(B, γ)``; ``draft_probs`` float64 ``(B, γ, V)``, row ``i`` the law
  ``draft_tokens[:, i]`` was drawn from (given the earlier drafts); ``target_probs`` float64
  ``(B, γ + 1, V)``, the target at each drafted position and at the bonus position (row ``γ``);
  ``rng`` a :class:`numpy.random.Generator`.
* returns int64 ``(B, γ + 1)``: the tokens emitted this round (accepted drafts, then one
  correction or bonus token), ``-1`` after the last one.

Each package is imported lazily, inside its adapter, so this module imports without any of them;
:func:`real_clients` returns the adapters whose package imports here and :func:`client_info` what
each is (package, version, import path, the law it is documented to produce).  The pinned
versions are in the ``clients`` extra of ``pyproject.toml`` and in ``requirements-clients.txt``
(install those with ``pip install --no-deps``).

Randomness: the packages draw from torch.  An adapter seeds torch from ``rng`` once per call
(``torch.manual_seed(int(rng.integers(2**63)))`` for the packages that use torch's global
generator; a fresh ``torch.Generator`` seeded the same way for those that take one), so a round is
reproducible from the harness's seed.  Seeding the global generator changes torch's global state.

Probabilities are handed over as the package expects them: packages that take logits get
``log(probs)`` with ``-inf`` for exact zeros (a softmax of that row gives ``probs`` back up to
rounding); packages that take probabilities get them unchanged.  float64 is kept wherever the
package accepts it; packages that cast to float32 (flashspec, economize) do so themselves.

Several packages only run a whole round with their own models (they draw the drafts themselves).
Their adapters hand them stub "models" that return the harness's rows, and make the package's
draft sampler return the harness's drafts (documented per adapter).  The stubs return rows by
position, which is exactly the harness's data: the harness already fixed the drafts, and row
``i`` is the law at the ``i``-th drafted position given those drafts.  Those patches are
temporary and not thread-safe.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Iterator
from importlib import metadata
from types import SimpleNamespace

import numpy as np

__all__ = [
    "CLIENT_SPECS",
    "SEQUENCE_CLIENTS",
    "autodraft_verify",
    "client_info",
    "conformance_report",
    "economize_single",
    "economize_verify_batch",
    "economize_verify_batch_onehot",
    "economize_verify_tree_chain",
    "flashspec_rejection_sample",
    "flashspec_rejection_step",
    "flashspec_rejection_step_onehot",
    "greedy_drafts",
    "hsd_round",
    "mini_infer_speculative_step",
    "real_clients",
    "report_markdown",
    "seqspecdecod_standard_step",
    "specdec_verify",
    "speculative_decoding_round",
    "topk_law",
    "transformers_ensemble",
    "transformers_speculative_sampling",
]

Verifier = Callable[..., np.ndarray]


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def _torch():
    import torch

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


def _feeder(tokens):
    """A stand-in for a package's draft sampler: call ``i`` returns ``tokens[i]``."""
    state = {"i": 0}

    def next_token():
        i = state["i"]
        state["i"] += 1
        return tokens[i]

    return next_token


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


# ---------------------------------------------------------------------------------------------
# specdec
# ---------------------------------------------------------------------------------------------

class _RowModel:
    """A causal-LM stand-in: called on ``ids (1, L)``, returns ``rows`` at the last positions."""

    def __init__(self, rows, tuple_output: bool = False):
        self.rows = rows  # torch (R, V) logits: row r is the output at position L - R + r
        self.tuple_output = tuple_output

    def __call__(self, ids, *args, **kwargs):
        torch = _torch()
        length = ids.shape[1]
        count = min(length, self.rows.shape[0])
        logits = torch.zeros(1, length, self.rows.shape[1], dtype=self.rows.dtype)
        logits[0, length - count:] = self.rows[:count]
        if self.tuple_output:
            return logits, None
        return SimpleNamespace(logits=logits)


class _DraftRowModel:
    """Draft stand-in: the ``i``-th call (ids of length ``prefix + i``) ends with row ``i``."""

    def __init__(self, rows, prefix: int, tuple_output: bool = False):
        self.rows, self.prefix, self.tuple_output = rows, prefix, tuple_output

    def __call__(self, ids, *args, **kwargs):
        torch = _torch()
        length = ids.shape[1]
        i = min(length - self.prefix, self.rows.shape[0] - 1)
        logits = torch.zeros(1, length, self.rows.shape[1], dtype=self.rows.dtype)
        logits[0, -1] = self.rows[i]
        if self.tuple_output:
            return logits, None
        return SimpleNamespace(logits=logits)


def specdec_verify(draft_tokens, draft_probs, target_probs, rng):
    r"""specdec's ``decoder.SpecDecoder.verify`` (one row at a time).

    ``SpecDecoder.__init__`` loads two Hugging Face models, so the adapter makes the object with
    ``SpecDecoder.__new__`` and sets ``device="cpu"`` and ``big_model`` to a stand-in whose
    ``logits[0]`` at positions ``0..γ`` are ``log q[b]`` (the method softmaxes them).  Called as
    ``verify(inp=[[0]], gen_toks=list(d[b]), small_model_distributions=[p[b, i][None] …])`` with
    the draft *probabilities* (float64).  Returns the accepted drafts then the correction or bonus
    token.  Randomness: torch's global generator, seeded from ``rng`` once per call.
    """
    from specdec.decoder import SpecDecoder

    torch = _torch()
    draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
    gamma = draft_tokens.shape[1]
    _seed_global(rng)
    decoder = SpecDecoder.__new__(SpecDecoder)
    decoder.device = "cpu"
    rows = []
    for b in range(draft_tokens.shape[0]):
        decoder.big_model = _RowModel(torch.from_numpy(_log(target_probs[b])))
        dists = [torch.from_numpy(draft_probs[b, i])[None] for i in range(gamma)]
        rows.append(list(decoder.verify(torch.zeros(1, 1, dtype=torch.long),
                                        draft_tokens[b].tolist(), dists)))
    return _emitted(rows, gamma)


# ---------------------------------------------------------------------------------------------
# sequential-speculative-decoding (import name seqspecdecod)
# ---------------------------------------------------------------------------------------------

def _seqspec_call(module_name: str, step_name: str, draft_tokens, draft_probs, target_probs,
                  rng):
    torch = _torch()
    module = importlib.import_module(module_name)
    step = getattr(module, step_name)
    batch, gamma = draft_tokens.shape
    _seed_global(rng)
    real_sample = module.sample_from_probs
    rows = []
    for b in range(batch):
        feed = _feeder([torch.tensor(int(t)) for t in draft_tokens[b]])
        calls = {"n": 0}

        def sample(probs, feed=feed, calls=calls):
            calls["n"] += 1
            return feed() if calls["n"] <= gamma else real_sample(probs)

        draft_model = _DraftRowModel(torch.from_numpy(_log(draft_probs[b])), prefix=1)
        target_model = _PositionModel(torch.from_numpy(_log(target_probs[b])), prefix=1)
        with _patched(module, "sample_from_probs", sample):
            new_ids, _n, _g = step(draft_model, target_model, torch.zeros(1, 1, dtype=torch.long),
                                   gamma=gamma, draft_temperature=1.0, target_temperature=1.0)
        rows.append(new_ids[0, 1:].tolist())
    return rows


class _PositionModel:
    """Stand-in whose output at sequence position ``prefix − 1 + r`` is ``rows[r]`` (clamped)."""

    def __init__(self, rows, prefix: int):
        self.rows, self.prefix = rows, prefix

    def __call__(self, ids, *args, **kwargs):
        torch = _torch()
        length = ids.shape[1]
        index = (torch.arange(length) - (self.prefix - 1)).clamp(0, self.rows.shape[0] - 1)
        return SimpleNamespace(logits=self.rows[index][None])


def seqspecdecod_standard_step(draft_tokens, draft_probs, target_probs, rng):
    r"""sequential-speculative-decoding's ``seqspecdecod.standard_sd.standard_speculative_step``.

    The step drafts with its own model, so for each row the adapter passes stand-in models (the
    draft's ``i``-th call ends with ``log p[b, i]``, the target's output at position ``i`` is
    ``log q[b, i]``), prompt ``[[0]]``, ``gamma=γ``, both temperatures ``1.0`` (it softmaxes
    ``logits / T``), and replaces ``seqspecdecod.standard_sd.sample_from_probs`` during the call
    so that its first γ calls (the drafting loop) return the harness's drafts; later calls (the
    residual and the bonus) are the package's own ``torch.multinomial`` on torch's global
    generator, seeded from ``rng`` once per call.  One row at a time (B = 1 only).
    """
    draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
    rows = _seqspec_call("seqspecdecod.standard_sd", "standard_speculative_step",
                         draft_tokens, draft_probs, target_probs, rng)
    return _emitted(rows, draft_tokens.shape[1])


def hsd_round(variant: str) -> Verifier:
    r"""sequential-speculative-decoding's hierarchical steps, ``naive_hsd`` or ``capped_hsd``.

    **Not a per-position verifier.**  HSD accepts a prefix by a backward scan over *joint*
    (sequence) ratios and then resamples the rest of the block, so it is lossless only for the
    law of the whole sequence, and a round emits γ tokens after a rejection (``naive_hsd``; it
    resamples the remaining positions, calling both models again) or ``τ + 2`` (``capped_hsd``),
    and γ + 1 after a full accept.  The returned callable takes the same arguments as the
    verifiers and returns ``(B, γ + 1)`` with ``-1`` padding, but the harness must compare the
    law of the emitted *sequence* with the target's, and only with context-free rows: the
    stand-in models return row ``i`` at position ``i`` whatever the history (the naive variant's
    re-calls after a resample see histories the harness never drafted).  Called per row like
    :func:`seqspecdecod_standard_step`, with ``seqspecdecod.naive_hsd.naive_hsd_step`` or
    ``seqspecdecod.capped_hsd.capped_hsd_step``, whose module-level ``sample_from_probs`` the
    adapter replaces for the first γ calls.
    """
    modules = {"naive_hsd": ("seqspecdecod.naive_hsd", "naive_hsd_step"),
               "capped_hsd": ("seqspecdecod.capped_hsd", "capped_hsd_step")}
    if variant not in modules:
        raise ValueError(f"variant must be one of {sorted(modules)}")

    def verifier(draft_tokens, draft_probs, target_probs, rng):
        draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
        torch = _torch()
        # the naive variant re-runs the draft model on new histories: a position-indexed stand-in
        rows = []
        module_name, step_name = modules[variant]
        module = importlib.import_module(module_name)
        real_sample = module.sample_from_probs
        gamma = draft_tokens.shape[1]
        _seed_global(rng)
        for b in range(draft_tokens.shape[0]):
            feed = _feeder([torch.tensor(int(t)) for t in draft_tokens[b]])
            calls = {"n": 0}

            def sample(probs, feed=feed, calls=calls):
                calls["n"] += 1
                return feed() if calls["n"] <= gamma else real_sample(probs)

            draft_rows = np.concatenate([draft_probs[b], target_probs[b, -1:]])
            draft_model = _PositionModel(torch.from_numpy(_log(draft_rows)), prefix=1)
            target_model = _PositionModel(torch.from_numpy(_log(target_probs[b])), prefix=1)
            with _patched(module, "sample_from_probs", sample):
                new_ids, _n, _g = getattr(module, step_name)(
                    draft_model, target_model, torch.zeros(1, 1, dtype=torch.long),
                    gamma=gamma, draft_temperature=1.0, target_temperature=1.0)
            rows.append(new_ids[0, 1:].tolist())
        return _emitted(rows, gamma)

    return verifier


# ---------------------------------------------------------------------------------------------
# mini-infer
# ---------------------------------------------------------------------------------------------

class _TorchWithFedMultinomial:
    """torch, except that the first ``len(tokens)`` ``multinomial`` calls return ``tokens``."""

    def __init__(self, tokens):
        self._torch = _torch()
        self._tokens = tokens
        self._n = 0

    def multinomial(self, *args, **kwargs):
        if self._n < len(self._tokens):
            token = self._tokens[self._n]
            self._n += 1
            return self._torch.tensor([[int(token)]])
        return self._torch.multinomial(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._torch, name)


def mini_infer_speculative_step(draft_tokens, draft_probs, target_probs, rng):
    r"""mini-infer's ``mini_infer.speculative.verifier.speculative_step`` (one row at a time).

    The step drafts with its own model: the adapter passes stand-in models returning
    ``(logits, None)`` (draft: the ``i``-th call ends with ``log p[b, i]``; target: positions
    ``0..γ`` hold ``log q[b]``), ``prefix_ids=[[0]]``, ``k_draft=γ``, ``temperature=1.0`` (it
    softmaxes ``logits / T``; ``T ≤ 1e-5`` is its greedy mode), and replaces the module's global
    ``torch`` by a proxy during the call whose first γ ``multinomial`` calls (the drafting loop)
    return the harness's drafts; ``torch.rand`` and the later ``multinomial`` calls go to torch's
    global generator, seeded from ``rng`` once per call.
    """
    from mini_infer.speculative import verifier as module

    torch = _torch()
    draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
    gamma = draft_tokens.shape[1]
    _seed_global(rng)
    rows = []
    for b in range(draft_tokens.shape[0]):
        draft_model = _DraftRowModel(torch.from_numpy(_log(draft_probs[b])), prefix=1,
                                     tuple_output=True)
        target_model = _RowModel(torch.from_numpy(_log(target_probs[b])), tuple_output=True)
        with _patched(module, "torch", _TorchWithFedMultinomial(draft_tokens[b])):
            tokens, _n = module.speculative_step(target_model, draft_model,
                                                 torch.zeros(1, 1, dtype=torch.long),
                                                 k_draft=gamma, temperature=1.0)
        rows.append(tokens)
    return _emitted(rows, gamma)


# ---------------------------------------------------------------------------------------------
# speculative-decoding (import name speculative_decoding)
# ---------------------------------------------------------------------------------------------

class _StopRound(Exception):
    def __init__(self, out, seq_start_pos):
        super().__init__("one round done")
        self.out, self.seq_start_pos = out, seq_start_pos


class _CachedRowNet:
    """A ``speculative_decoding.Decoder`` stand-in: ``(logits, (kv, None))`` over the sequence.

    ``rows (B, R, V)``; the draft net (``draft=True``) ends with ``rows[:, i]`` on its ``i``-th
    call of the round and signals the end of the round on call ``γ``; the target net's last
    ``R`` positions hold ``rows``.  ``kv`` is a dummy cache with one slot per position.
    """

    def __init__(self, rows, draft: bool, gamma: int):
        self.rows, self.draft, self.gamma, self.calls = rows, draft, gamma, 0

    def __call__(self, out, seq_start_pos=None, cache=None, return_cache=False):
        torch = _torch()
        batch, length = out.shape
        vocab = self.rows.shape[-1]
        if self.draft:
            if self.calls == self.gamma:
                raise _StopRound(out, seq_start_pos)
            logits = torch.zeros(batch, length, vocab, dtype=self.rows.dtype)
            logits[:, -1] = self.rows[:, self.calls]
            self.calls += 1
        else:
            logits = torch.zeros(batch, length, vocab, dtype=self.rows.dtype)
            logits[:, -self.rows.shape[1]:] = self.rows
        kv = torch.zeros(batch, 1, length, 1)
        return logits, (kv, None)


def speculative_decoding_round(filter_thres: float = 0.0) -> Verifier:
    r"""speculative-decoding's ``speculative_decoding.speculative_decoding`` for one round.

    The function is a whole generation loop over two ``Decoder`` networks with KV caches.  The
    adapter passes stand-in networks returning ``(logits (B, L, V), (kv, None))`` (draft: the
    ``i``-th call ends with ``log p[:, i]``; target: its last γ + 1 positions hold ``log q``),
    ``prompt=zeros (B, 1)``, ``seq_len=γ + 2``, ``gamma=γ``, ``temperature=1.0``,
    ``filter_thres``, and replaces the module's ``gumbel_sample`` during the call so that its
    ``i``-th call returns ``d[:, i]`` (the harness's drafts).  The round ends when the loop asks
    the draft network for the next round's first token (or returns); the emitted tokens are the
    right-aligned tokens after the prompt (``out[b, seq_start_pos[b] + 1:]``).  The bookkeeping
    (uniforms ``uniform_``, ``torch.multinomial``) uses torch's global generator, seeded from
    ``rng`` once per call.

    ``filter_thres`` is the package's top-k filter applied to *both* networks' logits:
    ``top_k(logits, thres)`` keeps the ``k = ceil((1 − thres)·V)`` largest logits.  ``0.0`` keeps
    all of them (filter off, lossless); the package's default ``0.9`` keeps 10 %.  With the
    filter on the documented law is the target truncated to its top k and renormalised, *when the
    drafts come from the draft truncated to its top k* (as the package draws them): a draft
    outside the draft's top k has ``q = 0`` there, and ``r > p/0`` (``inf`` or ``nan``) is
    false, so it is always accepted.
    """

    def verifier(draft_tokens, draft_probs, target_probs, rng):
        # the package's __init__ re-exports the function under the submodule's name
        module = importlib.import_module("speculative_decoding.speculative_decoding")
        torch = _torch()
        draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
        batch, gamma = draft_tokens.shape
        _seed_global(rng)
        small = _CachedRowNet(torch.from_numpy(_log(draft_probs)), draft=True, gamma=gamma)
        net = _CachedRowNet(torch.from_numpy(_log(target_probs)), draft=False, gamma=gamma)
        feed = _feeder([torch.from_numpy(draft_tokens[:, i].copy()) for i in range(gamma)])

        def gumbel_sample(t, temperature=1.0, dim=-1):
            return feed()

        prompt = torch.zeros(batch, 1, dtype=torch.long)
        try:
            with _patched(module, "gumbel_sample", gumbel_sample):
                result, _rate = module.speculative_decoding(
                    net, small, prompt, seq_len=gamma + 2, gamma=gamma, temperature=1.0,
                    filter_thres=filter_thres)
        except _StopRound as stop:
            out = stop.out.numpy()
            start = np.asarray(stop.seq_start_pos)
            rows = [out[b, start[b] + 1:].tolist() for b in range(batch)]
        else:  # every row accepted all γ drafts
            rows = result.numpy().tolist()
        return _emitted(rows, gamma)

    return verifier


# ---------------------------------------------------------------------------------------------
# autodraft-sd (import name opt_classic)
# ---------------------------------------------------------------------------------------------

class _DraftCaptured(Exception):
    def __init__(self, ids):
        super().__init__("verify finished")
        self.ids = ids


class _CapturingDrafter:
    def draft(self, ids, *args, **kwargs):
        raise _DraftCaptured(ids)


def autodraft_verify(draft_tokens, draft_probs, target_probs, rng):
    r"""autodraft-sd's ``opt_classic.utils.verify`` on a chain-shaped tree (one row at a time).

    This verifier *matches tokens*: it samples one target token after every tree node
    (``torch.multinomial(softmax(logits_processor(None, logits))[0], 1)``), keeps the deepest
    node whose path agrees with those samples, and emits the target's sample after it.  It never
    reads the draft probabilities.  Called per row as ``verify(input_ids=[[0]],
    logits=log q[b] (1, γ + 1, V), draft=[[0, d_1..d_γ]], position_ids=[0..γ],
    tree_attention_mask=None, past_key_values_data=[zeros (1, 1, γ + 1, 1)],
    current_length_data=[γ + 1], parent=[0, 0, 1, …, γ − 2], model=stand-in, nodes=0,
    threshold=0, max_depth=γ, logits_processor=prepare_logits_processor(temperature=1.0))``
    (the package's own processor list, empty at temperature 1).  After choosing it calls
    ``model.draft(cat(input_ids, accepted, next_token))`` for the next round: the stand-in
    records that argument and stops the call there.  ``verify`` calls
    ``torch.cuda.synchronize()``, which fails on a CPU-only torch; the adapter makes it a no-op
    during the call when CUDA is unavailable.  Randomness: torch's global generator, seeded from
    ``rng`` once per call.
    """
    from opt_classic.utils import prepare_logits_processor, verify

    torch = _torch()
    draft_tokens, draft_probs, target_probs = _shapes(draft_tokens, draft_probs, target_probs)
    gamma = draft_tokens.shape[1]
    _seed_global(rng)
    processor = prepare_logits_processor(temperature=1.0)
    parent = torch.tensor([0, *range(gamma - 1)], dtype=torch.long)
    position_ids = torch.arange(gamma + 1)
    sync = contextlib.nullcontext() if torch.cuda.is_available() else _patched(
        torch.cuda, "synchronize", lambda *a, **k: None)
    rows = []
    with sync:
        for b in range(draft_tokens.shape[0]):
            draft = torch.from_numpy(np.concatenate([[0], draft_tokens[b]]))[None]
            try:
                verify(torch.zeros(1, 1, dtype=torch.long),
                       torch.from_numpy(_log(target_probs[b]))[None], draft, position_ids, None,
                       [torch.zeros(1, 1, gamma + 1, 1)], torch.tensor([gamma + 1]),
                       parent.clone(), _CapturingDrafter(), 0, 0, gamma, processor)
            except _DraftCaptured as done:
                rows.append(done.ids[0, 2:].tolist())  # drop the prompt and the root token
            else:  # pragma: no cover - the stand-in always stops the call
                raise RuntimeError("opt_classic.utils.verify did not call model.draft")
    return _emitted(rows, gamma)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

#: name -> (PyPI package, import probe, factory, law metadata).  ``law``: ``"target"`` (lossless:
#: every emitted token follows q), ``"mixture"`` (drafted positions emit ``w·q + (1 − w)·p``,
#: the bonus position q), ``"topk"`` (:func:`topk_law` of the target with ``filter_thres``; the
#: drafts must come from :func:`topk_law` of p).
CLIENT_SPECS: dict[str, tuple[str, str, Callable[[], Verifier], dict]] = {
    "transformers._speculative_sampling": (
        "transformers", "transformers.generation.utils",
        lambda: transformers_speculative_sampling, {"law": "target"}),
    "transformers._speculative_sampling[ensemble_w=0.5]": (
        "transformers", "transformers.generation.utils",
        lambda: transformers_ensemble(0.5), {"law": "mixture", "weight": 0.5}),
    "flashspec.rejection_step[pytorch]": (
        "flashspec", "flashspec.sampling.rejection",
        lambda: flashspec_rejection_step("pytorch"), {"law": "target"}),
    "flashspec.rejection_step[asm]": (
        "flashspec", "flashspec_asm_kernel",
        lambda: flashspec_rejection_step("asm"), {"law": "target", "backend": "asm"}),
    "flashspec.rejection_sample[pytorch]": (
        "flashspec", "flashspec.sampling.rejection",
        lambda: flashspec_rejection_sample("pytorch"), {"law": "target"}),
    "flashspec.rejection_sample[asm]": (
        "flashspec", "flashspec_asm_kernel",
        lambda: flashspec_rejection_sample("asm"), {"law": "target", "backend": "asm"}),
    "flashspec.rejection_step_onehot": (
        "flashspec", "flashspec.sampling.rejection",
        lambda: flashspec_rejection_step_onehot, {"law": "target", "onehot_drafts": True}),
    "economize.RejectionVerifier.verify": (
        "economize", "economize.decoding.verifiers",
        lambda: economize_single, {"law": "target"}),
    "economize.RejectionVerifier.verify_batch": (
        "economize", "economize.decoding.verifiers",
        lambda: economize_verify_batch, {"law": "target"}),
    "economize.RejectionVerifier.verify_tree[chain]": (
        "economize", "economize.decoding.verifiers",
        lambda: economize_verify_tree_chain, {"law": "target"}),
    "economize.RejectionVerifier.verify_batch[onehot]": (
        "economize", "economize.decoding.verifiers",
        lambda: economize_verify_batch_onehot, {"law": "target", "onehot_drafts": True}),
    "specdec.SpecDecoder.verify": (
        "specdec", "specdec.decoder", lambda: specdec_verify, {"law": "target"}),
    "seqspecdecod.standard_speculative_step": (
        "sequential-speculative-decoding", "seqspecdecod.standard_sd",
        lambda: seqspecdecod_standard_step, {"law": "target"}),
    "mini_infer.speculative_step": (
        "mini-infer", "mini_infer.speculative.verifier",
        lambda: mini_infer_speculative_step, {"law": "target"}),
    "speculative_decoding[filter off]": (
        "speculative-decoding", "speculative_decoding.speculative_decoding",
        lambda: speculative_decoding_round(0.0), {"law": "target"}),
    "speculative_decoding[top-k filter 0.9]": (
        "speculative-decoding", "speculative_decoding.speculative_decoding",
        lambda: speculative_decoding_round(0.9), {"law": "topk", "filter_thres": 0.9}),
    "autodraft.opt_classic.verify": (
        "autodraft-sd", "opt_classic.utils", lambda: autodraft_verify, {"law": "target"}),
}


#: Clients exact only for whole sequences, run by :func:`conformance_report` at
#: ``level="sequence"`` on the context-free pair of :func:`sim.conformance.sequence_suite`
#: (their stand-in models are position-indexed, exact on context-free rows).
SEQUENCE_CLIENTS: dict[str, tuple[str, str, Callable[[], Verifier], dict]] = {
    "seqspecdecod.naive_hsd_step": (
        "sequential-speculative-decoding", "seqspecdecod.naive_hsd",
        lambda: hsd_round("naive_hsd"), {"law": "target"}),
    "seqspecdecod.capped_hsd_step": (
        "sequential-speculative-decoding", "seqspecdecod.capped_hsd",
        lambda: hsd_round("capped_hsd"), {"law": "target"}),
}


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


def _available(name: str) -> bool:
    _package, module, _factory, law = CLIENT_SPECS[name]
    if not _importable(module):
        return False
    if law.get("backend") == "asm":
        if not _importable("flashspec.sampling.rejection"):
            return False
        from flashspec.sampling.rejection import active_residual_backend

        return active_residual_backend() == "asm"
    return True


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def real_clients() -> dict[str, Verifier]:
    """The adapters whose package imports in this environment, ``{name: verifier}``.

    Examples
    --------
    >>> from sim.clients import real_clients
    >>> isinstance(real_clients(), dict)
    True
    """
    return {name: spec[2]() for name, spec in CLIENT_SPECS.items() if _available(name)}


def client_info() -> dict[str, dict]:
    """Metadata of every adapter in :data:`CLIENT_SPECS`, available here or not.

    ``{name: {"package", "version" (None when not installed), "module", "available", "law",
    ...}}``; see :data:`CLIENT_SPECS` for the ``law`` values.  Entries with ``"onehot_drafts"``
    accept only one-hot draft rows.
    """
    info = {}
    for name, (package, module, _factory, law) in CLIENT_SPECS.items():
        info[name] = {"package": package, "version": _version(package), "module": module,
                      "available": _available(name), **law}
    return info


def topk_law(probs: np.ndarray, filter_thres: float) -> np.ndarray:
    """``probs`` truncated to its ``k = ceil((1 − filter_thres)·V)`` largest entries, renormalised.

    The law speculative-decoding's ``top_k(logits, filter_thres)`` filter leaves (ties broken
    towards the lower index here; torch's ``topk`` may break them otherwise).
    """
    probs = np.asarray(probs, dtype=np.float64)
    k = math.ceil((1 - filter_thres) * probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    out = np.zeros_like(probs)
    np.put_along_axis(out, order, np.take_along_axis(probs, order, axis=-1), axis=-1)
    return out / out.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# the conformance report over every client
# ---------------------------------------------------------------------------------------------

def greedy_drafts(pairs):
    """The pairs with one-hot draft rows (the argmax of p, lowest index on ties): greedy
    drafting, for the adapters that accept only one-hot drafts (``onehot_drafts``)."""
    from sim.conformance import SuitePair
    from theory.models import MarkovLM

    out = []
    for pair in pairs:
        p = np.asarray(pair.draft.probs, dtype=np.float64)
        hot = np.zeros(p.shape)
        np.put_along_axis(hot, p.argmax(axis=-1)[..., None], 1.0, axis=-1)
        next_context = None if pair.draft.is_first_order else pair.draft.next_context
        draft = MarkovLM(hot, next_context, pair.draft.start_distribution)
        out.append(SuitePair(pair.name, draft, pair.target, pair.description + ", greedy drafts"))
    return tuple(out)


def _documented(info: dict) -> str:
    law = info["law"]
    if law == "mixture":
        return f"documented lossy: w·q + (1 − w)·p, w = {info['weight']}"
    if law == "topk":
        return (f"documented lossy: the target's top-k, k = ⌈{1 - info['filter_thres']:.1f}·V⌉ "
                "(with drafts from the draft's top-k)")
    return "lossless"


def conformance_report(*, window: int = 3, n_rounds: int | None = None, rng=0, names=None,
                       progress=None) -> list[dict]:
    """Run every importable client of :data:`CLIENT_SPECS` through
    :func:`sim.conformance.check_verifier` (the default suite; greedy drafts for the one-hot
    adapters) and return one row per client: package, version, verifier, documented law,
    passed, p-value, efficiency, min detectable TV, support violations, the closest simple law
    of a failed run, and the seconds it took.

    Parameters
    ----------
    window : int
        γ.
    n_rounds : int, optional
        Rounds per client (default :data:`sim.conformance.DEFAULT_ROUNDS`).
    rng : int
        Seed (the same for every client).
    names : iterable of str, optional
        Only these clients.
    progress : callable, optional
        Called with each finished row.
    """
    import time

    from sim.conformance import DEFAULT_ROUNDS, check_verifier, conformance_suite, sequence_suite

    info = client_info()
    specs = {**CLIENT_SPECS, **SEQUENCE_CLIENTS}
    wanted = list(specs) if names is None else [names] if isinstance(names, str) else list(names)
    unknown = [name for name in wanted if name not in specs]
    if unknown:
        raise ValueError(f"unknown clients {unknown}; known: {sorted(specs)}")
    rows = []
    for name in wanted:
        if name in SEQUENCE_CLIENTS:
            package, module, factory, law = SEQUENCE_CLIENTS[name]
            meta = {"package": package, "version": _version(package), **law}
            verifier = factory() if _importable(module) else None
        else:
            meta = info[name]
            verifier = CLIENT_SPECS[name][2]() if meta["available"] else None
        row = {"client": name, "package": meta["package"], "version": meta["version"],
               "documented": _documented(meta)}
        if verifier is None:
            row.update(passed=None, note="not installed")
            rows.append(row)
            continue
        level, models = "token", None
        if name in SEQUENCE_CLIENTS:
            level, models = "sequence", sequence_suite()[:1]
        elif meta.get("onehot_drafts"):
            models = greedy_drafts(conformance_suite())
        start = time.perf_counter()
        report = check_verifier(verifier, window=window, rng=rng, name=name, level=level,
                                n_rounds=DEFAULT_ROUNDS if n_rounds is None else n_rounds,
                                models=models)
        hints = "; ".join(f"{c.name}: {c.closest_law}" for c in report.checks if c.closest_law)
        row.update(passed=report.passed, p_value=report.p_value, efficiency=report.efficiency,
                   min_detectable_tv=report.min_detectable_tv, rounds=report.rounds,
                   support_violations=sum(c.support_count for c in report.checks),
                   closest_law=hints, seconds=round(time.perf_counter() - start, 1),
                   drafts="greedy" if meta.get("onehot_drafts") else "p", level=level)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def report_markdown(rows: list[dict], *, window: int, seed: int) -> str:
    """The report's rows as a Markdown table (the README's and ``results/conformance.md``)."""
    lines = [f"γ = {window}, seed {seed}, α = 1e-6 per client; the default suite "
             "(sim.conformance.conformance_suite) — with greedy (one-hot) drafts for the one-hot "
             "paths; the hierarchical (HSD) clients on whole sequences of the context-free pair "
             "of sim.conformance.sequence_suite, where min detectable TV is a sequence TV.", "",
             "| client | package | verdict | p-value | efficiency | min detectable TV | "
             "support violations | documented |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        package = f"{row['package']} {row['version'] or ''}".strip()
        if row.get("passed") is None:
            lines.append(f"| `{row['client']}` | {package} | not installed | | | | | "
                         f"{row['documented']} |")
            continue
        verdict = "passed" if row["passed"] else "**failed**"
        if row.get("drafts") == "greedy":
            verdict += " (greedy drafts)"
        if row.get("level") == "sequence":
            verdict += " (whole sequences)"
        lines.append(f"| `{row['client']}` | {package} | {verdict} | {row['p_value']:.3g} | "
                     f"{row['efficiency']:.4f} | {row['min_detectable_tv']:.3f} | "
                     f"{row['support_violations']} | {row['documented']} |")
    hints = [f"- `{row['client']}`: {row['closest_law']}" for row in rows
             if row.get("closest_law")]
    if hints:
        lines += ["", "Closest simple laws of the failed runs (a hint, p-values not corrected "
                      "for the fit):", *hints]
    return "\n".join(lines) + "\n"
