"""specdec-theory: deterministic mathematics of speculative decoding.

Models (:class:`MarkovLM`), algorithm specifications (one module per family, on the shared base
of :mod:`theory.algorithms`), one-position quantities, and exact closed forms and dynamic
programs, after Yin, Chen, Huang, Wang, *A Theoretical Perspective for
Speculative Decoding Algorithm* (NeurIPS 2024, arXiv:2411.00841).  Nothing here draws random
numbers; :mod:`sim` does.
"""

from theory.algorithms import Algorithm, Branch, RoundLevelAlgorithm
from theory.batch import (
    BatchSpeculative,
    batch_improvement,
    batch_rejection_limit,
    root_acceptance,
    theorem3_rejections,
)
from theory.block import BlockSpeculative
from theory.exact import (
    expected_rejections,
    expected_speedup,
    expected_target_calls,
    expected_walltime,
    rejection_pmf,
    rejection_profile,
    round_accepted_tokens,
    round_length_pmf,
    target_calls_pmf,
    theorem1_rejections,
)
from theory.lossy import (
    LossySpeculative,
    optimal_rejection_distribution,
    output_model,
    pareto_front,
    tv_loss,
    verifier_tradeoff,
)
from theory.lossy_zoo import TruncatedSpeculative, TypicalAcceptance
from theory.models import MarkovLM, check_compatible, context_transition
from theory.multidraft import optimal_multidraft_acceptance
from theory.onestep import (
    acceptance_probability,
    rejection_law,
    rejection_mass,
    residual_distribution,
    tv_distance,
)
from theory.speculative import Autoregressive, Speculative, UnbiasedSpeculative
from theory.stopping import (
    AdaptiveSpeculative,
    EntropyStopping,
    ThresholdStopping,
    optimal_stopping_policy,
)
from theory.tree import TreeSpeculative
from theory.windows import WindowPolicy, optimal_window_policy

__all__ = [
    "AdaptiveSpeculative",
    "Algorithm",
    "Autoregressive",
    "BatchSpeculative",
    "BlockSpeculative",
    "Branch",
    "EntropyStopping",
    "LossySpeculative",
    "MarkovLM",
    "RoundLevelAlgorithm",
    "Speculative",
    "ThresholdStopping",
    "TreeSpeculative",
    "TruncatedSpeculative",
    "TypicalAcceptance",
    "UnbiasedSpeculative",
    "WindowPolicy",
    "acceptance_probability",
    "batch_improvement",
    "batch_rejection_limit",
    "check_compatible",
    "context_transition",
    "expected_rejections",
    "expected_speedup",
    "expected_target_calls",
    "expected_walltime",
    "optimal_multidraft_acceptance",
    "optimal_rejection_distribution",
    "optimal_stopping_policy",
    "optimal_window_policy",
    "output_model",
    "pareto_front",
    "rejection_law",
    "rejection_mass",
    "rejection_pmf",
    "rejection_profile",
    "residual_distribution",
    "root_acceptance",
    "round_accepted_tokens",
    "round_length_pmf",
    "target_calls_pmf",
    "theorem1_rejections",
    "theorem3_rejections",
    "tv_distance",
    "tv_loss",
    "verifier_tradeoff",
]
