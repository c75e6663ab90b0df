r"""Hugging Face ``generate(..., assistant_model=draft, do_sample=True)`` in the generate
convention, the law it must follow, and three stack-level bugs reproduced by patching it.

**What transformers does** (``generation/utils.py::_assisted_decoding``,
``candidate_generator.py::AssistedCandidateGenerator``, ``_speculative_sampling``).  The
logits processors of the call (with ``do_sample=True``: ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``, in this order) are built once.  Each round the
candidate generator runs the assistant's own ``generate`` with a copy of the call's generation
config *and* that processor list, and returns the drafts with the assistant's *processed*
scores as ``candidate_logits``; the target's logits at every drafted position and the one after
are processed by the same list; ``_speculative_sampling`` softmaxes both, accepts draft x with
probability min(1, q′(x)/p′(x)) and resamples from [q′ − p′]₊ (or takes the bonus from q′).
The stack must therefore follow the target's **processed law**: after every prefix h,
q′(· | h) = softmax(processors(ℓ_target(h))) (:func:`processed_probabilities` restates the
processors; tested against transformers' own on random logits).  The draft's law does not
matter for losslessness, only that ``candidate_logits`` is the law the drafts were drawn from.

Found while reading it: the assistant's ``generate`` merges the passed processor list with the
warpers its own (copied) config creates, so temperature is applied *twice* to the draft
(ℓ/τ/τ; top-k and top-p are idempotent).  That is harmless for the output law — the drafts are
sampled from the same doubly-tempered scores that are reported — and costs acceptance only;
:func:`assistant_probabilities` models it.

**Ensemble** (``assistant_ensemble_weight = w``, transformers' "static ensemble
verification"): acceptance min(1, v/p′) with v = w·q′ + (1 − w)·p′ and the residual
[q′ − p′]₊.  At a drafted position the emitted law is then exactly v (accepted mass
Σ min(p′, v), residual mass w·TV(p′, q′) spread as [q′ − p′]₊/TV); the bonus token is q′.
Lossy by design: :func:`sim.conformance.check_generation` must fail it and name the mixture.

**Bugs** (:data:`STACK_BUGS`, patched in for the length of a call by :func:`hf_generator`):

* ``"raw_draft_logits"`` — drafts sampled from the processed assistant scores, but the raw
  assistant logits handed to the verifier as ``candidate_logits`` (a real transformers bug in
  the candidate generator with top-k/top-p).
* ``"greedy_draft"`` — the assistant forced greedy (argmax) while its processed scores are
  reported as the law it sampled from (a real transformers bug).
* ``"one_sided_temperature"`` — the target's logits processed without the temperature the
  draft used (a real vLLM bug: target probabilities with default temperature): the stack then
  follows the untempered target exactly.

With the assistant drafting every position but the last (the adapter's default: ``
num_assistant_tokens = length``, no confidence stopping) each bug's emitted law at a prefix is
a closed form of the rows there (:func:`stack_rows`), from which
:func:`sim.conformance.stack_power.detection_samples` gives the size that catches it.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from sim.conformance.clients.common import _patched, _seed, _torch
from sim.conformance.clients.tiny_models import ProcessedLaw, processed_probabilities

#: The stack-level bugs :func:`hf_generator` can patch in.
STACK_BUGS = {
    "raw_draft_logits": "drafts sampled from processed assistant scores, raw assistant logits "
                        "reported to the verifier",
    "greedy_draft": "assistant forced greedy, its processed scores reported as sampled",
    "one_sided_temperature": "temperature applied to the draft only, not to the target's "
                             "verification logits",
}


def _raw_draft_logits(self, generation_args):
    """AssistedCandidateGenerator._generate_candidates, reporting raw logits."""
    torch = _torch()
    self.generation_config.output_logits = True
    output = self.assistant_model.generate(**generation_args, **self.assistant_kwargs)
    self.assistant_kwargs["cache"] = output.cache
    return output.sequences, torch.stack(output.logits, dim=1)


def _greedy_draft(self, generation_args):
    """AssistedCandidateGenerator._generate_candidates with a greedy assistant."""
    torch = _torch()
    config = copy.deepcopy(generation_args["generation_config"])
    config.do_sample = False
    output = self.assistant_model.generate(**{**generation_args, "generation_config": config},
                                           **self.assistant_kwargs)
    self.assistant_kwargs["cache"] = output.cache
    return output.sequences, torch.stack(output.scores, dim=1)


def _one_sided(original):
    def assisted(self, input_ids, logits_processor=None, *args, **kwargs):
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
        )

        target_side = LogitsProcessorList(
            [p for p in logits_processor if not isinstance(p, TemperatureLogitsWarper)])
        build = self._get_candidate_generator

        def full_list(**options):  # the draft keeps the temperature
            return build(**{**options, "logits_processor": logits_processor})

        self._get_candidate_generator = full_list
        try:
            return original(self, input_ids, target_side, *args, **kwargs)
        finally:
            del self._get_candidate_generator

    return assisted


@contextlib.contextmanager
def _bug(model, bug: str | None):
    if bug is None:
        yield
        return
    from transformers.generation.candidate_generator import AssistedCandidateGenerator

    if bug == "raw_draft_logits":
        with _patched(AssistedCandidateGenerator, "_generate_candidates", _raw_draft_logits):
            yield
    elif bug == "greedy_draft":
        with _patched(AssistedCandidateGenerator, "_generate_candidates", _greedy_draft):
            yield
    else:
        cls = type(model)
        with _patched(cls, "_assisted_decoding", _one_sided(cls._assisted_decoding)):
            yield


def hf_generator(target, draft, *, length: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 ensemble_weight: float | None = None, bug: str | None = None,
                 assistant_tokens: int | None = None,
                 confidence_threshold: float | None = None):
    """``target.generate(prompt, assistant_model=draft, do_sample=True, …)`` in the generate
    convention of :func:`sim.conformance.check_generation`.

    Each call seeds torch's global generator from ``rng`` (transformers samples with
    ``torch.multinomial`` and ``torch.rand_like`` on it) and returns the ``length`` generated
    tokens (``max_new_tokens = length``; the models have no EOS).

    Parameters
    ----------
    target, draft : transformers causal LMs
        Sharing a vocabulary (e.g. :func:`~sim.conformance.clients.tiny_models.tiny_pair`).
    length : int
        Generated tokens.
    temperature, top_k, top_p : optional
        Sampling processors (None: transformers' defaults — ``top_k = 50``, a no-op for
        V ≤ 50).
    ensemble_weight : float in (0, 1), optional
        ``assistant_ensemble_weight`` (lossy).
    bug : key of :data:`STACK_BUGS`, optional
        Patch the stack with that bug for the length of each call.
    assistant_tokens : int, optional
        The assistant's ``num_assistant_tokens`` (default ``length``: it drafts every
        position but the last, the structure :func:`stack_rows` assumes).
    confidence_threshold : float, optional
        The assistant's ``assistant_confidence_threshold`` (default None: no early stop;
        transformers' own default is 0.4).

    Returns
    -------
    callable
        ``generate(prompt, rng) -> tokens``.
    """
    if bug is not None and bug not in STACK_BUGS:
        raise ValueError(f"bug must be None or one of {sorted(STACK_BUGS)}; got {bug!r}")
    options = {"do_sample": True, "max_new_tokens": int(length), "temperature": temperature}
    if top_k is not None:
        options["top_k"] = top_k
    if top_p is not None:
        options["top_p"] = top_p
    if ensemble_weight is not None:
        options["assistant_ensemble_weight"] = ensemble_weight
    settings = copy.deepcopy(draft.generation_config)
    settings.num_assistant_tokens = int(length if assistant_tokens is None else assistant_tokens)
    settings.num_assistant_tokens_schedule = "constant"
    settings.assistant_confidence_threshold = confidence_threshold

    def generate(prompt, rng):
        torch = _torch()
        torch.manual_seed(_seed(rng))
        ids = torch.tensor([list(prompt)], dtype=torch.long)
        with _bug(target, bug), _patched(draft, "generation_config", settings), \
                torch.no_grad():
            out = target.generate(ids, attention_mask=torch.ones_like(ids),
                                  assistant_model=draft, **options)
        return out[0, ids.shape[1]:].numpy()

    parts = [f"τ={temperature:g}" if temperature != 1.0 else "",
             f"top_k={top_k}" if top_k is not None else "",
             f"top_p={top_p:g}" if top_p is not None else "",
             f"ensemble w={ensemble_weight:g}" if ensemble_weight is not None else "",
             bug or ""]
    generate.__qualname__ = "transformers generate(assistant_model)" + (
        f" [{', '.join(p for p in parts if p)}]" if any(parts) else "")
    return generate


def assistant_probabilities(logits, *, temperature: float = 1.0, top_k: int | None = None,
                            top_p: float | None = None) -> np.ndarray:
    """The law the assistant samples its drafts from in stock transformers: the processors
    applied twice (the passed list, then the warpers of its copied config; module doc).

    Parameters
    ----------
    logits : array (B, V)
        The assistant's raw float32 logits.
    temperature, top_k, top_p :
        The ``generate`` settings.
    """
    once = _processed_logits(logits, temperature, top_k, top_p)
    return processed_probabilities(once, temperature=temperature, top_k=top_k, top_p=top_p)


def _processed_logits(logits, temperature, top_k, top_p) -> np.ndarray:
    """The processed scores (log of the processed law, up to a constant; −∞ where removed)."""
    probabilities = processed_probabilities(logits, temperature=temperature, top_k=top_k,
                                            top_p=top_p)
    with np.errstate(divide="ignore"):
        return np.log(probabilities).astype(np.float32)


def stack_rows(target, draft, prefixes, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, ensemble_weight: float | None = None,
               bug: str | None = None, last: np.ndarray) -> np.ndarray:
    r"""The exact next-token law (B, V) the stack (:func:`hf_generator` with these settings, its
    default assistant) emits after each prefix, from the rows there (module doc): q′ the
    target's processed law, p′ the assistant's (:func:`assistant_probabilities`), p the
    assistant's raw softmax, r(x) = a(x)·d(x) + (1 − Σ a·d)·[q′ − p̂]₊/Σ[q′ − p̂]₊ for drafts
    from d accepted with a = min(1, q′/p̂) against the reported law p̂:

    * stock: q′;  ensemble: w·q′ + (1 − w)·p′ at drafted positions;
    * ``raw_draft_logits``: d = p′, p̂ = p;  ``greedy_draft``: d = δ(argmax), p̂ = the once-
      processed assistant law;  ``one_sided_temperature``: the untempered processed target.

    At the last position (``last[i]`` true: a bonus or zero-draft round) every setting emits
    the target's row as the stack processes it.

    Parameters
    ----------
    target, draft : transformers causal LMs
    prefixes : list of lists of int
        Full prefixes (prompt and generated tokens).
    temperature, top_k, top_p, ensemble_weight, bug :
        As for :func:`hf_generator`.
    last : bool array (B,)
        Whether the prefix is followed by the generation's last position.

    Returns
    -------
    array (B, V)
    """
    settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    target_logits = ProcessedLaw(target).logits(prefixes)
    draft_logits = ProcessedLaw(draft).logits(prefixes)
    if bug == "one_sided_temperature":
        return processed_probabilities(target_logits, top_k=top_k, top_p=top_p)
    q = processed_probabilities(target_logits, **settings)
    if bug is None and ensemble_weight is None:
        return q
    if ensemble_weight is not None:
        rows = ensemble_weight * q + (1 - ensemble_weight) * assistant_probabilities(
            draft_logits, **settings)
    elif bug == "raw_draft_logits":
        rows = _verified(q, assistant_probabilities(draft_logits, **settings),
                         processed_probabilities(draft_logits))
    else:
        reported = processed_probabilities(draft_logits, **settings)
        drafted = np.eye(q.shape[1])[np.argmax(draft_logits, axis=1)]
        rows = _verified(q, drafted, reported)
    return np.where(np.asarray(last)[:, None], q, rows)


def _verified(q, drafted, reported) -> np.ndarray:
    """Emitted law of one speculative step: drafts from ``drafted``, verified against
    ``reported`` (acceptance min(1, q/reported), residual [q − reported]₊)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        accept = np.where(reported > 0, np.minimum(1.0, q / reported), 1.0)
    kept = drafted * accept
    residual = np.maximum(q - reported, 0.0)
    residual = residual / residual.sum(axis=1, keepdims=True)
    return kept + (1 - kept.sum(axis=1, keepdims=True)) * residual
