"""The online trainer: a real child process training beside a serving predictor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from online_data import TINY, make_model, tiny_world

from structalign_ros.core.config import ModelConfig, StructAlignConfig, TrainConfig
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.serve.online import (
    OnlineTrainer,
    Progress,
    ReplayBuffer,
    WeightUpdate,
    _Child,
    _to_numpy,
    _Weights,
    no_worse,
)
from structalign_ros.core.serve.runtime import Predictor


@pytest.fixture(scope="module")
def world():
    return tiny_world()


def config(backend="torch", **train):
    cfg = StructAlignConfig()
    cfg.model = TINY
    cfg.objective.name = "pairwise"
    cfg.runtime.backend = backend
    # normal priority: under SCHED_IDLE a loaded machine can starve the trainer past any wait; the guard
    # off unless a test asks for it: these tests are about the transport of every update; end-to-end
    # updates (every weight moves) judged by "no worse" alone, unless a test asks for head-only ones
    base = {
        "batch_size": 16,
        "min_replay": 16,
        "replay_capacity": 128,
        "online_idle_priority": False,
        "online_update": "all",
        "guard_margin": 0.0,
        "guard_tolerance": 0.0,
    }
    cfg.train = TrainConfig(**{**base, "guard_every": 0, **train})
    return cfg


def wait_for(condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def recording_trainer(model, **train):
    """A trainer whose published updates are kept in the returned list."""
    updates: list[WeightUpdate] = []
    return OnlineTrainer(model, config(**train), publish=updates.append), updates


def served_by(state, model, probe):
    """What a model holding ``state`` computes on ``probe``."""
    twin = MultimodalModel(model.specs, model.cfg)
    twin.load_state_dict(state)
    with torch.no_grad():
        return twin.eval()(probe.inputs, probe.mask).embeddings


def test_replay_buffer_keeps_the_newest_and_samples_batches(world):
    buf = ReplayBuffer(10, make_model(world).specs)
    for s in range(3):
        buf.add(world.batch(4, seed=s)[0])
    assert len(buf) == 10
    sample = buf.sample(6, torch.Generator().manual_seed(0))
    assert len(sample) == 6 and sample.modalities == world.modalities and sample.pose.shape == (6, 7)
    with pytest.raises(ValueError, match="modalities"):
        buf.add(SyntheticWorld(modalities=("rgb",), image=16).batch(2, seed=0)[0])


def test_replay_buffer_batches_cover_every_window_in_order(world):
    buf = ReplayBuffer(100, make_model(world).specs)
    batch, _ = world.batch(11, seed=5)
    buf.add(batch)
    parts = buf.batches(4)
    assert [len(b) for b in parts] == [4, 4, 3]
    assert torch.equal(torch.cat([b.pose for b in parts]), batch.pose)
    buf.add(world.batch(2, seed=6)[0])
    assert [len(b) for b in buf.batches(4)] == [4, 4, 5]  # never a single window alone


def test_no_worse_needs_every_shared_metric_no_worse():
    serving = {"loss": 2.0, "pose_pos_mm": 5.0, "pose_rot_deg": 1.0, "gw": 9.0}
    assert no_worse({"loss": 2.0, "pose_pos_mm": 4.0, "pose_rot_deg": 1.0, "gw": 99.0}, serving)[0]
    ok, why = no_worse({"loss": 1.0, "pose_pos_mm": 5.1, "pose_rot_deg": 0.5}, serving)
    assert not ok and "pose_pos_mm 5.1 > 5" in why
    assert not no_worse({"loss": float("nan")}, {"loss": 2.0})[0]
    assert no_worse({"loss": 1.0}, serving)[0]  # unlabelled windows: the objective alone
    assert not no_worse({}, serving)[0]  # nothing to compare: not installed


class Outbox:
    """What the child would send through its pipe, kept in a list."""

    def __init__(self):
        self.sent = []

    def send(self, item):
        self.sent.append(item)


@pytest.fixture
def child_of(world):
    threads = torch.get_num_threads()

    def build(model, **train):
        outbox = Outbox()
        state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        child = _Child(model.specs, model.cfg, state, 0, config(**train), outbox)
        for s in range(6):
            child.take(_to_numpy(world.batch(16, seed=700 + s)[0]))
        return child, outbox

    yield build
    torch.set_num_threads(threads)


def test_the_guard_holds_windows_out_and_rejects_worse_weights(world, child_of):
    model = make_model(world)
    child, outbox = child_of(model, guard_every=4, lr=10.0)  # a learning rate that wrecks the model
    assert len(child.holdout) == 24 and len(child.buffer) == 72  # every 4th of 96 windows held out
    for _ in range(3):
        child.step()
    child.offer()
    weights = [m for m in outbox.sent if isinstance(m, _Weights)]
    verdicts = [m for m in outbox.sent if isinstance(m, Progress) and m.verdict]
    assert not weights and child.progress.rejected == 1 and child.progress.accepted == 0
    assert verdicts[-1].verdict.startswith("rejected at step 3") and "pose_pos_mm" in verdicts[-1].verdict
    start = model.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in child.model.state_dict().items())  # back to serving
    child.offer()  # no step since the verdict: nothing new to judge
    assert child.progress.rejected == 1


def test_the_guard_installs_weights_that_are_no_worse(world, child_of):
    model = make_model(world)
    child, outbox = child_of(model, guard_every=4)
    good = {k: v.clone() for k, v in child.model.state_dict().items()}
    # the weights in use place the end effector 10 cm off; the trainer's do not (and encode alike)
    child.serving[0]["pose_head.position.loc"] += 0.1
    child.progress.steps += 1  # as after a step that changed nothing else
    child.offer()
    weights = [m for m in outbox.sent if isinstance(m, _Weights)]
    assert child.progress.accepted == 1 and child.progress.rejected == 0 and len(weights) == 1
    assert all(torch.equal(torch.from_numpy(weights[0].state[k]), v) for k, v in good.items())
    assert torch.equal(child.serving[0]["pose_head.position.loc"], good["pose_head.position.loc"])


@pytest.mark.slow
def test_a_trainer_whose_updates_are_worse_never_publishes_them(world):
    model = make_model(world)
    trainer, updates = recording_trainer(model, swap_period_s=0.1, guard_every=4, lr=10.0)
    try:
        trainer.start()
        for s in range(4):
            trainer.add(world.batch(16, seed=800 + s)[0])
        assert wait_for(lambda: trainer.progress.rejected >= 2), trainer.error
        assert trainer.pause()
    finally:
        trainer.close()
    assert not updates and trainer.published == 0 and trainer.progress.accepted == 0
    assert trainer.progress.held_out == 16 and trainer.progress.verdict.startswith("rejected")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_weights_trained_in_the_child_are_swapped_into_a_serving_predictor(world, backend):
    model = make_model(world)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = Predictor.from_config(config(backend).runtime, model)
    probe, _ = world.batch(4, seed=99)
    before = predictor(probe).embeddings
    updates: list[WeightUpdate] = []

    def install(update):
        predictor.swap_weights(update.state, update.onnx)
        updates.append(update)

    trainer = OnlineTrainer(model, config(backend, swap_period_s=0.2), publish=install)
    served, errors = [], []
    stop = threading.Event()

    def serve():  # the inference loop the node runs; it must never fail or stall on a swap
        while not stop.is_set():
            try:
                served.append(predictor(probe).embeddings)
            except Exception as exc:  # any failure is the finding
                errors.append(exc)

    server = threading.Thread(target=serve)
    server.start()
    try:
        trainer.start()
        for s in range(8):
            trainer.add(world.batch(16, seed=100 + s)[0])
        assert wait_for(lambda: predictor.swaps >= 2), trainer.error
        assert trainer.pause()  # paused, and the newest weights were published before it returned
        child = trainer.pid  # another process than this one, and a live one (signal 0 only checks)
        assert child is not None and child != os.getpid()
        os.kill(child, 0)
    finally:
        stop.set()
        server.join()
        trainer.close()
    assert not errors and served
    assert not trainer.alive and not trainer.error and trainer.pid is None
    assert trainer.progress.steps > 0 and trainer.published == len(updates) >= 2
    assert (updates[-1].onnx is not None) == (backend == "onnx")
    assert updates[-1].steps == trainer.progress.steps
    after = predictor(probe).embeddings
    assert not torch.allclose(before, after)
    # the predictor serves exactly the last published weights; the caller's model is untouched
    assert torch.allclose(after, served_by(updates[-1].state, model, probe), atol=1e-5)
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert trainer.progress.lambdas is not None and abs(sum(trainer.progress.lambdas) - 1) < 1e-5


@pytest.mark.slow
def test_pause_keeps_the_trainer_and_resume_continues(world):
    model = make_model(world)
    trainer, updates = recording_trainer(model, swap_period_s=60.0)
    try:
        trainer.start()
        for s in range(4):
            trainer.add(world.batch(16, seed=200 + s)[0])
        assert wait_for(lambda: trainer.progress.steps >= 2), trainer.error
        assert trainer.pause()
        paused_at = trainer.progress.steps
        assert [u.steps for u in updates] == [paused_at]  # the period is long: only the pause published
        trainer.add(world.batch(16, seed=300)[0])  # ignored while paused
        time.sleep(0.5)
        assert trainer.progress.steps == paused_at and trainer.progress.replay == 64
        assert trainer.progress.metrics["lr"] == 1e-3
        trainer.update_config(config(swap_period_s=60.0, lr=0.0123))  # a live parameter change
        trainer.start()  # same process, same replay buffer: training goes straight on
        assert wait_for(lambda: trainer.progress.steps >= paused_at + 2), trainer.error
        assert trainer.pause()
        assert updates[-1].steps == trainer.progress.steps > paused_at
        assert trainer.progress.metrics["lr"] == 0.0123
    finally:
        trainer.close()


@pytest.mark.slow
def test_non_finite_windows_skip_steps_and_keep_the_weights(world):
    model = make_model(world)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer, updates = recording_trainer(model, swap_period_s=0.1)
    try:
        trainer.start()
        for s in range(2):
            batch, _ = world.batch(16, seed=400 + s)
            batch.inputs["wrench"][:, 0, 0] = float("nan")
            trainer.add(batch)
        assert wait_for(lambda: trainer.progress.steps >= 3), trainer.error
        assert trainer.pause()
    finally:
        trainer.close()
    assert trainer.progress.skipped == trainer.progress.steps
    assert updates and all(torch.equal(start[k], v) for k, v in updates[-1].state.items())


@pytest.mark.slow
def test_a_trainer_that_cannot_start_reports_why_and_publishes_nothing(world):
    model = make_model(world)
    cfg = config()
    cfg.runtime.device = "cuda:99"  # no such device, GPU or not: the child cannot place the model
    updates: list[WeightUpdate] = []
    bad = OnlineTrainer(model, cfg, publish=updates.append)
    try:
        bad.start()
        assert wait_for(lambda: bool(bad.error))
        assert "the trainer failed" in bad.error
        assert not bad.pause(timeout=5.0)
    finally:
        bad.close()
    assert not updates


@pytest.mark.slow
def test_the_child_exits_when_its_parent_is_killed(tmp_path):
    # the parent dies while it streams windows larger than a pipe holds (so its feeder is often halfway
    # through one) and the child trains and publishes: the child must exit wherever it is, even in the
    # middle of reading half a window
    script = textwrap.dedent(
        """
        import time
        from structalign_ros.core.config import ModelConfig, StructAlignConfig
        from structalign_ros.core.data.batch import ModalitySpec
        from structalign_ros.core.learn.models import MultimodalModel
        from structalign_ros.core.serve.online import OnlineTrainer
        from structalign_ros.core.eval.synthetic import SyntheticWorld

        world = SyntheticWorld(modalities=("rgb", "wrench"), image=160, steps=12)
        batch, _ = world.batch(16, seed=0)
        one, _ = world.batch(1, seed=1)  # 77 kB of camera frame
        cfg = StructAlignConfig()
        cfg.model = ModelConfig(image_size=16)
        cfg.objective.name = "pairwise"
        cfg.train.min_replay, cfg.train.batch_size, cfg.train.swap_period_s = 16, 16, 0.05
        cfg.train.guard_every = 0  # publish the first weights without waiting for a holdout
        model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), cfg.model)
        trainer = OnlineTrainer(model, cfg, publish=lambda update: None)
        trainer.start()
        trainer.add(batch)
        while trainer.published < 1:
            time.sleep(0.05)
        print(trainer._process.pid, flush=True)
        while True:
            trainer.add(one)
            time.sleep(0.01)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert os.sched_getscheduler(child) == os.SCHED_IDLE  # it only gets CPU nobody else wants
        time.sleep(1.0)
        parent.kill()
        parent.wait()

        def gone():
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            # a zombie is gone too: its parent died and init has not reaped it yet
            with open(f"/proc/{child}/stat") as f:
                return f.read().split()[2] == "Z"

        assert wait_for(gone, 30.0)
    finally:
        parent.kill()


