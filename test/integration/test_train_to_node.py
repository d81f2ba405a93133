"""sim -> rosbag2 -> ``structalign train`` -> ONNX -> the live perception path on ONNX Runtime.

What a robot team does with its own bags: train offline, then run the result live. The live path here
is the node's core (:class:`PerceptionPipeline`) fed the recorded messages; the node over DDS is
covered in test/ros.
"""

import subprocess
import sys

import numpy as np

from structalign_ros.core.config_io import from_dict, save_yaml, to_dict
from structalign_ros.core.learn.train import load_checkpoint
from structalign_ros.core.serve.perception import PerceptionPipeline, replay
from structalign_ros.core.sim.record import record_episode


def test_a_model_trained_from_bags_runs_live_on_onnx_runtime(small_world, tmp_path):
    second = tmp_path / "ep2"
    record_episode(second, small_world.config, seed=11, seconds=2.0)
    params = tmp_path / "params.yaml"
    save_yaml(small_world.config, params)
    run = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "structalign_ros.cli",
            "train",
            "--bags",
            str(small_world.bag),
            str(second),
            "--config",
            str(params),
            "--objective",
            "pairwise",
            "--gw-regularizer",
            "--steps",
            "4",
            "--batch-size",
            "8",
            "--pose-weight",
            "1",
            "--set",
            "train.threads=1",
            "--quiet",
            "--out",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    checkpoint = load_checkpoint(run / "model.pt")
    assert checkpoint.step == 4 and (run / "model.onnx").exists()

    data = to_dict(small_world.config)
    torch_cfg = from_dict(data)
    data["runtime"].update({"backend": "onnx", "onnx_path": str(run / "model.onnx")})
    onnx_cfg = from_dict(data)
    live_torch = replay(PerceptionPipeline(torch_cfg, checkpoint, warn=lambda m: None), [second])
    live_onnx = replay(PerceptionPipeline(onnx_cfg, checkpoint, warn=lambda m: None), [second])
    assert len(live_onnx) == len(live_torch) > 30
    for a, b in zip(live_torch, live_onnx, strict=True):
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_allclose(a.position, b.position, atol=1e-4)
        np.testing.assert_allclose(a.weights, b.weights, atol=1e-5)
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-4)
