"""The names every layer shares, spelled once: a papermill parameter, a table's column value and a
function's argument all use these strings. Each registry elsewhere (``criteria.CRITERIA``,
``composites.COMPOSITES``, ``pruning.ALLOCATIONS``) is keyed by exactly these names (a test checks)."""
from __future__ import annotations

CRITERIA = ("lrp", "weight", "gradient", "taylor", "random")
"""Pruning criteria: LRP relevance (Yeom et al. 2021), weight magnitude, gradient, first-order
Taylor and random scores."""
OTHER_CRITERIA = ("gradient", "taylor", "weight", "random")
"""What LRP is compared with, in the low-data study's order."""
CONTROL = "none"
"""The unpruned network fine-tuned alike: what the extra training alone does."""
COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon")
"""Stock LRP composites (zennit's VGG composites and LRP-epsilon throughout)."""
ALLOCATIONS = ("report", "uniform", "global")
"""How many filters each layer loses: the original report's, the same fraction everywhere, or by
ranking every filter together."""
ROUTES = ("compute", "size", "combined")
"""The headline's routes (notebook 06's ``routes_run``); ``report`` and ``iterative`` are run apart."""
INT8_ROUTES = ("size", "combined")
"""The routes whose networks are measured as int8 (on each grid of the profile's ``weight_bits``)."""
SCHEDULES = ("oneshot", "iterative")
"""One-shot (every route) and iterative pruning."""
LRP, WEIGHT, GRADIENT, TAYLOR, RANDOM = CRITERIA
EPSILON_PLUS_FLAT, EPSILON_GAMMA_BOX, EPSILON_ALPHA2_BETA1, EPSILON = COMPOSITES
REPORT, UNIFORM, GLOBAL = ALLOCATIONS
COMPUTE, SIZE, COMBINED = ROUTES
REPORT_POINT = REPORT
"""The report's operating point as a route of notebook 06 (spelled like its allocation)."""
ONESHOT, ITERATIVE = SCHEDULES
STATUSES = ("ok", "diverged")
"""What a fine-tuned run ends as: a result, or diverged or collapsed (never a result)."""


def default_bits(route: str) -> int:
    """The weight grid of a run whose row does not name one: 8 (full int8) on the int8 routes,
    32 (float32) elsewhere; rows saved before the column existed were all measured so."""
    return 8 if route in INT8_ROUTES else 32
