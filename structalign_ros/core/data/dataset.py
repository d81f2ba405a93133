"""Windows from rosbags for training: the node's convert -> WindowAssembler path, fed from bags.

:func:`iter_windows` is the one replay pipeline (``structalign bag-info`` counts with it, training
reads through it); :class:`WindowDataset` wraps it as a torch ``IterableDataset`` with a shuffle
buffer, splitting bags across DataLoader workers, and :func:`data_loader` batches it with
:func:`~.batch.to_batch` in the model's layout, as the live node does. Each bag is one episode: the
assembler is flushed and reset between bags, so windows never straddle two recordings.
"""

from __future__ import annotations

import functools
import random
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.bags import BagTopicError, bag_info, iter_samples, topic_mismatch
from structalign_ros.core.data.batch import Batch, ModalitySpec, to_batch
from structalign_ros.core.data.windows import AssemblerStats, Window, WindowAssembler

# A ground-truth pose labels a window only if it was taken within this of the window's pivot stamp.
POSE_TOLERANCE_NS = 20_000_000


@dataclass
class ReplayReport:
    """What a replay read, dropped and produced (summed over its bags). ``warmup_windows``: those of
    ``windows`` cut before every stream had delivered a sample (the streams not yet started masked)."""

    samples: Counter[str] = field(default_factory=Counter)
    conversion_drops: Counter[str] = field(default_factory=Counter)
    windows: int = 0
    complete_windows: int = 0
    warmup_windows: int = 0
    assembler: list[AssemblerStats] = field(default_factory=list)


def iter_windows(
    paths: Sequence[str | Path], config: StructAlignConfig, report: ReplayReport | None = None
) -> Iterator[tuple[Window, np.ndarray | None]]:
    """``(window, pose)`` for every window of every bag, in order.

    ``pose`` is the ``(7,)`` ground-truth end-effector pose (``x y z qx qy qz qw``) nearest the
    window's pivot when the bag has one on ``config.ground_truth_topic`` within 20 ms, else None.
    Every window is yielded, as the live node infers every window: one cut before a stream has
    delivered its first sample (the first frames of a bag) has that stream masked, with no shape
    (:func:`~.batch.to_batch` fills it in the model's layout), and is counted as ``warmup_windows``.
    """
    report = report if report is not None else ReplayReport()
    for path in paths:
        assembler = WindowAssembler(config.modalities, config.window)
        report.assembler.append(assembler.stats)
        poses: deque[tuple[int, np.ndarray]] = deque(maxlen=64)
        samples = iter_samples([path], config.modalities, report.conversion_drops, config.ground_truth_topic)
        for name, stamp, value in samples:
            report.samples[name] += 1
            if name == "pose":
                poses.append((stamp, value))
                continue
            for window in assembler.push(name, stamp, value):
                yield from _labelled(window, poses, assembler, report)
        for window in assembler.flush():
            yield from _labelled(window, poses, assembler, report)


def _labelled(
    window: Window, poses: deque[tuple[int, np.ndarray]], assembler: WindowAssembler, report: ReplayReport
) -> Iterator[tuple[Window, np.ndarray | None]]:
    report.warmup_windows += not assembler.shapes_known
    report.windows += 1
    report.complete_windows += all(window.mask.values())
    yield window, nearest_pose(poses, window.stamp_ns)


def nearest_pose(poses: Iterable[tuple[int, np.ndarray]], stamp_ns: int) -> np.ndarray | None:
    """The pose of ``(stamp, pose)`` pairs nearest ``stamp_ns``, if within :data:`POSE_TOLERANCE_NS`."""
    best = min(poses, key=lambda p: abs(p[0] - stamp_ns), default=None)
    if best is None or abs(best[0] - stamp_ns) > POSE_TOLERANCE_NS:
        return None
    return best[1]


def labelled_batch(
    items: Sequence[tuple[Window, np.ndarray | None]], layout: Mapping[str, ModalitySpec]
) -> Batch:
    """``(window, pose)`` items (as :func:`iter_windows` yields them) as one :func:`~.batch.to_batch`
    batch in ``layout``, with poses when every window has one."""
    return to_batch([w for w, _ in items], layout, [p for _, p in items])


def labelled_episode(
    path: str | Path, config: StructAlignConfig, layout: Mapping[str, ModalitySpec]
) -> Batch | None:
    """Every window of one bag that has a ground-truth pose, as one :class:`Batch` in ``layout``
    (None if none)."""
    items = [(w, p) for w, p in iter_windows([path], config) if p is not None]
    return labelled_batch(items, layout) if items else None


def bag_layout(paths: Sequence[str | Path], config: StructAlignConfig) -> dict[str, ModalitySpec]:
    """The input layout of a new model for ``paths``: every enabled modality, in the config's order,
    with its kind and its shape in the first window in which every stream has delivered (later
    windows of another camera resolution are resized to it by :func:`~.batch.to_batch`).

    Raises:
        ValueError: no window of the bags has a sample of every stream.
    """
    names = config.enabled_modalities
    for window, _ in iter_windows(paths, config):
        if all(window.data[n].size for n in names):
            return {n: ModalitySpec(config.modalities[n].kind, window.data[n].shape) for n in names}
    raise ValueError(f"no window of {[str(p) for p in paths]} has a sample of every modality {names}")


