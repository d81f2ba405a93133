"""The simulated robot and the perception node: ``ros2 launch structalign_ros sim_demo.launch.py``."""

from structalign_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description("sim_demo")
