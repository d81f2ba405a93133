"""One typed configuration tree for the whole suite: the schema.

Each section is a dataclass whose docstring describes every field (the first sentence becomes the ROS
parameter description) and whose ``__post_init__`` validates it, so an invalid tree cannot be built.
Reading and writing the tree (nested data, YAML and ROS parameter files, command-line ``--set``, old
keys) is :mod:`structalign_ros.core.config_io`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MODALITY_KINDS = ("image", "depth", "wrench", "imu", "tactile", "joints")
# Kinds whose window entry is the one frame nearest the pivot rather than a resampled series.
FRAME_KINDS = ("image", "depth")
# Kinds whose values are 2-D grids (pixels, taxels): encoded, and compared in kernels, as images.
GRID_KINDS = ("image", "depth", "tactile")
RELIABILITIES = ("best_effort", "reliable")
# Depth image encodings the converter reads (REP-118: 16-bit millimetres or float metres).
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
# Where the simulator publishes the true end-effector pose (``ground_truth_topic``'s default).
GROUND_TRUTH_TOPIC = "/ground_truth/ee_pose"
# Parameters rclpy declares itself; a parameter file may set them beside the tree.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")
# The simulated arm's joints (structalign_ros.core.sim), the default joint order.
SIM_JOINTS = "shoulder_pan_joint,shoulder_lift_joint,elbow_joint,wrist_pitch_joint"
# Every simulated arm (``sim.robot``) and its joints in actuator order; "arm4" is the default.
SIM_ROBOTS = {
    "arm4": SIM_JOINTS,
    "arm6": "base_yaw_joint,shoulder_pitch_joint,elbow_pitch_joint,wrist_pitch_joint,wrist_yaw_joint,"
    "tool_roll_joint",
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names its dotted path."""


@dataclass
class ModalityConfig:
    """One sensor stream.

    Args:
        kind: what the stream carries, one of ``MODALITY_KINDS``.
        topic: ROS topic (live) or bag topic (replay) it arrives on.
        rate_hz: nominal publishing rate, used to size buffers and to judge silence.
        samples: fixed number of samples per window after resampling (1 for a camera frame).
        enabled: a disabled modality is neither subscribed to nor encoded.
        joint_names: for ``kind=joints``, the comma-separated joint order of the window arrays
            (a comma string because ROS parameters cannot hold an empty list).
        qos_reliability: the live subscription's reliability, ``best_effort`` (sensor-data QoS, the
            default) or ``reliable``; a reliable publisher reaches either, a best-effort one only the
            first.
        qos_depth: the live subscription's history depth; 0 (default) sizes it to 100 ms of messages
            (at least 5), so a 1 kHz stream survives the subscriber being busy for a moment.
    """

    kind: str
    topic: str
    rate_hz: float
    samples: int = 1
    enabled: bool = True
    joint_names: str = ""
    qos_reliability: str = "best_effort"
    qos_depth: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODALITY_KINDS:
            raise ConfigError(f"kind={self.kind!r} is not one of {MODALITY_KINDS}")
        if not self.topic:
            raise ConfigError("topic must not be empty")
        if not self.rate_hz > 0:
            raise ConfigError(f"rate_hz={self.rate_hz} must be > 0")
        if self.samples < 1:
            raise ConfigError(f"samples={self.samples} must be >= 1")
        if self.kind == "joints" and not self.joint_list:
            raise ConfigError("kind=joints needs joint_names")
        if self.kind in FRAME_KINDS and self.samples != 1:
            raise ConfigError(f"samples={self.samples}: a {self.kind} window holds one frame (samples=1)")
        if self.qos_reliability not in RELIABILITIES:
            raise ConfigError(f"qos_reliability={self.qos_reliability!r} is not one of {RELIABILITIES}")
        if self.qos_depth < 0:
            raise ConfigError(f"qos_depth={self.qos_depth} must be >= 0 (0 = automatic)")

    @property
    def history_depth(self) -> int:
        """The subscription depth: ``qos_depth``, or 100 ms of messages (at least 5) when it is 0."""
        return self.qos_depth or max(5, math.ceil(0.1 * self.rate_hz))

    @property
    def joint_list(self) -> list[str]:
        """``joint_names`` as a list, empty entries removed."""
        return [n.strip() for n in self.joint_names.split(",") if n.strip()]


