"""Training: the one step, checkpoints and the offline loop.

:func:`train_step` is the only place a gradient step happens; :class:`Trainer` (offline, from bags)
and :class:`~core.serve.online.OnlineTrainer` (live, from a replay buffer in a child process) both call it.
:meth:`Trainer.fit` is the one offline loop: ``structalign train``, the tests and
``bench/experiments`` run through it, the command's extras (metrics log, best on validation, the
pose-head refit) as :class:`~.hooks.TrainHooks`.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import structalign_ros
from structalign_ros.core.config import ConfigError, StructAlignConfig, TrainConfig
from structalign_ros.core.config_io import from_dict, to_dict
from structalign_ros.core.data.batch import Batch, ModalitySpec, add_noise, channel_std
from structalign_ros.core.learn.hooks import TrainHooks
from structalign_ros.core.learn.models import (
    IncompatibleWeights,
    ModelOutput,
    MultimodalModel,
    PoseHead,
    check_compatible,
)
from structalign_ros.core.learn.objectives import Objective, pose_loss

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
PARTIAL_SUFFIX = ".tmp"  # of a checkpoint being written (see _atomic_save)
# The offline trainer's own state (optimiser, counters) beside last.pt, for --resume.
RESUME_FORMAT = 1
RESUME_FILE = "resume.pt"


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's global generators (all devices) for a reproducible run.

    numpy's global generator is left alone: the core draws from explicit ``np.random.Generator`` s.
    """
    random.seed(seed)
    torch.manual_seed(seed)


def train_step(
    model: MultimodalModel,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    *,
    pose_weight: float = 0.0,
    grad_clip: float = 1.0,
    amp: bool = True,
    noise_augment: float = 0.0,
) -> dict[str, float]:
    """One optimisation step on ``batch``.

    The forward pass runs under bfloat16 autocast on CUDA when ``amp`` (bfloat16 needs no loss
    scaling); CPU runs in float32. A non-finite loss or gradient skips the step: gradients are
    dropped, weights and optimiser state stay as they were, and ``metrics["skipped"]`` is 1.

    Args:
        pose_weight: weight of the supervised pose loss when ``batch.pose`` is present.
        grad_clip: global gradient-norm clip; 0 disables clipping (the norm is still checked).
        noise_augment: see :func:`augment`.

    Returns:
        Scalar metrics: ``loss``, ``grad_norm``, ``skipped`` and the objective's own.
    """
    model.train()
    objective.train()
    device = next(model.parameters()).device
    check_modalities(model, batch)
    batch = augment(batch, _specs(model), noise_augment).to(device)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        out = model(batch.inputs, batch.mask)
        result = objective(out, batch, model.lambdas)
        loss = result.loss
        metrics = dict(result.metrics)
        head = _plain(model).pose_head
        if pose_weight > 0 and batch.pose is not None and head is not None:
            sup, sup_metrics = supervised_pose_loss(head, out, batch)
            loss = loss + pose_weight * sup
            metrics.update(sup_metrics)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not _finite_everywhere(loss):
        optimizer.zero_grad(set_to_none=True)
        return {**metrics, "loss": float(loss.detach()), "grad_norm": float("nan"), "skipped": 1.0}
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return {**metrics, "loss": float(loss.detach()), "grad_norm": float(norm), "skipped": 1.0}
    optimizer.step()
    return {**metrics, "loss": float(loss.detach()), "grad_norm": float(norm), "skipped": 0.0}


@torch.no_grad()
def evaluate(model: Any, objective: Objective, batches: Iterable[Batch]) -> dict[str, float]:
    """Mean objective and pose metrics of ``model`` over ``batches``, without training (weights and
    train/eval modes as they were).

    Batch means weighted by windows: ``loss`` (the objective's, without the pose term), the
    objective's own metrics and, for labelled batches, ``pose_pos_mae`` (m), ``pose_pos_mm`` and
    ``pose_rot_deg`` of the fused pose.

    Raises:
        ValueError: a batch whose modalities are not the model's, in its order (see
            :func:`check_modalities`).
    """
    modes = model.training, objective.training
    model.eval()
    objective.eval()
    device = next(model.parameters()).device
    head = _plain(model).pose_head
    sums: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    try:
        for batch in batches:
            check_modalities(model, batch)
            batch = batch.to(device)
            out = model(batch.inputs, batch.mask)
            result = objective(out, batch, model.lambdas)
            metrics = {"loss": float(result.loss), **result.metrics}
            if batch.pose is not None and head is not None:
                metrics.update(supervised_pose_loss(head, out, batch)[1])
            for key, value in metrics.items():
                sums[key] += value * len(batch)
                counts[key] += len(batch)
    finally:
        model.train(modes[0])
        objective.train(modes[1])
    return {k: sums[k] / counts[k] for k in sums}


