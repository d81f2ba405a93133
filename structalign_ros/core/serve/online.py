"""Live fine-tuning in a child process: a replay buffer of recent windows and a trainer beside inference.

:class:`OnlineTrainer` runs :func:`~core.learn.train.train_step` on batches drawn from a :class:`ReplayBuffer`
in a separate process, started with ``spawn``. Once it has imported torch and built its model it
schedules itself ``SCHED_IDLE`` (from then on it runs only on CPU time nothing else wants); the start-up
itself runs at normal priority, or a busy machine could starve it for many seconds before the first
step. A training step is mostly Python (optimal-transport loops, autograd bookkeeping,
and every ``swap_period_s`` an ONNX export); in a thread of the node it held the interpreter lock that
the sensor reader and the inference worker need, and cost the node its latency tail. In a process of
its own it shares nothing with them but the CPU, and the kernel preempts it whenever a thread of the
node wakes.

Traffic between the two processes, all plain picklable data:

- windows in (:meth:`OnlineTrainer.add`, non-blocking: when the trainer lags ``INBOX`` windows
  behind, new ones are dropped and counted, never waited for);
- commands in (run, pause, new settings, close);
- out, over a one-way pipe that only the child writes (so a child that dies halfway through a
  message leaves an end of file): a :class:`Progress` after every step, and a :class:`WeightUpdate`
  when new weights pass the guard, carrying the state dict and, for the ONNX backend, the weights
  already exported, so that installing them in the node only builds a session (which releases the
  interpreter lock).

The guard. Every ``train.guard_every``-th window the child receives goes to a held-out buffer (the
latest ``train.guard_windows``) instead of the replay buffer. Every ``swap_period_s`` (and on pause)
the weights trained since the last offer are judged against the weights in use on those windows,
with :func:`~core.learn.train.evaluate`: the objective's loss and, when the held-out windows are
labelled, the fused pose's position (mm) and rotation (degrees) errors. They are published only if
no metric is worse (beyond ``train.guard_tolerance``) and one is lower by ``train.guard_margin``
(:func:`no_worse`); otherwise training goes back to the weights in use, with a fresh optimiser, and
the rejection is counted. So a rejected update never reaches the outputs, and the trainer never
drifts further and further from what serves.

What it trains (``train.online_update``). ``head``, the default: only each pose expert's linear part
(:func:`head_parameters`), from the weights in use, by the pose loss on windows with ground truth.
The encoders, λ and the experts' variances stay as the offline recipe left them (its last stage
refits the pose experts on frozen features, which end-to-end steps undo), so each window's expert
inputs are computed once when it arrives (:func:`expert_cues`, a :class:`CueBuffer`) and a step
costs only the experts; the guard judges the fused pose on the held-out windows' cached inputs
(:func:`evaluate_head`; the objective's loss cannot change). Without ground truth nothing is
trained. ``all``: every weight, end to end, by :func:`~core.learn.train.train_step`.

A receiver thread in the parent hands each :class:`WeightUpdate` to ``publish``. The child exits
when told to, when its parent process has gone (a killed node leaves no trainer behind) and on
any error, which is reported back; inference goes on regardless.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from structalign_ros.core.config import ModelConfig, StructAlignConfig
from structalign_ros.core.data.batch import Batch, ModalitySpec, to_batch
from structalign_ros.core.learn.models import MultimodalModel, masked_weights
from structalign_ros.core.learn.objectives import build_objective, pose_loss
from structalign_ros.core.learn.train import evaluate, make_optimizer, step_options, train_step
from structalign_ros.core.serve.export import onnx_bytes
from structalign_ros.core.serve.memory import return_large_blocks
from structalign_ros.core.serve.runtime import resolve_device

log = logging.getLogger(__name__)

INBOX = 256  # windows in flight to the trainer before new ones are dropped
POLL_S = 0.05  # the child's longest idle wait for a command; the receiver's is 4x this
GUARDED = ("loss", "pose_pos_mm", "pose_rot_deg")  # the metrics new weights must not make worse
ABSORB = 64  # head-only: windows turned into expert inputs per forward pass of the encoders


@dataclass
class _Row:
    """One window of a :class:`ReplayBuffer`, already in the model's layout (a ``batch.WindowLike``)."""

    stamp_ns: int
    data: dict[str, np.ndarray]
    mask: dict[str, bool]
    pose: np.ndarray | None


