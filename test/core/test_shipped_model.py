"""The model shipped in models/ loads into today's architecture and its ONNX file matches it."""

from __future__ import annotations

from pathlib import Path

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.export import example_batch
from structalign_ros.core.runtime import check_parity
from structalign_ros.core.train import load_checkpoint

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_the_shipped_model_loads_runs_and_matches_its_onnx_export():
    checkpoint = load_checkpoint(MODELS / "sim_default.pt")  # raises if the architecture moved on
    model = checkpoint.build_model().eval()
    assert model.modalities == tuple(StructAlignConfig().enabled_modalities)
    assert model.pose_head is not None
    # calibrated on held-out episodes by the recipe's last stage: not the initial ones
    assert not bool((model.pose_head.calibration == 1).all())
    assert check_parity(model, MODELS / "sim_default.onnx", example_batch(model, size=3)) <= 1e-4
