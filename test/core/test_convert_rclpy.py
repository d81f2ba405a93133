"""The converter on real rclpy message classes (the live node's input), where they are installed.

The core never imports ROS; this test does, to show the duck-typed converter reads rclpy messages
(``array.array`` and ``bytes`` fields) exactly as it reads rosbags ones (numpy fields). It only
imports message classes: no ROS 2 context is started.
"""

import numpy as np
import pytest

from structalign_ros.core.data.bags import image_msg, joint_state_msg
from structalign_ros.core.data.convert import ConversionError, convert

sensor_msgs = pytest.importorskip("sensor_msgs.msg")
geometry_msgs = pytest.importorskip("geometry_msgs.msg")


def as_rclpy_image(bag_msg):
    img = sensor_msgs.Image()
    img.header.stamp.sec = bag_msg.header.stamp.sec
    img.header.stamp.nanosec = bag_msg.header.stamp.nanosec
    img.height, img.width, img.encoding = bag_msg.height, bag_msg.width, bag_msg.encoding
    img.is_bigendian, img.step = bag_msg.is_bigendian, bag_msg.step
    img.data = bag_msg.data.tobytes()
    return img


@pytest.mark.parametrize(
    ("kind", "pixels", "encoding"),
    [
        ("image", np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), "bgr8"),
        ("depth", np.array([[1000, 0, 65535]], dtype=np.uint16), "16UC1"),
        ("tactile", np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), "32FC1"),
    ],
)
def test_images_convert_the_same_from_both_message_implementations(kind, pixels, encoding):
    bag = image_msg(5_000_000_007, "f", pixels, encoding)
    live = as_rclpy_image(bag)
    stamp_bag, array_bag = convert(kind, bag)
    stamp_live, array_live = convert(kind, live)
    assert stamp_bag == stamp_live == 5_000_000_007
    np.testing.assert_array_equal(array_bag, array_live)


def test_joint_state_wrench_imu_pose_from_rclpy():
    js = sensor_msgs.JointState(name=["b", "a"], position=[1.0, 2.0], velocity=[0.1, 0.2], effort=[3.0, 4.0])
    js.header.stamp.nanosec = 1
    bag = joint_state_msg(1, ["b", "a"], np.array([[1.0, 2.0], [0.1, 0.2], [3.0, 4.0]]))
    np.testing.assert_array_equal(convert("joints", js, ["a", "b"])[1], convert("joints", bag, ["a", "b"])[1])
    js.effort = []
    with pytest.raises(ConversionError, match="effort has 0 value"):
        convert("joints", js, ["a", "b"])
    w = geometry_msgs.WrenchStamped()
    w.header.stamp.sec = 1
    w.wrench.force.z, w.wrench.torque.x = -4.4, 0.5
    np.testing.assert_allclose(convert("wrench", w)[1], [0, 0, -4.4, 0.5, 0, 0], rtol=1e-6)
    imu = sensor_msgs.Imu()
    imu.header.stamp.sec = 1
    imu.linear_acceleration.z, imu.angular_velocity.y = 9.81, 0.2
    np.testing.assert_allclose(convert("imu", imu)[1], [0, 0, 9.81, 0, 0.2, 0], rtol=1e-6)
    pose = geometry_msgs.PoseStamped()
    pose.header.stamp.sec = 1
    pose.pose.position.x, pose.pose.orientation.w = 0.3, 1.0
    np.testing.assert_allclose(convert("pose", pose)[1], [0.3, 0, 0, 0, 0, 0, 1], rtol=1e-6)