class ReplayBuffer:
    """The most recent windows, one row each; adding is O(1) per window.

    Rows are single windows in the model's layout (``layout``: the model's specs), so sampling
    batches (with :func:`~core.data.batch.to_batch`, as every path does) only the rows it draws.
    """

    def __init__(self, capacity: int, layout: Mapping[str, ModalitySpec]) -> None:
        self.layout = dict(layout)
        self.modalities = tuple(layout)
        self._rows: collections.deque[_Row] = collections.deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, batch: Batch) -> None:
        """Append every window of ``batch`` (on the CPU); the oldest fall out beyond capacity."""
        if batch.modalities != self.modalities:
            raise ValueError(f"batch modalities {batch.modalities} != buffer's {self.modalities}")
        inputs = {k: v.detach().cpu().numpy() for k, v in batch.inputs.items()}
        mask = batch.mask.cpu().numpy()
        poses = None if batch.pose is None else batch.pose.detach().cpu().numpy()
        stamps = batch.stamps_ns.tolist() if len(batch.stamps_ns) == len(batch) else [0] * len(batch)
        for i, stamp in enumerate(stamps):
            data = {k: v[i] for k, v in inputs.items()}
            present = {k: bool(mask[i, m]) for m, k in enumerate(self.modalities)}
            self._rows.append(_Row(stamp, data, present, None if poses is None else poses[i]))

    def sample(self, size: int, generator: torch.Generator) -> Batch:
        """``size`` windows drawn uniformly without replacement (all of them if fewer)."""
        rows = list(self._rows)
        pick = torch.randperm(len(rows), generator=generator)[:size].tolist()
        return self._batch([rows[i] for i in pick])

    def batches(self, size: int) -> list[Batch]:
        """Every window, oldest first, in batches of ``size`` (the last one smaller, but never a
        single window: contrastive objectives need two)."""
        rows = list(self._rows)
        cuts = list(range(0, len(rows), size))
        if len(cuts) > 1 and len(rows) - cuts[-1] < 2:
            cuts.pop()
        return [self._batch(rows[a:b]) for a, b in zip(cuts, [*cuts[1:], len(rows)], strict=True)]

    def _batch(self, rows: list[_Row]) -> Batch:
        return to_batch(rows, self.layout, [r.pose for r in rows])


@dataclass
class Cues:
    """Labelled windows as the pose experts see them: ``cues[m]`` ``(B, D_m)`` each expert's input
    (before its standardisation), ``mask`` ``(B, M)``, ``pose`` ``(B, 7)``."""

    cues: list[Tensor]
    mask: Tensor
    pose: Tensor

    def __len__(self) -> int:
        return len(self.pose)

    def select(self, rows: Tensor) -> Cues:
        """The windows at ``rows`` (indices or a boolean mask), as :meth:`Batch.select`."""
        return Cues([c[rows] for c in self.cues], self.mask[rows], self.pose[rows])


