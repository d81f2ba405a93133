"""``structalign train``: offline training from rosbags, the live node's data path and train step.

Bags are replayed through :func:`core.data.dataset.iter_windows` (convert -> WindowAssembler, as the
live node), batched by :class:`core.data.dataset.WindowDataset`, and trained by
:meth:`core.learn.train.Trainer.fit` (the library's one loop, :func:`core.learn.train.train_step`)
with this command's hooks. Validation holds out whole bags (episodes). The stages: :func:`_load`
(config, bags), :func:`_build` (data, model, objective, trainer, resume), :func:`_loop` (the fit),
:func:`_finish` (model, export, summary).
The run directory gets:

- ``model.pt`` (the checkpoint ``structalign run``, ``eval`` and the perception node load) and
  ``model.onnx`` (exported and parity-checked against ONNX Runtime): the model the run delivers,
  the best on the held-out bags (validated every ``train.validate_every`` steps, ``best.pt`` and
  ``best.json`` meanwhile) with its pose experts refitted and calibrated (:mod:`core.learn.headfit`), if
  that is no worse on the held-out bags than without;
- ``last.pt`` (the latest weights) and ``resume.pt`` (optimiser and counters, for ``--resume``),
  written every ``--checkpoint-every`` steps and at every epoch end, both atomically;
- ``metrics.csv`` (long format: step, epoch, split, metric, value) and TensorBoard event files;
- ``summary.json``, the final numbers (also printed as the last line).

Under ``torchrun --nproc_per_node N`` the same command trains with DistributedDataParallel (NCCL on
CUDA, gloo on CPU): every rank replays all bags and keeps every N-th window, rank 0 logs, validates
and writes.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from structalign_ros.commands.options import add_set_argument
from structalign_ros.core.config import OBJECTIVES
from structalign_ros.core.learn.hooks import TrainHooks

if TYPE_CHECKING:
    from structalign_ros.core.learn.train import Trainer

# UniOMA is chosen as a base objective plus --gw-regularizer
OBJECTIVE_CHOICES = tuple(n for n in OBJECTIVES if n != "unioma")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bags", nargs="+", required=True, metavar="BAG", help="rosbag2 directories (episodes)"
    )
    parser.add_argument("--config", metavar="FILE", help="parameter file (default: the built-in config)")
    add_set_argument(parser)
    parser.add_argument(
        "--objective",
        choices=OBJECTIVE_CHOICES,
        help="training objective (default: the config's objective.name)",
    )
    parser.add_argument(
        "--gw-regularizer",
        action="store_true",
        help="add UniOMA's GW structural regulariser to --objective (pairwise, symile or gram)",
    )
    parser.add_argument("--epochs", type=float, help="passes over the training windows instead of --steps")
    parser.add_argument("--steps", type=int, help="total steps (default: train.steps)")
    parser.add_argument("--out", default="run", metavar="RUN", help="run directory (default ./run)")
    parser.add_argument("--resume", action="store_true", help="continue RUN from its resume.pt")
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of bags held out (default 0.2)"
    )
    parser.add_argument("--batch-size", type=int, help="windows per step (default: train.batch_size)")
    parser.add_argument("--lr", type=float, help="learning rate (default: train.lr)")
    parser.add_argument("--pose-weight", type=float, help="weight of the supervised pose loss")
    parser.add_argument("--seed", type=int, help="seed (default: train.seed)")
    parser.add_argument(
        "--val-batches", type=int, default=0, help="validate on at most this many batches (0: all)"
    )
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    parser.add_argument("--no-cache", action="store_true", help="re-read the bags every epoch")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class TrainError(RuntimeError):
    """A problem with the arguments or the data, reported without a traceback."""


def apply_overrides(config: Any, args: argparse.Namespace) -> Any:
    """The config with the command-line choices applied (validated like a YAML file): ``--set``, then
    the named options."""
    from structalign_ros.core.config import BASE_OBJECTIVES
    from structalign_ros.core.config_io import apply_assignments, from_dict, to_dict

    data = to_dict(apply_assignments(config, args.set))
    obj, train = data["objective"], data["train"]
    if args.objective:
        obj["name"] = args.objective
    if args.gw_regularizer:
        base = args.objective or (obj["name"] if obj["name"] != "unioma" else obj["base"])
        if base not in BASE_OBJECTIVES:
            # MOVER, GOTMA and OTM bring their own OT/GW terms; see docs/LEARNING.md on why stacking
            # UniOMA on them is not offered until objective.base can name them.
            raise TrainError(
                f"--gw-regularizer needs a contrastive base objective {BASE_OBJECTIVES}; {base!r} has "
                "its own transport term (docs/LEARNING.md, 'Offline training')"
            )
        obj["name"], obj["base"] = "unioma", base
    for key, value in (("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed)):
        if value is not None:
            train[key] = value
    if args.pose_weight is not None:
        obj["pose_weight"] = args.pose_weight
    return from_dict(data)


def _init_distributed(device_spec: str) -> tuple[int, int, Any]:
    """``(rank, world, device)``; joins the process group when started by torchrun."""
    import torch
    import torch.distributed as dist

    from structalign_ros.core.serve.runtime import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, resolve_device(device_spec)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


class MetricsLog(TrainHooks):
    """``metrics.csv`` (long format) and TensorBoard events of every step and validation; a no-op off
    the main process."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self._csv = self._writer = self._tb = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        path = run_dir / "metrics.csv"
        fresh = not path.exists()
        self._csv = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._csv)
        if fresh:
            self._writer.writerow(["step", "epoch", "split", "metric", "value"])
        self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, epoch: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in metrics.items():
            self._writer.writerow([step, epoch, split, name, f"{value:.6g}"])
            self._tb.add_scalar(f"{split}/{name}", value, step)

    def on_step(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.log(trainer.step, trainer.epoch, "train", metrics)

    def on_validate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.log(trainer.step, trainer.epoch, "val", metrics)

    def on_end(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        if self.enabled:
            self._csv.close()
            self._tb.close()


class _Progress(TrainHooks):
    """The progress bar, and a line per epoch with its validation."""

    def __init__(self, bar: Any, validating: bool) -> None:
        self.bar, self.validating = bar, validating

    def on_step(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", epoch=trainer.epoch, refresh=False)
        self.bar.update(1)

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.validating:
            self.bar.write(f"epoch {trainer.epoch}: val " + _describe(trainer.last_val))


def _batches(dataset: Any, loader: Any, start_epoch: int) -> Iterator[Any]:
    """Batches forever, reshuffling at every pass (an epoch is counted in steps, see _build())."""
    for epoch in itertools.count(start_epoch):
        dataset.set_epoch(epoch)
        yield from loader


def run(args: argparse.Namespace) -> int:
    try:
        train(args)
        return 0
    except TrainError as exc:
        print(f"structalign train: {exc}", file=sys.stderr)
        return 2


@dataclass
class _Job:
    """What the stages of one ``structalign train`` hand on: :func:`_load` fills the first block,
    :func:`_build` the rest."""

    args: argparse.Namespace
    config: Any
    run_dir: Path
    resuming: bool
    train_bags: list[Path]
    val_bags: list[Path]
    windows: int
    rank: int = 0
    world: int = 1
    device: Any = None
    total: int = 0
    steps_per_epoch: int = 1
    train_ds: Any = None
    loader: Any = None
    val_loader: Any = None
    model: Any = None
    trainer: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def train(args: argparse.Namespace, prepare: Callable[[_Job], None] | None = None) -> dict[str, Any]:
    """One ``structalign train`` (``args`` as :func:`configure`'s parser gives them): load, build,
    ``prepare(job)`` if given (a caller's change to the built model, objective or trainer before the
    first step: ``bench/bench_gw_retest.py`` swaps the input kernels for its control), train, finish.
    Returns the summary (as printed). Raises :class:`TrainError` for unusable bags or checkpoints."""
    import torch

    job = _load(args)
    if job.config.train.threads > 0:
        torch.set_num_threads(job.config.train.threads)
    job.rank, job.world, job.device = _init_distributed(job.config.runtime.device)
    _build(job)
    if prepare is not None:
        prepare(job)
    started = time.perf_counter()
    start_step = job.trainer.step
    hooks = _loop(job)
    return _finish(job, hooks, started, start_step)


def _load(args: argparse.Namespace) -> _Job:
    """The config (the run's own when resuming, else the file with the command line's overrides)
    and the bags, split by episode."""
    from structalign_ros.core.config import ConfigError, StructAlignConfig
    from structalign_ros.core.config_io import load_yaml
    from structalign_ros.core.data.bags import BagError
    from structalign_ros.core.data.dataset import estimated_windows, split_episodes
    from structalign_ros.core.learn.train import CheckpointError, load_checkpoint

    run_dir = Path(args.out)
    resuming = args.resume and (run_dir / "resume.pt").exists()
    try:
        if resuming:
            # the run's own config: a resumed run must train what it started training
            config = load_checkpoint(run_dir / "last.pt").config
        else:
            base = load_yaml(args.config) if args.config else StructAlignConfig()
            config = apply_overrides(base, args)
        train_bags, val_bags = split_episodes(args.bags, args.val_fraction)
        windows = estimated_windows(train_bags, config)
    except ConfigError:
        raise  # exit 1 with its message (cli.main), as every command's configuration error
    except (CheckpointError, BagError, OSError, ValueError) as exc:
        raise TrainError(str(exc)) from exc
    if args.resume and not resuming:
        print(f"structalign train: nothing to resume in {run_dir}; starting a new run", file=sys.stderr)
    return _Job(args, config, run_dir, resuming, train_bags, val_bags, windows)


def _build(job: _Job) -> None:
    """The step budget, the data loaders, the model (new, or the run's own when resuming), the
    objective and the trainer (resumed)."""
    import torch
    import torch.distributed as dist

    from structalign_ros.core.data.dataset import WindowDataset, bag_layout, data_loader
    from structalign_ros.core.learn.models import MultimodalModel
    from structalign_ros.core.learn.objectives import build_objective
    from structalign_ros.core.learn.train import Trainer, load_checkpoint, seed_everything

    args, config, device, world = job.args, job.config, job.device, job.world
    # RUN is where this command writes (Trainer.save); config.train.checkpoint_dir is left as it was,
    # because it travels inside the checkpoint and names the live node's fine-tuning directory.
    tc = config.train
    seed_everything(tc.seed)
    steps_per_epoch = max(1, job.windows // world // tc.batch_size)
    if world > 1:  # every rank takes the same number of steps, or DDP waits forever
        count = torch.tensor([steps_per_epoch], device=device)
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        steps_per_epoch = int(count)
    if args.steps is not None:
        total = args.steps
    elif args.epochs is not None:
        total = max(1, round(args.epochs * steps_per_epoch))
    else:
        total = tc.steps
    job.steps_per_epoch, job.total = steps_per_epoch, total

    cache = not args.no_cache
    job.train_ds = WindowDataset(job.train_bags, config, seed=tc.seed, shard=(job.rank, world), cache=cache)
    kinds = {n: m.kind for n, m in config.modalities.items() if m.enabled}
    # every batch in the model's input layout: the checkpoint's when resuming, else the first bag's
    if job.resuming:
        model = load_checkpoint(job.run_dir / "last.pt").build_model()
        job.loader = data_loader(job.train_ds, tc.batch_size, model.specs)
    else:
        try:
            layout = bag_layout(job.train_bags, config)
        except ValueError as exc:
            raise TrainError(str(exc)) from exc
        job.loader = data_loader(job.train_ds, tc.batch_size, layout)
        first = next(iter(job.loader), None)
        if first is None:
            raise TrainError(f"the training bags yield fewer than {tc.batch_size} windows")
        model = MultimodalModel(layout, config.model)
        model.fit_input_stats(first)
    model.to(device)
    objective = build_objective(
        config.objective, {n: kinds[n] for n in model.modalities}, config.model.embed_dim
    )
    objective.to(device)
    job.model, job.trainer = model, Trainer(model, objective, config)
    if job.resuming:
        job.trainer.resume(job.run_dir)

    if job.val_bags:
        val_ds = WindowDataset(job.val_bags, config, shuffle_buffer=1, cache=cache)
        job.val_loader = data_loader(val_ds, tc.batch_size, model.specs, drop_last=False)
    if job.main:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"train: {len(job.train_bags)} bag(s), ~{job.windows} windows, {steps_per_epoch} steps/epoch x "
            f"{world} process(es); val: {len(job.val_bags)} bag(s); objective {config.objective.name}"
            + (f" (base {config.objective.base})" if config.objective.name == "unioma" else "")
            + f"; {total} steps on {device}",
            file=sys.stderr,
        )


def _loop(job: _Job) -> dict[str, Any]:
    """:meth:`Trainer.fit` with this command's hooks (rank 0 only: metrics log, best on
    validation, pose-head refit); returns the hooks by name."""
    from tqdm import tqdm

    args, trainer, tc = job.args, job.trainer, job.config.train
    validating = job.val_loader is not None and job.main
    limit = args.val_batches if args.val_batches > 0 else None
    hooks: dict[str, Any] = {"log": MetricsLog(job.run_dir, job.main)}
    if validating:
        hooks["best"] = BestOnValidation(job.run_dir, job.model, job.resuming)
    if job.main and tc.head_steps > 0 and job.model.pose_head is not None:
        hooks["refit"] = HeadRefit(job.train_ds, job.val_loader, limit, hooks.get("best"))
    bar = tqdm(
        total=job.total,
        initial=trainer.step,
        unit="step",
        disable=not job.main or args.quiet,
        dynamic_ncols=True,
    )
    # the bar reports each epoch's validation before the best weights are restored and refitted
    order = [hooks["log"], _Progress(bar, validating)] + [hooks[k] for k in ("best", "refit") if k in hooks]
    try:
        trainer.fit(
            _batches(job.train_ds, job.loader, trainer.epoch),
            steps=job.total,
            steps_per_epoch=job.steps_per_epoch,
            validation=(lambda: itertools.islice(job.val_loader, limit)) if validating else None,
            save_dir=job.run_dir,
            save_every=args.checkpoint_every,
            hooks=order,
        )
    finally:
        bar.close()
    return hooks


def _finish(job: _Job, hooks: dict[str, Any], started: float, start_step: int) -> dict[str, Any]:
    """``model.pt``, ``model.onnx`` and ``summary.json`` (also printed) on rank 0."""
    from structalign_ros.core.learn.train import save_checkpoint

    trainer, tc, world = job.trainer, job.config.train, job.world
    summary_head = dict(hooks["refit"].summary) if "refit" in hooks else {}
    last_val = summary_head.pop("val", trainer.last_val)
    if job.main:
        save_checkpoint(job.run_dir / "model.pt", job.model, job.config, trainer.step)
    elapsed = time.perf_counter() - started
    steps = trainer.step - start_step
    best = hooks.get("best")
    summary: dict[str, Any] = {
        "run": str(job.run_dir),
        "steps": trainer.step,
        "epochs": trainer.epoch,
        "skipped": trainer.skipped,
        "seconds": round(elapsed, 1),
        "steps_per_s": round(steps / elapsed, 3) if elapsed > 0 else None,
        "windows_per_s": round(steps * tc.batch_size * world / elapsed, 1) if elapsed > 0 else None,
        "world_size": world,
        "val": last_val,
        "best_step": None if best is None else best.step,
        **summary_head,
    }
    if job.main and not job.args.no_export:
        probe = job.val_loader if job.val_loader is not None else job.loader
        summary["onnx"], summary["onnx_max_abs_diff"] = _export(job.model, job.run_dir, probe)
    if job.main:
        (job.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(summary))
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return summary


def _export(model: Any, run_dir: Path, loader: Any) -> tuple[str, float]:
    """``run_dir/model.onnx`` from the delivered model, parity-checked on real windows."""
    from structalign_ros.core.serve.export import example_batch, export_onnx
    from structalign_ros.core.serve.runtime import check_parity

    model = model.cpu().eval()
    path = run_dir / "model.onnx"
    export_onnx(model, example_batch(model), path)
    probe = next(iter(loader), None)
    probe = example_batch(model, size=3) if probe is None else probe.select(slice(0, 7))
    return str(path), check_parity(model, path, probe)


def _describe(metrics: dict[str, float]) -> str:
    text = f"loss {metrics.get('loss', float('nan')):.4f}"
    if "pose_pos_mm" in metrics:
        text += f", pose {metrics['pose_pos_mm']:.2f} mm {metrics['pose_rot_deg']:.2f} deg"
    return text


class BestOnValidation(TrainHooks):
    """The best weights on the held-out bags so far (pose error where labelled, else the loss), kept
    in memory and as ``RUN/best.pt`` + ``best.json``; a resumed run starts from the ones on disk.
    At the end of the loop the model goes back to them."""

    def __init__(self, run_dir: Path, model: Any, resuming: bool) -> None:
        from structalign_ros.core.learn.train import CheckpointError, load_checkpoint

        self.run_dir = run_dir
        self._model = model
        self.step: int | None = None
        self.value = float("inf")
        self.metrics: dict[str, float] = {}
        record = run_dir / "best.json"
        if resuming and record.exists() and (run_dir / "best.pt").exists():
            try:
                info = json.loads(record.read_text(encoding="utf-8"))
                load_checkpoint(run_dir / "best.pt")  # readable, or it is not the best to go back to
                self.step, self.value, self.metrics = int(info["step"]), float(info["value"]), info["metrics"]
            except (CheckpointError, OSError, ValueError, KeyError) as exc:
                print(f"structalign train: ignoring the previous best ({exc})", file=sys.stderr)

    @staticmethod
    def score(metrics: dict[str, float]) -> tuple[str, float]:
        key = "pose_pos_mm" if "pose_pos_mm" in metrics else "loss"
        return key, metrics.get(key, float("inf"))

    def on_validate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.offer(trainer.step, metrics, trainer.config)

    def on_end(self, trainer: Trainer) -> None:
        self.restore(self._model)

    def offer(self, step: int, metrics: dict[str, float], config: Any) -> bool:
        """Keep the trainer's current weights if they beat the best so far; returns whether."""
        from structalign_ros.core.learn.train import save_checkpoint

        key, value = self.score(metrics)
        if not value < self.value:
            return False
        self.step, self.value, self.metrics = step, value, dict(metrics)
        save_checkpoint(self.run_dir / "best.pt", self._model, config, step)
        record = {"step": step, "metric": key, "value": value, "metrics": self.metrics}
        (self.run_dir / "best.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
        return True

    def restore(self, model: Any) -> None:
        """Load the best weights into ``model`` (nothing when no validation has run)."""
        from structalign_ros.core.learn.train import load_checkpoint

        if self.step is not None:
            model.load_state_dict(load_checkpoint(self.run_dir / "best.pt").state)


class HeadRefit(TrainHooks):
    """The last stage, at the end of the loop (after :class:`BestOnValidation` restored the best
    weights): :func:`_fit_head`; its outcome for the summary in :attr:`summary`."""

    def __init__(self, train_ds: Any, val_loader: Any, limit: int | None, best: Any) -> None:
        self.train_ds, self.val_loader, self.limit, self.best = train_ds, val_loader, limit, best
        self.summary: dict[str, Any] = {}

    def on_end(self, trainer: Trainer) -> None:
        model = trainer.model
        self.summary = _fit_head(trainer, model, self.train_ds, self.val_loader, self.limit, self.best)


def _fit_head(
    trainer: Any, model: Any, train_ds: Any, val_loader: Any, limit: int | None, best: Any
) -> dict[str, Any]:
    """The last stage: refit the pose experts on frozen features, calibrate them on the held-out
    bags, and keep the result only if it is no worse there (else the weights stay as they were)."""
    import copy

    from structalign_ros.core.data.dataset import data_loader
    from structalign_ros.core.learn.headfit import GATED, calibrate, expert_cues, fit_experts, held_out_r2

    tc = trainer.config.train
    started = time.perf_counter()
    loader = data_loader(train_ds, tc.batch_size, model.specs, drop_last=False)
    try:
        cues = expert_cues(model, loader)
    except ValueError:  # no labelled training windows: nothing to fit
        return {"head_fit": "no ground-truth poses"}
    before = copy.deepcopy(model.state_dict())
    fit_experts(model, cues, tc.head_steps, tc.head_lr, tc.noise_augment, tc.seed)
    out: dict[str, Any] = {"head_fit": "kept"}
    if best is not None:
        try:
            held_out = expert_cues(model, itertools.islice(val_loader, limit), noise=False)
            cal = calibrate(model, held_out, tc.expert_min_r2)
            r2 = dict(zip(model.modalities, held_out_r2(model, held_out).tolist(), strict=True))
            # [position, rotation] per expert; None (NaN) with too few held-out windows
            out["expert_r2"] = {n: [round(v, 4) if v == v else None for v in r] for n, r in r2.items()}
            gated = dict(zip(model.modalities, (cal >= GATED).tolist(), strict=True))
            out["experts_gated"] = {"position": [n for n, g in gated.items() if g[0]]}
            out["experts_gated"]["rotation"] = [n for n, g in gated.items() if g[1]]
        except ValueError:
            out["head_fit"] = "kept, uncalibrated (no labelled held-out windows)"
        val = trainer.validate(itertools.islice(val_loader, limit))
        if not BestOnValidation.score(val)[1] <= best.value:
            model.load_state_dict(before)
            out.pop("experts_gated", None)
            out["head_fit"] = f"rejected ({_describe(val)} against {best.value:.4g})"
            val = best.metrics
        out["val"] = val
    out["head_fit_s"] = round(time.perf_counter() - started, 1)
    print(f"pose head refit: {out['head_fit']} in {out['head_fit_s']} s", file=sys.stderr)
    return out