def check_topics(paths: Sequence[str | Path], config: StructAlignConfig) -> None:
    """Raise :class:`~.bags.BagTopicError` unless every bag records every enabled
    modality's topic (from the metadata alone). Training needs them all: without one the stream is
    masked in every window of the bag, which is far more often a topic named wrongly than the data
    wanted (disable the modality instead)."""
    expected = [config.modalities[n].topic for n in config.enabled_modalities]
    for path in paths:
        has = {t: m for t, (m, _) in bag_info(path).topics.items()}
        missing = [t for t in expected if t not in has]
        if missing:
            raise BagTopicError(topic_mismatch(path, has, expected, missing))


class WindowDataset(IterableDataset):
    """Training windows from bags.

    Args:
        paths: bags; with ``num_workers > 0`` each DataLoader worker replays its own share of them.
        config: modalities, topics and window rules (the same as the live node's).
        shuffle_buffer: windows held for shuffling (consecutive windows overlap and are alike, so
            a buffer spanning several seconds decorrelates a batch); 1 keeps time order.
        seed: the shuffle seed; :meth:`set_epoch` varies it per epoch.
        shard: ``(rank, world)``: keep every ``world``-th window starting at ``rank`` (the data
            parallel split: every rank replays all bags, so ranks get equal shares even with fewer
            bags than ranks).
        cache: keep the windows in memory after the first pass and shuffle them from there (about
            120 kB a window with the default sensors: 0.4 GB per simulated minute); later passes
            then cost no bag reading, conversion or windowing. Without workers only.
    Raises:
        BagTopicError: a bag lacks an enabled modality's topic (:func:`check_topics`).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        config: StructAlignConfig,
        shuffle_buffer: int = 512,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
        cache: bool = False,
    ) -> None:
        super().__init__()
        if not paths:
            raise ValueError("WindowDataset needs at least one bag")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer={shuffle_buffer} must be >= 1")
        self.paths = [Path(p) for p in paths]
        check_topics(self.paths, config)
        self.config = config
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = 0
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard={shard}: need 0 <= rank < world")
        self.shard = shard
        self.cache = cache
        self._cached: list[tuple[Window, np.ndarray | None]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently in the next pass."""
        self.epoch = epoch

    def _items(self, paths: Sequence[Path]) -> Iterator[tuple[Window, np.ndarray | None]]:
        rank, world = self.shard
        for i, item in enumerate(iter_windows(paths, self.config)):
            if i % world == rank:
                yield item

    def __iter__(self) -> Iterator[tuple[Window, np.ndarray | None]]:
        worker = get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        rng = random.Random(hash((self.seed, self.epoch, wid)))
        if self.cache and worker is None:
            if self._cached is None:
                self._cached = list(self._items(self.paths))
            items = list(self._cached)
            rng.shuffle(items)
            yield from items
            return
        paths = self.paths[wid::nworkers]
        buffer: list[tuple[Window, np.ndarray | None]] = []
        for item in self._items(paths):
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            i = rng.randrange(self.shuffle_buffer)
            yield buffer[i]
            buffer[i] = item
        rng.shuffle(buffer)
        yield from buffer


def data_loader(
    dataset: WindowDataset,
    batch_size: int,
    layout: Mapping[str, ModalitySpec],
    workers: int = 0,
    drop_last: bool = True,
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding :class:`Batch` objects from ``dataset`` in ``layout`` (the model's
    specs, see :func:`labelled_batch`)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=functools.partial(labelled_batch, layout=dict(layout)),
        drop_last=drop_last,
    )


def estimated_windows(paths: Sequence[str | Path], config: StructAlignConfig) -> int:
    """Windows the bags will yield, from their metadata alone (no message is read): the count of
    pivot frames (an upper bound: the assembler drops a frame of a duplicate or stale stamp)."""
    topic = config.modalities[config.window.pivot].topic
    return sum(bag_info(p).topics.get(topic, ("", 0))[1] for p in paths)


def object_track(path: str | Path, config: StructAlignConfig) -> tuple[np.ndarray, np.ndarray]:
    """The ground-truth object track of one bag (``config.sim.object_pose_topic``).

    The track is optional: a real robot's bag has no such topic, and then both arrays are empty.

    Returns:
        ``(K,)`` int64 stamps and ``(K, 3)`` positions (m); empty when the bag has none (a real robot).
    """
    stamps, xyz = [], []
    for _, stamp, pose in iter_samples([path], {}, pose_topic=config.sim.object_pose_topic):
        stamps.append(stamp)
        xyz.append(pose[:3])
    return np.asarray(stamps, dtype=np.int64), np.asarray(xyz, dtype=np.float64).reshape(-1, 3)


def split_episodes(paths: Sequence[str | Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """Training and validation bags: whole episodes, never windows of one episode on both sides.

    The last ``round(val_fraction * len(paths))`` bags (at least one when ``val_fraction > 0`` and
    there are two or more bags) are held out, in the order given, so a split is reproducible.
    """
    paths = [Path(p) for p in paths]
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    n_val = round(val_fraction * len(paths))
    if val_fraction > 0 and len(paths) >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, len(paths) - 1)
    return paths[: len(paths) - n_val], paths[len(paths) - n_val :]