class CueBuffer:
    """The most recent labelled windows as :class:`Cues` (what head-only fine-tuning trains and
    judges on): the encoders are frozen, so a window's expert inputs are computed once, when it
    arrives, and a step costs only the pose experts.

    A ring of preallocated rows: the whole capacity is allocated (and written) by the first
    :meth:`add`, so the trainer's memory does not creep up as the buffer fills during a run.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ring: Cues | None = None
        self._next = 0  # the row the next window goes to
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, cues: Cues) -> None:
        if not len(cues):
            return
        if self._ring is None:
            self._ring = Cues(
                [torch.zeros((self.capacity, *c.shape[1:]), dtype=c.dtype) for c in cues.cues],
                torch.zeros((self.capacity, *cues.mask.shape[1:]), dtype=cues.mask.dtype),
                torch.zeros((self.capacity, *cues.pose.shape[1:]), dtype=cues.pose.dtype),
            )
        newest = cues.select(torch.arange(max(0, len(cues) - self.capacity), len(cues)))
        rows = (self._next + torch.arange(len(newest))) % self.capacity
        ring = self._ring
        for kept, new in zip(ring.cues, newest.cues, strict=True):
            kept[rows] = new
        ring.mask[rows] = newest.mask
        ring.pose[rows] = newest.pose
        self._next = (self._next + len(newest)) % self.capacity
        self._len = min(self._len + len(newest), self.capacity)

    def sample(self, size: int, generator: torch.Generator) -> Cues:
        """``size`` windows drawn uniformly without replacement (all of them if fewer)."""
        pick = torch.randperm(self._len, generator=generator)[:size]
        return self._ordered(pick)

    def batches(self, size: int) -> list[Cues]:
        """Every window, oldest first, in batches of ``size``."""
        return [self._ordered(torch.arange(a, min(a + size, self._len))) for a in range(0, self._len, size)]

    def _ordered(self, positions: Tensor) -> Cues:
        """The windows at ``positions`` counted from the oldest kept (copies)."""
        assert self._ring is not None
        oldest = (self._next - self._len) % self.capacity
        return self._ring.select((oldest + positions) % self.capacity)


@torch.no_grad()
def expert_cues(model: MultimodalModel, batch: Batch) -> Cues | None:
    """The labelled windows of ``batch`` (finite ground-truth pose) as :class:`Cues` of ``model``'s
    (frozen) encoders, on the CPU; None when there are none."""
    if batch.pose is None or model.pose_head is None:
        return None
    keep = batch.pose.isfinite().all(1)
    if not bool(keep.any()):
        return None
    device = next(model.parameters()).device
    batch = batch.select(keep.nonzero().squeeze(1)).to(device)
    training = model.training
    model.eval()
    try:
        features = model.features(batch.inputs)
        cues = model.pose_head.expert_inputs([batch.inputs[n] for n in model.modalities], features)
    finally:
        model.train(training)
    return Cues([c.float().cpu() for c in cues], batch.mask.cpu(), batch.pose.float().cpu())


def head_parameters(model: MultimodalModel) -> list[Tensor]:
    """What head-only fine-tuning changes: each pose expert's linear part (its mean's affine map; the
    MLP that also gives the variances stays as it is)."""
    assert model.pose_head is not None
    return [p for expert in model.pose_head.experts for p in expert.linear.parameters()]


def head_pose_loss(model: MultimodalModel, cues: Cues) -> tuple[Tensor, dict[str, float]]:
    """:func:`~core.learn.objectives.pose_loss` of the model's pose head on ``cues`` (the fused pose
    with the model's lambda, as :meth:`MultimodalModel.forward` fuses it)."""
    head = model.pose_head
    assert head is not None
    device = next(model.parameters()).device
    mask, pose = cues.mask.to(device), cues.pose.to(device)
    experts = head.predict_experts([c.to(device) for c in cues.cues])
    fused = head.fuse(experts, masked_weights(model.modality_logits, mask))
    return pose_loss(experts, fused, pose, mask, head.position.loc, head.position.scale)


@torch.no_grad()
def evaluate_head(model: MultimodalModel, batches: list[Cues]) -> dict[str, float]:
    """Window-weighted means of the fused pose's ``pose_pos_mm`` and ``pose_rot_deg`` (and the pose
    loss, ``pose_nll``) over ``batches``: :func:`~core.learn.train.evaluate`'s pose metrics, from cues."""
    sums: collections.Counter[str] = collections.Counter()
    total = 0
    for cues in batches:
        loss, metrics = head_pose_loss(model, cues)
        for key in ("pose_pos_mm", "pose_rot_deg"):
            sums[key] += metrics[key] * len(cues)
        sums["pose_nll"] += float(loss) * len(cues)
        total += len(cues)
    return {k: v / total for k, v in sums.items()} if total else {}


@dataclass
class WeightUpdate:
    """New weights from the trainer.

    Attributes:
        state: the model's CPU ``state_dict``.
        onnx: the same weights exported to ONNX (when the node's backend is ONNX Runtime), else None.
        steps: this trainer's optimisation steps behind them (skipped ones and those of rejected
            updates included).
    """

    state: dict[str, Tensor]
    onnx: bytes | None
    steps: int


