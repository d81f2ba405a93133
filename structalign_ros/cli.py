"""``structalign <command>``: the one console entry point.

Each command lives in its own module under :mod:`structalign_ros.commands` with two functions,
``configure(parser)`` and ``run(args) -> int``. Modules are imported only when their command runs, so
``structalign --help`` stays instant and a command never pays for another's heavy imports.

A :class:`~core.data.bags.BagError` (a bag unreadable, or with topics the configuration does
not read) or a :class:`~structalign_ros.core.config.ConfigError` (an unknown key or an invalid value in
``--config`` or ``--set``) ends any command with its message on stderr and exit code 1, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (one-line help, module under structalign_ros.commands)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("print the default configuration, or validate a configuration file", "config"),
    "sim": ("record a simulated robot episode as a rosbag2 (mcap or sqlite3)", "sim"),
    "bag-info": ("list a bag's topics, rates and modalities, and the windows it would yield", "bag_info"),
    "demo": ("the simulated robot feeding the whole suite, fine-tuning on; summary, JSON and plots", "demo"),
    "export": ("export a trained checkpoint to ONNX (dynamic batch) and check parity", "export"),
    "train": ("train offline from rosbags (checkpoints, resume, TensorBoard, torchrun DDP)", "train"),
    "eval": ("evaluate a model on rosbags: pose error, contact probe, retrieval, geometry", "eval"),
    "run": ("run a node graph (perception, or sim_demo with the simulated robot) in one process", "run"),
    "play": ("replay rosbag2 files onto ROS topics in real time", "play"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = argparse.ArgumentParser(
        prog="structalign",
        description="Multimodal robot perception with Gromov-Wasserstein structural alignment.",
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    known = top.parse_args(argv[:1])
    help_text, module_name = COMMANDS[known.command]
    module = importlib.import_module(f"structalign_ros.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"structalign {known.command}", description=help_text)
    module.configure(parser)
    args = parser.parse_args(argv[1:])
    # A bag that cannot be read or does not fit the configuration (a user's own bag) is an answer for
    # the user, not a traceback, whichever command and whichever stage of it met the bag.
    from structalign_ros.core.config import ConfigError
    from structalign_ros.core.data.bags import BagError

    try:
        return int(module.run(args) or 0)
    except (BagError, ConfigError) as exc:
        print(f"structalign {known.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
