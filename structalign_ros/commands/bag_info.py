"""``structalign bag-info``: what a bag holds and what the window pipeline would make of it."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from structalign_ros.core.config import ConfigError, StructAlignConfig
from structalign_ros.core.config_io import load_yaml
from structalign_ros.core.data.bags import BagError, bag_info


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directories, replayed in order")
    parser.add_argument("--config", metavar="FILE", help="parameter file with the topic -> modality map")


def run(args: argparse.Namespace) -> int:
    from structalign_ros.core.data.dataset import ReplayReport, iter_windows

    try:
        config = load_yaml(args.config) if args.config else StructAlignConfig()
        infos = [bag_info(path) for path in args.bags]
        report = ReplayReport()
        for _ in iter_windows(args.bags, config, report):
            pass
    except (ConfigError, BagError, OSError) as exc:
        print(f"structalign bag-info: {exc}", file=sys.stderr)
        return 1
    modality_of = {m.topic: name for name, m in config.modalities.items() if m.enabled}
    modality_of[config.ground_truth_topic] = "(ground truth)"
    for path, info in zip(args.bags, infos, strict=True):
        seconds = info.duration_ns / 1e9
        print(f"{path}: {seconds:.2f} s")
        print(f"  {'topic':<32} {'type':<34} {'count':>7} {'rate Hz':>8}  modality")
        for topic, (msgtype, count) in sorted(info.topics.items()):
            rate = count / seconds if seconds > 0 else 0.0
            print(f"  {topic:<32} {msgtype:<34} {count:>7} {rate:>8.1f}  {modality_of.get(topic, '-')}")
    found = sorted(n for n in config.enabled_modalities if report.samples[n])
    missing = sorted(set(config.enabled_modalities) - set(found))
    print(f"modalities found: {', '.join(found) or 'none'}; missing: {', '.join(missing) or 'none'}")
    print(
        f"windows: {report.windows} ({report.complete_windows} with every modality, "
        f"{report.warmup_windows} before every stream started, those streams masked)"
    )
    masked = sum((s.masked for s in report.assembler), start=Counter())
    dropped = sum((s.dropped for s in report.assembler), start=Counter())
    for title, counter in (
        ("masked", masked),
        ("dropped", dropped),
        ("unconvertible", report.conversion_drops),
    ):
        for reason, n in counter.most_common():
            print(f"  {title}: {n} x {reason}")
    return 0
