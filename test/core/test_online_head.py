"""Head-only online fine-tuning (``train.online_update: head``): the pose experts' linear parts learn
from ground truth on cached expert inputs, from the weights in use, and the guard decides."""

from __future__ import annotations

import pytest
import torch
from online_data import TINY, make_model, tiny_world

from structalign_ros.core.config import ConfigError, StructAlignConfig, TrainConfig
from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.serve.online import (
    CueBuffer,
    Cues,
    _Child,
    _to_numpy,
    _Weights,
    evaluate_head,
    expert_cues,
    no_worse,
)

OFFSET = 0.5  # m along z: another tool, whose centre point the ground truth now reports


@pytest.fixture(scope="module")
def world():
    return tiny_world()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the child sets one thread for itself


def config(**train):
    cfg = StructAlignConfig()
    cfg.model = TINY
    cfg.objective.name = "pairwise"
    cfg.runtime.backend = "torch"
    base = {"batch_size": 32, "min_replay": 16, "replay_capacity": 512, "online_idle_priority": False}
    cfg.train = TrainConfig(**{**base, "guard_every": 4, "guard_windows": 48, "lr": 1e-2, **train})
    return cfg


class Outbox:
    def __init__(self):
        self.sent = []

    def send(self, item):
        self.sent.append(item)


def shifted(batch: Batch, offset: float) -> Batch:
    pose = batch.pose.clone()
    pose[:, 2] += offset
    return Batch(batch.inputs, batch.mask, batch.modalities, batch.stamps_ns, pose)


def child_for(model, **train):
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    outbox = Outbox()
    return _Child(model.specs, model.cfg, state, 0, config(**train), outbox), outbox


def feed(child, world, offset, seeds):
    for s in seeds:
        child.take(_to_numpy(shifted(world.batch(32, seed=s)[0], offset)))
    child.absorb()


def error_mm(model, world, offset, seed=4242):
    """The fused pose's position error of ``model`` on fresh windows (none trained or held out on)."""
    cues = expert_cues(model, shifted(world.batch(256, seed=seed)[0], offset))
    return evaluate_head(model, [cues])["pose_pos_mm"]


def serving_model(child, model):
    twin = MultimodalModel(model.specs, model.cfg)
    twin.load_state_dict(child.serving[0])
    return twin


def test_head_only_update_recovers_a_tool_offset_and_the_guard_installs_it(world, one_thread):
    model = make_model(world)
    # the weights in use: pose experts fitted on the workcell as it was (head-only, through the guard)
    child, _ = child_for(model, guard_margin=0.0)
    feed(child, world, 0.0, range(100, 112))
    for _ in range(400):
        child.step()
    child.offer()
    assert child.progress.accepted == 1, child.progress.verdict
    before = serving_model(child, model)
    clean, damaged = error_mm(before, world, 0.0), error_mm(before, world, OFFSET)
    assert damaged > clean + 150  # the tool offset moves the truth, not the sensors

    # the tool is swapped: only windows with the new ground truth arrive from now on
    child, outbox = child_for(before, lr=3e-3)
    feed(child, world, OFFSET, range(200, 212))
    assert len(child.holdout) == 48 and len(child.buffer) == 288  # every 4th window held out (newest 48)
    for _ in range(400):
        child.step()
    child.offer()
    assert child.progress.accepted == 1 and child.progress.rejected == 0, child.progress.verdict
    weights = [m for m in outbox.sent if isinstance(m, _Weights)]
    assert len(weights) == 1
    after = MultimodalModel(model.specs, model.cfg)
    after.load_state_dict({k: torch.from_numpy(v) for k, v in weights[0].state.items()})
    recovered = (damaged - error_mm(after, world, OFFSET)) / (damaged - clean)
    assert recovered >= 0.5, (clean, damaged, error_mm(after, world, OFFSET))

    # only the experts' linear parts moved: encoders, input statistics, lambda, variances did not
    old = before.state_dict()
    moved = {k for k, v in after.state_dict().items() if not torch.equal(v, old[k])}
    assert moved and all(k.startswith("pose_head.experts.") and ".linear." in k for k in moved), moved


def test_head_only_update_that_does_not_help_by_the_margin_is_rejected_and_undone(world, one_thread):
    model = make_model(world)
    child, outbox = child_for(model, lr=1e-7, guard_margin=0.1)  # steps too small to lower anything by 10 %
    feed(child, world, 0.0, range(300, 306))
    child.step()
    child.offer()
    assert child.progress.rejected == 1 and child.progress.accepted == 0
    assert "none lower by 10%" in child.progress.verdict
    assert not [m for m in outbox.sent if isinstance(m, _Weights)]
    start = model.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in child.model.state_dict().items())  # back to serving


