"""The ``specdec`` command: ``specdec reproduce``, ``specdec simulate`` and
``specdec check-verifier``.

Errors in the arguments (and requests that would not fit in memory or would run for hours, an
output folder another run is writing into, a ``--dask`` scheduler lost during the run) end the
command with one line on stderr and exit status 2; Ctrl-C ends it with one line and status
130; status 1 means a check failed.  ``check-verifier`` exits 0 passed, 1 failed, 2 usage
error (or a verifier that could not be loaded, raised, hung past ``--timeout`` or broke the
convention), 3 inconclusive (no deviation found, but the run was too small to detect
``--min-tv``; the report states the rounds needed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time

__all__ = ["main"]

MODELS = ("fig2", "fig2-t100", "fig2-dirichlet", "random", "bernoulli", "hidden", "ngram")
ALGORITHMS = ("autoregressive", "speculative", "batch", "lossy")


#: Options that only mean something for some models / algorithms: given with another one,
#: they are an error (status 2), never silently ignored.  Defaults apply where they mean something.
MODEL_OPTIONS = {
    "vocab": (("random", "hidden", "ngram"), 100),
    "horizon": (("random", "bernoulli", "hidden", "ngram"), 20),
    "u": (("bernoulli",), 0.8),
    "v": (("bernoulli",), 0.5),
}
ALGORITHM_OPTIONS = {
    "window": (("speculative",), None),
    "no_bonus": (("speculative",), False),
    "drafts": (("batch",), 4),
    "verifier": (("batch",), "paper"),
    "eps": (("lossy",), 0.1),
    "rejection": (("lossy",), "opt"),
}


def _integer(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, also written as 1e6 or 1_000_000."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            try:
                number = float(text.replace("_", ""))
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
            if not number.is_integer():
                raise argparse.ArgumentTypeError(f"{text} is not a whole number") from None
            value = int(number)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: {what} must be >= {minimum}")
        return value

    return parse


def _real(low: float, high: float, what: str):
    """An argparse type: a real number in [low, high] (high may be inf)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text}: {what} must lie in [{low:g}, {high:g}]")
        return value

    return parse


def _apply_option_scopes(parser, args) -> None:
    """Refuse options that do not apply to the chosen model/algorithm; fill the defaults."""
    for scopes, chosen, kind in ((MODEL_OPTIONS, args.model, "model"),
                                 (ALGORITHM_OPTIONS, args.algorithm, "algorithm")):
        for dest, (applies_to, default) in scopes.items():
            value = getattr(args, dest)
            if value is None:
                setattr(args, dest, default)
            elif chosen not in applies_to:
                option = "--" + dest.replace("_", "-")
                parser.error(f"{option} applies only to --{kind} {' / '.join(applies_to)}, "
                             f"not to --{kind} {chosen}")


def _model(args):
    from sim import models

    if args.model == "fig2":
        return models.fig2_pair(50)
    if args.model == "fig2-t100":
        return models.fig2_pair(100)
    if args.model == "fig2-dirichlet":
        return models.fig2_pair(50, instance="dirichlet")
    if args.model == "random":
        return models.random_pair(args.vocab, args.horizon, rng=args.seed)
    if args.model == "bernoulli":
        return models.bernoulli_pair(args.u, args.v, horizon=args.horizon)
    if args.model == "hidden":
        return models.hidden_context_pair(args.vocab, 8, args.horizon, rng=args.seed)
    return models.ngram_pair(vocab_size=args.vocab, horizon=args.horizon)


def _algorithm(args):
    from theory import Autoregressive, BatchSpeculative, LossySpeculative, Speculative

    if args.algorithm == "autoregressive":
        return Autoregressive()
    if args.algorithm == "speculative":
        return Speculative(window=args.window, bonus=not args.no_bonus)
    if args.algorithm == "batch":
        return BatchSpeculative(args.drafts, args.verifier)
    return LossySpeculative(args.eps, args.rejection)