@dataclass
class Progress:
    """The trainer's counters after a step or a verdict (sent by the child, kept by the parent).

    ``accepted``/``rejected``: updates the guard passed or turned down; ``held_out``: windows it
    judges on; ``verdict``: the newest judgement in words ("" before the first).
    """

    steps: int = 0
    skipped: int = 0
    replay: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    lambdas: list[float] | None = None
    accepted: int = 0
    rejected: int = 0
    held_out: int = 0
    verdict: str = ""


def no_worse(
    candidate: dict[str, float], serving: dict[str, float], margin: float = 0.0, tolerance: float = 0.0
) -> tuple[bool, str]:
    """Whether ``candidate``'s metrics (:func:`~core.learn.train.evaluate` on the same windows) are all no
    worse than ``serving``'s, over the :data:`GUARDED` metrics both have, and, with ``margin`` > 0, at
    least one of them lower by that fraction (an update must help by more than the held-out windows'
    noise to be installed); and why, in words. ``tolerance``: a metric counts as worse only above
    ``(1 + tolerance)`` times the serving one's (the same noise, on the metrics the update did not aim
    at)."""
    keys = [k for k in GUARDED if k in candidate and k in serving]
    worse = [k for k in keys if not candidate[k] <= (1.0 + tolerance) * serving[k]]  # NaN is worse
    why = ", ".join(f"{k} {candidate[k]:.4g} {'>' if k in worse else '<='} {serving[k]:.4g}" for k in keys)
    better = margin <= 0 or any(candidate[k] <= (1.0 - margin) * serving[k] for k in keys)
    if keys and not worse and not better:
        why += f" (none lower by {margin:.0%})"
    return bool(keys) and not worse and better, why


@dataclass
class _Weights:
    """A :class:`WeightUpdate` on the wire: numpy arrays travel through the pipe, where torch tensors
    would each be moved to shared memory and fetched back one socket handshake at a time."""

    state: dict[str, np.ndarray]
    onnx: bytes | None
    steps: int


@dataclass
class _Paused:
    token: int


@dataclass
class _Failed:
    reason: str


def _to_numpy(batch: Batch) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray | None]:
    pose = None if batch.pose is None else batch.pose.numpy()
    return {k: v.numpy() for k, v in batch.inputs.items()}, batch.mask.numpy(), batch.stamps_ns.numpy(), pose


