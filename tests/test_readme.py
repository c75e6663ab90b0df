"""The README's code runs as printed: the custom-verifier example is exact and gets caught."""

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from theory.verification import InvalidVerification

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_custom_verifier_example_is_exact_and_caught_as_biased():
    namespace: dict = {}
    exec(compile(_section_code("## Test your own verifier"), "README", "exec"), namespace)
    from sim.models import bernoulli_pair

    draft, target = bernoulli_pair(Fraction(1, 3), Fraction(1, 2), horizon=2)
    accept, law = namespace["MyVerifier"]().verification(draft.probs[0], target.probs[0])
    assert all(isinstance(v, Fraction) for v in np.ravel(accept)) \
        and all(isinstance(v, Fraction) for v in np.ravel(law))  # exact, not floats
    with pytest.raises(AssertionError):  # the exact test catches the biased verifier
        namespace["test_my_verifier"]()


def test_the_old_readme_verifier_is_refused():
    """0.9 · min(1, q/p) with the residual rejects where the residual is empty (p = q)."""
    from dataclasses import dataclass

    from sim.models import bernoulli_pair
    from theory import Speculative, expected_rejections
    from theory.onestep import acceptance_probability, residual_distribution

    @dataclass(frozen=True)
    class Old(Speculative):
        def verification(self, p, q):
            return 0.9 * acceptance_probability(p, q), residual_distribution(p, q)

    draft, target = bernoulli_pair(0.5, 0.5, horizon=2)
    with pytest.raises(InvalidVerification, match=r"rejection law sums to 0\.0 "):
        expected_rejections(draft, target, Old())


def test_failure_mode_table_matches_the_exact_computation():
    """The README's table of failure modes: exact TVs and detection sizes recomputed (the
    observed-rate column comes from `failure_table(seeds=40)`, tested by the power test)."""
    from sim.conformance import failure_table, failure_table_markdown

    text = README.read_text(encoding="utf-8")
    table = failure_table_markdown(failure_table())
    for line in table.splitlines()[2:]:
        exact_columns = line.rsplit("|", 2)[0]
        assert exact_columns in text, line


def test_check_your_implementation_example_runs():
    """The README's harness example, on the small pairs (the default suite takes longer)."""
    from sim.conformance import conformance_suite
    from sim.conformance import reference_verifier as my_verifier

    code = _section_code("## Check your implementation")
    code = code.replace("rng=0)", "rng=0, n_rounds=4000, models=conformance_suite()[:4])")
    namespace = {"my_verifier": my_verifier, "print": lambda *args: None,
                 "conformance_suite": conformance_suite}
    exec(compile(code, "README", "exec"), namespace)
    assert namespace["report"].verdict == "inconclusive"  # 4,000 rounds: too few to pass


def test_the_ci_example_of_check_your_implementation_runs():
    """The README's pytest example, with the reference verifier standing in for the engine's
    and the four small pairs at 40,000 rounds (they reach min_tv = 0.05 at ≈ 31,000)."""
    from sim.conformance import conformance_suite

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Check your implementation"):]
    code = next(block for block in re.findall(r"```python\n(.*?)```", section, re.S)
                if "def test_verifier_is_lossless" in block)
    code = code.replace("from my_engine.sampling import verify_batch",
                        "from sim.conformance import reference_verifier as verify_batch")
    code = code.replace("n_rounds=100_000", "n_rounds=40_000, models=conformance_suite()[:4]")
    namespace = {"conformance_suite": conformance_suite}
    exec(compile(code, "README", "exec"), namespace)
    namespace["test_verifier_is_lossless"]()


def test_the_number_of_experiments_is_the_registry_s():
    from sim.experiments.runner import REGISTRY

    stated = re.search(r"`specdec reproduce --out results`: (\d+) experiments",
                       README.read_text(encoding="utf-8"))
    assert stated is not None and int(stated.group(1)) == len(REGISTRY)


