"""The ``specdec`` command: one-off simulations and the reproduction run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sim.cli import main
from sim.experiments.runner import EXPERIMENTS, FIGURES


def test_simulate_prints_theory_and_simulation(capsys):
    assert main(["simulate", "--model", "bernoulli", "--algorithm", "batch", "--drafts", "3",
                 "--horizon", "5", "--trials", "20000", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "BatchSpeculative(n_drafts=3" in out
    assert out.count("pass") == 2 and "E[rejections]: theory" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["simulate", "--trials", "0"], "argument --trials: 0: the number of trials must be >= 2"),
    (["simulate", "--algorithm", "speculative", "--window", "0"],
     "argument --window: 0: the window must be >= 1"),
    (["simulate", "--algorithm", "lossy", "--eps", "-1"], "argument --eps: -1: eps must lie in"),
    (["reproduce", "--only", "fig9"], "unknown experiments"),
])
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def _specdec(*argv):
    """The command as a user runs it: a fresh process."""
    return subprocess.run([sys.executable, "-m", "sim.cli", *argv], capture_output=True,
                          text=True, check=False, timeout=300)


def test_autoregressive_simulation_passes_and_states_the_test_level():
    """Its target calls are T with certainty: the variance must come out >= 0 (it was -9e-13)."""
    done = _specdec("simulate", "--algorithm", "autoregressive", "--trials", "2e3")
    assert done.returncode == 0, done.stderr
    assert "2,000 trials" in done.stdout and "false-positive level 1e-06 each" in done.stdout
    assert "E[target calls]: theory 50, simulated 50" in done.stdout
    assert done.stdout.count(", pass") == 2


def test_pmf_moments_never_cancel_below_zero():
    from sim.models import fig2_pair
    from sim.stats import pmf_moments
    from theory import Autoregressive, target_calls_pmf

    pmf = target_calls_pmf(*fig2_pair(), Autoregressive())  # T = 50 with certainty
    k = np.arange(pmf.size)
    assert float(k**2 @ pmf - (k @ pmf) ** 2) < 0  # the shortcut the helper replaces
    mean, variance = pmf_moments(pmf)
    assert abs(mean - 50) < 1e-12 and 0 <= variance < 1e-24


@pytest.mark.parametrize(("argv", "message"), [
    (["--eps", "0.2"], "--eps applies only to --algorithm lossy, not to --algorithm speculative"),
    (["--algorithm", "batch", "--window", "3"], "--window applies only to --algorithm speculative"),
    (["--seed", "-1"], "argument --seed: -1: the seed must be >= 0"),
    (["--trials", "1"], "argument --trials: 1: the number of trials must be >= 2"),
])
def test_inapplicable_options_and_bad_values_exit_2_naming_the_option(argv, message):
    done = _specdec("simulate", *argv)
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_every_option_of_simulate_says_what_it_does_and_its_default(capsys):
    from sim.cli import _parser

    simulate_parser = _parser()._subparsers._group_actions[0].choices["simulate"]
    options = [action for action in simulate_parser._actions if action.dest != "help"]
    assert len(options) == 16 and all(action.help for action in options)
    text = " ".join(simulate_parser.format_help().split())
    for fragment in ("(default: 100000)", "(default: fig2)", "(default: 4)", "(default: 0.1)",
                     "[algorithm lossy]", "[model bernoulli]"):
        assert fragment in text


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
    from sim.experiments import reproduce

    assert reproduce(tmp_path, quick=True, only=["fig2a", "fig2_dirichlet"],
                     progress=False) == 0
    report = (tmp_path / "report.md").read_text()
    # the paper's instance: computed 16.40489… (the reconstruction), printed 16.41
    assert "| fig2a | E[N_rej] SD (Theorem 1) | 16.40489 | 16.41 |" in report
    assert "| fig2_dirichlet | E[N_rej] SD (Theorem 1) |" in report  # the stand-in, kept
    record = json.loads((tmp_path / "data" / "fig2a.json").read_text())
    assert record["checks"][0]["printed"] == 16.41


def test_resume_recomputes_records_of_an_older_format(tmp_path):
    from sim.experiments.runner import RECORD_FORMAT, Settings, _completed, reproduce

    assert reproduce(tmp_path, quick=True, only=["gap"], progress=False) == 0
    path = tmp_path / "data" / "gap.json"
    settings = Settings.make(quick=True)
    assert _completed(tmp_path, "gap", 0, settings)[0] is not None
    record = json.loads(path.read_text())
    assert record.pop("format") == RECORD_FORMAT
    path.write_text(json.dumps(record))
    outcome, reason = _completed(tmp_path, "gap", 0, settings)
    assert outcome is None and "another version" in reason


def test_report_summary_first_statistics_shown_reuse_named_and_series_in_json(tmp_path):
    from sim.experiments import reproduce
    from sim.experiments.common import running_mean_series

    assert reproduce(tmp_path, quick=True, only=["fig2a", "fig4bc"], progress=False) == 0
    report = (tmp_path / "report.md").read_text()
    # a short summary and the figures come before the long table of checks
    assert report.index("| experiment | checks | passed | this run |") \
        < report.index("## Figures") < report.index("## Every check")
    assert "Every experiment was computed in this run." in report
    token_rows = [line for line in report.splitlines() if "last-token law" in line]
    assert token_rows
    for line in token_rows:  # chi-square statistic and p-value shown, not "—"
        statistic, p_value = line.split(" | ")[5:7]
        assert float(statistic) >= 0 and 0 <= float(p_value) <= 1
    record = json.loads((tmp_path / "data" / "fig2a.json").read_text())
    assert set(record["git"]) == {"commit", "dirty"}
    series = record["data"]["series"][0]  # the plotted series, thinned
    assert series["runs"][0] == 1 and series["runs"][-1] == 20_000
    assert len(series["runs"]) <= 300 and abs(series["running_mean"][-1]
                                              - record["checks"][0]["estimate"]) < 1e-9
    assert running_mean_series([1, 3, 2, 2], 1.0, 3)["band_half_width"][0] == 1.96
    # a resumed run says what it reused
    assert reproduce(tmp_path, quick=True, only=["fig2a", "pmf"], progress=False) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Reused from a previous run in this folder (same seed and sizes, not " \
           "recomputed): fig2a, fig4bc." in report  # fig4bc: left out by --only, on disk
    assert "| [pmf](#pmf) | 1 | 1 | computed |" in report


def _summary(report):
    return next(line for line in report.splitlines() if line.startswith("Seed "))


def test_only_into_a_folder_with_other_results_reports_every_completed_experiment(tmp_path):
    """``--only gap`` into a folder holding gap and pmf used to rewrite the report with gap
    alone (pmf's data still on disk).  Control: with another seed pmf's data are not this
    run's, and the report leaves them out."""
    from sim.experiments import reproduce

    assert reproduce(tmp_path, quick=True, only=["gap", "pmf"], progress=False) == 0
    both = (tmp_path / "report.md").read_text()
    assert reproduce(tmp_path, quick=True, only=["gap"], progress=False) == 0
    report = (tmp_path / "report.md").read_text()
    assert _summary(report) == _summary(both)  # the same number of checks
    assert "recomputed): gap, pmf." in report
    for name in ("gap", "pmf"):
        assert f"| [{name}](#{name}) |" in report and f"figures/{name}.png" in report
    assert report.count("| reused |") == 2
    assert reproduce(tmp_path, quick=True, seed=1, only=["gap"], progress=False) == 0
    other_seed = (tmp_path / "report.md").read_text()
    assert "| [gap](#gap) |" in other_seed and "[pmf]" not in other_seed
    assert "Every experiment was computed in this run." in other_seed


# ------------------------------------------------------------------ specdec check-verifier
BUGGY = '''
import numpy as np
from sim.conformance import failure_verifier

resample = failure_verifier("resample_from_target")
constant = 3

def wrong_shape(tokens, p, q, rng):
    return np.zeros(tokens.shape, dtype=np.int64)
'''


def test_check_verifier_passes_fails_and_refuses_with_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "buggy.py").write_text(BUGGY, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    small = ["--window", "2", "--rounds", "20000", "--min-tv", "0.1"]
    assert main(["check-verifier", "sim.conformance:reference_verifier", *small]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main(["check-verifier", "buggy:resample", *small]) == 1
    assert "FAILED" in capsys.readouterr().out
    for spec, message in [("buggy:wrong_shape", "returned shape"),
                          ("buggy:constant", "not a callable verifier"),
                          ("buggy:missing", "has no attribute 'missing'"),
                          ("nowhere:f", "cannot import nowhere: ModuleNotFoundError"),
                          ("missing.py:f", "no such file"),
                          ("no-colon", "MODULE:FUNCTION")]:
        assert main(["check-verifier", spec, *small]) == 2, spec
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["check-verifier", str(tmp_path / "buggy.py") + ":resample", *small]) == 1


def test_conformance_report_writes_its_table(tmp_path, capsys):
    pytest.importorskip("flashspec")
    assert main(["conformance-report", "--only", "flashspec.rejection_step[pytorch]",
                 "--rounds", "3000", "--out", str(tmp_path), "--quiet"]) == 0
    table = (tmp_path / "conformance.md").read_text(encoding="utf-8")
    # 3,000 rounds cannot detect a TV of 0.05: no deviation found, but inconclusive
    assert "`flashspec.rejection_step[pytorch]` | flashspec 0.3.1 | inconclusive" in table
    rows = json.loads((tmp_path / "conformance.json").read_text(encoding="utf-8"))
    assert rows[0]["verdict"] == "inconclusive" and rows[0]["rounds"] >= 2500
    assert rows[0]["rounds_needed"] > 3000
    assert main(["conformance-report", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown clients" in capsys.readouterr().err


# ------------------------------------------------------------------ the command line itself
def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"specdec {version('specdec-theory')}\n"


def test_reproduce_help_lists_the_experiment_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--help"])
    assert exit_info.value.code == 0
    names = " ".join(capsys.readouterr().out.split())  # help text wraps lines
    assert f"experiments (for --only): {', '.join(EXPERIMENTS)}" in names


def test_conformance_report_help_names_a_make_target_that_exists(capsys):
    import pathlib
    import re

    with pytest.raises(SystemExit):
        main(["conformance-report", "--help"])
    targets = re.findall(r"`make ([\w-]+)`", " ".join(capsys.readouterr().out.split()))
    makefile = (pathlib.Path(__file__).parents[1] / "Makefile").read_text()
    assert targets == ["conformance-report"]
    assert all(re.search(rf"^{target}:", makefile, re.MULTILINE) for target in targets)


def test_a_reader_that_leaves_the_pipe_ends_the_command_quietly():
    """``specdec simulate ... | head -1``: the reader is gone before the output is written
    (here: closed at once, so the write always meets a broken pipe)."""
    process = subprocess.Popen([sys.executable, "-m", "sim.cli", "simulate", "--model",
                                "bernoulli", "--horizon", "5", "--trials", "1000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=300) == 0
    assert stderr == b""


@pytest.mark.parametrize("command", ["reproduce", "conformance-report"])
def test_out_naming_a_file_is_refused_in_one_line_before_any_work(tmp_path, capsys, command):
    """A file for --out used to end in "[Errno 17] File exists" (conformance-report: after
    running every client)."""
    import time

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    started = time.monotonic()
    for out, message in [(a_file, f"--out {a_file} is a file, not a folder"),
                         (a_file / "results", f"--out {a_file / 'results'}: {a_file} is a "
                                              f"file, not a folder")]:
        assert main([command, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"specdec {command}: error: {message}\n"
    assert time.monotonic() - started < 5  # refused before running anything
    assert main(["reproduce", "--out", str(tmp_path / "fine"), "--quick", "--only", "gap",
                 "--no-progress"]) == 0  # control: a folder is accepted
