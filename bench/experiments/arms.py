"""One arm of an experiment: a fresh model trained with an objective from the library's registry,
the library's optimiser set-up and the library's loop (:meth:`core.learn.train.Trainer.fit`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from structalign_ros.core.config import ModelConfig, ObjectiveConfig, StructAlignConfig, TrainConfig
from structalign_ros.core.data.batch import Batch, ModalitySpec
from structalign_ros.core.learn.kernels import InputKernels
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.learn.objectives import MOVER, Objective, UniOMA, build_objective, input_kernels
from structalign_ros.core.learn.train import Trainer, make_optimizer, seed_everything
from structalign_ros.core.ot import OTConvergenceWarning

from .data import IMAGE, Split

MODEL = ModelConfig(embed_dim=32, width=8, image_size=IMAGE, pose_head=False)
# every objective's settings: the config defaults, with a smaller time-series kernel ensemble
OBJECTIVE = {"temperature": 0.1, "alpha": 1.0, "pose_weight": 0.0, "tck_members": 10, "tck_max_clusters": 4}

Transform = Callable[[Batch, torch.Generator], Batch]


@dataclass
class Budget:
    """What every arm gets."""

    steps: int
    batch: int
    lr: float = 3e-3
    lambda_lr: float = 3e-2  # modality logits: AdamW moves a parameter by ~lr per step, see E2

    def config(self) -> StructAlignConfig:
        """The config tree an arm trains with: this budget, weight decay 1e-4, grad clip 1, float32,
        no noise augmentation, no checkpoints."""
        config = StructAlignConfig()
        config.model = MODEL
        config.objective = ObjectiveConfig(**OBJECTIVE)
        config.train = TrainConfig(
            lr=self.lr,
            weight_decay=1e-4,
            batch_size=self.batch,
            steps=self.steps,
            grad_clip=1.0,
            amp=False,
            noise_augment=0.0,
        )
        return config


class ShuffledKernels:
    """E1's control: the input kernels with rows and columns permuted independently per modality, so
    the consensus keeps each modality's spectrum but loses which window is which."""

    def __init__(self, kernels: InputKernels, seed: int) -> None:
        self.kernels = kernels
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Batch, rows: torch.Tensor) -> torch.Tensor:
        K = self.kernels(batch, rows)  # (M, n, n)
        out = torch.empty_like(K)
        for m in range(K.shape[0]):
            p = torch.randperm(K.shape[1], generator=self.g)
            out[m] = K[m][p][:, p]
        return out


def objective(
    name: str,
    kinds: dict[str, str],
    *,
    base: str = "pairwise",
    seed: int = 0,
    shuffled: bool = False,
    aligned: bool = True,
    paired: bool = True,
) -> Objective:
    """``name`` from the library's registry (:func:`core.learn.objectives.build_objective`) with
    :data:`OBJECTIVE`, plus what the config cannot say: UniOMA's input kernels drawn from ``seed``
    (``shuffled``: E1's control), OTM's ``aligned`` mode, MOVER's OT-matched positives
    (``paired=False``)."""
    cfg = ObjectiveConfig(name=name, base=base, otm_aligned=aligned, **OBJECTIVE)
    built = build_objective(cfg, kinds, MODEL.embed_dim)
    if isinstance(built, UniOMA):
        kernels = input_kernels(cfg, kinds, seed)
        built.kernels = ShuffledKernels(kernels, seed) if shuffled else kernels
    if isinstance(built, MOVER):
        built.paired = paired
    return built


def train_arm(
    objective: Objective,
    data: Split,
    kinds: dict[str, str],
    budget: Budget,
    seed: int,
    transform: Transform | None = None,
) -> MultimodalModel:
    """Train a fresh model (initial weights and batches drawn from ``seed``) with ``objective``,
    ``budget.steps`` steps of :meth:`Trainer.fit` on random batches of ``data`` (``transform`` applied,
    with the same generator)."""
    seed_everything(seed)
    model = MultimodalModel(ModalitySpec.from_batch(data.batch, kinds), MODEL)
    model.fit_input_stats(data.batch.select(torch.arange(min(len(data), 512))))
    config = budget.config()
    optimizer = make_optimizer(model, objective, config.train, lambda_lr=budget.lambda_lr)
    trainer = Trainer(model, objective, config, optimizer)
    g = torch.Generator().manual_seed(seed)

    def batches() -> Iterator[Batch]:
        while True:
            batch = data.batch.select(torch.randperm(len(data), generator=g)[: budget.batch])
            yield batch if transform is None else transform(batch, g)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OTConvergenceWarning)
        trainer.fit(batches())
    model.eval()
    return model


def model_lambdas(model: MultimodalModel) -> list[float]:
    """The modality weights lambda."""
    return torch.softmax(model.modality_logits.detach(), 0).tolist()