def _check_size(args) -> None:
    """Refuse, before anything is built, a model pair (with its sampling tables) that would not
    fit in memory: the one work model (:mod:`theory.limits`), on the pair's shape alone.

    The peak is the larger of the pair's construction (:func:`sim.models.pair_bytes`) and the
    finished pair beside the per-token sampling tables (:func:`sim.engine.token_table_bytes`);
    the per-position costs of a long horizon are sized by the exact DP and the engine.
    """
    from types import SimpleNamespace

    from sim.engine import check_memory, token_table_bytes
    from sim.models import pair_bytes

    contexts = {"random": args.vocab, "hidden": 8, "ngram": 2000}.get(args.model)
    if contexts is None:  # the fixed Fig. 2 and Bernoulli pairs: V = 7 and 2
        return
    peak, kept = pair_bytes(args.model, args.vocab, args.horizon, n_contexts=contexts)
    shape = SimpleNamespace(horizon=args.horizon, n_contexts=contexts, vocab_size=args.vocab,
                            is_time_homogeneous=args.model != "random")
    tables = token_table_bytes(shape, shape, _algorithm(args))
    check_memory(max(peak, kept + tables),
                 f"--model {args.model} with --vocab {args.vocab} and --horizon {args.horizon}",
                 "that is the model pair, then its sampling tables: choose a smaller --vocab "
                 "or --horizon")


def _simulate(args) -> int:
    from sim.engine import simulate
    from sim.stats import DEFAULT_ALPHA, mean_check, pmf_moments
    from theory import rejection_pmf, target_calls_pmf

    _check_size(args)
    draft, target = _model(args)
    if args.window is not None and args.window > target.horizon:
        raise ValueError(f"--window {args.window} exceeds the horizon T = {target.horizon}: "
                         f"omit --window to draft to the horizon")
    algorithm = _algorithm(args)
    # the exact laws first: a DP too large for this machine is refused before the simulation
    pmfs = (rejection_pmf(draft, target, algorithm), target_calls_pmf(draft, target, algorithm))
    with _cluster(args.dask) as client:
        result = simulate(draft, target, algorithm, n_trials=args.trials, rng=args.seed,
                          progress=args.progress, client=client)
    print(f"{algorithm!r} on {args.model}: T = {target.horizon}, V = {target.vocab_size}, "
          f"{args.trials:,} trials, seed {args.seed}")
    print(f"  two-sided z-tests of the simulated mean against the exact one, exact variance, "
          f"false-positive level {DEFAULT_ALPHA:g} each")
    failures = 0
    for name, samples, pmf in (("rejections", result.rejections, pmfs[0]),
                               ("target calls", result.target_calls, pmfs[1])):
        mean, variance = pmf_moments(pmf)
        check = mean_check(samples, mean, variance=variance, alpha=DEFAULT_ALPHA)
        low, high = check.confidence_interval()
        failures += not check.passed
        print(f"  E[{name}]: theory {mean:.6g}, simulated {check.estimate:.6g} "
              f"(95% CI {low:.6g} – {high:.6g}), z = {check.statistic:+.2f}, "
              f"p = {check.p_value:.3g}, {'pass' if check.passed else 'FAIL'}")
    return 1 if failures else 0


def _dask_client(address: str | None):
    """A ``dask.distributed`` client of the scheduler at ``address`` (None without one)."""
    if not address:
        return None
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--dask needs the dask extra; from the checkout: "
                         "pip install -e '.[dask]'") from None
    if not str(address).startswith(("tcp://", "tls://", "ucx://")) and ":" not in str(address):
        raise ValueError(f"--dask {address!r}: give the address of a running dask "
                         f"scheduler, e.g. tcp://127.0.0.1:8786 (or HOST:PORT)")
    if str(address).startswith("inproc://"):
        raise ValueError(f"--dask {address!r}: an inproc:// scheduler lives inside "
                         f"another process; give its tcp://HOST:PORT address")
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as error:
        raise OSError(f"--dask {address}: no dask scheduler answered within 10 s "
                      f"({type(error).__name__})") from None


@contextlib.contextmanager
def _cluster(address: str | None):
    """The client of ``--dask ADDRESS`` (or None) for the duration of a command."""
    from sim.engine import SchedulerLostError

    client = _dask_client(address)
    if client is None:
        yield None
        return
    lost = False
    try:
        yield client
    except SchedulerLostError:
        # the command ends here: dask would log its failed reconnections, with tracebacks
        logging.disable(logging.CRITICAL)
        lost = True
        raise
    finally:
        with contextlib.suppress(OSError, TimeoutError):
            client.close(timeout=1 if lost else None)  # don't wait for a scheduler that hangs