def _default_modalities() -> dict[str, ModalityConfig]:
    return {
        "rgb": ModalityConfig("image", "/camera/color/image_raw", 30.0, 1),
        "depth": ModalityConfig("depth", "/camera/depth/image_raw", 30.0, 1),
        "wrench": ModalityConfig("wrench", "/wrist/wrench", 1000.0, 32),
        "imu": ModalityConfig("imu", "/ee/imu", 200.0, 16),
        "tactile": ModalityConfig("tactile", "/tactile/image", 100.0, 8),
        "joints": ModalityConfig("joints", "/joint_states", 200.0, 16, joint_names=SIM_JOINTS),
    }


@dataclass
class WindowConfig:
    """How streams are cut into camera-pivot windows.

    Args:
        span_s: each window covers ``[t - span_s, t]`` for a pivot stamp ``t``.
        timeout_s: a window is emitted this long after its pivot even if a stream has not caught up;
            the late streams are then masked.
        pivot: the modality whose frame stamps define the windows (a camera).
        reorder_s: samples arriving out of order by up to this much are sorted in; older ones are
            dropped and counted. Windows wait this long past ``t`` for late samples, so it must not
            exceed ``timeout_s``. It sets a latency floor: a window completes at the first sample of
            every stream later than ``t + reorder_s`` (with 100 Hz tactile, measured by
            ``bench/bench_node.py``: 1 ms gives 6 ms at the median, 3 ms gave 9 ms, 10 ms gave 16 ms).
            One publisher's samples on one topic reach the node in order (DDS keeps a writer's order)
            and the node feeds each drained batch in stamp order, so 1 ms (one sample of a 1 kHz
            stream) is tolerance enough; raise it for a topic fed by several publishers.
        reset_s: a stamp this far behind the newest one is a clock jump (a bag looping, a new bag):
            every buffer is cleared.
        max_gap_s: a stream with a gap longer than this (or than 3 of its periods, or one resampling
            bin, whichever is longest) inside a window's span is masked in that window; shorter gaps
            are bridged by interpolation. Live best-effort transport loses a few messages of a 1 kHz
            stream now and then, which should not cost the window the whole stream.
    """

    span_s: float = 0.1
    timeout_s: float = 0.05
    pivot: str = "rgb"
    reorder_s: float = 0.001
    reset_s: float = 1.0
    max_gap_s: float = 0.025

    def __post_init__(self) -> None:
        if self.max_gap_s < 0:
            raise ConfigError(f"max_gap_s={self.max_gap_s} must be >= 0")
        if not self.span_s > 0:
            raise ConfigError(f"span_s={self.span_s} must be > 0")
        if self.timeout_s < 0:
            raise ConfigError(f"timeout_s={self.timeout_s} must be >= 0")
        if not 0 <= self.reorder_s <= self.timeout_s:
            raise ConfigError(f"reorder_s={self.reorder_s} must be in [0, timeout_s={self.timeout_s}]")
        if not self.reset_s > self.reorder_s:
            raise ConfigError(f"reset_s={self.reset_s} must be > reorder_s={self.reorder_s}")


# Sensor faults the simulator and ``structalign play`` inject (structalign_ros.core.sim.faults).
FAULT_KINDS = ("none", "noise", "stuck", "bias", "zero", "blackout", "occlude", "delay")
FRAME_FAULTS = ("blackout", "occlude")  # camera faults: image or depth only
MAX_FAULT_DELAY_MS = 2000.0


