"""`structalign demo` end to end: MuJoCo -> rosbag2 -> windows -> input kernels -> GW consensus."""

import json
import math
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_the_simulated_robot_end_to_end():
    out = subprocess.run(
        [sys.executable, "-m", "structalign_ros.cli", "demo", "--seconds", "6", "--batch", "16", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "--json prints only the JSON line"
    summary = json.loads(lines[0])
    assert summary["windows"] >= 32 and summary["batches"] == summary["windows"] // 16
    distances = summary["gw_to_consensus"]
    assert set(distances) == {"rgb", "depth", "wrench", "imu", "tactile", "joints"}
    assert all(math.isfinite(d) and d >= 0 for d in distances.values())
    # six different sensors never share one geometry: the consensus is a compromise
    assert max(distances.values()) > 0
    assert summary["consensus_ms_p50"] > 0
