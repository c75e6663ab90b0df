"""Re-export of :mod:`sim.conformance.clients`, kept for the public path ``sim.clients``.

The adapters to real PyPI speculative-decoding verifiers live in :mod:`sim.conformance.clients`;
``from sim.clients import real_clients, transformers_speculative_sampling`` (and every other
name of its ``__all__``) keeps working from here.

Examples
--------
>>> import sim.clients
>>> import sim.conformance.clients
>>> sim.clients.real_clients is sim.conformance.clients.real_clients
True
"""

from sim.conformance.clients import (
    CLIENT_SPECS,
    SEQUENCE_CLIENTS,
    autodraft_verify,
    client_info,
    conformance_report,
    economize_single,
    economize_verify_batch,
    economize_verify_batch_onehot,
    economize_verify_tree_chain,
    flashspec_rejection_sample,
    flashspec_rejection_step,
    flashspec_rejection_step_onehot,
    greedy_drafts,
    hsd_round,
    mini_infer_speculative_step,
    real_clients,
    report_markdown,
    seqspecdecod_standard_step,
    specdec_verify,
    speculative_decoding_round,
    topk_law,
    transformers_ensemble,
    transformers_speculative_sampling,
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
