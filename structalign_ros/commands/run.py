"""``structalign run``: a node graph in one process, with the same parameter files as launch."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from structalign_ros.commands.options import add_set_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="ROS parameter file (default: built-in config)")
    add_set_argument(parser)  # every node of the graph gets them, over the file's values
    parser.add_argument(
        "--graph",
        default="perception",
        help="perception (the real robot: sensors come from outside) or sim_demo (with the simulated robot)",
    )
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from structalign_ros.core.config import StructAlignConfig
    from structalign_ros.core.config_io import config_from_values, load_yaml, parse_assignments
    from structalign_ros.ros.graph import graph
    from structalign_ros.ros.run import StartError, running

    # checked before anything starts: a bad key or value exits 1 with its message (cli.main)
    overrides = parse_assignments(args.set)
    config_from_values(overrides, load_yaml(args.config) if args.config else StructAlignConfig())
    # Ctrl-C and SIGTERM stop the graph here, in order (deactivate, checkpoint, shut down), before
    # rclpy's context goes away: rclpy's own handler would invalidate it under the running nodes.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with running(graph(args.graph), args.config, overrides=overrides) as nodes:
            print(f"running {', '.join(nodes)}; Ctrl-C stops", flush=True)
            stop.wait(args.seconds)
    except (StartError, ValueError) as exc:  # ValueError: a bad config file or graph name
        print(f"structalign run: {exc}", file=sys.stderr)
        return 1
    finally:
        rclpy.try_shutdown()
    return 0
