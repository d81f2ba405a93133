"""The live perception path without ROS: sensor messages in, one output per window out.

:class:`PerceptionPipeline` is everything the perception node does except talking to ROS: convert
a message (:mod:`~core.data.convert`), push it into the :class:`~core.data.windows.WindowAssembler`,
turn each finished window into a one-window :class:`~core.data.batch.Batch` in the model's layout, run the
:class:`~.runtime.Predictor`, and hand the window to the :class:`~.online.OnlineTrainer` (a child
process) whose new weights come back through an atomic swap. Every message it cannot use is
counted with its reason (:attr:`events`, plus the assembler's own drop/mask counters); nothing raises out of
:meth:`on_message`, so a bad sensor never stops the node.

Threads: :meth:`feed` (from the subscriptions), :meth:`infer` (from an inference worker) and
:meth:`report` (from diagnostics) may run concurrently; their shared state is guarded by
:attr:`lock`. Feeding is cheap, so sensor callbacks never wait for the model.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.bags import iter_messages
from structalign_ros.core.data.batch import ModalitySpec, to_batch
from structalign_ros.core.data.convert import ConversionError, convert, pose_to_array
from structalign_ros.core.data.dataset import nearest_pose
from structalign_ros.core.data.windows import Window, WindowAssembler
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.rotations import (
    geodesic_angle,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
)
from structalign_ros.core.learn.train import Checkpoint, save_checkpoint
from structalign_ros.core.serve.health import DISTRUSTED, ModalityHealth
from structalign_ros.core.serve.online import OnlineTrainer, WeightUpdate
from structalign_ros.core.serve.runtime import Predictor
from structalign_ros.core.serve.telemetry import Events, Latencies

log = logging.getLogger(__name__)

MS = 1e-6  # nanoseconds -> milliseconds


class ModelMismatch(ValueError):
    """The configured sensors do not fit the model's inputs; the message says which and why."""


def check_model(config: StructAlignConfig, specs: dict[str, ModalitySpec]) -> None:
    """Raise :class:`ModelMismatch` unless every enabled modality is one the model encodes, of the
    same kind and window length. Model modalities left disabled are fine: they are fed as missing.
    """
    problems = []
    for name in config.enabled_modalities:
        m, spec = config.modalities[name], specs.get(name)
        if spec is None:
            problems.append(f"{name}: the model has no {name!r} input (it has {sorted(specs)})")
        elif spec.kind != m.kind:
            problems.append(f"{name}: kind {m.kind!r} but the model's input is {spec.kind!r}")
        elif spec.shape[0] != m.samples:
            problems.append(f"{name}: samples={m.samples} but the model was trained with {spec.shape[0]}")
    if problems:
        raise ModelMismatch("; ".join(problems))


@dataclass
class WindowOutput:
    """What one window produces; every array is on the CPU.

    Attributes:
        stamp_ns: the pivot frame's stamp, which every published message carries.
        modalities: the model's modality order (rows of ``embeddings``, entries of ``weights``).
        embeddings: ``(M, d)`` float32 unit vectors; zero rows for modalities missing in this window.
        fused: ``(d,)`` float32, the lambda-weighted fusion.
        weights: ``(M,)`` lambda times each modality's live health (:mod:`~.health`, when
            ``node.sensor_health``), renormalised over the present modalities.
        mask: ``(M,)`` bool, which modalities were present.
        position: ``(3,)`` end-effector position (m) in the base frame.
        quaternion: ``(4,)`` end-effector orientation ``[x, y, z, w]``.
        arrival_ns: monotonic time the pivot frame arrived (for end-to-end latency), or None.
        pose_error: ``(position mm, orientation deg)`` against ground truth, when it was known.
    """

    stamp_ns: int
    modalities: tuple[str, ...]
    embeddings: np.ndarray
    fused: np.ndarray
    weights: np.ndarray
    mask: np.ndarray
    position: np.ndarray
    quaternion: np.ndarray
    arrival_ns: int | None
    pose_error: tuple[float, float] | None


