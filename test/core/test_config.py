import warnings
from pathlib import Path

import pytest
import yaml

from structalign_ros.core.config import GROUND_TRUTH_TOPIC, ConfigError, StructAlignConfig
from structalign_ros.core.config_io import (
    OldKeyWarning,
    config_from_values,
    describe,
    flatten,
    from_dict,
    load_yaml,
    migrate,
    save_yaml,
    to_dict,
    unflatten,
)


def test_yaml_round_trip(tmp_path):
    cfg = StructAlignConfig()
    cfg.modalities["imu"].samples = 7
    cfg.window.span_s = 0.2
    path = tmp_path / "p.yaml"
    save_yaml(cfg, path, node="perception")
    back = load_yaml(path, node="perception")
    assert back == cfg
    assert back.modalities["imu"].samples == 7


def test_flat_ros_parameters_load(tmp_path):
    flat = flatten(to_dict(StructAlignConfig()))
    assert flat["modalities.rgb.topic"] == "/camera/color/image_raw"
    flat["window.span_s"] = 0.5
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": flat}}))
    assert load_yaml(path).window.span_s == 0.5
    assert unflatten(flatten({"a": {"b": 1, "c": {"d": 2}}})) == {"a": {"b": 1, "c": {"d": 2}}}


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"window": {"span": 1.0}}, "window: unknown key(s) ['span']"),
        ({"window": {"span_s": "long"}}, "window.span_s: expected a number"),
        ({"window": {"span_s": -1.0}}, "span_s=-1.0 must be > 0"),
        ({"modalities": {"x": {"kind": "sonar", "topic": "/s", "rate_hz": 1.0}}}, "modalities.x"),
        ({"modalities": {"x": {"kind": "imu", "topic": "/i", "rate_hz": 1, "enabled": False}}}, "enabled"),
        ({"modalities": {"x": {"kind": "imu", "rate_hz": 1.0}}}, "topic"),
    ],
)
def test_bad_values_name_their_path(data, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert fragment in str(err.value)


def test_every_parameter_has_a_short_description_without_benchmark_anecdotes():
    docs = describe(StructAlignConfig())
    assert docs and all(docs.values()), [k for k, v in docs.items() if not v]
    for name, text in docs.items():
        assert len(text) <= 400 and text.endswith("."), name
        assert "bench" not in text and "BENCHMARKS" not in text, name  # the why stays in the source
    # the first sentence, cut at a sentence end and not at "e.g."
    assert docs["window.reorder_s"] == (
        "samples arriving out of order by up to this much are sorted in; older ones are dropped and counted."
    )


@pytest.mark.parametrize(
    "old, expected",
    [
        ({"sim": {"ee_pose_topic": "/arm/ee"}}, "/arm/ee"),  # an offline file or checkpoint
        ({"node": {"ground_truth_topic": "/mocap"}}, "/mocap"),  # a live parameter file
        ({"node": {"ground_truth_topic": ""}}, ""),  # a robot without ground truth keeps none
        # a checkpoint's stored tree has both; the live key is empty there, the offline one is meant
        ({"node": {"ground_truth_topic": ""}, "sim": {"ee_pose_topic": "/gt"}}, "/gt"),
        ({"node": {"ground_truth_topic": "/mocap"}, "sim": {"ee_pose_topic": "/gt"}}, "/mocap"),
    ],
)
def test_old_ground_truth_keys_load_as_the_one_key_with_a_warning_naming_them(old, expected):
    with pytest.warns(OldKeyWarning) as caught:
        config = from_dict(old)
    assert config.ground_truth_topic == expected
    message = str(caught[0].message)
    assert all(f"{section}.{key}" in message for section, keys in old.items() for key in keys)
    assert "ground_truth_topic" in message


def test_the_new_key_wins_over_old_ones_and_nothing_else_is_touched():
    data = {"ground_truth_topic": "/new", "node": {"ground_truth_topic": "/old", "finetune": False}}
    with pytest.warns(OldKeyWarning, match="ignored"):
        config = from_dict(data)
    assert config.ground_truth_topic == "/new" and config.node.finetune is False
    assert data["node"]["ground_truth_topic"] == "/old"  # the caller's data is not changed
    assert migrate({"node": {"finetune": True}}) == {"node": {"finetune": True}}


def test_an_old_parameter_file_merged_over_the_defaults_keeps_its_topic(tmp_path):
    # a ROS parameter file of before the rename: flat names, the old live key, merged over defaults
    # that have the new key (the path of ros/params.py and of --set)
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"node.ground_truth_topic": "/mocap"}}}))
    with pytest.warns(OldKeyWarning, match="node.ground_truth_topic"):
        assert load_yaml(path).ground_truth_topic == "/mocap"
    with pytest.warns(OldKeyWarning, match="sim.ee_pose_topic"):
        config = config_from_values({"sim.ee_pose_topic": "/arm6/ee"}, StructAlignConfig())
    assert config.ground_truth_topic == "/arm6/ee"


def test_the_shipped_checkpoint_is_stored_with_the_new_key_and_loads_without_a_warning():
    # its stored tree was migrated once (the both-keys case of a checkpoint is tested above)
    from structalign_ros.core.learn.train import load_checkpoint

    shipped = Path(__file__).resolve().parents[2] / "models" / "sim_default.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error", OldKeyWarning)
        config = load_checkpoint(shipped).config
    assert config.ground_truth_topic == GROUND_TRUTH_TOPIC
    assert "ground_truth_topic" not in to_dict(config)["node"]
    assert "ee_pose_topic" not in to_dict(config)["sim"]
