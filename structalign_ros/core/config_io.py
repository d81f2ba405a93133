"""Reading and writing the configuration tree (:mod:`structalign_ros.core.config`).

The same tree is read from the ROS parameter files in ``config/`` (``<node>: ros__parameters: ...``),
from plain YAML given to the CLI, and stored inside checkpoints, so a model always records the exact
configuration it was trained with. ROS parameters are the flattened view of the same tree
(``modalities.rgb.topic``); :func:`flatten` and :func:`unflatten` convert between the two.

:func:`from_dict` rejects unknown keys and wrong types with the dotted path of the offending entry, so
a typo in a YAML file is an error, not a default.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import types
import typing
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from structalign_ros.core.config import ROS_OWN_PARAMETERS, ConfigError, StructAlignConfig

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
    """Build a validated config tree from nested plain data (as loaded from YAML); a whole tree's old
    keys are read as their new ones first (:func:`migrate`)."""
    return _from_dict(cls, migrate(data) if cls is StructAlignConfig else data, "")


class OldKeyWarning(FutureWarning):
    """A configuration (a file, a checkpoint's stored tree) uses a key that was renamed."""


# The keys that became ``ground_truth_topic`` (issue 13): the live node's and the offline one.
OLD_GROUND_TRUTH_KEYS = ("node.ground_truth_topic", "sim.ee_pose_topic")


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Nested tree data with its old keys moved to their new names, with an :class:`OldKeyWarning`
    naming them; ``data`` itself is left as it was. Checkpoints and parameter files written before a
    rename keep loading; this is the one place that knows the old names.

    ``node.ground_truth_topic`` (read by the live node, empty by default) and ``sim.ee_pose_topic``
    (read by training and evaluation, published by the simulator) became ``ground_truth_topic``: the
    node's value when it is not empty, else the simulator's. Where ``ground_truth_topic`` is given as
    well, it wins and the old keys are dropped.
    """
    old: dict[str, Any] = {}
    out = dict(data)
    for name in OLD_GROUND_TRUTH_KEYS:
        section, key = name.split(".")
        if isinstance(out.get(section), dict) and key in out[section]:
            out[section] = dict(out[section])
            old[name] = out[section].pop(key)
    if not old:
        return data
    names = ", ".join(old)
    if "ground_truth_topic" in out:
        message = f"{names}: old key(s), ignored because ground_truth_topic is given; remove them"
    else:
        node, sim = (old.get(name) for name in OLD_GROUND_TRUTH_KEYS)
        out["ground_truth_topic"] = node if node or sim is None else sim
        message = (
            f"{names}: old key(s), read as ground_truth_topic={out['ground_truth_topic']!r}, their new name"
        )
    warnings.warn(message, OldKeyWarning, stacklevel=3)
    return out


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


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the nested ``update`` merged over it, mapping by mapping (neither is changed)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_values(values: dict[str, Any], defaults: StructAlignConfig) -> StructAlignConfig:
    """``defaults`` with the dotted ``values`` merged over it, validated.

    Raises:
        ConfigError: an unknown name or an invalid value; the message has its dotted path.
    """
    return from_dict(merge(to_dict(defaults), migrate(unflatten(values))))


def _leaf_type(name: str) -> Any:
    """The declared type of the dotted ``name`` in the tree, or None where it names no field."""
    hint: Any = StructAlignConfig
    for part in name.split("."):
        if dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint).get(part)
        elif typing.get_origin(hint) is dict:
            hint = typing.get_args(hint)[1]
        else:
            return None
        if hint is None:
            return None
    return hint


def parse_assignments(texts: Iterable[str]) -> dict[str, Any]:
    """``NAME=VALUE`` texts (the CLI's ``--set``) as ``{dotted name: value}``, unvalidated.

    The value is read as YAML (``true``, ``64``, ``0.5``), except that a string field takes the text as
    it is (``runtime.device=0`` is the string ``"0"``) and a number field also takes what Python reads
    as a float (``train.lr=1e-3``, which YAML 1.1 reads as a string) and holds a float. Validation is
    the tree's own, through :func:`config_from_values`, like every ROS parameter's.

    Raises:
        ConfigError: a text without ``=`` or a value that is not valid YAML.
    """
    values: dict[str, Any] = {}
    for text in texts:
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {text!r}: expected NAME=VALUE, e.g. train.lr=0.0005")
        hint = _leaf_type(name)
        if hint is str:
            values[name] = raw
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None
        if hint is float and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # a ROS parameter keeps the type it is given first
        values[name] = value
    return values


def apply_assignments(config: StructAlignConfig, texts: Iterable[str]) -> StructAlignConfig:
    """``config`` with the ``NAME=VALUE`` texts (``--set``) merged over it, validated (a new tree).

    Raises:
        ConfigError: a malformed text, an unknown name or an invalid value, with its dotted path.
    """
    return config_from_values(parse_assignments(texts), config)


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


def read_values(path: str | Path, node: str | None = None) -> dict[str, Any]:
    """The values of a parameter file for ``node`` (its ``ros__parameters`` block, or ``/**``) or of a
    plain YAML tree, as a nested mapping, unvalidated; ROS's own parameters (``use_sim_time``) included.
    """
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    is_ros = any(isinstance(v, dict) and "ros__parameters" in v for v in doc.values())
    data = _ros_parameters(doc, node) if is_ros else doc
    return unflatten(data) if any("." in k for k in data) else data


def load_yaml(path: str | Path, node: str | None = None) -> StructAlignConfig:
    """Load a config from a ROS parameter file (``ros__parameters``) or a plain YAML tree.

    ROS's own parameters in the file (:data:`ROS_OWN_PARAMETERS`) are not part of the tree and are
    skipped here; the nodes pass them on to rclpy.
    """
    data = read_values(path, node)
    return from_dict({k: v for k, v in data.items() if k not in ROS_OWN_PARAMETERS})


def to_ros_yaml(config: StructAlignConfig, node: str = "/**") -> str:
    """``config`` as the text of a ROS parameter file that :func:`load_yaml` and rclpy both read."""
    return yaml.safe_dump({node: {"ros__parameters": to_dict(config)}}, sort_keys=False)


def save_yaml(config: StructAlignConfig, path: str | Path, node: str = "/**") -> None:
    """Write ``config`` to ``path`` as a ROS parameter file."""
    Path(path).write_text(to_ros_yaml(config, node), encoding="utf-8")


def save_values(values: dict[str, Any], path: str | Path, node: str = "/**") -> None:
    """Write dotted ``values`` (some keys of the tree, e.g. ``--set``'s) as a ROS parameter file, which
    a node given it after another file takes over that file's values."""
    text = yaml.safe_dump({node: {"ros__parameters": unflatten(values)}}, sort_keys=False)
    Path(path).write_text(text, encoding="utf-8")


def _field_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Args:`` section of a config dataclass's docstring."""
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    current = None
    in_args = False
    for line in lines:
        stripped = line.strip()
        if stripped == "Args:":
            in_args = True
            continue
        if not in_args or not stripped:
            continue
        head, sep, rest = stripped.partition(": ")
        names = [n.strip() for n in head.split(",")]
        if sep and all(n.isidentifier() for n in names) and len(line) - len(line.lstrip()) <= 8:
            for n in names:
                docs[n] = rest
            current = names
        elif current:
            for n in current:
                docs[n] += " " + stripped
    return docs


# The end of a docstring entry's first sentence ("e.g." and "i.e." do not end one).
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z`(0-9])")


def describe(config: StructAlignConfig) -> dict[str, str]:
    """Dotted parameter name -> its description, for every leaf of ``config``: the text ROS parameter
    descriptors and ``structalign config`` show. The first sentence of the field's entry in its
    dataclass docstring: the why and the measurements behind a default stay in the source."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        docs = _field_docs(type(node))
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            name = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, f"{name}.")
            elif isinstance(value, dict):
                for key, item in value.items():
                    walk(item, f"{name}.{key}.")
            else:
                text = _SENTENCE_END.split(docs.get(f.name, ""), maxsplit=1)[0].rstrip(".")
                out[name] = f"{text}." if text else ""

    walk(config, "")
    return out