BEHIND = "window dropped: inference fell behind"


class InferenceQueue:
    """Finished windows waiting for the inference worker, oldest first, bounded in time.

    A window that waited longer than ``max_wait_s`` by the time the worker takes it is dropped, so the
    outputs stay current when the machine falls behind; the bound is a time, not a number of windows,
    so it means the same at any window rate and absorbs a short stall (a weight swap, a busy core).
    ``capacity`` only caps memory: beyond it the oldest window is dropped. Drops are counted on
    ``events`` (code ``inference_behind``); the wait of every window taken goes to ``latency`` as
    ``queue``. Thread-safe: any thread puts, one worker gets.

    Args:
        events: where drops are counted.
        latency: where the waits are recorded.
        max_wait_s: the longest a window may wait (``node.max_queue_s``).
        capacity: the most windows held.
        clock: monotonic nanoseconds (injectable for tests).
    """

    def __init__(
        self,
        events: Events,
        latency: Latencies,
        max_wait_s: float,
        capacity: int = 256,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.events, self.latency = events, latency
        self.max_wait_ns = int(max_wait_s * 1e9)
        self.capacity = capacity
        self.clock = clock
        self._items: deque[tuple[int, Window] | None] = deque()
        self._ready = threading.Condition()

    def put(self, window: Window) -> None:
        with self._ready:
            if len(self._items) >= self.capacity and self._items[0] is not None:
                self._items.popleft()
                self.events.add(BEHIND)
            self._items.append((self.clock(), window))
            self._ready.notify()

    def close(self) -> None:
        """The worker's :meth:`get` returns None once the windows queued before this are taken."""
        with self._ready:
            self._items.append(None)
            self._ready.notify()

    def get(self) -> Window | None:
        """The oldest window that has not waited too long (blocks until there is one), or None after
        :meth:`close`."""
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._items))
                item = self._items.popleft()
            if item is None:
                return None
            queued_ns, window = item
            waited_ns = self.clock() - queued_ns
            self.latency.add("queue", waited_ns * MS)
            if waited_ns <= self.max_wait_ns:
                return window
            self.events.add(BEHIND)


