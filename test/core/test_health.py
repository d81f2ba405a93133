"""Live sensor health (core.serve.health): the structural discrepancy against POT, and trust that falls for a
degraded modality, stays at 1 for healthy ones, and comes back when the fault clears."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from structalign_ros.core.serve.health import HEALTH_FLOOR, ModalityHealth, discrepancy, standardized

MODS = ("a", "b", "c", "d")
D = 8


def trajectory(steps: int, seed: int = 0) -> np.ndarray:
    """A smooth 3-d latent path (what every sensor of one robot observes)."""
    t = np.arange(steps) / 30.0
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 3)
    waves = [np.sin(0.7 * t + phases[0]), np.cos(1.3 * t + phases[1]), np.sin(2.1 * t + phases[2])]
    return np.stack(waves, 1)


def embeddings(latent: np.ndarray, seed: int = 1, noise: float = 0.05) -> np.ndarray:
    """``(T, M, D)`` unit embeddings: each modality a different nonlinear view of the latent."""
    rng = np.random.default_rng(seed)
    views = []
    for _ in MODS:
        proj = rng.normal(size=(3, D))
        z = np.tanh(latent @ proj) + noise * rng.normal(size=(len(latent), D))
        views.append(z / np.linalg.norm(z, axis=1, keepdims=True))
    return np.stack(views, 1)


def experts(latent: np.ndarray, seed: int = 2) -> np.ndarray:
    """``(T, M, 13)`` pose experts agreeing on the latent within their stated variance (0.01)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(latent), len(MODS), 13))
    out[..., :3] = latent[:, None] + 0.1 * rng.normal(size=(len(latent), len(MODS), 3))
    out[..., 3:6] = np.log(0.01)
    out[..., 6:12] = [1, 0, 0, 0, 1, 0]
    return out


def run(health: ModalityHealth, z: np.ndarray, ex: np.ndarray | None = None) -> np.ndarray:
    mask = np.ones(len(MODS), dtype=bool)
    weights = np.full(len(MODS), 1 / len(MODS))
    return np.stack(
        [health.update(z[i], mask, weights, None if ex is None else ex[i]).copy() for i in range(len(z))]
    )


def test_discrepancy_is_the_gw_loss_of_the_identity_coupling():
    """On standardised kernels with a zero diagonal, d = n/(n-1) GW(C1, C2, T = I/n) (POT's value)."""
    import ot

    rng = np.random.default_rng(0)
    n = 24
    x, y = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
    rows, cols = np.triu_indices(n, 1)
    k1, k2 = standardized((x @ x.T)[rows, cols]), standardized((y @ y.T)[rows, cols])
    c1, c2 = np.zeros((n, n)), np.zeros((n, n))
    c1[rows, cols] = c1[cols, rows] = k1
    c2[rows, cols] = c2[cols, rows] = k2
    p = np.full(n, 1 / n)
    const, h1, h2 = ot.gromov.init_matrix(c1, c2, p, p, "square_loss")
    gw = ot.gromov.gwloss(const, h1, h2, np.eye(n) / n)
    assert discrepancy(k1, k2) == pytest.approx(n / (n - 1) * gw, rel=1e-9)
    assert discrepancy(k1, k1) == pytest.approx(0.0, abs=1e-12)
    assert discrepancy(k1, -k1) == pytest.approx(4.0)
    assert standardized(np.full(10, 0.3)) is None and discrepancy(None, k2) == 2.0  # flat: unrelated


def test_clean_streams_keep_full_trust():
    latent = trajectory(900)
    health = ModalityHealth(MODS, np.ones((len(MODS), 2)), warmup=200)
    trust = run(health, embeddings(latent), experts(latent))
    assert (trust[200:] == 1.0).all()
    assert np.isfinite(health.discrepancies).all() and np.isfinite(health.agreement).all()


