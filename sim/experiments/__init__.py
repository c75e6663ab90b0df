"""Experiments: theory against simulation, one module per algorithm family, and the runner.

Each experiment runs the vectorized engine, compares every simulated statistic with its closed
form through :mod:`sim.stats`, and returns plain rows (dicts) that carry the verdicts, plus
the data of its figure, which the same module draws.

* :mod:`sim.experiments.common` — :class:`~sim.experiments.common.Settings`, the outcome, the
  check rows and running means every experiment shares;
* :mod:`sim.experiments.plotting` — colours, panels and saving shared by the figures;
* :mod:`sim.experiments.speculative` — one draft: Fig. 2(a), the law of N_rej, walltime;
* :mod:`sim.experiments.batch` — M drafts: :func:`batch_experiment`, Fig. 2(b, c), Fig. 3,
  Fig. 5, the gap to the optimal verifier;
* :mod:`sim.experiments.lossy` — Fig. 4, :func:`tradeoff_table`, :func:`equal_rejection_eps`;
* :mod:`sim.experiments.lossy_zoo` — every lossy scheme against Theorem 5's line;
* :mod:`sim.experiments.windows` — optimal draft lengths vs fixed γ and Leviathan's rule;
* :mod:`sim.experiments.block` — block vs token-wise verification;
* :mod:`sim.experiments.multidraft` — the multi-draft verifier zoo against α*;
* :mod:`sim.experiments.stopping` — adaptive draft length: the optimal stopping rule vs
  SpecDec++'s threshold, an entropy rule, window policies; the smallest counterexample;
* :mod:`sim.experiments.runner` — the registry in report order and :func:`reproduce` (the
  ``specdec reproduce`` command: lock, resume, hashes, data files, report);
* :mod:`sim.experiments.figures` — the figure functions under one roof.
"""

from sim.experiments.batch import BatchExperiment, batch_experiment, multidraft_gap
from sim.experiments.lossy import equal_rejection_eps, tradeoff_table
from sim.experiments.runner import EXPERIMENTS, Settings, reproduce

__all__ = ["EXPERIMENTS", "BatchExperiment", "Settings", "batch_experiment",
           "equal_rejection_eps", "multidraft_gap", "reproduce", "tradeoff_table"]
