"""The model shipped in models/ loads into today's architecture, its ONNX file matches it, and it
gives the outputs recorded with it (models/sim_default.golden.npz, written by ``make model``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.train import load_checkpoint
from structalign_ros.core.serve.export import example_batch
from structalign_ros.core.serve.runtime import check_parity

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_the_shipped_model_loads_runs_and_matches_its_onnx_export():
    checkpoint = load_checkpoint(MODELS / "sim_default.pt")  # raises if the architecture moved on
    model = checkpoint.build_model().eval()
    assert model.modalities == tuple(StructAlignConfig().enabled_modalities)
    assert model.pose_head is not None
    # calibrated on held-out episodes by the recipe's last stage: not the initial ones
    assert not bool((model.pose_head.calibration == 1).all())
    assert check_parity(model, MODELS / "sim_default.onnx", example_batch(model, size=3)) <= 1e-4


def test_the_shipped_model_gives_its_recorded_outputs_on_the_golden_windows():
    # Two windows of episode 107, whole and under two masks (tools/golden.py). A change to the model
    # code or the weights that moves any output fails here, however well the model still runs.
    golden = np.load(MODELS / "sim_default.golden.npz")
    modalities = tuple(str(m) for m in golden["modalities"])
    batch = Batch(
        {m: torch.from_numpy(golden[f"input.{m}"]) for m in modalities},
        torch.from_numpy(golden["mask"]),
        modalities,
    )
    assert not batch.mask[2:].all()  # the masked rows are in the file
    model = load_checkpoint(MODELS / "sim_default.pt").build_model().eval()
    assert model.modalities == modalities
    with torch.no_grad():
        out = model(batch.inputs, batch.mask)._asdict()
    for name, value in out.items():
        expected = golden[f"output.{name}"]
        worst = float(np.max(np.abs(value.numpy() - expected) / (1 + np.abs(expected))))
        assert worst <= 1e-4, (name, worst)