class OnlineTrainer:
    """Fine-tunes a copy of the model in a child process and hands its weights to ``publish``.

    Nothing here waits for training: :meth:`add` drops windows rather than block, and ``publish``
    is called from a receiver thread with a complete :class:`WeightUpdate` (e.g. the pipeline's
    install into :meth:`runtime.Predictor.swap_weights`). The child process is started on the first
    :meth:`start`, keeps its model, optimiser and replay buffer across :meth:`pause`/:meth:`start`, and
    ends with :meth:`close`. A child that died (see :attr:`error`) is replaced on the next
    :meth:`start`, starting from the newest weights it had published.

    Args:
        model: the starting weights (copied to the child; the caller's model is not modified).
        config: the full tree: ``train`` drives batch size, buffer, period, duty cycle and clipping,
            ``objective`` the loss, ``runtime`` the device and whether to export ONNX.
        publish: called from the receiver thread with each :class:`WeightUpdate`.
    """

    def __init__(
        self,
        model: MultimodalModel,
        config: StructAlignConfig,
        publish: Callable[[WeightUpdate], None],
    ) -> None:
        self.config = config
        self.publish = publish
        return_large_blocks()  # the weight swaps it brings would otherwise grow this process's heap
        self._specs, self._model_cfg = dict(model.specs), model.cfg
        # what a (re)started child starts from: the newest published weights and their step count
        self._restart_from = ({k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}, 0)
        self.progress = Progress()
        self.published = 0
        self.sent = 0  # windows handed to the child
        self.dropped = 0  # windows not handed to the child because it lagged INBOX behind
        self.running = False
        self._stepped_at = 0.0  # monotonic time of the last step (or of start(), before one)
        self._error = ""
        self._process: Any = None
        self._paused = threading.Condition()
        self._paused_token = 0
        self._token = 0

    # -- parent side ------------------------------------------------------------------------------
    @property
    def error(self) -> str:
        """Why the child failed or stopped on its own ("" while all is well)."""
        process = self._process
        if not self._error and process is not None and process.exitcode not in (0, None):
            return f"the online trainer process exited with code {process.exitcode}"
        return self._error

    @property
    def since_step_s(self) -> float:
        """Seconds since the child's last step, or since :meth:`start` before its first; 0 while paused."""
        return time.monotonic() - self._stepped_at if self.running else 0.0

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        """The child process's id while it runs (its memory is not in the node's own)."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def _ensure_process(self) -> None:
        if self.alive:
            return
        if self._process is not None:
            log.warning("restarting the online trainer (%s)", self.error or "it had exited")
            self.close()
        ctx = multiprocessing.get_context("spawn")
        inbox, commands = ctx.Queue(maxsize=INBOX), ctx.Queue()
        # Results come back through a one-way pipe whose writing end only the child holds, so a child
        # that dies halfway through a message leaves the receiver an end of file, not a read that
        # never completes.
        outbox, child_end = ctx.Pipe(duplex=False)
        for q in (inbox, commands):
            q.cancel_join_thread()  # windows and commands for a child that is gone never delay our exit
        state, steps = self._restart_from
        process = ctx.Process(
            target=_child_main,
            args=(self._specs, self._model_cfg, state, steps, self.config, inbox, commands, child_end),
            name="structalign-online-trainer",
            daemon=True,
        )
        try:
            process.start()  # if this raises, nothing is kept and the next start tries again
        finally:
            child_end.close()
        self._inbox, self._commands, self._outbox, self._process = inbox, commands, outbox, process
        self._error = ""
        self.progress = Progress(steps=steps)
        self._receiver = threading.Thread(
            target=self._receive, args=(process, outbox), name="structalign-trainer-receiver", daemon=True
        )
        self._receiver.start()

    def add(self, batch: Batch) -> None:
        """Hand windows to the trainer (from the inference path: never waits; dropped while stopped)."""
        if not self.running:
            return
        try:
            self._inbox.put_nowait(_to_numpy(batch))
            self.sent += len(batch)
        except queue.Full:
            self.dropped += len(batch)
        except ValueError:  # closed by close() in another thread meanwhile
            pass

    def start(self) -> None:
        """Start (or resume) training; starts the child process the first time, or after it died."""
        self._ensure_process()
        self._stepped_at = time.monotonic()
        self.running = True
        self._commands.put(("run", None))

    def pause(self, timeout: float = 10.0) -> bool:
        """Pause after the current step. True once the child has published its newest weights (also when
        it was paused before), False after ``timeout`` seconds or when the child is gone."""
        process = self._process
        if process is None:
            return True
        deadline = time.monotonic() + timeout
        with self._paused:
            if self.running:
                self.running = False
                self._token += 1
                self._commands.put(("pause", self._token))
            token = self._token
            while self._paused_token < token and process.is_alive() and time.monotonic() < deadline:
                self._paused.wait(POLL_S * 4)
            return self._paused_token >= token

    def update_config(self, config: StructAlignConfig) -> None:
        """Take over new ``train``/``objective`` settings (lr and weight decay, clip, pose weight)."""
        self.config = config
        if self._process is not None:
            self._commands.put(("config", config))

    def close(self, timeout: float = 10.0) -> None:
        """End the child process (after :meth:`pause` if its last weights matter)."""
        process, self._process = self._process, None
        self.running = False
        if process is None:
            return
        if process.is_alive():
            self._commands.put(("close", None))
            process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(timeout)
        self._receiver.join(timeout)
        for q in (self._inbox, self._commands):
            q.close()  # their feeder threads were told at creation never to delay our exit
        self._outbox.close()

    def _receive(self, process: Any, outbox: Any) -> None:
        while True:
            try:
                if not outbox.poll(POLL_S * 4):
                    continue
                item = outbox.recv()
            except (EOFError, OSError):  # the child closed its end: it is exiting or gone, maybe mid-message
                break
            except Exception as exc:  # a whole message that does not unpickle: the next one still reads
                self._error = f"a message from the online trainer was unreadable: {type(exc).__name__}: {exc}"
                log.error(self._error)
                continue
            if isinstance(item, Progress):
                self.progress = item
                self._stepped_at = time.monotonic()
            elif isinstance(item, _Weights):
                self._restart_from = (item.state, item.steps)
                update = WeightUpdate(
                    {k: torch.from_numpy(v) for k, v in item.state.items()}, item.onnx, item.steps
                )
                try:
                    self.publish(update)
                    self.published += 1
                except Exception as exc:  # weights that cannot be installed leave the current ones serving
                    self._error = f"installing new weights failed: {exc}"
                    log.error(self._error)
            elif isinstance(item, _Paused):
                with self._paused:
                    self._paused_token = max(self._paused_token, item.token)
                    self._paused.notify_all()
            elif isinstance(item, _Failed):
                self._error = item.reason
                log.error("online trainer: %s", item.reason)
        with self._paused:
            self._paused.notify_all()
        if self.error:
            log.error("online trainer stopped: %s", self.error)


def _run_in_background() -> None:
    """Give the calling thread (and the threads it starts later) the CPU only when nothing else wants
    it: Linux's SCHED_IDLE policy, which any thread may choose for itself without privileges. Not fatal
    when refused (a sandbox may forbid it): training then competes with inference on equal terms, which
    diagnostics would show as latency."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        log.warning("could not schedule the online trainer SCHED_IDLE: %s", exc)