def _plain(model: Any) -> MultimodalModel:
    """The :class:`MultimodalModel` inside a DistributedDataParallel wrapper, or ``model`` itself."""
    return model.module.model if isinstance(model, DistributedDataParallel) else model


def _specs(model: Any) -> dict[str, ModalitySpec]:
    return _plain(model).specs


def supervised_pose_loss(head: PoseHead, out: ModelOutput, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """:func:`objectives.pose_loss` of ``out`` against ``batch.pose`` on the present modalities."""
    loc, scale = head.position.loc, head.position.scale
    return pose_loss(out.pose_experts.float(), out.pose.float(), batch.pose, batch.mask, loc, scale)


def check_modalities(model: Any, batch: Batch) -> None:
    """Raise ``ValueError`` unless ``batch``'s modalities are the model's, in the model's order: the
    mask columns are read by position."""
    expected = tuple(_specs(model))
    if batch.modalities != expected:
        raise ValueError(f"batch modalities {batch.modalities} do not match the model's {expected}")


def augment(batch: Batch, specs: dict[str, ModalitySpec], noise: float) -> Batch:
    """``batch`` with, per window and present modality with probability ``noise``, Gaussian noise at
    the modality's own per-channel std (:func:`batch.channel_std`) added, so that each pose expert
    learns to report a larger variance for a noisy input. Draws from torch's global generator
    (seeded by :func:`seed_everything`)."""
    if noise <= 0:
        return batch
    mask = batch.mask
    inputs = dict(batch.inputs)
    for m, (name, spec) in enumerate(specs.items()):
        rows = (torch.rand(len(batch)) < noise) & mask[:, m]
        if rows.sum() < 1 or mask[:, m].sum() < 2:
            continue
        x = inputs[name]
        std = channel_std(spec.kind, x[mask[:, m]])
        x = x.clone()
        x[rows] = add_noise(spec.kind, x[rows], std)
        inputs[name] = x
    return Batch(inputs, mask, batch.modalities, batch.stamps_ns, batch.pose)


def _finite_everywhere(loss: Tensor) -> bool:
    """Whether ``loss`` is finite on this process and, under DistributedDataParallel, on every rank:
    a rank that skipped ``backward`` alone would leave the others waiting in the gradient all-reduce."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def step_options(config: StructAlignConfig) -> dict[str, Any]:
    """The keyword options of :func:`train_step` that come from the config tree."""
    return {
        "pose_weight": config.objective.pose_weight,
        "grad_clip": config.train.grad_clip,
        "amp": config.train.amp,
        "noise_augment": config.train.noise_augment,
    }


def make_optimizer(
    model: MultimodalModel, objective: Objective, cfg: TrainConfig, *, lambda_lr: float | None = None
) -> torch.optim.Optimizer:
    """AdamW over the model's and the objective's parameters.

    Args:
        lambda_lr: when given, the modality logits (lambda) form a group of their own at this
            learning rate and without weight decay: AdamW moves a parameter by about ``lr`` per step,
            so over a few dozen steps at a small ``lr`` lambda would hardly move (the experiments).
    """
    params = list(model.parameters()) + list(objective.parameters())
    if lambda_lr is None:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    logits = model.modality_logits
    groups = [
        {"params": [p for p in params if p is not logits], "lr": cfg.lr},
        {"params": [logits], "lr": lambda_lr, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit; whatever was loaded before stays in use."""


@dataclass
class Checkpoint:
    """What a checkpoint holds: the model's weights, how to rebuild it, and where training was."""

    config: StructAlignConfig
    specs: dict[str, ModalitySpec]
    state: dict[str, Tensor]
    step: int
    version: str

    def build_model(self) -> MultimodalModel:
        """A model with this checkpoint's architecture and weights."""
        model = MultimodalModel(self.specs, self.config.model)
        model.load_state_dict(self.state)
        return model


def save_checkpoint(
    path: str | Path, model: MultimodalModel, config: StructAlignConfig, step: int = 0
) -> None:
    """Write a checkpoint atomically: a temp file in the same directory, fsync, then rename.

    A crash mid-write leaves the previous checkpoint at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": structalign_ros.__version__,
        "config": to_dict(config),
        "specs": {n: {"kind": s.kind, "shape": list(s.shape)} for n, s in model.specs.items()},
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
    }
    _atomic_save(payload, path)


def remove_partial_checkpoints(path: str | Path) -> list[Path]:
    """Delete what interrupted writes of ``path`` left (their temp files); returns them.

    The checkpoint at ``path`` itself is never touched: a write replaces it only once complete.
    """
    path = Path(path)
    partial = sorted(path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"))
    for stale in partial:
        stale.unlink(missing_ok=True)
    return partial


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temp file in ``path``'s directory, fsync, rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        # mkstemp creates the file 0600; a node running as another user must be able to read it.
        # (Not "per umask": reading the umask means setting it, a race with every other thread.)
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint (``weights_only=True``: no code runs from the file).

    Raises:
        CheckpointError: unreadable, truncated, another format, another major version, or a config
            that no longer validates; the message says which.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: checkpoint format {fmt!r}, expected {CHECKPOINT_FORMAT}")
    version = str(payload.get("version", ""))
    if version.split(".")[0] != structalign_ros.__version__.split(".")[0]:
        raise CheckpointError(
            f"{path}: written by structalign_ros {version}, incompatible with {structalign_ros.__version__}"
        )
    try:
        config = from_dict(payload["config"])
        specs = {n: ModalitySpec(s["kind"], tuple(s["shape"])) for n, s in payload["specs"].items()}
        return Checkpoint(config, specs, payload["model"], int(payload["step"]), version)
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: incomplete or invalid checkpoint ({exc})") from exc


class _Tied(nn.Module):
    """The model and the objective as one module, for DistributedDataParallel.

    DDP all-reduces a parameter's gradient when its autograd hook fires, and with
    ``find_unused_parameters=False`` it expects every parameter to get a gradient in every step. Some
    never do in a given step: the pose head without pose labels, the modality logits under an
    objective that ignores lambda, an OTM decoder of a modality absent from the batch. Adding
    ``0 * sum(parameters)`` to the embeddings (which every objective uses) gives each one an exact
    zero gradient instead, so the set of reduced gradients is the same on every rank and step.
    The objective's own parameters (OTM's decoders) are registered here, so DDP reduces them too.
    """

    def __init__(self, model: MultimodalModel, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> ModelOutput:
        out = self.model(inputs, mask)
        tie = sum(p.sum() for p in self.parameters()) * 0.0
        return out._replace(embeddings=out.embeddings + tie)


class _Replicated(DistributedDataParallel):
    """DDP over :class:`_Tied` with the model's interface, so :func:`train_step` takes it as is."""

    @property
    def lambdas(self) -> Tensor:
        return self.module.model.lambdas


