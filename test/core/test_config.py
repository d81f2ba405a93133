import pytest

from structalign_ros.core.config import ConfigError, StructAlignConfig
from structalign_ros.core.config_io import (
    describe,
    flatten,
    from_dict,
    load_yaml,
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
    import yaml

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