def _reproduce(args) -> int:
    from sim.engine import SchedulerLostError
    from sim.experiments import reproduce
    from sim.experiments.common import OutputError

    if str(args.out).strip():  # (an empty --out is refused by reproduce, with its name)
        _output_folder(args.out)
    with _cluster(args.dask) as client:
        try:
            failed = reproduce(args.out, quick=args.quick, seed=args.seed, only=args.only,
                               progress=not args.no_progress, client=client,
                               resume=not args.fresh)
        except SchedulerLostError as error:
            raise SchedulerLostError(f"{error}; the experiments finished so far stay in "
                                     f"{args.out} and the rerun resumes from them") from None
        except OutputError as error:  # a full disk: one line, no partial file (status 2)
            raise OutputError(error.errno, f"{error}; the experiments finished so far stay "
                                           f"in {args.out} and the rerun resumes from them") \
                from None
    print(f"report: {args.out}/report.md — "
          f"{'all checks passed' if not failed else f'{failed} check(s) FAILED'}")
    return 1 if failed else 0


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where the help text states them (option-specific defaults)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _load_verifier(spec: str):
    """``module:attribute`` or ``path/to/file.py:attribute`` → the object (one-line errors).

    A file is imported as ``python FILE.py`` would run it: its folder first on ``sys.path``, so
    modules beside it import; a module, as ``python -m`` would: the working directory on the
    path."""
    import importlib
    import importlib.util
    import os

    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"VERIFIER must be MODULE:FUNCTION or FILE.py:FUNCTION; got {spec!r}")
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise ValueError(f"no such file: {module_name}")
            folder = os.path.dirname(os.path.abspath(module_name))
            if folder not in sys.path:  # as `python FILE.py` does: modules beside it import
                sys.path.insert(0, folder)
            loader_spec = importlib.util.spec_from_file_location("_specdec_verifier",
                                                                 module_name)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # as `python -m` does: local modules import
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except Exception as error:  # any failure of the user's module is one line
        raise ValueError(f"cannot import {module_name}: {type(error).__name__}: {error}") \
            from None
    try:
        function = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{module_name} has no attribute {attribute!r}") from None
    if not callable(function):
        raise ValueError(f"{spec} is a {type(function).__name__}, not a callable verifier")
    return function


