"""Training objectives, one method a module, one interface (:class:`base.Objective`).

:func:`build_objective` maps the ``objective`` config section to an instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from structalign_ros.core.config import ObjectiveConfig
from structalign_ros.core.learn.kernels import InputKernels
from structalign_ros.core.learn.objectives.base import Objective, ObjectiveResult
from structalign_ros.core.learn.objectives.gotma import GOTMA
from structalign_ros.core.learn.objectives.gram import GRAM
from structalign_ros.core.learn.objectives.mover import MOVER
from structalign_ros.core.learn.objectives.otm import OTM
from structalign_ros.core.learn.objectives.pairwise import PairwiseInfoNCE
from structalign_ros.core.learn.objectives.pose import pose_loss
from structalign_ros.core.learn.objectives.symile import Symile
from structalign_ros.core.learn.objectives.unioma import UniOMA

__all__ = [
    "BUILDERS",
    "GOTMA",
    "GRAM",
    "MOVER",
    "OTM",
    "Objective",
    "ObjectiveResult",
    "PairwiseInfoNCE",
    "Symile",
    "UniOMA",
    "build_base",
    "build_objective",
    "input_kernels",
    "pose_loss",
]

# name -> objective, from (config section, modality name -> kind in batch order, the model's d)
Builder = Callable[[ObjectiveConfig, Mapping[str, str], int], Objective]

_BASES: dict[str, Callable[..., Objective]] = {"pairwise": PairwiseInfoNCE, "symile": Symile, "gram": GRAM}


def build_base(name: str, temperature: float) -> Objective:
    """The contrastive objective ``name`` (one of ``config.BASE_OBJECTIVES``), UniOMA's base."""
    return _BASES[name](temperature=temperature)


def input_kernels(cfg: ObjectiveConfig, kinds: Mapping[str, str], seed: int = 0) -> InputKernels:
    """UniOMA's input kernels as ``cfg`` sets them; ``seed`` draws the time-series kernels' ensemble."""
    return InputKernels(dict(kinds), cfg.kernel_image_size, cfg.tck_members, cfg.tck_max_clusters, seed)


def _unioma(cfg: ObjectiveConfig, kinds: Mapping[str, str], embed_dim: int) -> Objective:
    return UniOMA(
        build_base(cfg.base, cfg.temperature),
        input_kernels(cfg, kinds),
        alpha=cfg.alpha,
        epsilon=cfg.epsilon,
        gw_iterations=cfg.gw_iterations,
        sinkhorn_iterations=cfg.sinkhorn_iterations,
        lambda_entropy=cfg.lambda_entropy,
    )


def _otm(cfg: ObjectiveConfig, kinds: Mapping[str, str], embed_dim: int) -> Objective:
    return OTM(
        len(kinds),
        embed_dim,
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        epsilon=cfg.epsilon,
        gw_iterations=cfg.gw_iterations,
        sinkhorn_iterations=cfg.sinkhorn_iterations,
        aligned=cfg.otm_aligned,
    )


# One builder for every name of ``config.OBJECTIVES`` (test_objectives checks the two agree).
BUILDERS: dict[str, Builder] = {
    **{name: (lambda cfg, kinds, d, name=name: build_base(name, cfg.temperature)) for name in _BASES},
    "unioma": _unioma,
    "mover": lambda cfg, kinds, d: MOVER(temperature=cfg.temperature, epsilon=cfg.epsilon, alpha=cfg.alpha),
    "gotma": lambda cfg, kinds, d: GOTMA(
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        epsilon=cfg.epsilon,
        gw_iterations=cfg.gw_iterations,
        sinkhorn_iterations=cfg.sinkhorn_iterations,
    ),
    "otm": _otm,
}


def build_objective(cfg: ObjectiveConfig, kinds: Mapping[str, str], embed_dim: int) -> Objective:
    """The objective named by ``cfg.name``, configured from ``cfg``.

    Args:
        kinds: modality name -> kind in batch order (``MultimodalModel.specs``), for input kernels.
        embed_dim: the model's ``d``, for objectives with their own layers (OTM's decoders).
    """
    return BUILDERS[cfg.name](cfg, kinds, embed_dim)
