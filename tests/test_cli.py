"""The ``specdec`` command: one-off simulations and the reproduction run."""

import json

import pytest

from sim.cli import main
from sim.figures import FIGURES
from sim.reproduce import EXPERIMENTS


def test_simulate_prints_theory_and_simulation(capsys):
    assert main(["simulate", "--model", "bernoulli", "--algorithm", "batch", "--drafts", "3",
                 "--horizon", "5", "--trials", "20000", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "BatchSpeculative(n_drafts=3" in out
    assert out.count("pass") == 2 and "E[rejections]: theory" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["simulate", "--trials", "0"], "n_trials must be >= 1"),
    (["simulate", "--algorithm", "speculative", "--window", "0"], "window must be >= 1"),
    (["simulate", "--algorithm", "lossy", "--eps", "-1"], "eps must be a real number >= 0"),
    (["reproduce", "--only", "fig9"], "unknown experiments"),
])
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_quick_reproduction_writes_every_figure_and_a_passing_report(tmp_path):
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    for name in EXPERIMENTS:
        for suffix in ("png", "pdf"):
            assert (tmp_path / "figures" / f"{name}.{suffix}").stat().st_size > 1000
        record = json.loads((tmp_path / "data" / f"{name}.json").read_text())
        assert record["seed"] == 0 and "numpy" in record["versions"]
        assert all(check["passed"] for check in record["checks"])
    report = (tmp_path / "report.md").read_text()
    assert ", 0 failed**" in report and "**FAIL**" not in report
    assert all(f"figures/{name}.png" in report for name in FIGURES)
