"""``structalign sim`` and ``structalign bag-info`` end to end through the real CLI entry point."""

from structalign_ros.cli import main
from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.config_io import save_yaml
from structalign_ros.core.data.bags import bag_info


def test_sim_then_bag_info(tmp_path, capsys):
    out = tmp_path / "episode"
    assert main(["sim", "--seconds", "0.5", "--seed", "4", "--out", str(out), "--storage", "sqlite3"]) == 0
    assert bag_info(out).topics["/wrist/wrench"] == ("geometry_msgs/msg/WrenchStamped", 500)
    capsys.readouterr()
    assert main(["bag-info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "/camera/color/image_raw" in text and "missing: none" in text
    assert "windows: 15 (" in text


def test_sim_without_rendering_has_no_camera_and_bag_info_says_so(tmp_path, capsys):
    out = tmp_path / "blind"
    assert main(["sim", "--seconds", "0.3", "--out", str(out), "--no-render"]) == 0
    assert "/camera/color/image_raw" not in bag_info(out).topics
    capsys.readouterr()
    assert main(["bag-info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "missing: depth, rgb" in text and "windows: 0 " in text


def test_sim_refuses_to_overwrite_and_bag_info_rejects_non_bags(tmp_path, capsys):
    out = tmp_path / "once"
    assert main(["sim", "--seconds", "0.1", "--out", str(out), "--no-render"]) == 0
    assert main(["sim", "--seconds", "0.1", "--out", str(out), "--no-render"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["bag-info", str(tmp_path / "nothing")]) == 1
    assert "cannot open as rosbag2" in capsys.readouterr().err


def test_topic_to_modality_map_comes_from_the_config(tmp_path, capsys):
    cfg = StructAlignConfig()
    cfg.modalities["wrench"].topic = "/robot/ft/raw"
    cfg.sim.depth_encoding = "32FC1"
    params = tmp_path / "params.yaml"
    save_yaml(cfg, params)
    out = tmp_path / "renamed"
    assert main(["sim", "--seconds", "0.3", "--out", str(out), "--config", str(params)]) == 0
    assert "/robot/ft/raw" in bag_info(out).topics and "/wrist/wrench" not in bag_info(out).topics
    capsys.readouterr()
    # With the default map the F/T topic is unknown, with the file's map it is the wrench modality.
    assert main(["bag-info", str(out)]) == 0
    assert "missing: wrench" in capsys.readouterr().out
    assert main(["bag-info", str(out), "--config", str(params)]) == 0
    assert "missing: none" in capsys.readouterr().out
