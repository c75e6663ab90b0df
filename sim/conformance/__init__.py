r"""Conformance harness: test any speculative-decoding verifier for losslessness and efficiency.

**The convention** (framework-neutral, batched).  A verifier is a callable

``verifier(draft_tokens, draft_probs, target_probs, rng) -> emitted``

* ``draft_tokens`` int64 (B, γ): the drafted tokens of B independent rounds;
* ``draft_probs`` float64 (B, γ, V): row i is the law ``draft_tokens[:, i]`` was drawn from
  (given the drafts before it);
* ``target_probs`` float64 (B, γ + 1, V): the target q at each drafted position and at the
  bonus position (row γ);
* ``rng``: a numpy ``Generator`` (a verifier with its own RNG should seed it from ``rng``, so
  that a run is reproducible from the harness's seed);
* returns int64 (B, γ + 1): the tokens the round emits — the accepted drafts, then one token
  (a correction, or the bonus when every draft is accepted) — and −1 after the last one.

Rows may hold exact zeros (in p or q), one-hot rows and p = q.  Torch verifiers are wrapped by
:func:`torch_verifier`; Hugging Face transformers' ``_speculative_sampling`` by
:func:`sim.clients.transformers_speculative_sampling`.

**What the harness does** (:func:`check_verifier`).  Over a suite of Markov-chain pairs
(:func:`conformance_suite`: non-stationary, zeros and one-hot rows, second-order contexts,
context-free) it runs whole generations of T tokens: each round drafts k = min(γ, T − n)
tokens from p (the package's horizon convention: a round that drafts to the horizon has no
bonus position, and a token the verifier emits there is dropped), calls the verifier on the
batch of all unfinished generations with the same k, and advances every generation by what it
emitted.  A lossless verifier emits sequences with the target's law, so given the prefix, the
token at position n in context s is a draw from qₙ(·|s): the counts per (n, s) are tested by
Pearson's χ² pooled over cells (:func:`sim.stats.cells_check`, the Markov-chain transition
test), one test per pair at level α/K (Bonferroni over K pairs: the whole report has
false-positive level ≤ α, up to the χ² approximation of Pearson's statistic; the calibration
test checks it at 0.05).  A token of target probability 0 fails at once (the **support
check**, reported with its position, context and token).  Conditioning on round offsets is
deliberately *not* done: lossless verifiers such as block verification are exact only for
the sequence, not per offset.  Two assumptions of the test, stated in the convention: the B
rounds of one call are independent (a verifier that shares one uniform across the rows of a
batch makes the counts overdispersed and fails), and at the horizon (no bonus position) the
bonus row is a placeholder (uniform) whose token is dropped — a verifier whose earlier
tokens depend on the bonus row is tested against what it does with the placeholder.

**Efficiency**: accepted draft tokens per round (the common prefix of the emitted tokens and the
drafts, at most the number emitted − 1) summed over rounds, divided by the exact expected
number under standard verification from the same round starts, with drafts from p
(:func:`theory.conformance.expected_accepted`; Theorem 2 makes it the token-wise optimum).
Block verification, which is not token-wise, can exceed 1; so can a lossy verifier.

**Power**: ``min_detectable_tv`` is the per-position TV δ that the run detects with probability
≥ 0.9: a deviation of TV δ at every tested position adds at least 4δ² per token to the
statistic's noncentrality (χ² ≥ 4 TV² by Cauchy–Schwarz), so δ = √(λ*/(4N)) with λ* from
:func:`sim.stats.detectable_noncentrality` and N the tokens in tested cells (the best pair).
δ is a TV between the *binned* laws — the bins the run formed, single tokens wherever a
token expects ≥ 5 counts; a deviation hidden inside a merged bin of rare tokens is not
covered (the support check still catches mass on excluded tokens).
:func:`detection_rounds` gives, for the exactly known law of a bug
(:data:`theory.conformance.FAILURE_MODES`), the rounds needed to catch it with power 0.9
(:func:`detection_power`, the power at a given size).  Precision bugs — a ratio test in
bfloat16 or float16, a 10⁻⁶ floor on the draft rows — move the default suite's law by too little
to be caught at its size; :func:`precision_suite` is built so that they are
(:func:`precision_table`).

**Verdicts** (:mod:`~sim.conformance.verdicts`): ``"failed"`` when a pair's test rejects or
the support check fires; otherwise ``"inconclusive"`` when some pair cannot detect a
per-position TV of ``min_tv`` (default 0.05) with power 0.9 at this size — its *design* power,
from the target's expected visits, so the line is deterministic given the sizes — stating the
rounds needed; otherwise ``"passed"``.  ``report.passed`` is true only for ``"passed"``.

**Modules.** :mod:`~sim.conformance.suites` (the Markov-chain pairs: default, precision,
sequence), :mod:`~sim.conformance.rounds` (the round runner: whole generations through a
verifier, output checks), :mod:`~sim.conformance.harness` (:func:`check_verifier`,
:func:`assert_lossless`, the token- and sequence-level tests), :mod:`~sim.conformance.report`
(:class:`PairCheck`, :class:`ConformanceReport`), :mod:`~sim.conformance.verdicts` (design
power, verdicts, rounds needed), :mod:`~sim.conformance.deviations` (where a failed pair
deviates: cells with Wilson intervals, a bias-corrected TV per position with a bootstrap
interval), :mod:`~sim.conformance.calls` (calling an untrusted verifier: any exception but
Ctrl-C is a :class:`VerifierError`, ``timeout=`` per call, bounded torch/BLAS threads),
:mod:`~sim.conformance.verifiers` (reference, rule, failure and torch verifiers),
:mod:`~sim.conformance.power` (detection sizes and powers, the failure-mode and precision
tables), :mod:`~sim.conformance.clients` (adapters to real PyPI verifiers; also at
``sim.clients``). The names of ``__all__`` (and the constants ``POWER``, ``CALL_FLOATS``,
``MAX_FIT_VOCAB``, ``LARGE_VOCAB``, ``LARGE_SUPPORT``, ``LARGE_SHARED``) are importable from
``sim.conformance`` itself.

Examples
--------
>>> from sim.conformance import check_verifier, reference_verifier
>>> report = check_verifier(reference_verifier, window=3, n_rounds=4000, rng=0)
>>> report.verdict, report.rounds_needed, round(report.efficiency, 1)  # too small to pass
('inconclusive', 39080, 1.0)
>>> check_verifier(reference_verifier, window=3, n_rounds=39080, rng=0).verdict
'passed'

"""

