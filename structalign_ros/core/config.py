"""One typed configuration tree for the whole suite, and its YAML form.

The same tree is read from the ROS parameter files in ``config/`` (``<node>: ros__parameters: ...``),
from plain YAML given to the CLI, and stored inside checkpoints, so a model always records the exact
configuration it was trained with. ROS parameters are the flattened view of the same tree
(``modalities.rgb.topic``); :func:`flatten` and :func:`unflatten` convert between the two.

Every section validates itself in ``__post_init__``; :func:`from_dict` rejects unknown keys and wrong
types with the dotted path of the offending entry, so a typo in a YAML file is an error, not a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

MODALITY_KINDS = ("image", "depth", "wrench", "imu", "tactile", "joints")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names its dotted path."""


@dataclass
class ModalityConfig:
    """One sensor stream.

    Args:
        kind: what the stream carries, one of ``MODALITY_KINDS``.
        topic: ROS topic (live) or bag topic (replay) it arrives on.
        rate_hz: nominal publishing rate, used to size buffers and to judge silence.
        samples: fixed number of samples per window after resampling (1 for a camera frame).
        enabled: a disabled modality is neither subscribed to nor encoded.
    """

    kind: str
    topic: str
    rate_hz: float
    samples: int = 1
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.kind not in MODALITY_KINDS:
            raise ConfigError(f"kind={self.kind!r} is not one of {MODALITY_KINDS}")
        if not self.topic:
            raise ConfigError("topic must not be empty")
        if not self.rate_hz > 0:
            raise ConfigError(f"rate_hz={self.rate_hz} must be > 0")
        if self.samples < 1:
            raise ConfigError(f"samples={self.samples} must be >= 1")


def _default_modalities() -> dict[str, ModalityConfig]:
    return {
        "rgb": ModalityConfig("image", "/camera/color/image_raw", 30.0, 1),
        "depth": ModalityConfig("depth", "/camera/depth/image_raw", 30.0, 1),
        "wrench": ModalityConfig("wrench", "/wrist/wrench", 1000.0, 32),
        "imu": ModalityConfig("imu", "/ee/imu", 200.0, 16),
        "tactile": ModalityConfig("tactile", "/tactile/image", 100.0, 8),
        "joints": ModalityConfig("joints", "/joint_states", 200.0, 16),
    }


@dataclass
class WindowConfig:
    """How streams are cut into camera-pivot windows.

    Args:
        span_s: each window covers ``[t - span_s, t]`` for a pivot stamp ``t``.
        timeout_s: a window is emitted this long after its pivot even if a stream has not caught up;
            the late streams are then masked.
    """

    span_s: float = 0.1
    timeout_s: float = 0.05

    def __post_init__(self) -> None:
        if not self.span_s > 0:
            raise ConfigError(f"span_s={self.span_s} must be > 0")
        if self.timeout_s < 0:
            raise ConfigError(f"timeout_s={self.timeout_s} must be >= 0")


@dataclass
class StructAlignConfig:
    """The root of the configuration tree."""

    modalities: dict[str, ModalityConfig] = field(default_factory=_default_modalities)
    window: WindowConfig = field(default_factory=WindowConfig)

    def __post_init__(self) -> None:
        if not any(m.enabled for m in self.modalities.values()):
            raise ConfigError("modalities: at least one modality must be enabled")

    @property
    def enabled_modalities(self) -> list[str]:
        """Names of the enabled modalities, in configuration order."""
        return [name for name, m in self.modalities.items() if m.enabled]


T = TypeVar("T")


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return _from_dict(hint, value, path)
    if origin is dict:
        _, vtype = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(v, vtype, f"{path}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        (etype, *_) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        items = [_coerce(v, etype, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type[T], data: dict[str, Any], path: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None


def from_dict(data: dict[str, Any], cls: type[T] = StructAlignConfig) -> T:  # type: ignore[assignment]
    """Build a validated config tree from nested plain data (as loaded from YAML)."""
    return _from_dict(cls, data, "")


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain data (YAML- and checkpoint-safe) of a config tree."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted names, the shape of ROS 2 parameters."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted names -> nested mapping; the inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _ros_parameters(doc: dict[str, Any], node: str | None) -> dict[str, Any]:
    """The ``ros__parameters`` block for ``node`` (or the wildcard ``/**``) of a ROS params file."""
    candidates = [node, f"/{node}", "/**"] if node else ["/**"]
    for key in candidates:
        if key in doc and isinstance(doc[key], dict) and "ros__parameters" in doc[key]:
            return doc[key]["ros__parameters"]
    blocks = [k for k, v in doc.items() if isinstance(v, dict) and "ros__parameters" in v]
    if len(blocks) == 1:
        return doc[blocks[0]]["ros__parameters"]
    raise ConfigError(f"no ros__parameters block for node {node!r}; found {blocks}")


def load_yaml(path: str | Path, node: str | None = None) -> StructAlignConfig:
    """Load a config from a ROS parameter file (``ros__parameters``) or a plain YAML tree."""
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    is_ros = any(isinstance(v, dict) and "ros__parameters" in v for v in doc.values())
    data = _ros_parameters(doc, node) if is_ros else doc
    return from_dict(unflatten(data) if any("." in k for k in data) else data)


def to_ros_yaml(config: StructAlignConfig, node: str = "/**") -> str:
    """``config`` as the text of a ROS parameter file that :func:`load_yaml` and rclpy both read."""
    return yaml.safe_dump({node: {"ros__parameters": to_dict(config)}}, sort_keys=False)


def save_yaml(config: StructAlignConfig, path: str | Path, node: str = "/**") -> None:
    """Write ``config`` to ``path`` as a ROS parameter file."""
    Path(path).write_text(to_ros_yaml(config, node), encoding="utf-8")
