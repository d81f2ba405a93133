"""``structalign sim``: record a simulated episode as a rosbag2."""

from __future__ import annotations

import argparse
import sys

from structalign_ros.commands.play import add_fault_arguments, resolve_fault
from structalign_ros.core.config import ConfigError, StructAlignConfig
from structalign_ros.core.config_io import load_yaml
from structalign_ros.core.data.bags import STORAGES, BagError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, required=True, help="simulated time to record")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (box, task choices, sensor noise)")
    parser.add_argument("--out", required=True, metavar="BAG", help="new rosbag2 directory to write")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="rosbag2 storage plugin")
    parser.add_argument("--no-render", action="store_true", help="skip the camera and depth images")
    parser.add_argument("--config", metavar="FILE", help="parameter file for topics, rates and sim settings")
    add_fault_arguments(parser, topic=False)  # optional: the same fault as sim.fault.* in the config


def run(args: argparse.Namespace) -> int:
    # Imported here: MuJoCo and its GL context are only paid for by this command.
    from tqdm import tqdm

    from structalign_ros.core.sim.record import record_episode

    if not args.seconds > 0:
        print("structalign sim: --seconds must be > 0", file=sys.stderr)
        return 2
    try:
        config = load_yaml(args.config) if args.config else StructAlignConfig()
        fault, _ = resolve_fault(args, config)
        if fault is not None:
            config.sim.fault = fault
        with tqdm(
            total=args.seconds, unit="sim s", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{rate_fmt}]"
        ) as bar:
            stats = record_episode(
                args.out,
                config,
                args.seed,
                args.seconds,
                args.storage,
                render=not args.no_render,
                progress=lambda done: bar.update(done - bar.n),
            )
            bar.update(args.seconds - bar.n)
    except (ConfigError, BagError, OSError) as exc:
        print(f"structalign sim: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {stats.messages} messages ({stats.payload_bytes / 1e6:.1f} MB) to {args.out} "
        f"[{args.storage}]: {stats.sim_seconds:g} s simulated in {stats.wall_seconds:.1f} s "
        f"({stats.sim_seconds / stats.wall_seconds:.1f}x real time)"
    )
    return 0