def test_precision_table_matches_the_exact_computation():
    """The README's precision table recomputed; every precision bug is caught with power 0.9
    within 2·10⁶ rounds of the precision suite; and its `large_vocab` column for the draft
    floor is the one-step law at the first position (a round starts there) worked out by hand:
    p·min(1, q/p̂) + (1 − Σ p·min(1, q/p̂))·[q − p̂]₊/Σ with p̂ = (p + ε)/(1 + V ε)."""
    from sim.conformance import conformance_suite, precision_table, precision_table_markdown

    rows = precision_table()
    text = README.read_text(encoding="utf-8")
    for line in precision_table_markdown(rows).splitlines():
        assert line in text, line
    assert all(row["rounds_precision"] <= 2 * 10 ** 6 for row in rows), rows
    sizes = {row["mode"]: row["rounds_precision"] for row in rows}
    stated = re.search(r"models=precision_suite\(\), n_rounds=([\d_]+)\)", text)
    assert stated is not None  # the example runs above the bfloat16 and floor sizes, below float16
    assert sizes["bfloat16"] <= int(stated.group(1)) < sizes["float16"], sizes
    assert sizes["draft_floor"] <= int(stated.group(1))
    observed = re.search(r"floored verifier failed \d+ of \d+ runs at ([\d,]+) rounds, the "
                         r"bfloat16 one \d+ of \d+ at\s+([\d,]+)", text)
    assert observed is not None and [int(size.replace(",", "")) for size in observed.groups()] \
        == [sizes["draft_floor"], sizes["bfloat16"]]  # the sizes the observed runs used
    pair = conformance_suite()[-1]
    p, q = np.asarray(pair.draft.probs)[0, 0], np.asarray(pair.target.probs)[0, 0]
    floored = (p + 1e-6) / (1 + p.size * 1e-6)
    kept = p * np.minimum(1, q / floored)
    residual = np.maximum(q - floored, 0)
    law = kept + (1 - kept.sum()) * residual / residual.sum()
    floor_row = next(row for row in rows if row["mode"] == "draft_floor")
    assert abs(floor_row["tv_large"] - np.abs(law - q).sum() / 2) < 1e-12


def test_the_quoted_cli_error_is_the_one_the_cli_prints(capsys):
    from sim.cli import main

    with pytest.raises(SystemExit):
        main(["simulate", "--trials", "0"])
    line = capsys.readouterr().err.strip()
    assert f"prints one line (`{line}`)" in " ".join(README.read_text(encoding="utf-8").split())


def test_tree_table_matches_the_exact_computation():
    """The token-tree table and the traversal-optimality sentence, recomputed exactly."""
    from sim.experiments.trees import exact_tables, tree_markdown

    text = README.read_text(encoding="utf-8")
    for line in tree_markdown(exact_tables(quick=True)).splitlines():
        assert line in text, line


def _prose(text: str) -> str:
    """``text`` with its line breaks and runs of spaces made single spaces."""
    return " ".join(text.split())


def test_the_block_ngram_numbers_are_a_seed_0_run_s():
    """The README's n-gram numbers of block verification, regenerated: the n-gram half of
    `specdec reproduce --only block` at seed 0 and the default size, on the very streams that
    run gives it (the Fig. 2 half, exact and tested elsewhere, is skipped: 4 simulations of
    5,000 trials, ≈ 3 s, plus the n-gram pair's construction)."""
    from sim.experiments.block import (
        BLOCK_NGRAM_WINDOWS,
        experiment_streams,
        ngram_block_calls,
        ngram_summary,
    )
    from sim.experiments.common import Settings
    from sim.experiments.runner import EXPERIMENTS

    names = list(EXPERIMENTS)
    rng = np.random.default_rng(0).spawn(len(names))[names.index("block")]  # as _run spawns
    _, streams = experiment_streams(rng, quick=False)
    trials = Settings.make(quick=False).trials // 40
    _, ngram = ngram_block_calls(trials, BLOCK_NGRAM_WINDOWS, streams)
    summary = ngram_summary(ngram)
    assert summary in _prose(README.read_text(encoding="utf-8")), summary
