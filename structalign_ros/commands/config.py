"""``structalign config``: print the default parameter file, or validate one; ``--set`` on top."""

from __future__ import annotations

import argparse
import sys

from structalign_ros.commands.options import add_set_argument
from structalign_ros.core.config import ConfigError, StructAlignConfig
from structalign_ros.core.config_io import apply_assignments, load_yaml, to_ros_yaml


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", metavar="FILE", help="validate FILE and print the resolved tree")
    parser.add_argument("--node", default=None, help="node name whose ros__parameters to read")
    add_set_argument(parser)


def run(args: argparse.Namespace) -> int:
    try:
        config = apply_assignments(
            load_yaml(args.check, args.node) if args.check else StructAlignConfig(), args.set
        )
    except (ConfigError, OSError) as exc:
        print(f"structalign config: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(to_ros_yaml(config))
    return 0
