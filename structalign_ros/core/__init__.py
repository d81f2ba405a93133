"""ROS-free core, in rooms along the data path: ``config``, ``data`` (messages -> windows -> batches),
``ot``, ``learn`` (models, objectives, training), ``sim``, ``serve`` (the live pipeline, online
fine-tuning) and ``eval``; see the README's layout table.

Nothing under this package imports rclpy or ROS message packages; a test enforces it.
"""