@pytest.mark.parametrize("fault", ["frozen", "noise"])
def test_a_degraded_modality_loses_trust_and_gets_it_back(fault):
    latent = trajectory(1200)
    z = embeddings(latent)
    rng = np.random.default_rng(5)
    hit = slice(500, 800)
    if fault == "frozen":
        z[hit, 2] = z[hit.start - 1, 2]  # a stuck sensor: the same embedding every window
    else:
        noisy = rng.normal(size=(hit.stop - hit.start, D))  # its structure replaced by noise
        z[hit, 2] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    health = ModalityHealth(MODS, None, warmup=200)
    trust = run(health, z)
    during, after = trust[hit.start + 60 : hit.stop, 2], trust[hit.stop + 100 :, 2]
    assert np.median(during) < 0.5 and np.all(during <= 0.5)
    if fault == "frozen":
        # once the kernel's windows are all frozen: no structure at all while the others have it
        assert trust[hit.start + 100 : hit.stop, 2].max() == HEALTH_FLOOR
    assert (after == 1.0).all()
    others = np.delete(trust, 2, axis=1)
    assert np.median(others[hit]) == 1.0  # the healthy ones keep their trust


def test_an_expert_that_disagrees_loses_trust_without_dragging_the_others_down():
    latent = trajectory(1000)
    z, ex = embeddings(latent), experts(latent)
    ex[500:700, 1, :3] += 3.0  # a biased sensor: its structure intact, its pose estimate off
    health = ModalityHealth(MODS, np.ones((len(MODS), 2)), warmup=200)
    trust = run(health, z, ex)
    assert np.all(trust[530:700, 1] < 1e-3)
    assert np.median(np.delete(trust[500:700], 1, axis=1)) == 1.0
    assert (trust[760:, 1] == 1.0).all()


def test_a_noisy_sensor_that_keeps_its_structure_loses_trust_by_its_roughness():
    latent = trajectory(1000)
    z = embeddings(latent)
    noisy = z[500:700, 1] + 0.2 * np.random.default_rng(5).normal(size=(200, D))
    z[500:700, 1] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)  # the kernel still correlates
    health = ModalityHealth(MODS, None, warmup=200)
    trust = run(health, z)
    assert np.median(trust[550:700, 1]) < 0.1
    assert (np.delete(trust[300:], 1, axis=1) == 1.0).all()  # the others: never distrusted
    assert (trust[760:, 1] == 1.0).all() and (trust[300:500] == 1.0).all()  # back after; clean before


def test_a_reset_forgets_the_recent_windows_but_not_the_references():
    latent = trajectory(600)
    z = embeddings(latent)
    health = ModalityHealth(MODS, None, warmup=200)
    run(health, z[:300])
    health.reset()
    z[300:, 0] = z[299, 0]  # frozen from the reset on
    trust = run(health, z[300:])
    assert (trust[:10] == 1.0).all()  # a handful of windows: no estimate yet
    assert np.all(trust[60:, 0] == HEALTH_FLOOR)  # no second warm-up: the clean references were kept


@pytest.fixture(scope="module")
def default_episode(tmp_path_factory):
    """22 s of the default simulated robot, which the shipped model was trained for."""
    from structalign_ros.core.config import StructAlignConfig
    from structalign_ros.core.sim.record import record_episode

    bag = tmp_path_factory.mktemp("health") / "episode"
    record_episode(bag, StructAlignConfig(), seed=211, seconds=22.0)
    return bag


def replay_faulted(bag, fault, sensor_health: bool, train=None):
    """The shipped model on ``bag`` through the live pipeline, ``fault`` injected from 12 s to 16 s:
    per window (seconds from the start, weights, position error mm), and the pipeline's report at the
    end. ``train``: fine-tuning on, with these ``train`` settings."""
    from structalign_ros.core.config import FaultConfig, StructAlignConfig
    from structalign_ros.core.config_io import from_dict, to_dict
    from structalign_ros.core.learn.train import load_checkpoint
    from structalign_ros.core.serve.perception import PerceptionPipeline, replay
    from structalign_ros.core.sim.faults import FaultInjector, fault_message

    data = to_dict(StructAlignConfig())
    data["node"].update(sensor_health=sensor_health)  # the default warm-up: the first 256 windows
    data["runtime"].update(backend="torch", threads=1)
    data["train"].update(train or {})
    config = from_dict(data)
    shipped = Path(__file__).resolve().parents[2] / "models" / "sim_default.pt"
    pipe = PerceptionPipeline(config, load_checkpoint(shipped))
    modality, kind = fault
    injector = FaultInjector(FaultConfig(modality=modality, kind=kind, start_s=12.0, stop_s=16.0))
    if train is not None:
        pipe.start_finetuning()
    try:
        outputs = replay(
            pipe,
            [bag],
            config.ground_truth_topic,
            lambda kind, msg: fault_message(kind, msg, injector) if kind == modality else msg,
        )
    finally:
        report = pipe.report()
        pipe.close()
    rows = [(o.stamp_ns, o.weights, o.pose_error[0]) for o in outputs if o.pose_error]
    stamps = np.array([r[0] for r in rows])
    t = (stamps - stamps[0]) * 1e-9
    return t, np.stack([r[1] for r in rows]), np.array([r[2] for r in rows]), report


