"""The package installs like a ROS 2 package and exposes one CLI."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from structalign_ros import cli

ROOT = Path(__file__).resolve().parents[1]


def test_cli_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert cli.main([]) == 2


def test_every_command_module_has_the_interface():
    import importlib

    for _, module in cli.COMMANDS.values():
        mod = importlib.import_module(f"structalign_ros.commands.{module}")
        assert callable(mod.configure) and callable(mod.run)


@pytest.mark.slow
def test_colcon_build_makes_a_ros_install_space(tmp_path):
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent))
    assert colcon, "colcon is installed by `make setup` (dev extra)"
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src / "structalign_ros",
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "install", "log", "runs", "__pycache__", "*.egg-info"
        ),
    )
    run = subprocess.run(
        [
            colcon,
            "build",
            "--base-paths",
            str(src),
            "--build-base",
            str(tmp_path / "build"),
            "--install-base",
            str(tmp_path / "install"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    prefix = tmp_path / "install" / "structalign_ros"
    share = prefix / "share" / "structalign_ros"
    assert (share / "package.xml").is_file()
    assert (prefix / "share/ament_index/resource_index/packages/structalign_ros").is_file()
    for folder in ("launch", "config", "models"):
        assert (share / folder).is_dir()
    for name in (p.name for p in (ROOT / "config").glob("*.yaml")):
        assert (share / "config" / name).is_file()
    exe = prefix / "lib" / "structalign_ros" / "structalign"
    assert exe.is_file()
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, str(exe), "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "config" in out.stdout
