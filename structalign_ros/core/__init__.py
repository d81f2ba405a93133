"""ROS-free core: numerics, windows, models, training, bag I/O and simulation.

Nothing under this package imports rclpy or ROS message packages; a test enforces it.
"""