@pytest.mark.slow
def test_a_killed_trainer_is_reported_and_restarts_from_its_last_weights(world):
    model = make_model(world)
    trainer, updates = recording_trainer(model, swap_period_s=0.1)
    try:
        trainer.start()
        trainer.add(world.batch(32, seed=500)[0])
        assert wait_for(lambda: len(updates) >= 1), trainer.error
        first = trainer._process.pid
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: "exited with code -9" in trainer.error, 10)
        assert not trainer.pause(timeout=2.0)  # no newest weights to wait for: it is gone
        published = updates[-1].steps
        trainer.start()  # a new process, from the newest weights it had published
        assert trainer._process.pid != first and not trainer.error
        assert trainer.progress.steps == published
        trainer.add(world.batch(32, seed=501)[0])
        assert wait_for(lambda: updates[-1].steps > published), trainer.error
        assert trainer.pause()
    finally:
        trainer.close()


@pytest.mark.slow
def test_a_trainer_killed_halfway_through_a_message_leaves_no_reader_behind(world):
    # While the node is busy installing weights, the child trains on and writes until the pipe is full:
    # it blocks halfway through its next weights (about 0.5 MB, more than a pipe holds). Killed there,
    # it leaves half a message, which must read as the end of the stream, not as a read that never ends.
    batch, _ = world.batch(64, seed=0)
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), ModelConfig(embed_dim=64, width=32))
    installing, release = threading.Event(), threading.Event()

    def slow_install(update):
        installing.set()
        release.wait(60)

    trainer = OnlineTrainer(model, config(swap_period_s=0.05), publish=slow_install)
    try:
        trainer.start()
        trainer.add(world.batch(32, seed=600)[0])
        assert installing.wait(60), trainer.error
        receiver, first = trainer._receiver, trainer._process.pid
        time.sleep(3.0)  # a few more steps and weights: the pipe fills
        os.kill(first, signal.SIGKILL)
        release.set()
        assert wait_for(lambda: not receiver.is_alive(), 10)
        assert wait_for(lambda: "exited with code -9" in trainer.error, 10)
        trainer.start()  # and a new child serves again
        trainer.add(world.batch(32, seed=601)[0])
        assert wait_for(lambda: trainer.published >= 2 and trainer._process.pid != first), trainer.error
        second, receiver = trainer._process, trainer._receiver
    finally:
        release.set()
        trainer.close()
    # close returns with nothing of the second child left: neither the process nor its reader thread
    assert not second.is_alive() and not receiver.is_alive()


@pytest.mark.slow
def test_a_process_that_never_closes_its_trainer_still_exits():
    script = textwrap.dedent(
        """
        import time
        from structalign_ros.core.config import ModelConfig, StructAlignConfig
        from structalign_ros.core.data.batch import ModalitySpec
        from structalign_ros.core.learn.models import MultimodalModel
        from structalign_ros.core.serve.online import OnlineTrainer
        from structalign_ros.core.eval.synthetic import SyntheticWorld

        world = SyntheticWorld(modalities=("rgb", "wrench"), image=160, steps=12)
        one, _ = world.batch(1, seed=1)
        cfg = StructAlignConfig()
        cfg.model = ModelConfig(image_size=16)
        cfg.objective.name = "pairwise"
        model = MultimodalModel(ModalitySpec.from_batch(one, world.kinds), cfg.model)
        trainer = OnlineTrainer(model, cfg, publish=lambda update: None)
        trainer.start()
        for _ in range(300):  # more than the pipe and the queue hold: its feeder thread is stuck
            trainer.add(one)
        time.sleep(1.0)
        print("leaving", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "leaving"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