def _check_verifier(args) -> int:
    import os

    from sim.conformance import check_verifier, torch_verifier
    from sim.conformance.calls import VerifierTimeout
    from sim.conformance.report import VERDICTS

    verifier = _load_verifier(args.verifier)
    if args.adapter == "torch":
        verifier = torch_verifier(verifier)
    try:
        report = check_verifier(verifier, window=args.window, n_rounds=args.rounds,
                                rng=args.seed, alpha=args.alpha, level=args.level,
                                name=args.verifier, min_tv=args.min_tv,
                                timeout=args.timeout or None, threads=args.threads)
    except VerifierTimeout as error:
        # the hung call still runs in a thread Python cannot stop: end the process now
        print(f"specdec check-verifier: error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)
    print(report)
    return VERDICTS[report.verdict]


def _conformance_report(args) -> int:
    import json
    import math
    from pathlib import Path

    from sim.conformance.clients import conformance_report, report_markdown
    from sim.experiments.common import write_text_atomically

    _output_folder(args.out)  # before running anything
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def show(row):
        verdict = "not installed" if row["passed"] is None else row["verdict"].upper() \
            if row["verdict"] != "passed" else "passed"
        print(f"{row['client']}: {verdict}" + (
            f" (efficiency {row['efficiency']:.4f}, {row['seconds']} s)" if row["passed"]
            is not None else ""), flush=True)

    rows = conformance_report(window=args.window, n_rounds=args.rounds, rng=args.seed,
                              names=args.only, progress=None if args.quiet else show)
    text = report_markdown(rows, window=args.window, seed=args.seed)
    write_text_atomically(out / "conformance.md", text)
    finite = [{key: (None if isinstance(value, float) and not math.isfinite(value) else value)
               for key, value in row.items()} for row in rows]  # JSON has no Infinity
    write_text_atomically(out / "conformance.json",
                          json.dumps(finite, indent=1, default=str) + "\n")
    print(text)
    return 0


def _version() -> str:
    """The installed version of the package (specdec-theory)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specdec-theory")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


class _ExperimentsHelp(argparse.Action):
    """``reproduce --help``: the help with the experiment names (imported only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from sim.experiments.runner import EXPERIMENTS

        parser.epilog = f"experiments (for --only): {', '.join(EXPERIMENTS)}"
        parser.print_help()
        parser.exit()


def _output_folder(path: str) -> None:
    """Refuse an ``--out`` that cannot be a folder (it, or a folder above it, is a file) before
    any work, with one line."""
    from pathlib import Path

    if not str(path).strip():
        raise ValueError(f"--out must name a folder; got {str(path)!r}")
    for part in (Path(path), *Path(path).parents):
        if part.exists():
            if not part.is_dir():
                where = "" if part == Path(path) else f": {part}"
                raise ValueError(f"--out {path}{where} is a file, not a folder")
            return


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="specdec", description="Speculative decoding theory "
                                     "and simulation (Yin et al., NeurIPS 2024).")
    parser.add_argument("--version", action="version", version=f"specdec {_version()}",
                        help="print the package version and exit")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("reproduce", help="regenerate every figure and the report",
                              formatter_class=_HelpFormatter, add_help=False)
    run.add_argument("-h", "--help", action=_ExperimentsHelp,
                     help="show this help message (with the experiment names) and exit")
    run.add_argument("--out", default="results", help="output folder")
    run.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    run.add_argument("--seed", type=_integer(0, "the seed"), default=0,
                     help="master seed of every experiment")
    run.add_argument("--only", nargs="+", metavar="NAME",
                     help="run only these experiments (names listed below)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--dask", metavar="ADDRESS", help="run on a dask.distributed scheduler")
    run.add_argument("--fresh", action="store_true",
                     help="recompute every experiment (default: resume a previous run in --out)")
    run.set_defaults(handler=_reproduce)

    sim = commands.add_parser(
        "simulate", help="one simulation, theory vs simulation", formatter_class=_HelpFormatter,
        description="Simulate one algorithm on one model pair with the CPU engine and test the "
                    "simulated means of N_rej and of the target calls against the exact dynamic "
                    "programs (two-sided z-tests at false-positive level 1e-6 each). Options "
                    "marked [model ...] or [algorithm ...] apply only there; given elsewhere "
                    "they are an error.")
    sim.add_argument("--model", choices=MODELS, default="fig2",
                     help="draft/target pair: the paper's Fig. 2 chains (T = 50 or 100), the "
                          "Dirichlet stand-in, random, Bernoulli, hidden-context or n-gram")
    sim.add_argument("--algorithm", choices=ALGORITHMS, default="speculative",
                     help="decoding algorithm")
    sim.add_argument("--trials", type=_integer(2, "the number of trials"), default=100_000,
                     help="Monte Carlo trials (1e6 and 1_000_000 are accepted)")
    sim.add_argument("--seed", type=_integer(0, "the seed"), default=0,
                     help="seed of the simulation (and of the random/hidden models)")
    sim.add_argument("--window", type=_integer(1, "the window"), default=None,
                     help="[algorithm speculative] drafts per round (default: to the horizon)")
    sim.add_argument("--no-bonus", action="store_true", default=None,
                     help="[algorithm speculative] no bonus token after a fully accepted window")
    sim.add_argument("--drafts", type=_integer(1, "the number of drafts"), default=None,
                     help="[algorithm batch] M, drafts per round (default: 4)")
    sim.add_argument("--verifier", choices=("paper", "trie"), default=None,
                     help="[algorithm batch] Algorithm 4 or the trie verifier (default: paper)")
    sim.add_argument("--eps", type=_real(0, float("inf"), "eps"), default=None,
                     help="[algorithm lossy] over-acceptance ε >= 0 (default: 0.1)")
    sim.add_argument("--rejection", choices=("opt", "target"), default=None,
                     help="[algorithm lossy] rejection law: Decoding-OPT or -UNO (default: opt)")
    sim.add_argument("--vocab", type=_integer(1, "the vocabulary size"), default=None,
                     help="[model random/hidden/ngram] vocabulary size V (default: 100)")
    sim.add_argument("--horizon", type=_integer(1, "the horizon"), default=None,
                     help="[model random/bernoulli/hidden/ngram] horizon T (default: 20)")
    sim.add_argument("--u", type=_real(0, 1, "u"), default=None,
                     help="[model bernoulli] draft P(token 1) (default: 0.8)")
    sim.add_argument("--v", type=_real(0, 1, "v"), default=None,
                     help="[model bernoulli] target P(token 1) (default: 0.5)")
    sim.add_argument("--progress", action="store_true", help="show a progress bar")
    sim.add_argument("--dask", metavar="ADDRESS", help="run on a dask.distributed scheduler")
    sim.set_defaults(handler=_simulate, scoped=sim)

    from sim.conformance import DEFAULT_ROUNDS

    check = commands.add_parser(
        "check-verifier", help="test a verifier for losslessness and efficiency",
        formatter_class=_HelpFormatter,
        description="Run a speculative-decoding verifier through the conformance harness "
                    "(sim.conformance): whole generations over a suite of Markov-chain pairs, "
                    "the emitted-token law tested against the target at false-positive level "
                    "--alpha, the efficiency against the token-wise optimum. The verifier "
                    "follows the convention verifier(draft_tokens, draft_probs, target_probs, "
                    "rng) -> emitted (README: 'Check your implementation'). Exit status 0: "
                    "passed; 1: failed (not lossless); 2: usage error, or the verifier could "
                    "not be loaded, raised, hung past --timeout or broke the convention; 3: "
                    "inconclusive (no deviation found, but too few rounds to detect --min-tv "
                    "on every pair; the report states the rounds needed).")
    check.add_argument("verifier", metavar="VERIFIER",
                       help="MODULE:FUNCTION or FILE.py:FUNCTION")
    check.add_argument("--window", type=_integer(1, "the window"), required=True,
                       help="γ, drafts per round")
    check.add_argument("--rounds", type=_integer(1, "the number of rounds"),
                       default=DEFAULT_ROUNDS, help="verifier rounds over the whole suite")
    check.add_argument("--seed", type=_integer(0, "the seed"), default=0, help="seed")
    check.add_argument("--alpha", type=_real(1e-300, 0.5, "alpha"), default=1e-6,
                       help="false-positive level of the whole check")
    check.add_argument("--min-tv", type=_real(1e-6, 1, "min-tv"), default=0.05,
                       help="the per-position TV every pair must detect with power 0.9 for "
                            "a pass; smaller runs are inconclusive (exit 3)")
    check.add_argument("--timeout", type=_real(0, float("inf"), "timeout"), default=60.0,
                       help="seconds one verifier call may take; a hung call ends the run "
                            "with one line and exit status 2 at once (0: no limit)")
    check.add_argument("--threads", type=_integer(1, "the number of threads"), default=1,
                       help="torch (and, with threadpoolctl, BLAS) threads during the run")
    check.add_argument("--level", choices=("token", "sequence"), default="token",
                       help="test each token given its prefix (the default suite), or whole "
                            "generations (small pairs; for verifiers exact only jointly)")
    check.add_argument("--adapter", choices=("numpy", "torch"), default="numpy",
                       help="numpy arrays and a numpy Generator, or torch tensors and a "
                            "torch.Generator")
    check.set_defaults(handler=_check_verifier)

    report = commands.add_parser(
        "conformance-report", formatter_class=_HelpFormatter,
        help="run every installed real client (sim.clients) through the harness",
        description="Run the speculative-decoding verifiers of the packages adapted in "
                    "sim.clients (those installed) through check-verifier and write the table "
                    "to OUT/conformance.md and OUT/conformance.json. From a checkout, `make "
                    "conformance-report` installs the pinned packages and runs this command.")
    report.add_argument("--out", default="results", help="output folder")
    report.add_argument("--window", type=_integer(1, "the window"), default=3,
                        help="γ, drafts per round")
    report.add_argument("--rounds", type=_integer(1, "the number of rounds"),
                        default=DEFAULT_ROUNDS, help="verifier rounds per client")
    report.add_argument("--seed", type=_integer(0, "the seed"), default=0, help="seed")
    report.add_argument("--only", nargs="+", metavar="CLIENT", help="only these clients")
    report.add_argument("--quiet", action="store_true", help="print only the table")
    report.set_defaults(handler=_conformance_report)
    return parser


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush at exit finds no broken
    pipe to complain about."""
    import os

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _interrupt_soon() -> None:
    """SIGINT to this process in 10 ms (after the thread that asked has moved on)."""
    time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


@contextlib.contextmanager
def _interrupts_survive_finalizers():
    """Deliver again a Ctrl-C that landed in a finalizer.

    Python raises ``KeyboardInterrupt`` wherever the main thread is when the signal is
    handled; inside a ``__del__`` (numba loading a cached kernel frees llvmlite objects) the
    exception cannot propagate: Python prints "Exception ignored in ..." and the command runs
    on.  While this context is active such an interrupt is sent again, from another thread
    (sent from the hook itself, it would be handled inside the hook and swallowed as well), so
    it is raised at an ordinary line instead.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type,
                                                          KeyboardInterrupt):
            threading.Thread(target=_interrupt_soon, name="specdec-interrupt-again",
                             daemon=True).start()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def main(argv=None) -> int:
    """Entry point of the ``specdec`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        _apply_option_scopes(args.scoped, args)
    try:
        with _interrupts_survive_finalizers():
            status = args.handler(args)
        sys.stdout.flush()  # a reader that left (`| head`) shows here, not at exit
        return status
    except BrokenPipeError:  # the reader of stdout left: nobody to tell, nothing went wrong
        _discard_stdout()
        return 0
    except ImportError as error:  # an optional dependency (torch, dask, a client) is missing
        print(f"specdec {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, MemoryError) as error:
        print(f"specdec {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"specdec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
