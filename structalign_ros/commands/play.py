"""``structalign play``: replay rosbag2 files onto ROS topics in real time (no rosbag2_py needed)."""

from __future__ import annotations

import argparse
import sys

from structalign_ros.core.config import (
    FAULT_KINDS,
    MODALITY_KINDS,
    ConfigError,
    FaultConfig,
    StructAlignConfig,
)
from structalign_ros.core.config_io import load_yaml


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", help="rosbag2 folders (mcap or sqlite3), played in order")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument("--clock", action="store_true", help="also publish the bag time on /clock")
    parser.add_argument("--loops", type=int, default=1, help="play the list this many times (default 1)")
    parser.add_argument(
        "--wait", type=float, default=5.0, help="seconds to wait for a subscriber before playing (default 5)"
    )
    add_fault_arguments(parser)
    parser.add_argument("--config", metavar="FILE", help="parameter file whose modalities name the topics")


def add_fault_arguments(parser: argparse.ArgumentParser, topic: bool = True) -> None:
    """The ``--fault*`` options (``structalign play``; ``structalign sim`` without ``--fault-topic``)."""
    fault = parser.add_argument_group("sensor fault (see docs/DATA.md)")
    fault.add_argument(
        "--fault",
        metavar="MODALITY:KIND",
        help="inject a fault into one modality's topic: MODALITY is a configured modality (rgb, wrench, "
        f"...) or a kind ({', '.join(MODALITY_KINDS)}); KIND is one of {', '.join(FAULT_KINDS[1:])}",
    )
    fault.add_argument(
        "--fault-magnitude",
        type=float,
        default=1.0,
        help="noise/bias size in units of the signal's std (default 1)",
    )
    fault.add_argument(
        "--fault-delay-ms", type=float, default=100.0, help="delay of KIND=delay (default 100)"
    )
    fault.add_argument(
        "--fault-start", type=float, default=0.0, help="seconds into each bag it starts (default 0)"
    )
    fault.add_argument(
        "--fault-stop", type=float, default=0.0, help="seconds into each bag it stops (0: never)"
    )
    fault.add_argument("--fault-seed", type=int, default=0, help="seed of the fault's noise (default 0)")
    if topic:
        fault.add_argument(
            "--fault-topic", help="the topic to fault (default: MODALITY's topic in the config)"
        )


def resolve_fault(
    args: argparse.Namespace, config: StructAlignConfig | None = None
) -> tuple[FaultConfig | None, str]:
    """The fault of ``--fault`` and the topic it hits, or ``(None, "")`` without one; modality names
    and topics come from ``config`` (default: ``--config`` or the defaults).

    Raises:
        ConfigError: an unknown modality or kind, or invalid fault values.
    """
    if not args.fault:
        return None, ""
    if config is None:
        config = load_yaml(args.config) if args.config else StructAlignConfig()
    name, sep, kind = args.fault.partition(":")
    if not sep:
        raise ConfigError(f"--fault {args.fault!r}: expected MODALITY:KIND, e.g. wrench:noise")
    enabled = {n: m for n, m in config.modalities.items() if m.enabled}
    if name in enabled:
        modality, topic = enabled[name].kind, enabled[name].topic
    elif name in MODALITY_KINDS:
        topics = [m.topic for m in enabled.values() if m.kind == name]
        modality, topic = name, topics[0] if topics else ""
    else:
        raise ConfigError(
            f"--fault: {name!r} is neither a modality ({sorted(enabled)}) nor a kind {MODALITY_KINDS}"
        )
    fault = FaultConfig(
        modality=modality,
        kind=kind,
        magnitude=args.fault_magnitude,
        delay_ms=args.fault_delay_ms,
        start_s=args.fault_start,
        stop_s=args.fault_stop,
    )
    return fault, getattr(args, "fault_topic", None) or topic


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from structalign_ros.core.data.bags import BagError
    from structalign_ros.ros.player import BagPlayer

    try:
        fault, fault_topic = resolve_fault(args)
    except (ConfigError, OSError) as exc:
        print(f"structalign play: {exc}", file=sys.stderr)
        return 2
    rclpy.init()
    try:
        try:
            player = BagPlayer(
                args.bags, args.rate, args.clock, args.loops, args.wait, fault, fault_topic, args.fault_seed
            )
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
        if fault is not None:
            print(f"fault {fault.kind} on {fault_topic}: {player.faulted} messages changed")
        player.destroy_node()
    finally:
        rclpy.try_shutdown()
    return 0
