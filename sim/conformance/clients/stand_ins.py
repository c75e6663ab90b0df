r"""Adapters to packages that run a whole round with their own models: specdec,
sequential-speculative-decoding (``seqspecdecod``, including its hierarchical HSD steps),
mini-infer, speculative-decoding and autodraft-sd (``opt_classic``).

These packages draw the drafts themselves and call their models, so each adapter hands them
stand-in models that return the harness's rows by position (row ``i`` is the law at the
``i``-th drafted position given the harness's drafts) and, for the length of the call, replaces
the package's draft sampler by one that returns the harness's drafts (``_feeder``).  The
patches are temporary and not thread-safe; every adapter is documented with the exact call it
makes.  Each package is imported inside its adapter.
"""

from __future__ import annotations

import contextlib
import importlib
from types import SimpleNamespace

import numpy as np

from sim.conformance.clients.common import (
    Verifier,
    _emitted,
    _log,
    _patched,
    _seed_global,
    _shapes,
    _torch,
)


def _feeder(tokens):
    """A stand-in for a package's draft sampler: call ``i`` returns ``tokens[i]``."""
    state = {"i": 0}

    def next_token():
        i = state["i"]
        state["i"] += 1
        return tokens[i]

    return next_token


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
