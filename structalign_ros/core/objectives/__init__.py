"""Training objectives, one method a module, one interface (:class:`base.Objective`).

:func:`build_objective` maps the ``objective`` config section to an instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from structalign_ros.core.config import ObjectiveConfig
from structalign_ros.core.kernels import InputKernels
from structalign_ros.core.objectives.base import Objective, ObjectiveResult
from structalign_ros.core.objectives.gotma import GOTMA
from structalign_ros.core.objectives.gram import GRAM
from structalign_ros.core.objectives.mover import MOVER
from structalign_ros.core.objectives.otm import OTM
from structalign_ros.core.objectives.pairwise import PairwiseInfoNCE
from structalign_ros.core.objectives.pose import pose_loss
from structalign_ros.core.objectives.symile import Symile
from structalign_ros.core.objectives.unioma import UniOMA

__all__ = [
    "GRAM",
    "Objective",
    "ObjectiveResult",
    "PairwiseInfoNCE",
    "Symile",
    "build_objective",
    "pose_loss",
]

_BASE: dict[str, Callable[[ObjectiveConfig], Objective]] = {
    "pairwise": lambda cfg: PairwiseInfoNCE(cfg.temperature),
    "symile": lambda cfg: Symile(cfg.temperature),
    "gram": lambda cfg: GRAM(cfg.temperature),
}


def _unioma(cfg: ObjectiveConfig, kinds: Mapping[str, str]) -> Objective:
    kernels = InputKernels(dict(kinds), cfg.kernel_image_size, cfg.tck_members, cfg.tck_max_clusters)
    return UniOMA(
        _BASE[cfg.base](cfg),
        kernels,
        alpha=cfg.alpha,
        epsilon=cfg.epsilon,
        gw_iterations=cfg.gw_iterations,
        sinkhorn_iterations=cfg.sinkhorn_iterations,
        lambda_entropy=cfg.lambda_entropy,
    )


def build_objective(cfg: ObjectiveConfig, kinds: Mapping[str, str], embed_dim: int) -> Objective:
    """The objective named by ``cfg.name``, configured from ``cfg``.

    Args:
        kinds: modality name -> kind in batch order (``MultimodalModel.specs``), for input kernels.
        embed_dim: the model's ``d``, for objectives with their own layers (OTM's decoders).
    """
    if cfg.name in _BASE:
        return _BASE[cfg.name](cfg)
    if cfg.name == "unioma":
        return _unioma(cfg, kinds)
    if cfg.name == "mover":
        return MOVER(cfg.temperature, cfg.epsilon, cfg.alpha)
    if cfg.name == "gotma":
        return GOTMA(cfg.temperature, cfg.alpha, cfg.epsilon, cfg.gw_iterations, cfg.sinkhorn_iterations)
    return OTM(
        len(kinds),
        embed_dim,
        cfg.temperature,
        cfg.alpha,
        epsilon=cfg.epsilon,
        gw_iterations=cfg.gw_iterations,
        sinkhorn_iterations=cfg.sinkhorn_iterations,
        aligned=cfg.otm_aligned,
    )
