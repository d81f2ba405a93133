"""``structalign play``: replay rosbag2 files onto ROS topics in real time (no rosbag2_py needed)."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", help="rosbag2 folders (mcap or sqlite3), played in order")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument("--clock", action="store_true", help="also publish the bag time on /clock")
    parser.add_argument("--loops", type=int, default=1, help="play the list this many times (default 1)")
    parser.add_argument(
        "--wait", type=float, default=5.0, help="seconds to wait for a subscriber before playing (default 5)"
    )


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from structalign_ros.core.bags import BagError
    from structalign_ros.ros.player import BagPlayer

    rclpy.init()
    try:
        try:
            player = BagPlayer(args.bags, args.rate, args.clock, args.loops, args.wait)
        except (BagError, ValueError) as exc:
            print(f"structalign play: {exc}", file=sys.stderr)
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(player)
        player.start()
        try:
            while not player.done.is_set():
                executor.spin_once(timeout_sec=0.1)
        except KeyboardInterrupt:
            player.stop()
        print(f"published {player.published} messages; at most {player.late_ms:.1f} ms behind schedule")
        player.destroy_node()
    finally:
        rclpy.try_shutdown()
    return 0
