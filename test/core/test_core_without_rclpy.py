"""The core must import on a machine with no ROS 2 at all."""

import subprocess
import sys

BLOCKER = r"""
import importlib.abc, importlib.util, pkgutil, sys

ROS = ("rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "visualization_msgs",
       "diagnostic_msgs", "builtin_interfaces", "rosgraph_msgs", "lifecycle_msgs")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ROS:
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Block())
import structalign_ros.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "structalign_ros.core.")]
for name in names:
    importlib.import_module(name)
assert not any(n.split(".")[0] in ROS for n in sys.modules), "a ROS module got imported"
print(len(names))
"""


def test_every_core_module_imports_with_ros_blocked():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 1


def test_blocker_really_blocks():
    """The check above would be vacuous if the blocker let rclpy through."""
    code = BLOCKER.split("import structalign_ros.core")[0] + "import rclpy\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "blocked: rclpy" in out.stderr