@dataclass
class FaultConfig:
    """A sensor fault injected into what the simulator publishes (live-settable on the sim node).

    Args:
        modality: the sensor kind it hits (``image``, ``depth``, ``wrench``, ``imu``, ``tactile``,
            ``joints``); empty: no fault.
        kind: ``none``; ``noise`` (Gaussian, ``magnitude`` x the signal's own std); ``stuck`` (the
            last value before the fault, frozen); ``bias`` (+ ``magnitude`` x the signal's std);
            ``zero`` (an all-zero signal); ``blackout`` (camera image or depth all 0); ``occlude``
            (the right half of the frame 0); ``delay`` (each message carries the reading of
            ``delay_ms`` earlier, stamps unchanged).
        magnitude: for ``noise`` and ``bias``, in units of the signal's own std (per channel, from the
            clean readings so far).
        delay_ms: for ``delay``, how far the content lags its stamps (at most 2000).
        start_s: the fault starts this many seconds after the first reading.
        stop_s: and stops this many seconds after the first reading; 0: it never stops.
    """

    modality: str = ""
    kind: str = "none"
    magnitude: float = 1.0
    delay_ms: float = 100.0
    start_s: float = 0.0
    stop_s: float = 0.0

    def __post_init__(self) -> None:
        if self.modality and self.modality not in MODALITY_KINDS:
            raise ConfigError(f"modality={self.modality!r} is not empty or one of {MODALITY_KINDS}")
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"kind={self.kind!r} is not one of {FAULT_KINDS}")
        if self.kind in FRAME_FAULTS and self.modality not in ("", *FRAME_KINDS):
            raise ConfigError(f"kind={self.kind!r} is a camera fault: modality must be one of {FRAME_KINDS}")
        if not self.magnitude >= 0:
            raise ConfigError(f"magnitude={self.magnitude} must be >= 0")
        if not 0 <= self.delay_ms <= MAX_FAULT_DELAY_MS:
            raise ConfigError(f"delay_ms={self.delay_ms} must be in [0, {MAX_FAULT_DELAY_MS:g}]")
        if not self.start_s >= 0 or not (self.stop_s == 0 or self.stop_s > self.start_s):
            raise ConfigError(
                f"start_s={self.start_s}, stop_s={self.stop_s}: need 0 <= start_s < stop_s (or 0)"
            )

    @property
    def active(self) -> bool:
        """Whether a fault is configured at all (a modality and a kind other than ``none``)."""
        return bool(self.modality) and self.kind != "none"


@dataclass
class ShiftConfig:
    """A domain shift of the simulated workcell, from the start or set live on the sim node.

    Args:
        camera_yaw_deg: the camera orbits this far about the vertical axis through the point it looks
            at (still looking at it).
        tool_mass_kg: payload added to the tool (the F/T sensor carries it).
        light_scale: brightness factor of the scene's lights (1: as built).
        tool_offset_m: another tool: the tool centre point (the end effector whose pose is the
            ground truth) moves this far along the tool's axis, beyond the pad for > 0, as when an
            operator swaps the tool and enters the new one's TCP in the robot controller, whose
            kinematics then report the new point. The physical tool stays as built (add
            ``tool_mass_kg`` for a heavier one), so the sensors see the same scene and only the
            pose to be estimated moves.
    """

    camera_yaw_deg: float = 0.0
    tool_mass_kg: float = 0.0
    light_scale: float = 1.0
    tool_offset_m: float = 0.0

    def __post_init__(self) -> None:
        if not -180 <= self.camera_yaw_deg <= 180:
            raise ConfigError(f"camera_yaw_deg={self.camera_yaw_deg} must be in [-180, 180]")
        if not 0 <= self.tool_mass_kg <= 5:
            raise ConfigError(f"tool_mass_kg={self.tool_mass_kg} must be in [0, 5]")
        if not self.light_scale >= 0:
            raise ConfigError(f"light_scale={self.light_scale} must be >= 0")
        if not -0.1 <= self.tool_offset_m <= 0.3:
            raise ConfigError(f"tool_offset_m={self.tool_offset_m} must be in [-0.1, 0.3]")


