"""``structalign demo`` end to end: the simulated robot and the suite in one process over real DDS."""

import json
import math
import subprocess
import sys

import pytest

from structalign_ros.core.config_io import from_dict, save_yaml, to_dict
from structalign_ros.core.learn.train import load_checkpoint, save_checkpoint

EARLIER_STEPS = 10**9


@pytest.mark.slow
def test_demo_runs_the_whole_suite_on_the_simulated_robot(small_world, ros_env, tmp_path):
    # a model with far more earlier training steps than any 12 s run can take, on any machine: the demo
    # reports the steps of its own run, not the checkpoint's
    trained = load_checkpoint(small_world.checkpoint)
    save_checkpoint(tmp_path / "model.pt", trained.build_model(), trained.config, step=EARLIER_STEPS)
    data = to_dict(small_world.config)
    data["node"]["model"] = str(tmp_path / "model.pt")
    params = tmp_path / "params.yaml"
    save_yaml(from_dict(data), params)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "structalign_ros.cli",
            "demo",
            "--config",
            str(params),
            "--seconds",
            "12",
            "--out",
            str(tmp_path / "run"),
            "--json",
            "--fault",
            "wrench:stuck",
            "--fault-start",
            "3",
            # both processes read the key: the simulator publishes the ground truth there, the node
            # fine-tunes on it and the monitor scores against it
            "--set",
            "ground_truth_topic=/elsewhere/ee_pose",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ros_env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "--json prints only the JSON line"
    summary = json.loads(lines[0])
    assert summary["windows"] > 30 and 0 <= summary["dropped"] <= summary["windows"]
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    weights = summary["weights"]
    assert list(weights) == list(small_world.config.modalities)
    assert math.isclose(sum(weights.values()), 1.0, abs_tol=1e-3)
    # scored against the simulator's ground truth with the same stamp: a finite error (untrained model)
    assert math.isfinite(summary["ee_pos_err_mm"]) and summary["ee_pos_err_mm"] > 0
    assert 0 < summary["finetune_steps"] < EARLIER_STEPS  # fine-tuning is on in the demo
    assert {"weights.png", "ee_error.png", "latency.png", "sim.log", "set.yaml"} == {
        p.name for p in (tmp_path / "run").iterdir()
    }
    # the scheduled fault reached the simulator (the weights' response is bench_health's business)
    assert summary["fault"] == "wrench:stuck"
    assert "fault stuck on wrench from 3 s to 40 s" in (tmp_path / "run" / "sim.log").read_text()