from sim.conformance.calls import VerifierError, VerifierTimeout
from sim.conformance.generation import (
    DEFAULT_SAMPLES,
    GenerationReport,
    check_generation,
    engine_generator,
    prefix_model,
)
from sim.conformance.harness import DEFAULT_ROUNDS, MAX_SEQUENCES, assert_lossless, check_verifier
from sim.conformance.harness import MAX_FIT_VOCAB as MAX_FIT_VOCAB
from sim.conformance.power import (
    detection_power,
    detection_rounds,
    failure_table,
    failure_table_markdown,
    floor_detection_rounds,
    precision_table,
    precision_table_markdown,
)
from sim.conformance.report import POWER as POWER
from sim.conformance.report import ConformanceReport, PairCheck
from sim.conformance.rounds import CALL_FLOATS as CALL_FLOATS
from sim.conformance.suites import LARGE_SHARED as LARGE_SHARED
from sim.conformance.suites import LARGE_SUPPORT as LARGE_SUPPORT
from sim.conformance.suites import LARGE_VOCAB as LARGE_VOCAB
from sim.conformance.suites import (
    SuitePair,
    conformance_suite,
    precision_suite,
    sequence_suite,
)
from sim.conformance.trees import eagle_verifier, specinfer_verifier, tree_verifier
from sim.conformance.verifiers import (
    failure_verifier,
    reference_verifier,
    rule_verifier,
    torch_verifier,
)

__all__ = [
    "DEFAULT_ROUNDS",
    "DEFAULT_SAMPLES",
    "MAX_SEQUENCES",
    "ConformanceReport",
    "GenerationReport",
    "PairCheck",
    "SuitePair",
    "VerifierError",
    "VerifierTimeout",
    "assert_lossless",
    "check_generation",
    "check_verifier",
    "conformance_suite",
    "detection_power",
    "detection_rounds",
    "eagle_verifier",
    "engine_generator",
    "failure_table",
    "failure_table_markdown",
    "failure_verifier",
    "floor_detection_rounds",
    "precision_suite",
    "precision_table",
    "precision_table_markdown",
    "prefix_model",
    "reference_verifier",
    "rule_verifier",
    "sequence_suite",
    "specinfer_verifier",
    "torch_verifier",
    "tree_verifier",
]
