"""The ``specdec`` command: ``specdec reproduce`` and ``specdec simulate``.

Errors in the arguments end the command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

__all__ = ["main"]

MODELS = ("fig2", "fig2-t100", "fig2-dirichlet", "random", "bernoulli", "hidden", "ngram")
ALGORITHMS = ("autoregressive", "speculative", "batch", "lossy")


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


def _simulate(args) -> int:
    from sim.engine import simulate
    from sim.stats import mean_check
    from theory import rejection_pmf, target_calls_pmf

    draft, target = _model(args)
    algorithm = _algorithm(args)
    result = simulate(draft, target, algorithm, n_trials=args.trials, rng=args.seed,
                      progress=args.progress)
    print(f"{algorithm!r} on {args.model}: T = {target.horizon}, V = {target.vocab_size}, "
          f"{args.trials:,} trials, seed {args.seed}")
    failures = 0
    for name, samples, pmf in (("rejections", result.rejections,
                                rejection_pmf(draft, target, algorithm)),
                               ("target calls", result.target_calls,
                                target_calls_pmf(draft, target, algorithm))):
        k = np.arange(len(pmf))
        mean = float(k @ pmf)
        check = mean_check(samples, mean, variance=float(k**2 @ pmf - mean**2))
        low, high = check.confidence_interval()
        failures += not check.passed
        print(f"  E[{name}]: theory {mean:.6g}, simulated {check.estimate:.6g} "
              f"(95% CI {low:.6g} – {high:.6g}), z = {check.statistic:+.2f}, "
              f"{'pass' if check.passed else 'FAIL'}")
    return 1 if failures else 0


def _reproduce(args) -> int:
    from sim.reproduce import reproduce

    client = None
    if args.dask:
        try:
            from distributed import Client
        except ImportError:
            raise ValueError("--dask needs the dask extra: pip install 'specdec-theory[dask]'")\
                from None
        client = Client(args.dask)
    try:
        failed = reproduce(args.out, quick=args.quick, seed=args.seed, only=args.only,
                           progress=not args.no_progress, client=client,
                           resume=not args.fresh)
    finally:
        if client is not None:
            client.close()
    print(f"report: {args.out}/report.md — "
          f"{'all checks passed' if not failed else f'{failed} check(s) FAILED'}")
    return 1 if failed else 0


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="specdec", description="Speculative decoding theory "
                                     "and simulation (Yin et al., NeurIPS 2024).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("reproduce", help="regenerate every figure and the report")
    run.add_argument("--out", default="results", help="output folder (default: results)")
    run.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--dask", metavar="ADDRESS", help="run on a dask.distributed scheduler")
    run.add_argument("--fresh", action="store_true",
                     help="recompute every experiment (default: resume a previous run in --out)")
    run.set_defaults(handler=_reproduce)

    sim = commands.add_parser("simulate", help="one simulation, theory vs simulation")
    sim.add_argument("--model", choices=MODELS, default="fig2")
    sim.add_argument("--algorithm", choices=ALGORITHMS, default="speculative")
    sim.add_argument("--trials", type=int, default=100_000)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--window", type=int, default=None)
    sim.add_argument("--no-bonus", action="store_true")
    sim.add_argument("--drafts", type=int, default=4)
    sim.add_argument("--verifier", choices=("paper", "trie"), default="paper")
    sim.add_argument("--eps", type=float, default=0.1)
    sim.add_argument("--rejection", choices=("opt", "target"), default="opt")
    sim.add_argument("--vocab", type=int, default=100)
    sim.add_argument("--horizon", type=int, default=20)
    sim.add_argument("--u", type=float, default=0.8)
    sim.add_argument("--v", type=float, default=0.5)
    sim.add_argument("--progress", action="store_true")
    sim.set_defaults(handler=_simulate)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``specdec`` console script."""
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"specdec {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
