"""Training objectives, one method a module, one interface (:class:`base.Objective`).

:func:`build_objective` maps the ``objective`` config section to an instance.
"""

from __future__ import annotations

from collections.abc import Callable

from structalign_ros.core.config import ObjectiveConfig
from structalign_ros.core.objectives.base import Objective, ObjectiveResult
from structalign_ros.core.objectives.pairwise import PairwiseInfoNCE
from structalign_ros.core.objectives.pose import pose_loss
from structalign_ros.core.objectives.symile import Symile

__all__ = ["Objective", "ObjectiveResult", "PairwiseInfoNCE", "Symile", "build_objective", "pose_loss"]

_BUILDERS: dict[str, Callable[[ObjectiveConfig], Objective]] = {
    "pairwise": lambda cfg: PairwiseInfoNCE(cfg.temperature),
    "symile": lambda cfg: Symile(cfg.temperature),
}


def build_objective(cfg: ObjectiveConfig) -> Objective:
    """The objective named by ``cfg.name``, configured from ``cfg``."""
    if cfg.name not in _BUILDERS:
        raise NotImplementedError(
            f"objective {cfg.name!r} is not implemented yet; available: {sorted(_BUILDERS)}"
        )
    return _BUILDERS[cfg.name](cfg)
