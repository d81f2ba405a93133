"""ONNX export of :class:`models.MultimodalModel` with a dynamic batch, to a file or to bytes in
memory (``runtime.check_parity`` compares the two backends).

Graph inputs are the modalities in batch order (named after them) plus ``mask`` ``(B, M)`` bool;
outputs are the :class:`models.ModelOutput` fields in order. Every axis but the batch is fixed, so
ONNX Runtime (and TensorRT) can plan the whole graph once.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor, nn

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.models import ModelOutput, MultimodalModel

OUTPUT_NAMES = tuple(ModelOutput._fields)
OPSET = 17


class _Positional(nn.Module):
    """The model with positional tensor inputs, the calling convention of an exported graph."""

    def __init__(self, model: MultimodalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        *inputs, mask = tensors
        return tuple(self.model(dict(zip(self.model.modalities, inputs, strict=True)), mask))


def input_names(model: MultimodalModel) -> list[str]:
    """Graph input names: the modalities, then ``mask``."""
    return [*model.modalities, "mask"]


def example_batch(model: MultimodalModel, size: int = 2) -> Batch:
    """An all-present zero batch in ``model``'s input layout: enough to trace the graph."""
    inputs = {}
    for name, spec in model.specs.items():
        dtype = torch.uint8 if spec.kind == "image" else torch.float32
        inputs[name] = torch.zeros((size, *spec.shape), dtype=dtype)
    return Batch(inputs, torch.ones(size, len(model.modalities), dtype=torch.bool), model.modalities)


def export_onnx(model: MultimodalModel, example: Batch, path: str | Path | io.BytesIO) -> None:
    """Write ``model`` as ONNX to ``path`` (a file or an in-memory buffer).

    Args:
        example: a batch with the model's modalities and per-window shapes; any batch size.
    """
    training = model.training
    model.eval()
    names = input_names(model)
    args = (*(example.inputs[n] for n in model.modalities), example.mask)
    dynamic = {n: {0: "batch"} for n in (*names, *OUTPUT_NAMES)}
    try:
        with torch.no_grad():
            # The TorchScript-based exporter: the dynamo exporter needs onnxscript, a dependency this
            # small, static graph does not need.
            torch.onnx.export(
                _Positional(model),
                args,
                path if isinstance(path, io.BytesIO) else str(path),
                input_names=names,
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        model.train(training)  # the caller's model keeps its mode


def onnx_bytes(model: MultimodalModel) -> bytes:
    """``model`` exported to ONNX in memory (dynamic batch)."""
    buf = io.BytesIO()
    export_onnx(model, example_batch(model), buf)
    return buf.getvalue()