class PerceptionPipeline:
    """Messages -> windows -> model outputs, with optional online fine-tuning.

    Args:
        config: the validated configuration tree.
        checkpoint: the model to run (its modality specs must fit ``config``, see :func:`check_model`).
        warn: called with a message the first, second, fourth... time each problem occurs.

    Raises:
        ModelMismatch: the configured modalities do not fit the model.
    """

    def __init__(
        self,
        config: StructAlignConfig,
        checkpoint: Checkpoint,
        warn: Callable[[str], None] = log.warning,
    ) -> None:
        check_model(config, checkpoint.specs)
        self.config = config
        self.checkpoint_step = checkpoint.step
        self.model = checkpoint.build_model().eval()
        self.specs = dict(checkpoint.specs)
        self.modalities = self.model.modalities
        self.predictor = Predictor.from_config(config.runtime, self.model)
        self.assembler = WindowAssembler(config.modalities, config.window)
        self.kinds = {n: config.modalities[n].kind for n in config.enabled_modalities}
        self.joints = {n: config.modalities[n].joint_list for n in config.enabled_modalities}
        self.latency = Latencies()
        self.events = Events()
        self.lock = threading.Lock()
        self.warn = warn
        self.windows = 0
        self.outputs = 0
        self.model_version = 0
        self.trainer: OnlineTrainer | None = None  # built on the first start_finetuning
        self._latest: WeightUpdate | None = None  # the newest weights installed by the trainer
        self._arrivals: dict[int, int] = {}  # pivot stamp -> monotonic arrival (ns)
        self._poses: deque[tuple[int, np.ndarray]] = deque(maxlen=256)
        self._last_push = time.monotonic_ns()
        self.pose_errors: deque[tuple[float, float]] = deque(maxlen=1024)
        self.health = self._new_health(config)
        self._resets_seen = 0
        self.sent_distrusted = 0  # windows offered to the trainer with a distrusted modality masked
        self._health_version = 0  # the model version the health references were measured on
        # monotonic time of the first window of the current run without ground truth (None: labelled)
        self._unlabelled_since: int | None = None

    # -- input --------------------------------------------------------------------------------
    def _count(self, reason: str) -> None:
        if self.events.add(reason):
            self.warn(f"{reason} (x{self.events.counts[reason]})")

    def feed(self, name: str, msg: Any, arrival_ns: int | None = None) -> list[Window]:
        """Feed one sensor message of modality ``name``; returns the windows it completed.

        ``arrival_ns`` is the monotonic time the message arrived (default: now). Cheap (no model):
        the node calls it from its subscription callbacks and runs :meth:`infer` elsewhere.
        """
        arrival_ns = time.monotonic_ns() if arrival_ns is None else arrival_ns
        kind = self.kinds.get(name)
        if kind is None:
            self._count(f"{name}: not an enabled modality")
            return []
        try:
            stamp, value = convert(kind, msg, self.joints[name])
        except ConversionError as exc:
            self._count(f"{name}: {exc}")
            return []
        with self.lock:
            self._last_push = arrival_ns
            if name == self.assembler.pivot:
                self._arrivals[stamp] = arrival_ns
                if len(self._arrivals) > 1024:  # frames dropped by the assembler never get a window
                    for old in sorted(self._arrivals)[:512]:
                        del self._arrivals[old]
            windows = self.assembler.push(name, stamp, value)
            self.windows += len(windows)
        self.latency.add("convert+assemble", (time.monotonic_ns() - arrival_ns) * MS)
        return windows

    def on_message(self, name: str, msg: Any, arrival_ns: int | None = None) -> list[WindowOutput]:
        """:meth:`feed` then :meth:`infer` every window it completed, in the caller's thread."""
        return [o for w in self.feed(name, msg, arrival_ns) if (o := self.infer(w)) is not None]

    def on_ground_truth(self, msg: Any) -> None:
        """Feed a ``geometry_msgs/PoseStamped`` of the true end-effector pose."""
        try:
            pose = pose_to_array(msg)
        except ConversionError as exc:
            self._count(f"ground truth: {exc}")
            return
        with self.lock:
            self._poses.append(pose)

    def idle(self, now_ns: int | None = None) -> list[Window]:
        """Let pending windows time out when no data has arrived for a while (every sensor silent).

        Time is extrapolated from the newest stamp by the monotonic time since the last message, so
        it works whatever clock the sensors stamp with.
        """
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        with self.lock:
            quiet = now_ns - self._last_push
            if self.assembler.pending == 0 or quiet < self.assembler.timeout_ns:
                return []
            windows = self.assembler.advance(self.assembler.clock + quiet)
            self.windows += len(windows)
            return windows

    # -- windows -> outputs -------------------------------------------------------------------
    def _new_health(self, config: StructAlignConfig) -> ModalityHealth | None:
        if not config.node.sensor_health:
            return None
        head = self.model.pose_head
        return ModalityHealth(
            self.modalities,
            None if head is None else head.calibration.numpy(),
            size=config.node.health_windows,
            margin=config.node.health_margin,
            warmup=config.node.health_warmup,
        )

    def _apply_health(self, out: ModelOutput, mask: torch.Tensor) -> tuple[ModelOutput, torch.Tensor]:
        """``out`` with its weights times each modality's live trust: the fused embedding and the
        pose recomputed from them (the learned weights of ``out`` are the health's consensus weights);
        and the ``(1, M)`` mask of the modalities trusted (all without sensor health)."""
        health = self.health
        if health is None:
            return out, torch.ones_like(mask)
        with self.lock:
            resets = self.assembler.stats.resets
        if resets != self._resets_seen:  # the data jumped (a bag restarted): the recent windows are stale
            self._resets_seen = resets
            health.reset()
        if self._health_version != self.model_version:  # new weights: new clean references
            self._health_version = self.model_version
            health.rebase()
        trust = health.update(
            out.embeddings[0].numpy(), mask[0].numpy(), out.weights[0].numpy(), out.pose_experts[0].numpy()
        )
        weights = out.weights * torch.from_numpy(trust).to(out.weights.dtype)
        weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-30)
        fused = torch.nn.functional.normalize((weights.unsqueeze(-1) * out.embeddings).sum(1), dim=-1)
        head = self.model.pose_head
        pose = out.pose if head is None else head.fuse(out.pose_experts.float(), weights.float())
        trusted = torch.from_numpy(trust >= DISTRUSTED)[None]
        return ModelOutput(out.embeddings, fused, weights, pose.to(out.pose.dtype), out.pose_experts), trusted

    def _nearest_pose(self, stamp: int) -> np.ndarray | None:
        with self.lock:
            poses = list(self._poses)
        return nearest_pose(poses, stamp)

    def infer(self, window: Window) -> WindowOutput | None:
        """The model's outputs for ``window`` (None when it cannot be used: counted with the reason).

        Thread-safe against :meth:`feed`; windows with at least two modalities present (something to
        align) also go to the online trainer, when ``ground_truth_topic`` is set only those
        labelled with ground truth.
        """
        t0 = time.monotonic_ns()
        pose = self._nearest_pose(window.stamp_ns)
        # the model's layout: its modality order, frames resized to its input, missing inputs masked
        batch = to_batch([window], self.specs, [pose], mismatch=self._count)
        if not batch.mask.any():
            self._count("window with no usable modality; skipped")
            return None
        out = self.predictor(batch)
        if not all(bool(torch.isfinite(t).all()) for t in out):
            self._count("non-finite model output; window skipped (inputs out of range?)")
            return None
        with torch.no_grad():
            out, trusted = self._apply_health(out, batch.mask)
        self.latency.add("inference", (time.monotonic_ns() - t0) * MS)
        trainer = self.trainer
        labelled = pose is not None or not self.config.ground_truth_topic
        if labelled:
            self._unlabelled_since = None
        elif self._unlabelled_since is None:
            self._unlabelled_since = t0
        # the trainer (and its guard) sees a distrusted modality as missing, as the outputs nearly do
        learnable = batch if bool(trusted.all()) else batch.masked(trusted)
        if trainer is not None and labelled and int(learnable.mask.sum()) >= 2:
            # with a ground-truth topic only labelled windows: one unlabelled row in a sampled batch
            # would switch the pose loss off for the whole step
            trainer.add(learnable)
            self.sent_distrusted += int(learnable is not batch)
        mask = batch.mask[0].numpy()
        R = rotation_6d_to_matrix(out.pose[0, 3:].double())
        error = None
        if pose is not None:
            pos_mm = 1000.0 * float(np.linalg.norm(out.pose[0, :3].numpy() - pose[:3]))
            angle = geodesic_angle(R, quaternion_to_matrix(torch.from_numpy(pose[3:]).double()))
            error = (pos_mm, float(torch.rad2deg(angle)))
            self.pose_errors.append(error)
        with self.lock:
            arrival = self._arrivals.pop(window.stamp_ns, None)
            self.outputs += 1
        return WindowOutput(
            stamp_ns=window.stamp_ns,
            modalities=self.modalities,
            embeddings=(out.embeddings[0].numpy() * mask[:, None]).astype(np.float32),
            fused=out.fused[0].numpy().astype(np.float32),
            weights=out.weights[0].numpy().astype(np.float32),
            mask=mask,
            position=out.pose[0, :3].numpy().astype(np.float64),
            quaternion=matrix_to_quaternion(R).numpy(),
            arrival_ns=arrival,
            pose_error=error,
        )

    # -- fine-tuning --------------------------------------------------------------------------
    def start_finetuning(self) -> None:
        """Start (or resume) the online trainer; its process is started the first time."""
        try:
            if self.trainer is None:
                self.trainer = OnlineTrainer(self.model, self.config, self._install)
            if not self.trainer.running:
                self.trainer.start()
        except Exception as exc:  # fine-tuning is optional: inference goes on without it
            self._count(f"online trainer could not start: {type(exc).__name__}: {exc}")

    def pause_finetuning(self) -> None:
        """Pause the online trainer after its current step; its last weights are installed (also those
        of an earlier pause that had not completed yet)."""
        trainer = self.trainer
        if trainer is not None and not trainer.pause():
            reason = f": {trainer.error}" if trainer.error else ""
            self._count(f"online trainer did not pause in time{reason}")

    def close(self) -> None:
        """End the online trainer's process (the pipeline keeps serving its current weights)."""
        self.pause_finetuning()
        trainer, self.trainer = self.trainer, None
        if trainer is not None:
            trainer.close()

    def learned_weights(self) -> dict[str, float]:
        """The global modality weights lambda = softmax(logits) of the weights in use (the newest
        installed by the trainer, else the checkpoint's)."""
        latest = self._latest
        logits = (
            latest.state["modality_logits"] if latest is not None else self.model.modality_logits.detach()
        )
        values = [float(v) for v in torch.softmax(logits.float(), dim=0)]
        return dict(zip(self.modalities, values, strict=True))

    @property
    def steps(self) -> int:
        """Optimisation steps behind the current weights (the checkpoint's and this run's)."""
        return self.checkpoint_step + (self.trainer.progress.steps if self.trainer is not None else 0)

    def _install(self, update: WeightUpdate) -> None:
        """Called by the trainer's receiver thread with new weights."""
        self.predictor.swap_weights(update.state, update.onnx)
        self._latest = update
        self.model_version += 1

    def apply_config(self, config: StructAlignConfig) -> None:
        """Take over the run-time-safe settings of ``config`` (see the node's live parameters)."""
        if config.node.sensor_health != self.config.node.sensor_health:
            self.health = self._new_health(config)  # switched on: a new warm-up from the next window
        self.config = config
        if self.trainer is not None:
            self.trainer.update_config(config)

    def save(self, path: str | Path) -> bool:
        """Checkpoint the newest installed weights atomically; False when nothing was fine-tuned yet."""
        latest = self._latest
        if latest is None:
            return False
        model = copy.deepcopy(self.model)
        model.load_state_dict(latest.state)
        save_checkpoint(path, model, self.config, self.checkpoint_step + latest.steps)
        return True

    # -- diagnostics --------------------------------------------------------------------------
    def health_report(self) -> dict[str, dict[str, float]]:
        """Per modality: ``trust`` (what its weight is multiplied by), the structural ``discrepancy``,
        the pose ``agreement`` and the ``roughness`` behind it (NaN until estimated); empty with
        ``node.sensor_health`` off."""
        health = self.health
        if health is None:
            return {}
        signals = {
            "trust": health.trust,
            "discrepancy": health.discrepancies,
            "agreement": health.agreement,
            "roughness": health.roughness,
        }
        return {
            name: {key: float(values[m]) for key, values in signals.items()}
            for m, name in enumerate(self.modalities)
        }

    def _stall_warning(self) -> str:
        """Why a running trainer makes no progress ("" when it does, or is not meant to): no step for
        ``node.stall_warn_s``, or no window labelled with ground truth for that long."""
        trainer = self.trainer
        if trainer is None or not trainer.running:
            return ""
        since = self._unlabelled_since
        unlabelled_s = 0.0 if since is None else (time.monotonic_ns() - since) * 1e-9
        if unlabelled_s > self.config.node.stall_warn_s:
            return (
                f"no ground truth on {self.config.ground_truth_topic} for {unlabelled_s:.0f} s: the trainer "
                "gets no windows (a robot without an end-effector ground truth sets ground_truth_topic '')"
            )
        if trainer.sent < self.config.train.min_replay:
            return ""  # still collecting its first min_replay windows
        idle = trainer.since_step_s
        if idle <= self.config.node.stall_warn_s:
            return ""
        return (
            f"no fine-tuning step for {idle:.0f} s: the trainer only gets CPU time nothing else wants, "
            "and this machine has none to spare"
        )

    def report(self) -> dict[str, Any]:
        """Counters and percentiles for diagnostics and summaries (plain data)."""
        with self.lock:
            stats = self.assembler.stats
            masked, dropped = dict(stats.masked), dict(stats.dropped)
            resets, pending = stats.resets, self.assembler.pending
        trainer = self.trainer
        errors = np.array(self.pose_errors) if self.pose_errors else np.zeros((0, 2))
        return {
            "windows": self.windows,
            "outputs": self.outputs,
            # windows without an output: skipped (counted in events with the reason) or in flight
            "windows_dropped": self.windows - self.outputs,
            "pending": pending,
            "resets": resets,
            "modalities": list(self.modalities),
            "masked": masked,
            "dropped": dropped,
            "events": self.events.snapshot(),
            "latency_ms": self.latency.percentiles(),
            "finetune": {
                "running": trainer is not None and trainer.running and trainer.alive,
                "steps": self.steps,
                "skipped": trainer.progress.skipped if trainer else 0,
                "loss": (trainer.progress.metrics.get("loss") if trainer else None),
                "lr": (trainer.progress.metrics.get("lr") if trainer else None),
                "replay": trainer.progress.replay if trainer else 0,
                "accepted": trainer.progress.accepted if trainer else 0,
                "rejected": trainer.progress.rejected if trainer else 0,
                "held_out": trainer.progress.held_out if trainer else 0,
                "verdict": trainer.progress.verdict if trainer else "",
                "sent": trainer.sent if trainer else 0,
                "sent_distrusted": self.sent_distrusted,
                "dropped": trainer.dropped if trainer else 0,
                "error": trainer.error if trainer else "",
                "since_step_s": trainer.since_step_s if trainer else 0.0,
                "warning": self._stall_warning(),
            },
            "model_version": self.model_version,
            "health": self.health_report(),
            "providers": list(self.predictor.providers),
            "pose_error": {
                "pos_mm_mean": float(errors[:, 0].mean()) if len(errors) else None,
                "rot_deg_mean": float(errors[:, 1].mean()) if len(errors) else None,
            },
        }


def replay(
    pipeline: PerceptionPipeline,
    bags: list[str | Path],
    pose_topic: str = "",
    alter: Callable[[str, Any], Any] | None = None,
) -> list[WindowOutput]:
    """Feed ``bags`` message by message in bag order, as the live node would receive them, and return
    every output. ``pose_topic``: ground-truth poses fed with :meth:`~PerceptionPipeline.on_ground_truth`
    (their errors then in ``pose_error``); ``alter(kind, msg)``: what to feed instead of each sensor
    message, e.g. :func:`~core.sim.faults.fault_message` for the messages a faulty sensor would send, or
    None for a message the sensor never sent.
    """
    topics = {m.topic: n for n, m in pipeline.config.modalities.items() if m.enabled}
    outputs: list[WindowOutput] = []
    for topic, _, msg in iter_messages(bags, [*topics, *([pose_topic] if pose_topic else [])]):
        if topic == pose_topic:
            pipeline.on_ground_truth(msg)
            continue
        name = topics[topic]
        if alter is not None and (msg := alter(pipeline.config.modalities[name].kind, msg)) is None:
            continue
        outputs += pipeline.on_message(name, msg)
    return outputs