@dataclass
class SimConfig:
    """The simulated robot (:mod:`structalign_ros.core.sim`); sensor topics and rates come from
    ``modalities``.

    Args:
        robot: the simulated arm, one of ``SIM_ROBOTS``: ``arm4`` (pan + 3 pitch joints, the default) or
            ``arm6`` (6 joints with a spherical wrist, other links and camera). The enabled ``joints``
            modality must list exactly that arm's joints (the defaults list ``arm4``'s; see
            ``config/sim_arm6.yaml``); the simulator refuses a mismatch.
        width: camera image width in pixels.
        height: camera image height in pixels.
        depth_encoding: ``16UC1`` or ``mono16`` (millimetres), or ``32FC1`` (metres).
        taxel_rows: rows of the tactile grid on the contact pad.
        taxel_cols: columns of the tactile grid.
        physics_hz: physics steps per second; every sensor sample is stamped on a physics step.
        object_pose_topic: ground-truth pose of the pushed object.
        ground_truth_hz: rate of both ground-truth poses the simulator publishes (the end effector's on
            the tree's ``ground_truth_topic``, and the object's).
        seed: episode seed of the live simulated robot (the box, the controller, the noise).
        episode_s: the live simulated robot starts a new episode (seed + 1) after this many seconds;
            stamps keep increasing across episodes.
        publish_clock: the live simulated robot also publishes ``/clock`` (for ``use_sim_time``).
        fault: a sensor fault injected into the published readings (:class:`FaultConfig`).
        shift: a domain shift of the workcell (:class:`ShiftConfig`).
    """

    robot: str = "arm4"
    width: int = 128
    height: int = 128
    depth_encoding: str = "16UC1"
    taxel_rows: int = 4
    taxel_cols: int = 4
    physics_hz: float = 1000.0
    object_pose_topic: str = "/ground_truth/object_pose"
    ground_truth_hz: float = 100.0
    seed: int = 0
    episode_s: float = 60.0
    publish_clock: bool = False
    fault: FaultConfig = field(default_factory=FaultConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)

    def __post_init__(self) -> None:
        if self.robot not in SIM_ROBOTS:
            raise ConfigError(f"robot={self.robot!r} is not one of {tuple(SIM_ROBOTS)}")
        if not self.episode_s > 0:
            raise ConfigError(f"episode_s={self.episode_s} must be > 0")
        for name in ("width", "height", "taxel_rows", "taxel_cols"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise ConfigError(f"depth_encoding={self.depth_encoding!r} is not one of {DEPTH_ENCODINGS}")
        if not self.physics_hz > 0 or not self.ground_truth_hz > 0:
            raise ConfigError("physics_hz and ground_truth_hz must be > 0")


OBJECTIVES = ("pairwise", "symile", "gram", "unioma", "mover", "gotma", "otm")
BASE_OBJECTIVES = ("pairwise", "symile", "gram")
TEMPORAL_ENCODERS = ("conv", "gru")
BACKENDS = ("torch", "onnx")


@dataclass
class ModelConfig:
    """Encoders, fusion and heads (:mod:`structalign_ros.core.learn.models`).

    Args:
        embed_dim: the shared embedding size ``d`` every encoder projects to.
        width: channel width of the convolutional and recurrent trunks; small keeps 30 Hz on 2 cores.
        image_size: camera, depth and tactile frames are resized to this square side before encoding.
        temporal: trunk for F/T, IMU and joint windows, ``conv`` (temporal convolution) or ``gru``.
        pose_head: whether to regress the end-effector pose (position + 6D rotation) from the fusion.
        pose_hidden: width of the pose head's two hidden layers.
    """

    embed_dim: int = 64
    width: int = 32
    image_size: int = 64
    temporal: str = "conv"
    pose_head: bool = True
    pose_hidden: int = 256

    def __post_init__(self) -> None:
        for name in ("embed_dim", "width", "image_size", "pose_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.image_size < 8:
            raise ConfigError(f"image_size={self.image_size} must be >= 8 (three stride-2 stages)")
        if self.temporal not in TEMPORAL_ENCODERS:
            raise ConfigError(f"temporal={self.temporal!r} is not one of {TEMPORAL_ENCODERS}")


@dataclass
class ObjectiveConfig:
    """The training objective (:mod:`structalign_ros.core.learn.objectives`) and its input kernels.

    Args:
        name: the method, one of ``OBJECTIVES``.
        base: the contrastive objective that the structural methods (UniOMA) regularise.
        temperature: softmax temperature of every contrastive term.
        alpha: weight of each method's second term against its contrastive one: UniOMA's GW
            regulariser, MOVER's OT-weighted volume, GOTMA's geometry terms, OTM's reconstruction.
        epsilon: entropic regularisation of the OT/GW solvers.
        gw_iterations: outer iterations of each GW solve and barycenter per step. A fixed budget, not
            convergence: paired batches start from the identity plan, which is already near the
            optimum, and the step must stay cheap.
        sinkhorn_iterations: inner Sinkhorn iterations per GW iteration.
        pose_weight: weight of the supervised end-effector pose loss when the batch has ground truth;
            0 disables it. The default is what the shipped model was trained with: live fine-tuning
            without it (the alignment terms alone) moved the encoders under an unchanged pose head and
            doubled the end-effector error within 40 s (docs/BENCHMARKS.md).
        lambda_entropy: UniOMA's remedy against lambda collapsing onto the modality with the smallest GW
            term: an entropy prior ``- lambda_entropy * H(lambda)``. With it the optimal weights are
            ``softmax(-alpha * d_gw / lambda_entropy)``: they still move away from a modality whose
            structure disagrees, but never all the way to one modality.
        otm_aligned: OTM only: whether a batch's rows are paired across modalities (the same
            moment). False for unaligned data: the barycenter starts from product plans and each
            modality is reconstructed through its transport plan instead of row by row.
        kernel_image_size: frames are average-pooled to this side before the RBF input kernel.
        tck_members: ensemble size of the time-series cluster kernel.
        tck_max_clusters: each member draws its number of mixture components from ``2..this``.
    """

    name: str = "unioma"
    base: str = "pairwise"
    temperature: float = 0.1
    alpha: float = 1.0
    epsilon: float = 0.05
    gw_iterations: int = 10
    sinkhorn_iterations: int = 30
    pose_weight: float = 20.0
    lambda_entropy: float = 0.01
    otm_aligned: bool = True
    kernel_image_size: int = 16
    tck_members: int = 30
    tck_max_clusters: int = 6

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(f"name={self.name!r} is not one of {OBJECTIVES}")
        if self.base not in BASE_OBJECTIVES:
            raise ConfigError(f"base={self.base!r} is not one of {BASE_OBJECTIVES}")
        for name in ("temperature", "epsilon"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("alpha", "pose_weight", "lambda_entropy"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("kernel_image_size", "tck_members", "gw_iterations", "sinkhorn_iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.tck_max_clusters < 2:
            raise ConfigError(f"tck_max_clusters={self.tck_max_clusters} must be >= 2")


ONLINE_UPDATES = ("head", "all")  # what live fine-tuning changes (TrainConfig.online_update)


@dataclass
class TrainConfig:
    """Offline and online training (:mod:`structalign_ros.core.learn.train`).

    Args:
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: windows per step.
        steps: optimisation steps of an offline run.
        seed: seeds torch, numpy and Python's random for a deterministic run.
        amp: mixed precision (bfloat16 autocast) when training on CUDA; ignored on CPU.
        grad_clip: global gradient-norm clip; 0 disables it.
        replay_capacity: windows the online trainer keeps (oldest dropped first).
        min_replay: the online trainer waits for this many windows before its first step.
        swap_period_s: how often the online trainer offers new weights to the guard (and, when they
            pass it, to the predictor).
        guard_every: every ``guard_every``-th window the online trainer receives is held out from
            training: new weights are installed only if, on the latest held-out windows, they are no
            worse than the weights in use (:mod:`structalign_ros.core.serve.online`); 0 turns the guard
            off (every update installed).
        guard_windows: how many of the latest held-out windows the guard judges on.
        guard_margin: besides being no worse on every metric, new weights must lower at least one by
            this fraction (0: no worse is enough). Many candidates judged on the same few hundred
            windows of one trajectory: one that is better by chance would be installed, and the
            next windows show it.
        guard_tolerance: a metric counts as worse only when it is above the serving weights' by more
            than this fraction (0: any rise). The held-out mean moves by a few per cent between
            candidates on one trajectory; without it a candidate that halved the position error was
            turned down for 0.2 % more rotation error, for minutes.
        online_duty_cycle: share of the time the online trainer may compute: after a step of ``t``
            seconds it rests ``t * (1 / online_duty_cycle - 1)``, leaving the rest of the machine (and
            Python's interpreter lock) to inference and the sensor callbacks; 1 = never rest.
        checkpoint_dir: where checkpoints are written; empty disables checkpointing.
        online_idle_priority: run the online trainer under Linux's SCHED_IDLE (CPU time nothing else
            wants); off, it competes with inference at normal priority (tests on a loaded machine,
            where SCHED_IDLE can starve it for minutes).
        noise_augment: per window and modality, the chance that it is trained with Gaussian noise at
            its own per-channel std added, so a noisy sensor does not derail the pose.
        validate_every: offline steps between validations on the held-out bags (the best model on
            validation is kept as ``best.pt``); 0: only at epoch ends.
        head_steps: steps of the last offline stage, the pose experts refitted on frozen features
            (:mod:`core.learn.headfit`); 0 skips it.
        head_lr: its learning rate.
        expert_min_r2: after the refit, a pose expert whose position (rotation) explains less than
            this share of the held-out episodes' variance (R^2 around their own mean) is gated out of
            the fusion for its position (rotation): its calibration is set to
            :data:`core.learn.headfit.GATED`, so it only counts when no passing expert is present (the
            best expert always passes). Measured on arm4: the wrench, IMU and tactile experts
            (held-out position R^2 -0.5 to 0.34, against >= 0.96 for camera, depth and joints)
            sometimes claim precision on windows of unseen episodes and pulled the
            joints-masked pose from 8 to 22 mm. ``-.inf`` keeps every expert.
        threads: torch intra-op threads of the offline commands (``structalign train``, ``eval``); 0:
            torch's default (one per core). Recorded in the checkpoint with the rest of the tree.
        online_update: what live fine-tuning changes. ``head``: only the linear (mean) part of each
            pose expert, from the weights in use, on windows with ground truth, with the encoders,
            the input statistics, lambda and the experts' variances frozen (without ground truth
            nothing is trained); ``all``: every weight, end to end with the objective (the offline
            recipe's pose-expert refit is undone by it, so the guard rejects nearly every update).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    steps: int = 600
    seed: int = 0
    amp: bool = True
    grad_clip: float = 1.0
    replay_capacity: int = 4096
    min_replay: int = 256
    swap_period_s: float = 10.0
    guard_every: int = 5
    guard_windows: int = 256
    guard_margin: float = 0.1
    guard_tolerance: float = 0.02
    online_duty_cycle: float = 0.5
    checkpoint_dir: str = ""
    online_idle_priority: bool = True
    noise_augment: float = 0.1
    validate_every: int = 100
    head_steps: int = 4000
    head_lr: float = 2e-3
    expert_min_r2: float = 0.5
    threads: int = 0
    online_update: str = "head"

    def __post_init__(self) -> None:
        if not 0 <= self.guard_margin < 1:
            raise ConfigError(f"guard_margin={self.guard_margin} must be in [0, 1)")
        if not 0 <= self.guard_tolerance < 1:
            raise ConfigError(f"guard_tolerance={self.guard_tolerance} must be in [0, 1)")
        if self.online_update not in ONLINE_UPDATES:
            raise ConfigError(f"online_update={self.online_update!r} must be one of {ONLINE_UPDATES}")
        if not 0 <= self.noise_augment < 1:
            raise ConfigError(f"noise_augment={self.noise_augment} must be in [0, 1)")
        if self.validate_every < 0 or self.head_steps < 0:
            raise ConfigError("validate_every and head_steps must be >= 0")
        if self.threads < 0:
            raise ConfigError(f"threads={self.threads} must be >= 0 (0: torch's default)")
        if not self.head_lr > 0:
            raise ConfigError(f"head_lr={self.head_lr} must be > 0")
        if not self.expert_min_r2 < 1:  # NaN fails too
            raise ConfigError(f"expert_min_r2={self.expert_min_r2} must be < 1 (-.inf: no gate)")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 2 (contrastive negatives)")
        if self.steps < 0:
            raise ConfigError(f"steps={self.steps} must be >= 0")
        if self.min_replay < 2 or self.replay_capacity < self.min_replay:
            raise ConfigError(
                f"need 2 <= min_replay ({self.min_replay}) <= replay_capacity ({self.replay_capacity})"
            )
        if self.guard_every < 0 or self.guard_every == 1 or self.guard_windows < 2:
            raise ConfigError(
                f"guard_every={self.guard_every} must be 0 (off) or >= 2 (1 would hold out every window), "
                f"guard_windows={self.guard_windows} >= 2"
            )
        if not self.swap_period_s > 0:
            raise ConfigError(f"swap_period_s={self.swap_period_s} must be > 0")
        if not 0 < self.online_duty_cycle <= 1:
            raise ConfigError(f"online_duty_cycle={self.online_duty_cycle} must be in (0, 1]")


@dataclass
class RuntimeConfig:
    """Inference (:mod:`structalign_ros.core.serve.runtime`).

    Args:
        backend: ``onnx`` (ONNX Runtime, the default: one window of the default model takes 0.9 ms on
            one CPU thread against 3.5 ms in torch, docs/LEARNING.md) or ``torch``.
        device: torch device (``cpu``, ``cuda``, ``cuda:1``) of the torch backend, online fine-tuning
            and offline training (under torchrun, ``cuda`` is each rank's own GPU), or ``auto``: CUDA
            when this machine has it, else the CPU.
        onnx_path: the exported model the ``onnx`` backend loads; empty: the loaded checkpoint is
            exported in memory at start-up.
        providers: comma-separated ONNX Runtime execution providers in order of preference, or
            ``auto`` (TensorRT, then CUDA, then CPU, whichever this onnxruntime build offers).
        threads: intra-op threads of either backend. 1 by default: the node shares the machine with
            its sensor reader and the online trainer, and on a 2-core computer a second intra-op thread
            mostly waits for a core (two OpenMP threads once made a GW barycenter 170x slower there).
    """

    backend: str = "onnx"
    device: str = "auto"
    onnx_path: str = ""
    providers: str = "auto"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is not one of {BACKENDS}")
        if self.threads < 1:
            raise ConfigError(f"threads={self.threads} must be >= 1")


@dataclass
class NodeConfig:
    """The live perception node (:mod:`structalign_ros.ros.perception_node`).

    Args:
        model: checkpoint (``.pt``) the node starts from; empty: the default model shipped in the
            package's ``models/`` (trained on the simulated robot). A newer checkpoint in
            ``train.checkpoint_dir`` takes precedence, so fine-tuning survives a restart.
        base_frame: frame of the end-effector pose output (REP-105 ``base_link``).
        marker_frame: frame the RViz weight bar chart is drawn in.
        finetune: fine-tune online (GW-regularised, in a background process) while running.
        checkpoint_period_s: how often fine-tuned weights are checkpointed (also on shutdown).
        diagnostics_period_s: period of the ``/diagnostics`` report.
        marker_lifetime_s: lifetime of the RViz markers, so a stopped node's chart disappears.
        stall_warn_s: diagnostics warn when the online trainer, with enough windows to train on, has
            finished no step for this long (it only gets CPU time nothing else wants, so a saturated
            machine starves it).
        sensor_health: scale each modality's weight (published, fused, and in the pose) by its live
            health (:mod:`structalign_ros.core.serve.health`): a sensor that degrades loses its weight.
        health_windows: recent windows the health signals are computed over.
        health_warmup: windows at the start taken as clean (the health references); the weights
            are the learned ones until then.
        health_margin: spreads of its clean variation a modality's health signal may rise before
            its weight starts to fall.
        max_queue_s: the longest a finished window may wait for the inference worker; an older one
            is dropped and counted, so the outputs stay current when the machine falls behind.
    """

    model: str = ""
    base_frame: str = "base_link"
    marker_frame: str = "base_link"
    finetune: bool = True
    checkpoint_period_s: float = 60.0
    diagnostics_period_s: float = 1.0
    marker_lifetime_s: float = 0.5
    stall_warn_s: float = 30.0
    sensor_health: bool = True
    health_windows: int = 64
    health_warmup: int = 256
    health_margin: float = 4.0
    max_queue_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.base_frame or not self.marker_frame:
            raise ConfigError("base_frame and marker_frame must not be empty")
        if self.health_windows < 16 or self.health_warmup < 8 or not self.health_margin >= 0:
            raise ConfigError(
                f"health_windows={self.health_windows} must be >= 16, health_warmup={self.health_warmup} "
                f">= 8, health_margin={self.health_margin} >= 0"
            )
        for name in (
            "checkpoint_period_s",
            "diagnostics_period_s",
            "marker_lifetime_s",
            "stall_warn_s",
            "max_queue_s",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")


@dataclass
class StructAlignConfig:
    """The root of the configuration tree.

    Args:
        ground_truth_topic: the true end-effector pose (``geometry_msgs/PoseStamped``); empty: none.
            The simulator publishes it, training and evaluation read it from the bags, and the live
            node fine-tunes on it (then only on windows it labels) and reports its pose error against
            it. A robot without an end-effector ground truth sets it empty, else the node waits for
            labelled windows and never fine-tunes.
    """

    modalities: dict[str, ModalityConfig] = field(default_factory=_default_modalities)
    ground_truth_topic: str = GROUND_TRUTH_TOPIC
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    node: NodeConfig = field(default_factory=NodeConfig)

    def __post_init__(self) -> None:
        if not any(m.enabled for m in self.modalities.values()):
            raise ConfigError("modalities: at least one modality must be enabled")
        pivot = self.modalities.get(self.window.pivot)
        if pivot is None or not pivot.enabled or pivot.kind != "image":
            raise ConfigError(f"window.pivot={self.window.pivot!r} must name an enabled image modality")

    @property
    def enabled_modalities(self) -> list[str]:
        """Names of the enabled modalities, in configuration order."""
        return [name for name, m in self.modalities.items() if m.enabled]