def test_head_only_guard_waits_for_a_full_holdout(world, one_thread):
    model = make_model(world)
    child, outbox = child_for(model, guard_margin=0.0)
    feed(child, world, OFFSET, range(500, 505))  # 160 windows: 40 held out of the 48 it judges on
    child.step()
    child.offer()
    assert child.progress.accepted == child.progress.rejected == 0
    assert not [m for m in outbox.sent if isinstance(m, _Weights)]
    feed(child, world, OFFSET, [505])
    child.offer()
    assert child.progress.accepted + child.progress.rejected == 1


def test_head_only_without_ground_truth_trains_nothing(world, one_thread):
    model = make_model(world)
    child, outbox = child_for(model)
    for s in range(4):
        batch = world.batch(32, seed=400 + s)[0]
        child.take(_to_numpy(Batch(batch.inputs, batch.mask, batch.modalities, batch.stamps_ns, None)))
    child.absorb()
    assert len(child.buffer) == 0 and len(child.holdout) == 0  # self-supervised: nothing to learn from
    child.offer()
    assert not outbox.sent


def test_cue_buffer_keeps_the_newest(world):
    model = make_model(world)
    buf = CueBuffer(40)
    for s in range(3):
        buf.add(expert_cues(model, world.batch(16, seed=s)[0]))
    assert len(buf) == 40
    sample = buf.sample(8, torch.Generator().manual_seed(0))
    assert len(sample) == 8 and sample.mask.shape == (8, 3) and len(sample.cues) == 3
    assert [len(b) for b in buf.batches(16)] == [16, 16, 8]


def test_cue_buffer_is_a_ring_allocated_once_that_keeps_order():
    def numbered(first: int, count: int) -> Cues:  # window k carries k in every field
        k = torch.arange(first, first + count, dtype=torch.float32)
        column = k[:, None]
        return Cues([column.repeat(1, 5), column.repeat(1, 2)], column > -1, column.repeat(1, 7))

    buf = CueBuffer(10)
    buf.add(numbered(0, 3))
    ring = buf._ring.cues[0]
    added = 3
    for count in (4, 0, 5, 25, 1):  # wraps, an empty batch, one bigger than the capacity
        buf.add(numbered(added, count))
        added += count
        newest = list(range(max(0, added - 10), added))
        assert len(buf) == len(newest)
        assert torch.cat([b.pose[:, 0] for b in buf.batches(4)]).tolist() == newest  # oldest first
        drawn = buf.sample(6, torch.Generator().manual_seed(added))
        pick = torch.randperm(len(newest), generator=torch.Generator().manual_seed(added))[:6]
        assert drawn.pose[:, 0].tolist() == [newest[i] for i in pick]
        assert drawn.cues[1].shape == (6, 2) and bool(drawn.mask.all())
    assert buf._ring.cues[0] is ring and ring.shape == (10, 5)  # no reallocation


def test_no_worse_with_a_margin_needs_one_metric_lower_by_it():
    serving = {"pose_pos_mm": 10.0, "pose_rot_deg": 1.0}
    assert no_worse({"pose_pos_mm": 8.9, "pose_rot_deg": 1.0}, serving, 0.1)[0]
    ok, why = no_worse({"pose_pos_mm": 9.5, "pose_rot_deg": 1.0}, serving, 0.1)
    assert not ok and "none lower by 10%" in why
    assert not no_worse({"pose_pos_mm": 5.0, "pose_rot_deg": 1.01}, serving, 0.1)[0]  # one worse: never
    assert no_worse({"pose_pos_mm": 9.5, "pose_rot_deg": 1.0}, serving)[0]  # no margin: no worse is enough
    # a tolerance: a rise within it is noise, beyond it is worse
    assert no_worse({"pose_pos_mm": 5.0, "pose_rot_deg": 1.01}, serving, 0.1, 0.02)[0]
    assert not no_worse({"pose_pos_mm": 5.0, "pose_rot_deg": 1.03}, serving, 0.1, 0.02)[0]
    assert not no_worse({"pose_pos_mm": float("nan"), "pose_rot_deg": 1.0}, serving, 0.1, 0.02)[0]
    with pytest.raises(ConfigError, match="online_update"):
        TrainConfig(online_update="encoders")
    with pytest.raises(ConfigError, match="guard_margin"):
        TrainConfig(guard_margin=1.0)
    with pytest.raises(ConfigError, match="guard_tolerance"):
        TrainConfig(guard_tolerance=-0.1)
