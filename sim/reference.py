"""The reference engine's public path: :mod:`sim.engine.reference`, re-exported.

``from sim.reference import enumerate_outcomes, reference_simulate`` keeps working; the drivers
live in :mod:`sim.engine.reference` and each algorithm's routine in its family's engine module.
"""

from sim.engine.reference import (
    ExactLaw,
    Outcome,
    SamplingChooser,
    enumerate_outcomes,
    reference_simulate,
    run_algorithm,
)

__all__ = ["ExactLaw", "Outcome", "SamplingChooser", "enumerate_outcomes", "reference_simulate",
           "run_algorithm"]
