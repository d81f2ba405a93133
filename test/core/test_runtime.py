"""ONNX export and the predictor over both backends (real ONNX Runtime sessions)."""

import logging

import onnx
import pytest
import torch

from structalign_ros.core.config import ModelConfig, RuntimeConfig
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.serve.export import export_onnx, input_names
from structalign_ros.core.serve.runtime import Predictor, check_parity, resolve_providers


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(image=24, steps=12)


def fitted_model(world, temporal="conv"):
    batch, _ = world.batch(32, seed=0)
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), ModelConfig(16, 8, 16, temporal))
    model.fit_input_stats(batch)
    return model


@pytest.mark.parametrize("temporal", ["conv", "gru"])
def test_onnx_parity_with_a_dynamic_batch(world, tmp_path, temporal):
    model = fitted_model(world, temporal)
    export_onnx(model, world.batch(3, seed=1)[0], tmp_path / "m.onnx")
    graph = onnx.load(tmp_path / "m.onnx").graph
    assert [i.name for i in graph.input] == input_names(model)
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for size in (1, 7):  # neither is the export batch size
        batch, _ = world.batch(size, seed=size, drop=0.3)
        assert check_parity(model, tmp_path / "m.onnx", batch, atol=1e-4) <= 1e-4


def test_parity_check_fails_on_a_different_model(world, tmp_path):
    model = fitted_model(world)
    export_onnx(model, world.batch(2, seed=1)[0], tmp_path / "m.onnx")
    with torch.no_grad():
        model.pose_head.experts[0].mlp[-1].bias.add_(1.0)
    with pytest.raises(AssertionError, match="ONNX parity"):
        check_parity(model, tmp_path / "m.onnx", world.batch(4, seed=2)[0])


def test_onnx_predictor_reports_its_providers_and_swaps_weights(world, tmp_path, caplog):
    model = fitted_model(world)
    export_onnx(model, world.batch(2, seed=1)[0], tmp_path / "m.onnx")
    cfg = RuntimeConfig(backend="onnx", onnx_path=str(tmp_path / "m.onnx"), threads=1)
    with caplog.at_level(logging.INFO, logger="structalign_ros.core.serve.runtime"):
        pred = Predictor.from_config(cfg, model)
    assert pred.backend == "onnx" and "CPUExecutionProvider" in pred.providers
    assert "CPUExecutionProvider" in caplog.text
    batch, _ = world.batch(5, seed=3)
    before = pred(batch)
    assert before.embeddings.shape == (5, 6, 16)

    other = fitted_model(world)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pred.swap_weights(other.state_dict())
    after = pred(batch)
    assert pred.swaps == 1 and not torch.allclose(before.embeddings, after.embeddings)
    expected = Predictor.from_model(other)(batch)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(after, expected, strict=True))


def test_torch_and_onnx_predictors_share_one_signature(world, tmp_path):
    model = fitted_model(world)
    export_onnx(model, world.batch(2, seed=1)[0], tmp_path / "m.onnx")
    batch, _ = world.batch(4, seed=4)
    a = Predictor.from_config(RuntimeConfig(backend="torch"), model)(batch)
    b = Predictor.from_onnx((tmp_path / "m.onnx").read_bytes(), providers="CPUExecutionProvider")(batch)
    assert type(a) is type(b) and a._fields == b._fields
    assert all(x.dtype == y.dtype and x.shape == y.shape for x, y in zip(a, b, strict=True))
    # no onnx_path: the model is exported in memory and gives the torch outputs
    c = Predictor.from_config(RuntimeConfig(backend="onnx", threads=1), model)(batch)
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a, c, strict=True))


def test_provider_resolution():
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", available) == available
    assert resolve_providers("CPUExecutionProvider", available) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="TensorrtExecutionProvider"):
        resolve_providers("TensorrtExecutionProvider,CPUExecutionProvider", available)
    with pytest.raises(ValueError, match="needs a model"):
        Predictor.from_config(RuntimeConfig(backend="torch"))
    with pytest.raises(ValueError, match="needs onnx_path or a model"):
        Predictor.from_config(RuntimeConfig(backend="onnx"))


def test_export_command_writes_a_checked_onnx_file(world, tmp_path, capsys):
    from structalign_ros.cli import main
    from structalign_ros.core.config import StructAlignConfig
    from structalign_ros.core.learn.train import save_checkpoint

    model = fitted_model(world)
    cfg = StructAlignConfig()
    cfg.model = ModelConfig(16, 8, 16)
    save_checkpoint(tmp_path / "m.pt", model, cfg)
    assert main(["export", str(tmp_path / "m.pt"), str(tmp_path / "m.onnx")]) == 0
    assert "parity" in capsys.readouterr().out
    out = Predictor.from_onnx(tmp_path / "m.onnx")(world.batch(3, seed=8)[0])
    assert out.fused.shape == (3, 16)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(tmp_path / "bad.pt"), str(tmp_path / "x.onnx")]) == 1
    assert "not a readable checkpoint" in capsys.readouterr().err
