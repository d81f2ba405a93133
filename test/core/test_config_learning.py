"""The learning sections of the config tree: model, objective, train, runtime."""

import pytest

from structalign_ros.core.config import ConfigError, StructAlignConfig
from structalign_ros.core.config_io import from_dict, load_yaml, save_yaml


def test_learning_sections_round_trip(tmp_path):
    cfg = StructAlignConfig()
    cfg.model.temporal = "gru"
    cfg.objective.name = "gram"
    cfg.train.seed = 7
    cfg.runtime.providers = "CPUExecutionProvider"
    save_yaml(cfg, tmp_path / "p.yaml")
    back = load_yaml(tmp_path / "p.yaml")
    assert back == cfg
    assert (back.model.temporal, back.objective.name, back.train.seed) == ("gru", "gram", 7)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"model": {"temporal": "lstm"}}, "model: temporal='lstm'"),
        ({"model": {"image_size": 4}}, "image_size=4"),
        ({"objective": {"name": "clip"}}, "objective: name='clip'"),
        ({"objective": {"base": "unioma"}}, "base='unioma'"),
        ({"objective": {"temperature": 0.0}}, "temperature=0.0"),
        ({"objective": {"lambda_entropy": -1.0}}, "lambda_entropy=-1.0"),
        ({"train": {"batch_size": 1}}, "batch_size=1"),
        ({"train": {"min_replay": 10, "replay_capacity": 5}}, "min_replay"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number"),
        ({"train": {"expert_min_r2": 1.0}}, "expert_min_r2=1.0 must be < 1"),
        ({"node": {"diagnostics_period_s": 0}}, "node: diagnostics_period_s=0"),
        (
            {
                "modalities": {
                    "rgb": {"kind": "image", "topic": "/c", "rate_hz": 30.0, "qos_reliability": "x"}
                }
            },
            "qos_reliability='x'",
        ),
        ({"runtime": {"backend": "tflite"}}, "backend='tflite'"),
    ],
)
def test_learning_sections_reject_bad_values(data, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert fragment in str(err.value)
