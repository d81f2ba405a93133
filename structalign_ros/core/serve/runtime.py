"""Inference with one signature over two backends: torch and ONNX Runtime.

``Predictor(batch) -> ModelOutput`` (CPU tensors) whichever backend runs. ONNX Runtime is imported
only when an ONNX predictor is built. The providers a session really uses (ONNX Runtime silently
falls back to CPU when a CUDA or TensorRT library is missing) are logged and kept in
:attr:`Predictor.providers`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from structalign_ros.core.config import RuntimeConfig
from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.models import ModelOutput, MultimodalModel, check_compatible
from structalign_ros.core.serve.export import onnx_bytes

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def resolve_providers(spec: str, available: list[str]) -> list[str]:
    """Execution providers to request: ``auto`` = the preferred ones this build offers, else the list.

    Raises:
        ValueError: an explicitly named provider is not in this onnxruntime build.
    """
    if spec == "auto":
        return [p for p in PREFERRED_PROVIDERS if p in available]
    wanted = [p.strip() for p in spec.split(",") if p.strip()]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ValueError(f"onnxruntime providers {missing} are not available; this build has {available}")
    return wanted


class Predictor:
    """Runs the model on batches; build it with :meth:`from_model`, :meth:`from_onnx` or :meth:`from_config`.

    :meth:`swap_weights` installs new weights (from the online trainer) by building a complete new
    model or session first and then replacing one reference, so a concurrent call either uses the
    old weights or the new ones, never a mix, and never waits.
    """

    def __init__(
        self,
        backend: str,
        model: MultimodalModel | None,
        session: Any,
        device: torch.device,
        provider_spec: str = "auto",
        threads: int = RuntimeConfig.threads,
    ) -> None:
        self.backend = backend
        self._model = model
        self._session = session
        self.device = device
        self._provider_spec, self._threads = provider_spec, threads
        self.providers: list[str] = (
            list(session.get_providers()) if session is not None else [f"torch:{device}"]
        )
        self.swaps = 0

    @classmethod
    def from_model(cls, model: MultimodalModel, device: str = "cpu") -> Predictor:
        """The torch backend on ``device`` (see :func:`resolve_device`; the model is copied: training
        the original changes nothing)."""
        dev = resolve_device(device)
        return cls("torch", copy.deepcopy(model).to(dev).eval(), None, dev)

    @classmethod
    def from_onnx(
        cls,
        onnx_model: str | Path | bytes,
        providers: str = "auto",
        threads: int = RuntimeConfig.threads,
        template: MultimodalModel | None = None,
    ) -> Predictor:
        """The ONNX Runtime backend on an exported file or its bytes.

        Args:
            providers: ``auto`` or a comma-separated list, see :func:`resolve_providers`.
            threads: intra-op threads of the session.
            template: the torch model the graph was exported from; needed only for :meth:`swap_weights`.
        """
        session = _make_session(onnx_model, providers, threads)
        pred = cls("onnx", template, session, torch.device("cpu"), providers, threads)
        log.info("onnxruntime session uses providers %s", pred.providers)
        return pred

    @classmethod
    def from_config(cls, cfg: RuntimeConfig, model: MultimodalModel | None = None) -> Predictor:
        """The backend named by the ``runtime`` config section.

        The ONNX backend loads ``cfg.onnx_path``, or, when that is empty, exports ``model`` in memory.
        """
        if cfg.backend == "onnx":
            source: str | bytes = cfg.onnx_path
            if not source:
                if model is None:
                    raise ValueError("the onnx backend needs onnx_path or a model to export")
                source = onnx_bytes(model)
            return cls.from_onnx(source, cfg.providers, cfg.threads, template=model)
        if model is None:
            raise ValueError("the torch backend needs a model")
        return cls.from_model(model, cfg.device)

    def __call__(self, batch: Batch) -> ModelOutput:
        """Outputs for ``batch`` as CPU float tensors."""
        session, model = self._session, self._model  # one read each: a swap may happen meanwhile
        if session is not None:
            feeds = {n: batch.inputs[n].numpy() for n in model_inputs(session) if n != "mask"}
            feeds["mask"] = batch.mask.numpy()
            return ModelOutput(*(torch.from_numpy(o) for o in session.run(None, feeds)))
        with torch.inference_mode():
            out = model(batch.to(self.device).inputs, batch.mask.to(self.device))
        return ModelOutput(*(t.float().cpu() for t in out))

    def swap_weights(self, state: dict[str, Tensor], onnx_model: bytes | None = None) -> None:
        """Install new weights atomically (see the class docstring).

        Args:
            state: the new ``state_dict``.
            onnx_model: the same weights already exported (the online trainer exports them in its own
                process, so that this call only builds a session); exported here when None.

        Raises:
            models.IncompatibleWeights: ``state`` does not fit the model; the current weights stay.
            RuntimeError: an ONNX predictor built without a ``template``.
        """
        if self._model is None:
            raise RuntimeError("this ONNX predictor has no torch template to load weights into")
        check_compatible(self._model, state)
        fresh = copy.deepcopy(self._model)
        fresh.load_state_dict(state)
        fresh.eval()
        if self._session is not None:
            source = onnx_model if onnx_model is not None else onnx_bytes(fresh)
            self._session = _make_session(source, self._provider_spec, self._threads)
        self._model = fresh
        self.swaps += 1


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else as torch reads it."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def model_inputs(session: Any) -> list[str]:
    """Input names of an ONNX Runtime session, in graph order."""
    return [i.name for i in session.get_inputs()]


def _make_session(onnx_model: str | Path | bytes, providers: str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # idle intra-op threads must sleep, not spin: the node shares its cores with the sensor reader
    # and the online trainer
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = resolve_providers(providers, ort.get_available_providers())
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    return ort.InferenceSession(source, sess_options=opts, providers=wanted)


def check_parity(
    model: MultimodalModel, onnx_model: str | Path | bytes, batch: Batch, atol: float = 1e-4
) -> float:
    """Largest difference between torch and ONNX Runtime outputs on ``batch``, relative to
    ``1 + |torch|`` per element (absolute near zero, relative for large values such as the pose
    experts' log-variances).

    Raises:
        AssertionError: the difference exceeds ``atol``.
    """
    ort = Predictor.from_onnx(onnx_model, providers="CPUExecutionProvider", threads=1)
    ref = Predictor.from_model(model)
    a, b = ref(batch), ort(batch)
    worst = max(float(((x - y).abs() / (1 + x.abs())).max()) for x, y in zip(a, b, strict=True))
    if worst > atol:
        raise AssertionError(f"ONNX parity: max |torch - onnxruntime| / (1 + |torch|) = {worst:.3g} > {atol}")
    return worst
