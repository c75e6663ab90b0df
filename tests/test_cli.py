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
        # a row is a passing check, or a simulated-only row with no closed form to check
        assert all(check["passed"] is True or (check["passed"] is None
                                               and check["closed_form"] is None)
                   for check in record["checks"])
    report = (tmp_path / "report.md").read_text()
    assert ", 0 failed**" in report and "**FAIL**" not in report
    assert all(f"figures/{name}.png" in report for name in FIGURES)


def test_report_puts_the_printed_value_beside_the_paper_instance(tmp_path):
    from sim.reproduce import reproduce

    assert reproduce(tmp_path, quick=True, only=["fig2a", "fig2_dirichlet"],
                     progress=False) == 0
    report = (tmp_path / "report.md").read_text()
    # the paper's instance: computed 16.40489… (the reconstruction), printed 16.41
    assert "| fig2a | E[N_rej] SD (Theorem 1) | 16.40489 | 16.41 |" in report
    assert "| fig2_dirichlet | E[N_rej] SD (Theorem 1) |" in report  # the stand-in, kept
    record = json.loads((tmp_path / "data" / "fig2a.json").read_text())
    assert record["checks"][0]["printed"] == 16.41


def test_resume_recomputes_records_of_an_older_format(tmp_path):
    from sim.reproduce import RECORD_FORMAT, Settings, _completed, reproduce

    assert reproduce(tmp_path, quick=True, only=["gap"], progress=False) == 0
    path = tmp_path / "data" / "gap.json"
    settings = Settings.make(quick=True)
    assert _completed(tmp_path, "gap", 0, settings) is not None
    record = json.loads(path.read_text())
    assert record.pop("format") == RECORD_FORMAT
    path.write_text(json.dumps(record))
    assert _completed(tmp_path, "gap", 0, settings) is None
