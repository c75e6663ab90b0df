"""The registry of real clients and the conformance report that runs them all.

:data:`CLIENT_SPECS` names every adapter (PyPI package, import probe, factory, the law it is
documented to produce); :data:`SEQUENCE_CLIENTS` those exact only for whole sequences.
:func:`real_clients` returns the adapters whose package imports here, :func:`client_info` what
each is.  :func:`conformance_report` runs every importable client through
:func:`sim.conformance.check_verifier` (greedy drafts, :func:`greedy_drafts`, for the one-hot
paths; whole sequences for the hierarchical clients) and :func:`report_markdown` writes its rows
as the README's table.  :func:`topk_law` is the law speculative-decoding's top-k filter leaves.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from importlib import metadata

import numpy as np

from sim.conformance.clients.common import Verifier
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
from sim.conformance.clients.stand_ins import (
    autodraft_verify,
    hsd_round,
    mini_infer_speculative_step,
    seqspecdecod_standard_step,
    specdec_verify,
    speculative_decoding_round,
)
from sim.conformance.harness import DEFAULT_ROUNDS, check_verifier
from sim.conformance.suites import SuitePair, conformance_suite, sequence_suite
from theory.models import MarkovLM

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
    out = []
    for pair in pairs:
        p = np.asarray(pair.draft.probs, dtype=np.float64)
        hot = np.zeros(p.shape)
        np.put_along_axis(hot, p.argmax(axis=-1)[..., None], 1.0, axis=-1)
        next_context = None if pair.draft.is_first_order else pair.draft.next_context
        draft = MarkovLM(hot, next_context, pair.draft.start_distribution)
        out.append(SuitePair(pair.name, draft, pair.target, pair.description + ", greedy drafts",
                             powered=pair.powered))
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
    verdict ("passed", "failed", "inconclusive"; ``passed`` is true only for "passed"), the
    rounds needed of an inconclusive run, p-value, efficiency, min detectable TV, support
    violations, the closest simple law of a failed run, and the seconds it took.

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
        row.update(passed=report.passed, verdict=report.verdict,
                   rounds_needed=report.rounds_needed, p_value=report.p_value,
                   efficiency=report.efficiency,
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
        verdict = row.get("verdict") or ("passed" if row["passed"] else "failed")
        verdict = "**failed**" if verdict == "failed" else verdict
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
