r"""The power of whole-stack conformance: how many generations catch a stack of known law.

When a stack's next-token law r(· | h) after every prefix h is known exactly — a bug whose
mechanism is understood (:func:`sim.conformance.clients.hf_generate.stack_rows`), or a lossy
mode by design — :func:`detection_samples` gives the least ``n_samples`` at which
:func:`sim.conformance.check_generation` catches it with probability ≥ 0.9, as
:func:`sim.conformance.detection_rounds` does for verifiers: the stack's expected visits of
every (position, prefix) cell of the target's law (mass pushed through r along the tree;
mass on tokens the target excludes leaves the tree and is counted for the support check), the
harness's bins formed at those visits, the pooled Pearson statistic approximately noncentral
χ² (noncentrality Σ N χ²(merged r ‖ merged q)), the support check approximately Poisson, and
P(caught) = 1 − Πₖ (1 − P(prompt k catches it)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.conformance.power import _merged_noncentrality
from sim.conformance.report import POWER
from sim.conformance.verdicts import least_rounds
from sim.stats import DEFAULT_ALPHA, chi2_power


@dataclass(frozen=True)
class StackLaw:
    """A stack's exact law on one prompt's target tree: the visit probability of every
    (position, context) (``context_marginals``), its next-token law there (``conditional``)
    and the expected tokens per generation the target excludes (``zero_target_tokens``)."""

    context_marginals: np.ndarray
    conditional: np.ndarray
    zero_target_tokens: float


def stack_law(law, rows: np.ndarray) -> StackLaw:
    """Push a stack's rows (S, V) — its next-token law at every context of the prompt's
    :class:`~sim.conformance.generation.PromptLaw` — through the target's tree.

    Parameters
    ----------
    law : PromptLaw
        The target's law of the prompt (from :func:`sim.conformance.prefix_model` or a
        MarkovLM target).
    rows : array (S, V) or (T, S, V)
        The stack's next-token law per context (per position and context).

    Returns
    -------
    StackLaw
    """
    model = law.model
    q = np.asarray(model.probs, dtype=np.float64)
    rows = np.broadcast_to(np.asarray(rows, dtype=np.float64), q.shape)
    following = model.next_context
    mass = np.zeros((model.horizon, model.n_contexts))
    mass[0] = model.start_distribution
    excluded = 0.0
    for n in range(model.horizon):
        inside = rows[n] * (q[n] > 0) * mass[n][:, None]
        excluded += float((rows[n] * (q[n] == 0) * mass[n][:, None]).sum())
        if n + 1 < model.horizon:
            np.add.at(mass[n + 1], following.ravel(), inside.ravel())
            if law.sink is not None:
                mass[n + 1, law.sink] = 0.0
    return StackLaw(mass, np.array(rows), excluded)


def detection_samples(laws, stack_laws, *, alpha: float = DEFAULT_ALPHA,
                      power: float = POWER) -> int | None:
    """The least ``n_samples`` (generations per prompt, to 0.1%) at which
    :func:`~sim.conformance.check_generation` over these prompts catches the stack with
    probability ≥ ``power`` (module doc); None when no size does (the stack follows the target).

    Parameters
    ----------
    laws : list of PromptLaw
        The target's law per prompt.
    stack_laws : list of StackLaw
        The stack's law per prompt (:func:`stack_law`).
    alpha : float
        The report's level (each prompt at alpha / K).
    power : float
        Required probability of catching the stack.

    Returns
    -------
    int or None
    """
    level = alpha / len(laws)

    def caught(n: int) -> float:
        miss = 1.0
        for law, stack in zip(laws, stack_laws, strict=True):
            if stack.zero_target_tokens > 0:
                miss *= math.exp(-n * stack.zero_target_tokens)
            noncentrality, dof = _merged_noncentrality(stack, law.model, n)
            miss *= 1 - chi2_power(dof, noncentrality, level)
        return 1 - miss

    return least_rounds(lambda n: caught(n) >= power, 1, limit=10 ** 9)
