"""The perception node on a real robot.

``ros2 launch structalign_ros perception.launch.py [config:=FILE]``
"""

from structalign_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description("perception")
