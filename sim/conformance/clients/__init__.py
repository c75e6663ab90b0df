r"""Adapters that run real PyPI speculative-decoding verifiers in the simulator's convention.

Every adapter is a verifier ``verifier(draft_tokens, draft_probs, target_probs, rng) -> emitted``:

* ``draft_tokens`` int64 ``(B, γ)``; ``draft_probs`` float64 ``(B, γ, V)``, row ``i`` the law
  ``draft_tokens[:, i]`` was drawn from (given the earlier drafts); ``target_probs`` float64
  ``(B, γ + 1, V)``, the target at each drafted position and at the bonus position (row ``γ``);
  ``rng`` a :class:`numpy.random.Generator`.
* returns int64 ``(B, γ + 1)``: the tokens emitted this round (accepted drafts, then one
  correction or bonus token), ``-1`` after the last one.

Each package is imported lazily, inside its adapter, so the package imports without any of them;
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

**Modules.** :mod:`~sim.conformance.clients.common` (shared argument checks, seeding and
emitted arrays), :mod:`~sim.conformance.clients.direct` (transformers, flashspec, economize:
verifiers called on the rows), :mod:`~sim.conformance.clients.stand_ins` (specdec,
sequential-speculative-decoding, mini-infer, speculative-decoding, autodraft-sd: whole rounds
driven through stand-in models), :mod:`~sim.conformance.clients.registry` (:data:`CLIENT_SPECS`,
:func:`real_clients`, :func:`conformance_report`, :func:`report_markdown`).  Every name of
``__all__`` is importable from here and from the older path ``sim.clients``.
"""

from sim.conformance.clients.direct import (
    economize_single,
    economize_verify_batch,
    economize_verify_batch_onehot,
    economize_verify_tree_chain,
    flashspec_rejection_sample,
    flashspec_rejection_step,
    flashspec_rejection_step_onehot,
    transformers_ensemble,
    transformers_speculative_sampling,
)
from sim.conformance.clients.registry import (
    CLIENT_SPECS,
    SEQUENCE_CLIENTS,
    client_info,
    conformance_report,
    greedy_drafts,
    real_clients,
    report_markdown,
    topk_law,
)
from sim.conformance.clients.stand_ins import (
    autodraft_verify,
    hsd_round,
    mini_infer_speculative_step,
    seqspecdecod_standard_step,
    specdec_verify,
    speculative_decoding_round,
)

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
