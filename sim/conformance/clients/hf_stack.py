r"""The whole-stack conformance run of Hugging Face assisted generation on the tiny pair.

:func:`stack_runs` lists what is run: stock transformers at several processor settings (must
pass), the ensemble mode (lossy by design: must fail, with the mixture named) and the three
stack-level bugs of :mod:`~sim.conformance.clients.hf_generate` (must fail, located).
:func:`detection_table` computes, from each failing stack's exact law
(:func:`~sim.conformance.clients.hf_generate.stack_rows`), the generations per prompt that
catch it with power 0.9 (:func:`sim.conformance.stack_power.detection_samples`) — the README's
table, recomputed by a test.  :func:`run` runs every entry through
:func:`sim.conformance.check_generation`; ``python -m sim.conformance.clients.hf_stack``
(``make stack-conformance``) prints the Markdown of both and writes it to
``results/stack.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.conformance.clients.hf_generate import STACK_BUGS, hf_generator, stack_rows
from sim.conformance.clients.tiny_models import ProcessedLaw, TinySettings, tiny_pair
from sim.conformance.generation import DEFAULT_SAMPLES, check_generation, prefix_model
from sim.conformance.stack_power import detection_samples, stack_law

#: Prompts of the run (BOS = 7, then a chain token) and tokens generated after each.
PROMPTS = ([7, 2],)
LENGTH = 3


@dataclass(frozen=True)
class StackRun:
    """One stack of the run: its settings, whether it must pass, and what it reproduces."""

    name: str
    settings: dict = field(default_factory=dict)
    bug: str | None = None
    must_pass: bool = True
    description: str = ""

    @property
    def options(self) -> dict:
        return {**self.settings, "bug": self.bug}


def stack_runs() -> list[StackRun]:
    """Stock transformers at four processor settings, the ensemble mode, three bugs."""
    return [
        StackRun("stock, τ = 1", {}),
        StackRun("stock, τ = 0.7", {"temperature": 0.7}),
        StackRun("stock, top-k = 3", {"top_k": 3}),
        StackRun("stock, τ = 0.9, top-p = 0.9", {"temperature": 0.9, "top_p": 0.9}),
        StackRun("ensemble, w = 0.5", {"ensemble_weight": 0.5}, must_pass=False,
                 description="assistant_ensemble_weight: lossy by design (w·q′ + (1 − w)·p′)"),
        StackRun("raw draft logits, top-k = 2", {"top_k": 2}, "raw_draft_logits", False,
                 STACK_BUGS["raw_draft_logits"] + " (transformers, candidate generator)"),
        StackRun("greedy draft", {}, "greedy_draft", False,
                 STACK_BUGS["greedy_draft"] + " (transformers)"),
        StackRun("one-sided temperature, τ = 0.7", {"temperature": 0.7},
                 "one_sided_temperature", False,
                 STACK_BUGS["one_sided_temperature"] + " (vLLM)"),
    ]


def target_laws(target, entry: StackRun, prompts=PROMPTS, length: int = LENGTH):
    """The exact processed target law of each prompt (the law every entry must follow)."""
    settings = {k: v for k, v in entry.settings.items() if k != "ensemble_weight"}
    law = ProcessedLaw(target, **settings)
    return law, [prefix_model(law, prompt, length) for prompt in prompts]


def detection_size(target, draft, entry: StackRun, prompts=PROMPTS,
                   length: int = LENGTH) -> int | None:
    """Generations per prompt that catch ``entry`` with power 0.9 (None: it follows the
    target law), from its exact law."""
    _, laws = target_laws(target, entry, prompts, length)
    stacks = []
    for law in laws:
        nodes = law.labels[:-1]
        prefixes = [list(law.prompt) + list(p) for p in nodes]
        last = np.array([len(p) == length - 1 for p in nodes])
        settings = {k: v for k, v in entry.options.items()}
        rows = stack_rows(target, draft, prefixes, last=last, **settings)
        rows = np.vstack([rows, np.full((1, rows.shape[1]), 1 / rows.shape[1])])
        stacks.append(stack_law(law, rows))
    return detection_samples(laws, stacks)


def detection_table(target, draft, prompts=PROMPTS, length: int = LENGTH) -> str:
    """The README's table: every failing entry, its mechanism and the generations per prompt
    that catch it with power 0.9 (from its exact law)."""
    lines = ["| stack-level failure | what the stack does | generations per prompt for power "
             "0.9 |", "|---|---|---|"]
    for entry in stack_runs():
        if entry.must_pass:
            continue
        size = detection_size(target, draft, entry, prompts, length)
        lines.append(f"| {entry.name} | {entry.description} | "
                     f"{'never' if size is None else f'{size:,}'} |")
    return "\n".join(lines)


def run(n_samples: int = DEFAULT_SAMPLES, *, settings: TinySettings | None = None,
        cache_dir=None, entries=None, rng: int = 0, prompts=PROMPTS, length: int = LENGTH):
    """Every entry through :func:`check_generation` (n_samples generations per prompt):
    list of (entry, report)."""
    target, draft = tiny_pair(settings, cache_dir=cache_dir)
    results = []
    for entry in stack_runs() if entries is None else entries:
        law, _ = target_laws(target, entry, prompts, length)
        draft_law = ProcessedLaw(draft, **{k: v for k, v in entry.settings.items()
                                           if k != "ensemble_weight"})
        generate = hf_generator(target, draft, length=length, **entry.options)
        report = check_generation(generate, law, prompts=list(prompts), length=length,
                                  n_samples=n_samples, rng=rng, draft=draft_law,
                                  name=entry.name)
        results.append((entry, report))
    return results


def results_markdown(results) -> str:
    """The run's table: verdict, p-value, detectable TV, time and where each failure is."""
    lines = ["| stack | expected | verdict | p-value | detects TV | time | where / mixture |",
             "|---|---|---|---|---|---|---|"]
    for entry, report in results:
        where = ""
        if report.deviations:
            cell, label = report.deviations[0], report.where[0]
            where = (f"{cell.pair}, position {cell.position} {label}, token {cell.token}: "
                     f"{cell.observed:.3f} vs {cell.expected:.3f}")
        fits = [fit for c in report.checks for fit in re.findall(
            r"position (\d+): w·q \+ \(1 − w\)·p with w = ([0-9.]+)", c.closest_law)]
        if fits:
            where += "; w·q + (1 − w)·p fits with " + ", ".join(
                f"w = {w} at position {n}" for n, w in fits)
        lines.append(f"| {entry.name} | {'pass' if entry.must_pass else 'fail'} | "
                     f"{report.verdict} | {report.p_value:.3g} | {report.detectable_tv:.3f} | "
                     f"{report.seconds:.0f} s | {where} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    results = run(args.samples)
    target, draft = tiny_pair()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n\n".join([
        f"transformers {transformers.__version__}, torch {torch.__version__}, Python "
        f"{platform.python_version()}; {args.samples} generations per prompt, prompts "
        f"{list(PROMPTS)}, {LENGTH} tokens; {time.perf_counter() - began:.0f} s with 1 torch "
        f"thread, load average {load:.1f} on {os.cpu_count()} cores",
        results_markdown(results), detection_table(target, draft)])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "stack.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    wrong = [e.name for e, r in results if (r.verdict == "passed") != e.must_pass
             or (not e.must_pass and r.verdict != "failed")]
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
