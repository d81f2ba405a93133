"""Optimal-transport engine: torch, batched over a leading dimension, device-agnostic.

Public API (see each module for the mathematics and shapes):

- :func:`sinkhorn`, :func:`sinkhorn2` - entropic OT, log-domain.
- :func:`gromov_wasserstein`, :func:`gromov_wasserstein2`, :func:`gw_value` - square-loss GW.
- :func:`fused_gromov_wasserstein`, :func:`fused_gromov_wasserstein2`, :func:`fgw_value` - fused GW.
- :func:`gw_barycenter`, :func:`fgw_barycenter` - (fused) GW barycenters with weights on the simplex.
- :func:`gram_volume` - volume of the parallelotope spanned by k vectors.

The problem data come first (structures, costs, and for GW/FGW the weights ``p, q`` as in POT); every
solver knob (``epsilon``, ``solver``, ``T0``, ``max_iter``, ...) is keyword-only, and so is everything
after ``lambdas`` in the barycenters (``p`` and ``qs`` cannot be swapped by position). Each solver
validates its knobs once, as a frozen ``_solver.SolverOptions``.
"""

from ._base import OTConvergenceWarning, OTNumericalWarning
from .barycenter import Barycenter, fgw_barycenter, gw_barycenter
from .fgw import fgw_value, fused_gromov_wasserstein, fused_gromov_wasserstein2
from .gw import gromov_wasserstein, gromov_wasserstein2, gw_value
from .sinkhorn import sinkhorn, sinkhorn2
from .volume import gram_volume

__all__ = [
    "Barycenter",
    "OTConvergenceWarning",
    "OTNumericalWarning",
    "fgw_barycenter",
    "fgw_value",
    "fused_gromov_wasserstein",
    "fused_gromov_wasserstein2",
    "gram_volume",
    "gromov_wasserstein",
    "gromov_wasserstein2",
    "gw_barycenter",
    "gw_value",
    "sinkhorn",
    "sinkhorn2",
]