# -- child side -----------------------------------------------------------------------------------
class _Child:
    """The training loop of the child process."""

    def __init__(
        self,
        specs: dict[str, ModalitySpec],
        model_cfg: ModelConfig,
        state: dict[str, np.ndarray],
        steps: int,
        config: StructAlignConfig,
        outbox: Any,
    ) -> None:
        torch.set_num_threads(1)  # one core at most: the other belongs to the node
        self.config = config
        self.device = resolve_device(config.runtime.device)
        model = MultimodalModel(specs, model_cfg)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        self.model = model.to(self.device)
        kinds = {n: s.kind for n, s in specs.items()}
        self.objective = build_objective(config.objective, kinds, model_cfg.embed_dim).to(self.device)
        # head-only: the pose experts' linear parts learn from ground truth on cached expert inputs
        self.head_only = config.train.online_update == "head"
        if self.head_only and model.pose_head is None:
            log.warning("online_update 'head' needs a pose head; this model has none: training it all")
            self.head_only = False
        self.buffer: ReplayBuffer | CueBuffer
        self.holdout: ReplayBuffer | CueBuffer
        if self.head_only:
            for p in self.model.parameters():
                p.requires_grad_(False)
            for p in head_parameters(self.model):
                p.requires_grad_(True)
            self.buffer = CueBuffer(config.train.replay_capacity)
            self.holdout = CueBuffer(config.train.guard_windows)
        else:
            self.buffer = ReplayBuffer(config.train.replay_capacity, model.specs)
            # the guard: held-out windows, and the weights in use in the node to judge new ones against
            self.holdout = ReplayBuffer(config.train.guard_windows, model.specs)
        self.pending: list[Batch] = []  # head-only: windows in, not yet turned into cues
        self.optimizer = self.make_optimizer()
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.outbox = outbox
        self.progress = Progress(steps=steps)
        self.published_at = steps
        self.received = 0
        self.serving = copy.deepcopy((self.model.state_dict(), self.objective.state_dict()))

    def make_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimiser over what this trainer changes."""
        cfg = self.config.train
        if self.head_only:
            return torch.optim.AdamW(head_parameters(self.model), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return make_optimizer(self.model, self.objective, cfg)

    def take(self, item: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray | None]) -> None:
        inputs, mask, stamps, pose = item
        batch = Batch(
            {k: torch.from_numpy(inputs[k]) for k in self.model.modalities},
            torch.from_numpy(mask),
            self.model.modalities,
            torch.from_numpy(stamps),
            None if pose is None else torch.from_numpy(pose),
        )
        if self.head_only:
            self.pending.append(batch)  # turned into cues in one pass by absorb()
            return
        self.split(batch, self.buffer.add, self.holdout.add)

    def split(self, batch: Any, train: Callable[[Any], None], hold: Callable[[Any], None]) -> None:
        """Every ``guard_every``-th window received to ``hold``, the others to ``train``."""
        every = self.config.train.guard_every
        number = torch.arange(self.received + 1, self.received + 1 + len(batch))
        self.received += len(batch)
        held = (number % every == 0) if every else torch.zeros(len(batch), dtype=torch.bool)
        if held.any():
            hold(batch.select(held))
        if not held.all():
            train(batch.select(~held))

    def absorb(self) -> None:
        """Head-only: the windows taken since the last call, as cues of the frozen encoders, into
        the replay and held-out buffers (unlabelled windows are left out: nothing to learn from)."""
        if not self.pending:
            return
        labelled, self.pending = [b for b in self.pending if b.pose is not None], []
        for start in range(0, len(labelled), ABSORB):  # a few windows per forward pass, not one
            part = labelled[start : start + ABSORB]
            batch = Batch(
                {k: torch.cat([b.inputs[k] for b in part]) for k in self.model.modalities},
                torch.cat([b.mask for b in part]),
                self.model.modalities,
                torch.cat([b.stamps_ns for b in part]),
                torch.cat([b.pose for b in part if b.pose is not None]),
            )
            cues = expert_cues(self.model, batch)
            if cues is not None:
                self.split(cues, self.buffer.add, self.holdout.add)

    def set_config(self, config: StructAlignConfig) -> None:
        self.config = config
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = config.train.lr, config.train.weight_decay

    def step(self) -> None:
        batch = self.buffer.sample(self.config.train.batch_size, self.generator)
        try:
            if self.head_only:
                metrics = self.head_step(batch)
            else:
                metrics = train_step(
                    self.model, batch, self.optimizer, self.objective, **step_options(self.config)
                )
        except Exception:  # one bad batch must not end live fine-tuning
            log.exception("online train step failed; skipped")
            metrics = {"skipped": 1.0}
        p = self.progress
        p.steps += 1
        p.skipped += int(metrics.get("skipped", 0.0))
        p.replay = len(self.buffer)
        p.metrics = {k: float(v) for k, v in metrics.items()}
        p.metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])  # shows a live change took effect
        p.lambdas = [float(v) for v in self.model.lambdas.detach().cpu()]
        self.outbox.send(copy.copy(p))

    def head_step(self, cues: Cues) -> dict[str, float]:
        """One step of the pose experts' linear parts on ``cues`` (head-only fine-tuning); a
        non-finite loss or gradient skips it, as :func:`~core.learn.train.train_step` does."""
        self.model.eval()  # nothing here behaves differently in training mode; the encoders are frozen
        self.optimizer.zero_grad(set_to_none=True)
        loss, metrics = head_pose_loss(self.model, cues)
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            return {**metrics, "loss": float(loss.detach()), "grad_norm": float("nan"), "skipped": 1.0}
        loss.backward()
        clip = self.config.train.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(head_parameters(self.model), clip if clip > 0 else float("inf"))
        if not torch.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            return {**metrics, "loss": float(loss.detach()), "grad_norm": float(norm), "skipped": 1.0}
        self.optimizer.step()
        return {**metrics, "loss": float(loss.detach()), "grad_norm": float(norm), "skipped": 0.0}

    def offer(self) -> None:
        """Publish the weights trained since the last offer if they pass the guard (see the module
        docstring); without enough held-out windows to judge on yet, keep training and wait."""
        if self.published_at == self.progress.steps:
            return
        cfg = self.config.train
        # head-only steps are cheap, so many candidates meet the same held-out windows: judged on a
        # batch of them (~11 s of one trajectory at 30 Hz), one was soon better by chance; wait for all
        needed = cfg.guard_windows if self.head_only else min(cfg.batch_size, cfg.guard_windows)
        enough = len(self.holdout) >= needed
        if cfg.guard_every and not (enough and self.judge()):
            return
        self.published_at = self.progress.steps
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.serving = (state, copy.deepcopy(self.objective.state_dict()))  # ``state`` is a copy already
        onnx = None
        if self.config.runtime.backend == "onnx":
            snapshot = MultimodalModel(self.model.specs, self.model.cfg)
            snapshot.load_state_dict(state)
            onnx = onnx_bytes(snapshot)
        self.outbox.send(_Weights({k: v.numpy() for k, v in state.items()}, onnx, self.progress.steps))

    def judge(self) -> bool:
        """The guard's verdict on the current weights against the serving ones; a rejection puts the
        serving weights back (with a fresh optimiser) and is reported at once."""
        holdout = self.holdout.batches(self.config.train.batch_size)
        model, objective = copy.deepcopy(self.model), copy.deepcopy(self.objective)
        model.load_state_dict(self.serving[0])
        objective.load_state_dict(self.serving[1])
        if self.head_only:
            # encoders and lambda are the serving ones, so the objective's loss is the same: the pose decides
            candidate, serving = evaluate_head(self.model, holdout), evaluate_head(model, holdout)
        else:
            candidate = evaluate(self.model, self.objective, holdout)
            serving = evaluate(model, objective, holdout)
        cfg = self.config.train
        ok, why = no_worse(candidate, serving, cfg.guard_margin, cfg.guard_tolerance)
        p = self.progress
        p.held_out = len(self.holdout)
        p.verdict = f"{'accepted' if ok else 'rejected'} at step {p.steps}: {why or 'nothing to compare'}"
        if ok:
            p.accepted += 1
        else:
            p.rejected += 1
            self.published_at = p.steps
            self.model.load_state_dict(self.serving[0])
            self.objective.load_state_dict(self.serving[1])
            self.optimizer = self.make_optimizer()
            # the trainer's λ, as after a step
            p.lambdas = [float(v) for v in self.model.lambdas.detach().cpu()]
        self.outbox.send(copy.copy(p))
        return ok


def _exit_with(parent: Any) -> None:
    """Watchdog thread of the child: end it the moment its parent is gone, wherever the loop is (it may
    be blocked reading half a message its dead parent was writing)."""
    parent.join()
    os._exit(0)


def _child_main(
    specs: dict[str, ModalitySpec],
    model_cfg: ModelConfig,
    state: dict[str, np.ndarray],
    steps: int,
    config: StructAlignConfig,
    inbox: Any,
    commands: Any,
    outbox: Any,
) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when this one ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return_large_blocks()  # exports and guard verdicts, every few seconds for hours
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent-watchdog", daemon=True).start()
    try:
        child = _Child(specs, model_cfg, state, steps, config, outbox)
        # Start-up (interpreter, torch import, model) ran at normal priority: under SCHED_IDLE beside a
        # busy node it took 4-10 s instead of 2-4 s before the first step. Training itself yields.
        if config.train.online_idle_priority:
            _run_in_background()
        _train(child, inbox, commands, outbox)
    except BaseException as exc:
        log.exception("online trainer failed")  # the traceback, on the node's standard error
        with contextlib.suppress(OSError):  # the node may be gone: then nobody is listening
            outbox.send(_Failed(f"the trainer failed: {type(exc).__name__}: {exc}"))
        raise


def _train(child: _Child, inbox: Any, commands: Any, outbox: Any) -> None:
    running, last_swap, rest_until = False, time.monotonic(), 0.0
    while True:
        wait = max(POLL_S if not running else 0.0, rest_until - time.monotonic())
        try:
            command, arg = commands.get(timeout=wait) if wait > 0 else commands.get_nowait()
        except queue.Empty:
            command, arg = None, None
        if command == "close":
            return
        if command == "run":
            running, last_swap = True, time.monotonic()
        elif command == "pause":
            running = False
            child.offer()
            outbox.send(_Paused(arg))
        elif command == "config":
            child.set_config(arg)
        if command is not None:
            continue  # look for further commands before training on
        while True:  # everything the node sent since the last step
            try:
                child.take(inbox.get_nowait())
            except queue.Empty:
                break
        if running:
            child.absorb()
        cfg = child.config.train
        if not running or time.monotonic() < rest_until:
            continue
        if len(child.buffer) < cfg.min_replay:
            rest_until = time.monotonic() + POLL_S
            continue
        started = time.monotonic()
        child.step()
        if time.monotonic() - last_swap >= cfg.swap_period_s:
            child.offer()  # the guard's judgement is training work too: the rest below covers it
            last_swap = time.monotonic()
        rest_until = time.monotonic() + (time.monotonic() - started) * (1 / cfg.online_duty_cycle - 1)
