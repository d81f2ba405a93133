"""Command-line options shared by the commands that take a configuration tree.

``--set NAME=VALUE`` is the command line's view of the tree, as ROS parameters are the node's: the
dotted names are the parameter names (``train.lr``, ``runtime.device``, ``modalities.rgb.topic``), and
the values are merged and validated by the same code (:func:`~structalign_ros.core.config_io.
apply_assignments`, the merge :mod:`structalign_ros.ros.params` uses), so a checkpoint records them.
"""

from __future__ import annotations

import argparse


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set NAME=VALUE``, repeatable, collected in ``args.set``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set one key of the configuration tree by its dotted name, over --config (repeatable), e.g. "
        "--set train.lr=0.0005 --set runtime.device=cuda; `structalign config` lists every key",
    )