class Trainer:
    """Offline training over an iterable of batches (e.g. windows read from rosbags).

    Under ``torch.distributed`` (initialised by the caller, e.g. ``structalign train`` under
    ``torchrun``), the model and the objective are wrapped in DistributedDataParallel: replicas start
    from rank 0's weights and buffers and average gradients every step, so they stay identical.
    :attr:`model` is always the plain model (checkpoints, validation, export).

    Args:
        model, objective: what to train and how (on the device they are on).
        config: the full tree (``train`` section used here; all of it saved with checkpoints).
        optimizer: over the model's and the objective's parameters; default
            :func:`make_optimizer` from ``config.train``.
    """

    def __init__(
        self,
        model: MultimodalModel,
        objective: Objective,
        config: StructAlignConfig,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model, self.objective, self.config = model, objective, config
        if optimizer is None:
            optimizer = make_optimizer(model, objective, config.train)
        self.optimizer = optimizer
        self.step = 0
        self.epoch = 0
        self.skipped = 0
        self.last_val: dict[str, float] = {}  # the latest validation's metrics (see fit)
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.train_model: Any = model
        if self.distributed:
            device = next(model.parameters()).device
            self.train_model = _Replicated(
                _Tied(model, objective), device_ids=[device.index] if device.type == "cuda" else None
            )

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs and checkpoints (rank 0, or not distributed)."""
        return not self.distributed or dist.get_rank() == 0

    def train_steps(self, batches: Iterable[Batch], steps: int) -> Iterator[dict[str, float]]:
        """Take up to ``steps`` steps from ``batches``; yields each step's metrics. Reads no batch
        beyond the last one it trains on, so a stream can be continued by the next call."""
        if steps <= 0:
            return
        taken = 0
        for batch in batches:
            metrics = train_step(
                self.train_model, batch, self.optimizer, self.objective, **step_options(self.config)
            )
            self.skipped += int(metrics["skipped"])
            self.step += 1
            taken += 1
            yield metrics
            if taken >= steps:
                break

    def fit(
        self,
        batches: Iterable[Batch],
        *,
        steps: int | None = None,
        steps_per_epoch: int | None = None,
        validation: Callable[[], Iterable[Batch]] | None = None,
        validate_every: int | None = None,
        save_dir: str | Path | None = None,
        save_every: int = 0,
        hooks: Sequence[TrainHooks] = (),
    ) -> dict[str, float]:
        """The training loop: step until :attr:`step` reaches ``steps``, validating, checkpointing
        and calling ``hooks`` on the way. Every offline training (``structalign train``, the tests,
        ``bench/experiments``) runs through here; a resumed trainer continues from its :attr:`step`
        and :attr:`epoch`.

        The run is cut into passes of ``steps_per_epoch`` steps (one pass to ``steps`` when None,
        :attr:`epoch` then left as it is). At the end of each pass (and of the run) :attr:`epoch`
        counts it, the model is validated, ``hooks.on_epoch_end`` run and a checkpoint written.
        ``batches`` is read as one stream across passes; when it runs dry the loop ends early.

        Args:
            steps: the step count to reach (default ``train.steps``); counts the steps taken before.
            steps_per_epoch: steps of a pass.
            validation: a fresh iterable of held-out batches per call, or None for no validation.
            validate_every: steps between validations within a pass (default
                ``train.validate_every``; 0: only at the ends of passes). Not on the run's last step,
                which the end-of-pass validation covers.
            save_dir: where :meth:`save` writes ``last.pt`` and ``resume.pt`` (default
                ``train.checkpoint_dir``; nothing when empty), at the end of every pass and every
                ``save_every`` steps (0: only at the ends of passes). Only the main process writes.
            hooks: called in order at each event (:class:`TrainHooks`).

        Returns:
            The last validation's metrics (:attr:`last_val`), empty without validation.
        """
        total = self.config.train.steps if steps is None else steps
        every = self.config.train.validate_every if validate_every is None else validate_every
        folder = self.config.train.checkpoint_dir if save_dir is None else save_dir
        stream = iter(batches)
        saved_at = -1

        def validate() -> None:
            if validation is None:
                return
            self.last_val = self.validate(validation())
            for hook in hooks:
                hook.on_validate(self, self.last_val)

        def save() -> None:
            nonlocal saved_at
            if folder and saved_at != self.step:
                self.save(folder)
                saved_at = self.step

        while self.step < total:
            if steps_per_epoch is None:
                pass_end = total
            else:
                pass_end = min(total, (self.step // steps_per_epoch + 1) * steps_per_epoch)
            wanted, taken = pass_end - self.step, 0
            for metrics in self.train_steps(stream, wanted):
                taken += 1
                for hook in hooks:
                    hook.on_step(self, metrics)
                if save_every > 0 and self.step % save_every == 0:
                    save()
                if every > 0 and self.step % every == 0 and self.step < total:
                    validate()
            if steps_per_epoch is not None and taken == wanted:
                self.epoch += 1
            validate()
            for hook in hooks:
                hook.on_epoch_end(self)
            save()
            if taken < wanted:  # the batches ran dry
                break
        for hook in hooks:
            hook.on_end(self)
        return self.last_val

    def validate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """:func:`evaluate` of the model being trained (weights unchanged)."""
        return evaluate(self.model, self.objective, batches)

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue this run exactly where it is."""
        return {
            "format": RESUME_FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "objective": {k: v.detach().cpu() for k, v in self.objective.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "skipped": self.skipped,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (model, objective, optimiser, counters, RNG).

        Raises:
            CheckpointError: another format, or weights that do not fit this model.
        """
        if state.get("format") != RESUME_FORMAT:
            raise CheckpointError(f"resume state format {state.get('format')!r}, expected {RESUME_FORMAT}")
        try:
            check_compatible(self.model, state["model"])
        except IncompatibleWeights as exc:
            raise CheckpointError(f"resume state: {exc}") from exc
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.skipped = int(state["step"]), int(state["epoch"]), int(state["skipped"])
        torch.set_rng_state(state["torch_rng"])

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/last.pt`` (the checkpoint the node loads) and ``run_dir/resume.pt`` (the
        trainer state), each atomically; only the main process writes. Returns ``last.pt``'s path."""
        run_dir = Path(run_dir)
        if self.is_main:
            save_checkpoint(run_dir / "last.pt", self.model, self.config, self.step)
            _atomic_save(self.state_dict(), run_dir / RESUME_FILE)
        return run_dir / "last.pt"

    def resume(self, run_dir: str | Path) -> bool:
        """Load ``run_dir/resume.pt`` if there is one; every process reads it. Returns whether it did.

        Raises:
            CheckpointError: the file exists but is unreadable or does not fit.
        """
        path = Path(run_dir) / RESUME_FILE
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged file
            reason = f"{type(exc).__name__}: {exc}"
            raise CheckpointError(f"{path}: not a readable resume state ({reason})") from exc
        self.load_state_dict(state)
        return True
