r"""Exact laws of one-round verification rules on Markov chains: the theory behind the
conformance harness (:mod:`sim.conformance`) and its table of failure modes.

Two modules: :mod:`theory.conformance.rules` holds the **round rules** — the exact law of what
a single-draft verifier emits in one round given its drafts (:func:`standard_rule`,
:func:`block_rule`, :func:`verification_rule`) — with the row processors and the failure modes
of :data:`FAILURE_MODES`; :mod:`theory.conformance.laws` runs a rule over a whole chain exactly
(:func:`round_laws`, :func:`sequence_law`, :func:`deviation`, :func:`expected_accepted`).
Every public name of both is importable from here.
"""

from theory.conformance.laws import (
    DEFAULT_MAX_NODES,
    MAX_ROW_FLOATS,
    Deviation,
    RoundLaws,
    TooManyDraftPaths,
    deviation,
    expected_accepted,
    round_laws,
    sequence_law,
)
from theory.conformance.rules import (
    FAILURE_MODES,
    PRECISION_FAILURES,
    FailureMode,
    block_rule,
    bonus_from_wrong_row_rule,
    floor,
    processed_rule,
    resample_from_target_rule,
    round_to,
    rounded_rule,
    standard_rule,
    temperature,
    top_k,
    top_p,
    verification_rule,
)
from theory.conformance.rules import (
    RoundRule as RoundRule,  # the type of a rule (not in __all__, as before)
)

__all__ = [
    "DEFAULT_MAX_NODES",
    "FAILURE_MODES",
    "MAX_ROW_FLOATS",
    "PRECISION_FAILURES",
    "Deviation",
    "FailureMode",
    "RoundLaws",
    "TooManyDraftPaths",
    "block_rule",
    "bonus_from_wrong_row_rule",
    "deviation",
    "expected_accepted",
    "floor",
    "processed_rule",
    "resample_from_target_rule",
    "round_laws",
    "round_to",
    "rounded_rule",
    "sequence_law",
    "standard_rule",
    "temperature",
    "top_k",
    "top_p",
    "verification_rule",
]
