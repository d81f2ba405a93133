"""Thin rclpy adapters around :mod:`structalign_ros.core`."""