@pytest.mark.parametrize("fault", [("joints", "zero"), ("image", "blackout")], ids=lambda f: ":".join(f))
def test_the_live_pipeline_stops_trusting_a_failed_sensor(default_episode, fault):
    """The shipped model, a real episode: steady weights while clean (mostly the learned ones); the
    failed sensor's published weight falls below half its clean value and comes back after the
    fault; the pose error during the fault is far below that of the pipeline with sensor health off."""
    t, weights, error, _ = replay_faulted(default_episode, fault, sensor_health=True)
    _, weights_off, error_off, _ = replay_faulted(default_episode, fault, sensor_health=False)
    m = {"joints": 5, "image": 0}[fault[0]]  # the default modality order: rgb ... joints
    clean = weights[(t > 9) & (t < 12), m].mean()
    steady = weights[(t > 2) & (t < 12)]  # clean, every sensor present: steady weights
    assert np.all(steady.std(0) <= 0.1 * steady.mean(0))
    assert np.median(np.abs(steady - weights_off[(t > 2) & (t < 12)])) < 1e-6
    during = (t > 13.5) & (t < 16)
    assert np.all(weights[during, m] < 0.5 * clean)
    assert np.all(weights[t > 18.5, m] > 0.9 * clean)
    # zeroed joints, the model of the expert-gate recipe: 13.7 mm on against 29.9 mm off (the model
    # before it: 19 against 129 mm, when this bound was 0.3)
    assert error[during].mean() < 0.5 * error_off[during].mean()


def test_the_trainer_gets_a_distrusted_sensor_as_missing(default_episode):
    # a trainer that only collects (it waits for more windows than the episode has): every window
    # while the camera is distrusted reaches it with the camera masked, no clean one does
    collect = {"min_replay": 4096, "replay_capacity": 4096, "online_idle_priority": False}
    t, weights, _, report = replay_faulted(default_episode, ("image", "blackout"), True, collect)
    clean = weights[(t > 9) & (t < 12), 0].mean()
    distrusted = weights[:, 0] < 0.5 * clean  # trust under one half (at least) for the camera
    ft = report["finetune"]
    # every window is offered to the trainer (queued, or dropped while its process was starting up)
    assert ft["sent"] + ft["dropped"] >= len(t) - 5, ft
    assert distrusted[(t > 13.5) & (t < 16)].all()
    assert distrusted.sum() * 0.9 <= ft["sent_distrusted"] <= ((t > 12) & (t < 22)).sum()


def test_new_weights_restart_the_references_of_trusted_modalities_only():
    latent = trajectory(700)
    z = embeddings(latent)
    z[300:, 1] = z[299, 1]  # frozen from window 300 on
    health = ModalityHealth(MODS, None, warmup=200)
    run(health, z[:400])
    assert health.trust[1] == HEALTH_FLOOR and (np.delete(health.trust, 1) == 1.0).all()
    health.rebase()  # fine-tuned weights installed: the trusted ones' references start again
    rescaled = z[400:].copy()
    rescaled[:, [0, 2, 3]] = -rescaled[:, [0, 2, 3]]  # other embeddings, the same structure
    trust = run(health, rescaled)
    assert np.all(trust[:, 1] == HEALTH_FLOOR)  # still failing: still distrusted
    others = np.delete(trust, 1, axis=1)
    assert (others[:200] == 1.0).all()  # a new warm-up on the new embeddings
    assert np.median(others[200:]) == 1.0
