r"""Whole-stack conformance: test the law of whole generations of any sampling stack.

Most speculative-decoding bugs that ship are not in the verifier function but in the stack
around it — drafts sampled from processed logits while the verifier is handed raw ones, a
greedy assistant whose probabilities are used as if it sampled, a temperature applied on one
side only.  :func:`check_verifier` calls a verifier on probability rows and cannot see them;
:func:`check_generation` calls the whole stack.

**The convention.**  ``generate(prompt, rng) -> tokens``: one generation of exactly ``length``
tokens (an integer array) from ``prompt``, drawing its randomness from the numpy ``Generator``
``rng`` (a stack with its own RNG seeds it from ``rng``, so a run is reproducible from the
check's seed).  ``target`` is the law the stack must follow:

* a :class:`theory.MarkovLM`: a prompt is a start context s₀, and the generation covers
  positions 0 … length − 1 of the chain started in s₀;
* a callable ``target(prefix) -> probabilities`` (V,) giving the next-token law after a prefix
  of token ids (the prompt followed by the tokens generated so far), with every processor the
  stack applies (temperature, top-k, top-p …) already applied; prompts are lists of token ids.
  A callable may also have a method ``batch(prefixes) -> (B, V)`` array, used when present
  (one forward pass for many prefixes).

**The exact law.**  For a callable target the law of whole generations is the tree of
prefixes: every prefix of positive probability up to ``length − 1`` generated tokens is a
node whose next-token row is ``target(prompt + prefix)``.  :func:`prefix_model` builds it as a
hidden-context :class:`~theory.MarkovLM` (context = node, ``next_context`` = child; tokens of
probability 0 lead to an absorbing *sink* context), so a generation's probability is the
product of its rows (tested against brute-force enumeration).  From there the check is the
token harness's: the tokens counted per (position, context) — per prefix, for a callable —
tested by Pearson's χ² pooled over cells (:func:`sim.stats.cells_check`), one test per prompt
at level α/K (Bonferroni over K prompts), and a token of target probability 0 fails at once
(the support check).  The pooled test over prefix cells is the chain-rule factorization of the
whole generation's law: a stack passes only if every prefix's next-token law is the target's.

**Verdicts, power and deviations** are :func:`check_verifier`'s, computed by the same
machinery (:mod:`sim.conformance.verdicts`, :mod:`sim.conformance.deviations`): ``"failed"``
when some prompt's test rejects or the support check fires; ``"inconclusive"`` when some prompt
cannot detect a per-position TV of ``min_tv`` with power 0.9 at ``n_samples`` generations
(design power, from the target's expected visits: deterministic given the sizes), stating the
generations needed; otherwise ``"passed"``.  A failed prompt is located (the most significant
(position, prefix, token) cells, a TV per position with a bootstrap interval) and, given the
``draft`` law, gets the mixture w·q + (1 − w)·p (q target, p draft) that fits it at each
position where one does.

:func:`engine_generator` drives the package's own engines through the convention (a control
that must pass).  :mod:`sim.conformance.stack_power` gives the exact detection size of a stack
whose per-position law is known.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass

import numpy as np

from sim.conformance.calls import (
    DEFAULT_THREADS,
    DEFAULT_TIMEOUT,
    VerifierError,
    bounded_threads,
    call_verifier,
    checked_threads,
    checked_timeout,
)
from sim.conformance.deviations import MAX_DEVIATIONS, cell_deviations, position_tv
from sim.conformance.harness import (
    MAX_FIT_VOCAB,
    _checked_alpha,
    _checked_min_tv,
    _positive_int,
    _token_check,
    closest_mixture,
)
from sim.conformance.report import POWER, PairCheck, check_lines
from sim.conformance.rounds import _name
from sim.conformance.suites import SuitePair
from sim.conformance.verdicts import DEFAULT_MIN_TV, _Design, least_rounds, verdict_of
from sim.stats import DEFAULT_ALPHA, detectable_noncentrality
from theory.models import MarkovLM

#: Default number of generations per prompt of :func:`check_generation`.
DEFAULT_SAMPLES = 4000
#: Most prefixes (nodes) of the exact law of one prompt's generations.
MAX_PREFIXES = 200_000


@dataclass(frozen=True)
class PromptLaw:
    """The exact law of one prompt's generations: ``model`` (a MarkovLM over ``length``
    positions started in the prompt's context), the context reached by tokens of probability 0
    (``sink``, or None for a MarkovLM target) and a label per context (the prefix of generated
    tokens, for a callable target)."""

    prompt: object
    model: MarkovLM
    sink: int | None
    labels: tuple

    def label(self, context: int) -> str:
        if not self.labels:
            return f"context {context}"
        prefix = self.labels[context]
        return "after the prompt" if not prefix else f"after {tuple(int(x) for x in prefix)}"


def _rows(target, prefixes: list, vocab: int | None, prompt) -> np.ndarray:
    """The checked next-token rows of ``prefixes`` (lists of token ids)."""
    batch = getattr(target, "batch", None)
    try:
        rows = np.asarray(batch(prefixes) if callable(batch) else [target(p) for p in prefixes],
                          dtype=np.float64)
    except KeyboardInterrupt:
        raise
    except Exception as error:
        raise ValueError(f"target raised {type(error).__name__} on a prefix of prompt "
                         f"{list(prompt)}: {error}") from error
    if rows.ndim != 2 or rows.shape[0] != len(prefixes) or \
            (vocab is not None and rows.shape[1] != vocab):
        raise ValueError(f"target must return one probability row (V,) per prefix; got shape "
                         f"{rows.shape} for {len(prefixes)} prefixes")
    bad = ~np.isfinite(rows) | (rows < 0)
    sums = rows.sum(axis=1)
    if bad.any() or np.any(np.abs(sums - 1) > 1e-6):
        row = int(np.argwhere(bad)[0][0]) if bad.any() else int(np.argmax(np.abs(sums - 1)))
        raise ValueError(f"target's row after {list(prefixes[row])} is not a probability law "
                         f"(finite, non-negative, summing to 1 within 1e-6; sum {sums[row]})")
    return rows / sums[:, None]


def prefix_model(target, prompt, length: int, *, max_prefixes: int = MAX_PREFIXES) -> PromptLaw:
    """The exact law of ``length`` tokens generated after ``prompt`` by a callable ``target``,
    as a hidden-context MarkovLM over the tree of prefixes (module doc).

    Parameters
    ----------
    target : callable
        ``target(prefix) -> (V,)`` next-token probabilities (optionally with ``batch``).
    prompt : sequence of int
        The prompt's token ids.
    length : int >= 1
        Generated tokens.
    max_prefixes : int
        Refuse a tree with more nodes than this (the law would not fit).

    Returns
    -------
    PromptLaw
    """
    prompt = [int(x) for x in prompt]
    nodes, rows = [()], []
    level, vocab = [()], None
    for depth in range(length):
        level_rows = _rows(target, [prompt + list(p) for p in level], vocab, prompt)
        vocab = level_rows.shape[1]
        rows.append(level_rows)
        if depth == length - 1:
            break
        level = [(*p, x) for p, row in zip(level, level_rows, strict=True)
                 for x in np.flatnonzero(row > 0).tolist()]
        if len(nodes) + len(level) > max_prefixes:
            raise ValueError(f"the law of {length} tokens after prompt {prompt} has more than "
                             f"max_prefixes = {max_prefixes:,} prefixes of positive "
                             "probability: lower length (or raise max_prefixes)")
        nodes.extend(level)
    rows = np.concatenate(rows)
    sink = len(nodes)
    index = {p: i for i, p in enumerate(nodes)}
    next_context = np.full((sink + 1, vocab), sink, dtype=np.intp)
    for i, p in enumerate(nodes):
        if len(p) < length - 1:
            for x in np.flatnonzero(rows[i] > 0):
                next_context[i, x] = index[(*p, int(x))]
    table = np.vstack([rows, np.full((1, vocab), 1.0 / vocab)])
    model = MarkovLM(np.broadcast_to(table, (length, sink + 1, vocab)), next_context, start=0)
    return PromptLaw(tuple(prompt), model, sink, (*tuple(nodes), None))


def _markov_law(target: MarkovLM, prompt, length: int) -> PromptLaw:
    if isinstance(prompt, bool) or not isinstance(prompt, numbers.Integral) \
            or not 0 <= prompt < target.n_contexts:
        raise ValueError(f"with a MarkovLM target a prompt is a start context in [0, "
                         f"{target.n_contexts}); got {prompt!r}")
    if length > target.horizon:
        raise ValueError(f"length = {length} is over the target's horizon {target.horizon}")
    model = target.to_float() if target.is_exact else target
    next_context = None if model.is_first_order else model.next_context
    started = MarkovLM(model.probs[:length], next_context, int(prompt))
    return PromptLaw(int(prompt), started, None, ())


def _prompt_laws(target, prompts, length, max_prefixes) -> list[PromptLaw]:
    if isinstance(target, MarkovLM):
        return [_markov_law(target, prompt, length) for prompt in prompts]
    if not callable(target):
        raise TypeError(f"target must be a MarkovLM or a callable prefix -> probabilities; got "
                        f"{target!r}")
    laws = []
    for prompt in prompts:
        if isinstance(prompt, str | bytes) or not hasattr(prompt, "__iter__"):
            raise ValueError(f"with a callable target a prompt is a list of token ids; got "
                             f"{prompt!r}")
        laws.append(prefix_model(target, prompt, length, max_prefixes=max_prefixes))
    return laws


def _draft_law(draft, law: PromptLaw) -> MarkovLM:
    """The draft's rows on the contexts of the target's law (for the mixture hint)."""
    if isinstance(draft, MarkovLM):
        return _markov_law(draft, law.prompt, law.model.horizon).model
    vocab = law.model.vocab_size
    prefixes = [list(law.prompt) + list(p) for p in law.labels[:-1]]
    rows = np.vstack([_rows(draft, prefixes, vocab, law.prompt), np.full((1, vocab), 1 / vocab)])
    return MarkovLM(np.broadcast_to(rows, law.model.probs.shape), law.model.next_context, 0)


@dataclass
class _Samples:
    counts: np.ndarray  #: (T, S, V) tokens per (position, context)
    violations: dict  #: (position, context, token) → count, tokens of target probability 0


def _generations(generate, name, law: PromptLaw, prompt_index, n_samples, seed, timeout):
    vocab, length = law.model.vocab_size, law.model.horizon
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), prompt_index]))
    tokens = np.empty((n_samples, length), dtype=np.int64)
    for i in range(n_samples):
        where = f"generate {name} on prompt {law.prompt!r} (sample {i})"
        prompt = law.prompt if isinstance(law.prompt, int) else list(law.prompt)
        out = call_verifier(generate, (prompt, rng), timeout, where)
        if hasattr(out, "detach"):  # a torch tensor
            out = out.detach().cpu().numpy()
        array = np.asarray(out)
        if array.dtype.kind not in "iu" or array.shape != (length,):
            raise VerifierError(f"{where}: returned {array.dtype} of shape {array.shape}; "
                                f"expected {length} integer tokens")
        if (array < 0).any() or (array >= vocab).any():
            raise VerifierError(f"{where}: token outside [0, {vocab}) in {array.tolist()}")
        tokens[i] = array
    return tokens


def _count(law: PromptLaw, tokens: np.ndarray) -> _Samples:
    model = law.model
    q = np.asarray(model.probs, dtype=np.float64)
    following = model.next_context
    samples = _Samples(np.zeros((model.horizon, model.n_contexts, model.vocab_size),
                                dtype=np.int64), {})
    context = np.full(tokens.shape[0], model.start, dtype=np.intp)
    for n in range(model.horizon):
        live = np.flatnonzero(context != law.sink) if law.sink is not None \
            else np.arange(context.size)
        here, token = context[live], tokens[live, n]
        for j in np.flatnonzero(q[n, here, token] == 0):
            key = (n, int(here[j]), int(token[j]))
            samples.violations[key] = samples.violations.get(key, 0) + 1
        np.add.at(samples.counts, (n, here, token), 1)
        context[live] = following[here, token]
    return samples


def _mixture_hint(samples: _Samples, pair: SuitePair, level: float) -> str:
    """:func:`closest_mixture` position by position (a stack can follow a mixture at drafted
    positions and the target at a bonus position: one weight for all positions would be a
    compromise that fits neither)."""
    if pair.target.vocab_size > MAX_FIT_VOCAB:
        return ""
    q = np.asarray(pair.target.probs, dtype=np.float64)
    p = np.asarray(pair.draft.probs, dtype=np.float64)
    parts = []
    for n in range(q.shape[0]):
        fit = closest_mixture(samples.counts[n], q[n], p[n], level)
        if fit:
            parts.append(f"position {n}: {fit.split(' fits')[0]}")
    return "; ".join(parts) + (" (each fits at the prompt's level, not corrected for the fit)"
                               if parts else "")


@dataclass(frozen=True)
class GenerationReport:
    """Result of :func:`check_generation`: the verdict, power statement and located deviations
    of :class:`~sim.conformance.ConformanceReport`, per prompt instead of per suite pair.

    ``checks`` — one :class:`~sim.conformance.PairCheck` per prompt (``rounds`` and
    ``generations`` are the generations; efficiency is not measured);
    ``samples_needed`` — for an inconclusive run, the generations per prompt that reach
    ``min_tv``; ``deviations`` — the most significant cells of a failed run, with
    ``where`` their prefixes; ``seconds`` — the run's wall time.
    """

    stack: str
    length: int
    alpha: float
    passed: bool
    p_value: float
    min_detectable_tv: float
    checks: tuple
    verdict: str
    min_tv: float
    n_samples: int
    samples_needed: int | None = None
    deviations: tuple = ()
    where: tuple = ()  #: a label per deviation: its prompt's prefix
    violations: tuple = ()  #: (prompt, position, prefix label, token, count) where q = 0
    seconds: float = 0.0

    @property
    def detectable_tv(self) -> float:
        return max((c.design_tv for c in self.checks), default=math.inf)

    def __str__(self) -> str:
        head = f"{self.stack}, {self.length} tokens: {self.verdict.upper()}"
        found = f"p = {self.p_value:.3g}"
        size = f"{self.n_samples} generations per prompt, {self.seconds:.1f} s"
        if self.verdict == "failed":
            lines = [f"{head} — the generations deviate from the target law ({found} < α = "
                     f"{self.alpha:g}); {size}"]
        elif self.verdict == "passed":
            lines = [f"{head} — no deviation ({found} ≥ α = {self.alpha:g}), and every prompt "
                     f"detects a per-position TV of {self.min_tv:g} with power {POWER} "
                     f"(weakest {self.detectable_tv:.3g}); {size}"]
        else:
            needed = (f"about {self.samples_needed:,} are needed" if self.samples_needed
                      else "no size reaches it")
            lines = [f"{head} — no deviation found ({found}), but {size} cannot detect a "
                     f"per-position TV of {self.min_tv:g} with power {POWER} (detects "
                     f"{self.detectable_tv:.3g}); {needed}, or raise min_tv"]
        lines.append(f"  {'prompt':<22}{'tokens':>8}{'χ²':>10}{'dof':>6}{'p-value':>11}"
                     f"{'detects TV':>11}")
        for c in self.checks:
            lines.append(f"  {c.name:<22}{c.tokens:>8}{c.statistic:>10.1f}"
                         f"{c.degrees_of_freedom:>6}{c.p_value:>11.3g}{c.design_tv:>11.3f}")
        for prompt, position, label, token, count in self.violations[:10]:
            lines.append(f"  support: {prompt}: token {token} at position {position} {label} "
                         f"({count}×), where the target gives it probability 0")
        for deviation, label in zip(self.deviations, self.where, strict=True):
            lines.append(f"  where: {deviation.pair}: position {deviation.position} {label}, "
                         f"token {deviation.token}: observed {deviation.count}/"
                         f"{deviation.visits} = {deviation.observed:.3f} (95% interval "
                         f"{deviation.low:.3f} – {deviation.high:.3f}), expected "
                         f"{deviation.expected:.3f} (binomial p = {deviation.p_value:.2g})")
        return "\n".join(lines + check_lines(self.checks))


def check_generation(generate, target, *, prompts, length: int,
                     n_samples: int = DEFAULT_SAMPLES, rng=None, alpha: float = DEFAULT_ALPHA,
                     min_tv: float = DEFAULT_MIN_TV, draft=None, name: str | None = None,
                     timeout: float | None = DEFAULT_TIMEOUT,
                     threads: int | None = DEFAULT_THREADS,
                     max_prefixes: int = MAX_PREFIXES) -> GenerationReport:
    """Test a whole sampling stack: does ``generate`` follow the law ``target``? (module doc)

    Parameters
    ----------
    generate : callable
        ``generate(prompt, rng) -> tokens``: ``length`` integer tokens.
    target : MarkovLM or callable
        The law the stack must follow: a MarkovLM (prompts are start contexts) or
        ``target(prefix) -> (V,)`` next-token probabilities with the stack's processors applied
        (prompts are lists of token ids; an optional ``batch(prefixes)`` method is used).
    prompts : sequence
        Start contexts (MarkovLM) or lists of token ids (callable); each is tested alone.
    length : int >= 1
        Tokens per generation.
    n_samples : int
        Generations per prompt.
    rng : int seed, numpy Generator or None
        Seeds the ``rng`` handed to ``generate`` (one stream per prompt).
    alpha : float in (0, 1)
        False-positive level of the report (each of K prompts at alpha / K).
    min_tv : float in (0, 1]
        The per-position TV every prompt must detect with power 0.9 for "passed".
    draft : MarkovLM or callable, optional
        The draft's law, of the same kind as ``target``: a failed prompt then gets the mixture
        w·q + (1 − w)·p that fits it, if any.
    name : str, optional
        The stack's name in the report (default: ``generate``'s ``__qualname__``).
    timeout : float or None
        Seconds one ``generate`` call may take (None: no limit, calls in this thread).
    threads : int or None
        Bound on torch's (and BLAS's) threads during the run (default 1; None: leave them).
    max_prefixes : int
        Most nodes of one prompt's tree of prefixes (callable target).

    Returns
    -------
    GenerationReport

    Raises
    ------
    VerifierError
        ``generate`` raised, hung past ``timeout`` or returned something other than
        ``length`` tokens in range.
    ValueError, TypeError
        Invalid arguments (named), or a target row that is not a probability law.

    Examples
    --------
    >>> from sim.conformance import check_generation, engine_generator, conformance_suite
    >>> pair = conformance_suite()[0]
    >>> report = check_generation(engine_generator(pair.draft, pair.target, length=3),
    ...                           pair.target, prompts=[0, 1], length=3, n_samples=1500, rng=0,
    ...                           min_tv=0.2)
    >>> report.verdict
    'passed'
    """
    if not callable(generate):
        raise TypeError(f"generate must be callable (the module's convention); got {generate!r}")
    length = _positive_int(length, "length")
    n_samples = _positive_int(n_samples, "n_samples")
    max_prefixes = _positive_int(max_prefixes, "max_prefixes")
    alpha, min_tv = _checked_alpha(alpha), _checked_min_tv(min_tv)
    timeout, threads = checked_timeout(timeout), checked_threads(threads)
    if isinstance(rng, bool):
        raise TypeError("rng must be an int seed, a numpy Generator or None; got a bool")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    if draft is not None and isinstance(target, MarkovLM) != isinstance(draft, MarkovLM):
        raise TypeError("draft must be of the same kind as target (a MarkovLM or a callable)")
    name = _name(generate) if name is None else str(name)
    began = time.perf_counter()
    with bounded_threads(threads):
        laws = _prompt_laws(target, prompts, length, max_prefixes)
        seed = np.random.default_rng(rng).integers(2 ** 63)
        level = alpha / len(laws)
        checks, located, violations = [], [], []
        for index, law in enumerate(laws):
            label = f"prompt {list(law.prompt) if law.labels else law.prompt}"
            drafted = _draft_law(draft, law) if draft is not None else law.model
            pair = SuitePair(label, drafted, law.model)
            tokens = _generations(generate, name, law, index, n_samples, seed, timeout)
            check, cells = _check_prompt(_count(law, tokens), pair, law, level, seed, index,
                                         draft is not None)
            checks.append(check)
            located.extend((cell, law.label(cell.context)) for cell in cells)
            violations.extend((label, n, law.label(s), x, count)
                              for n, s, x, count in check.support_violations)
    p_value = min(1.0, len(laws) * min(c.p_value for c in checks))
    verdict = verdict_of(not all(c.passed for c in checks), [c.design_tv for c in checks],
                         min_tv)
    needed = None
    if verdict == "inconclusive":
        designs = [_Design(SuitePair("", law.model, law.model), "token") for law in laws]
        needed = least_rounds(lambda n: all(d.detectable_tv(n, level, POWER) <= min_tv
                                            for d in designs), n_samples)
    located.sort(key=lambda item: item[0].p_value)
    located = located[:MAX_DEVIATIONS]
    return GenerationReport(
        name, length, alpha, verdict == "passed", p_value,
        min(c.min_detectable_tv for c in checks), tuple(checks), verdict, min_tv, n_samples,
        needed, tuple(cell for cell, _ in located), tuple(where for _, where in located),
        tuple(violations), time.perf_counter() - began)


def _check_prompt(samples: _Samples, pair: SuitePair, law: PromptLaw, level: float, seed,
                  index: int, hint: bool):
    result, tested = _token_check(samples, pair, level)
    if result.degrees_of_freedom and tested:
        lam = detectable_noncentrality(result.degrees_of_freedom, level, POWER)
        detectable = math.sqrt(lam / (4 * tested))
    else:
        detectable = math.inf
    violations = sorted(samples.violations.items(), key=lambda item: (-item[1], item[0]))
    passed = result.passed and not violations
    cells, estimates, closest = (), (), ""
    if not passed:
        q = np.asarray(pair.target.probs, dtype=np.float64)
        cells = cell_deviations(pair.name, samples.counts, q)
        estimates = position_tv(samples.counts, q, np.random.default_rng([int(seed), index, 7]))
        closest = _mixture_hint(samples, pair, level) if hint else ""
    n_samples = int(samples.counts[0].sum())
    design = _Design(pair, "token").detectable_tv(n_samples, level, POWER)
    return PairCheck(
        pair.name, passed, 0.0 if violations else result.p_value, result.statistic,
        result.degrees_of_freedom, n_samples, n_samples, int(samples.counts.sum()), 0, 0.0,
        detectable, tuple((*key, count) for key, count in violations[:10]),
        sum(samples.violations.values()), closest, design, True, estimates), cells


def engine_generator(draft: MarkovLM, target: MarkovLM, algorithm=None, *,
                     length: int | None = None, block: int = 4096):
    """The package's engines in the generate convention: ``generate(prompt, rng)`` returns one
    generation of ``algorithm`` (default ``Speculative()``) on (draft, target) started in the
    context ``prompt`` (or, for a list of token ids, its last entry), truncated to ``length``
    positions (default: the horizon).

    Generations are drawn ``block`` at a time by :func:`sim.simulate` (seeded from the ``rng``
    of the call that finds the block empty) and handed out one per call: i.i.d. draws, as the
    convention needs.

    Parameters
    ----------
    draft, target : MarkovLM
        A compatible pair.
    algorithm : theory algorithm, optional
        What to run (default ``Speculative()``).
    length : int, optional
        Positions per generation.
    block : int
        Generations simulated at once per prompt.

    Returns
    -------
    callable
        ``generate(prompt, rng) -> tokens``.
    """
    from sim.engine import simulate
    from theory import Speculative

    algorithm = Speculative() if algorithm is None else algorithm
    length = target.horizon if length is None else _positive_int(length, "length")
    block = _positive_int(block, "block")
    if length > target.horizon:
        raise ValueError(f"length = {length} is over the horizon {target.horizon}")
    models = [m.to_float() if m.is_exact else m for m in (draft, target)]
    buffers: dict = {}

    def generate(prompt, rng):
        if not isinstance(prompt, numbers.Integral):  # a list of token ids: its last one
            prompt = prompt[-1]
        prompt = int(prompt)
        queue = buffers.get(prompt)
        if not queue:
            started = [MarkovLM(m.probs[:length], None if m.is_first_order else m.next_context,
                                prompt) for m in models]
            result = simulate(*started, algorithm, n_trials=block, rng=rng, record_tokens=True)
            queue = buffers[prompt] = list(result.tokens)
        return queue.pop()

    generate.__qualname__ = f"engine[{type(algorithm).__name__}]"
    return generate
