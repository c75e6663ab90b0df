"""specdec-theory simulation: model generators, engines, statistics, experiments.

The public entry point is :func:`simulate` (the vectorized numpy engine), returning a
:class:`SimResult`.  :mod:`sim.reference` holds the readable reference engine and the exact
enumerator; :mod:`sim.stats` the statistical tests used by the test suite and the reports.
"""

from sim.engine import simulate, simulate_counts
from sim.result import SimCounts, SimResult

__all__ = ["SimCounts", "SimResult", "simulate", "simulate_counts"]
