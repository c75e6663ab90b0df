"""Whole-stack conformance of Hugging Face assisted generation on the tiny pair built here:
the processed law restates transformers' processors, the tree of prefixes is the exact law of
a transformer's generations, stock transformers passes, the ensemble mode and a stack bug fail
where their exact laws say, and the README's table is what the code computes.

CI runs a small configuration (≈ 1,000 generate calls); `make stack-conformance` runs the full
one.  The tiny pair is trained once per machine (≈ 5–10 s) and cached in the user cache
directory (sim.conformance.clients.tiny_models).  False-positive budget: one level-1e-6 check
for the stock run; the failing runs are negative controls, each with its exact power stated
beside it.
"""

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sim.conformance import check_generation, prefix_model  # noqa: E402
from sim.conformance.clients.hf_generate import _verified, hf_generator  # noqa: E402
from sim.conformance.clients.hf_stack import (  # noqa: E402
    LENGTH,
    PROMPTS,
    StackRun,
    detection_size,
    detection_table,
    target_laws,
)
from sim.conformance.clients.tiny_models import (  # noqa: E402
    ProcessedLaw,
    TinySettings,
    _build,
    processed_probabilities,
    tiny_pair,
)

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    return tiny_pair()


@pytest.mark.parametrize("settings", [{"temperature": 0.7}, {"top_k": 3}, {"top_p": 0.8},
                                      {"temperature": 0.8, "top_k": 5, "top_p": 0.9}])
def test_processed_law_is_transformers_own_processing(settings):
    """processed_probabilities against the LogitsProcessorList transformers builds for the
    same settings, on random float32 logits: the same tokens removed, the same law."""
    from transformers import GenerationConfig

    logits = np.random.default_rng(0).normal(scale=3, size=(64, 8)).astype(np.float32)
    model = _build(TinySettings(), 1, 0)
    config = GenerationConfig(do_sample=True, **settings)
    processors = model._get_logits_processor(generation_config=config, input_ids_seq_length=1,
                                             encoder_input_ids=None, logits_processor=None,
                                             prefix_allowed_tokens_fn=None)
    scores = processors(torch.zeros((64, 1), dtype=torch.long), torch.from_numpy(logits))
    theirs = torch.softmax(scores.double(), dim=-1).numpy()
    mine = processed_probabilities(logits, **settings)
    assert np.array_equal(theirs == 0, mine == 0)
    np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-15)


def test_tree_law_of_a_transformer_equals_enumeration():
    """The tree of prefixes (batched forward passes per prefix length) against brute force:
    every one of the 8³ generations scored by its own forward pass; float32 logits from two
    different batchings agree to ~1e-6 relative, hence the tolerance."""
    torch.set_num_threads(1)
    model = _build(TinySettings(), 1, 5).eval()
    settings = {"temperature": 0.7, "top_k": 5}
    law = prefix_model(ProcessedLaw(model, **settings), [7, 2], 3)
    sequences = np.array(list(itertools.product(range(8), repeat=3)))
    with torch.no_grad():
        ids = torch.from_numpy(np.concatenate([np.tile([7, 2], (512, 1)), sequences], axis=1))
        logits = model(input_ids=ids).logits[:, 1:4].float().numpy()  # rows after each prefix
    rows = processed_probabilities(logits.reshape(-1, 8), **settings).reshape(512, 3, 8)
    brute = np.prod(np.take_along_axis(rows, sequences[:, :, None], axis=2)[..., 0], axis=1)
    tree = np.asarray(law.model.sequence_probability(sequences), dtype=np.float64)
    np.testing.assert_allclose(tree, brute, rtol=1e-5, atol=1e-9)
    assert abs(tree.sum() - 1) < 1e-9 and (brute > 0).sum() == (tree > 0).sum()


def test_one_speculative_step_verified_against_its_own_law_is_lossless():
    """The closed form of a bug's law reduces to q when drafts and reports agree."""
    rng = np.random.default_rng(1)
    q, p = rng.dirichlet(np.ones(6), size=5), rng.dirichlet(np.ones(6), size=5)
    np.testing.assert_allclose(_verified(q, p, p), q, atol=1e-15)


# ------------------------------------------------------------------ the stack (small)
def test_stock_transformers_passes(pair):
    target, draft = pair
    entry = StackRun("stock, top-k = 3", {"top_k": 3})
    law, _ = target_laws(target, entry)
    report = check_generation(hf_generator(target, draft, length=LENGTH, top_k=3), law,
                              prompts=list(PROMPTS), length=LENGTH, n_samples=600, rng=0,
                              min_tv=0.15)
    assert report.verdict == "passed", report


def test_ensemble_fails_with_its_mixture_named(pair):
    """w = 0.2 (exact detection size below 400 generations, asserted) at 600 generations: the
    run fails, and the per-position fit names the mixture w·q + (1 − w)·p (at 600 generations
    its weight is rough; the full run's is in the README)."""
    target, draft = pair
    entry = StackRun("ensemble", {"ensemble_weight": 0.2}, must_pass=False)
    assert detection_size(target, draft, entry) < 400
    law, _ = target_laws(target, entry)
    report = check_generation(hf_generator(target, draft, length=LENGTH, ensemble_weight=0.2),
                              law, prompts=list(PROMPTS), length=LENGTH, n_samples=600, rng=0,
                              draft=ProcessedLaw(draft))
    assert report.verdict == "failed"
    hint = report.checks[0].closest_law
    assert re.search(r"position \d: w·q \+ \(1 − w\)·p with w = [0-9.]+", hint), hint


def test_a_greedy_draft_bug_fails_located(pair):
    """The greedy-assistant bug (exact detection size below 100, asserted) at 300."""
    target, draft = pair
    entry = StackRun("greedy", {}, "greedy_draft", must_pass=False)
    assert detection_size(target, draft, entry) < 100
    law, _ = target_laws(target, entry)
    report = check_generation(hf_generator(target, draft, length=LENGTH, bug="greedy_draft"),
                              law, prompts=list(PROMPTS), length=LENGTH, n_samples=300, rng=0)
    assert report.verdict == "failed"
    assert report.deviations and report.where[0].startswith("after")


def test_readme_table_is_what_the_code_computes(pair):
    target, draft = pair
    text = README.read_text(encoding="utf-8")
    for line in detection_table(target, draft).splitlines():
        assert line in text, line
