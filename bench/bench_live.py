"""Live benchmark (issue 15): the simulator and the suite as the demo runs them, faults and a domain
shift set live on the simulator, over real DDS.

Each session starts the ``sim_demo`` graph as ``structalign demo`` does: the perception node in this
process (its pipeline readable), the simulated robot (``sim_node``) as a child process with the same
parameter file, and a monitor node subscribed to the node's pose and weights and to the ground truth
(:class:`structalign_ros.commands.demo.Monitor`). Changes are made while it runs by setting the
simulator's live parameters (``sim.fault.*``, ``sim.shift.*``) over its ``set_parameters`` service; the
moment of a change is the newest ground-truth stamp when the service answered.

(a) faults: one session with fine-tuning off; after ``--warmup`` clean seconds, each fault of
    ``--faults`` (``MODALITY_KIND:FAULT``, or ``all``: every fault on every modality, as bench_health)
    is switched on for ``--fault-s`` seconds, then off for ``--recover-s``. Per fault:
    ``fall_s`` (from the fault's start until the faulted modality's published weight is first at or
    below 50 % of its clean value, the mean of the 5 s before the fault; null: never), ``recover_s``
    (from the fault's end until that weight is back above 50 % for good within the recovery time;
    null: it never fell, or never came back), ``ee_ratio`` (mean EE position error during the fault
    over the 5 s before it).
(b) shift: two sessions, fine-tuning on and off, the same simulator seed; ``--warmup`` clean seconds,
    then ``--shift`` (``FIELD=VALUE`` of ``sim.shift``; default ``tool_offset_m=0.02``, another tool
    whose centre point is 2 cm further out, so the ground truth moves and the sensors hardly change)
    for ``--shift-s`` seconds (default 300: the target is for 5 minutes). ``clean_mm``: the EE error
    before the shift (fine-tuning off); ``on_mm``/``off_mm``: the mean over the last third of the
    shifted time; ``recovered_share = (off_mm - on_mm) / (off_mm - clean_mm)``; per arm also the
    trainer's steps/s (steps of the session over its wall time, start-up included), the guard's
    accepted/rejected offers, the node's dropped windows and the EE error per 30 s from the shift.
(c) soak: two sessions, fine-tuning on and off, ``--minutes`` each without faults or shift:
    ``ee_ratio_on_off`` (mean EE error on over off), ``dropped`` (windows the node dropped, fine-tuning
    on), ``rss_growth`` (resident memory at the end over its value at 2 minutes, null for runs of 2
    minutes or less, of this process and the online trainer's child process together; this process
    also holds the monitor, whose records (~64 bytes a window) are subtracted). The table adds each
    process's growth; ``soak_*/memory.json`` has the memory every 10 simulated seconds.

Prints a table per part and, last, one JSON line
``{"faults": {MODALITY: {FAULT: {"fall_s", "recover_s", "ee_ratio"}}}, "shift": {"recovered_share",
"on_mm", "off_mm", "clean_mm", "steps_per_s", "accepted", "rejected"},
"soak": {"minutes", "ee_ratio_on_off", "dropped", "rss_growth"}}``.
Targets: fall ≤ 5 s, recovery ≤ 10 s, EE ratio ≤ 1.5; shift recovered share ≥ 0.5 within 5 minutes;
soak (30 minutes) EE within 5 % of fine-tuning off, 0 dropped, RSS growth ≤ 5 %.

    tools/netns-run .venv/bin/python bench/bench_live.py [--parts faults,shift,soak]  # ~18 min
    tools/netns-run .venv/bin/python bench/bench_live.py --faults all --shift-s 300 --minutes 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from structalign_ros.core.config import FAULT_KINDS, FRAME_KINDS, MODALITY_KINDS, StructAlignConfig
from structalign_ros.core.config_io import save_yaml

SERIES_FAULTS = ("noise", "stuck", "bias", "zero", "delay")
FRAME_FAULTS = ("blackout", "occlude")
DEFAULT_FAULTS = "image:blackout,joints:zero,wrench:stuck"


class Session:
    """A running simulator + suite; :meth:`set_sim` changes the simulator's live parameters."""

    def __init__(self, node: Any, monitor: Any, client: Any) -> None:
        self.node, self.monitor, self._client = node, monitor, client

    def now_s(self) -> float:
        """The newest ground-truth stamp (simulated time), in seconds."""
        return self.monitor.now_ns() * 1e-9

    def set_sim(self, **values: Any) -> float:
        """Set ``sim.*`` parameters (``fault__kind="stuck"`` for ``sim.fault.kind``); returns the stamp
        (s) at which they were in force."""
        from rclpy.parameter import Parameter

        params = [Parameter(f"sim.{k.replace('__', '.')}", value=v) for k, v in values.items()]
        future = self._client.set_parameters(params)
        deadline = time.monotonic() + 30.0
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not answer set_parameters within 30 s")
            time.sleep(0.01)
        failed = [r.reason for r in future.result().results if not r.successful]
        if failed:
            raise RuntimeError(f"the simulator refused {values}: {failed}")
        return self.now_s()

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass."""
        end = self.now_s() + seconds
        while self.now_s() < end:
            time.sleep(0.05)


@contextmanager
def session(config: StructAlignConfig, folder: Path) -> Iterator[Session]:
    """The ``sim_demo`` graph running on ``config`` (written to ``folder``), as ``structalign demo``."""
    import rclpy
    from rclpy.parameter_client import AsyncParameterClient

    from structalign_ros.commands.demo import demo_graph

    folder.mkdir(parents=True, exist_ok=True)
    params = folder / "params.yaml"
    save_yaml(config, params)
    rclpy.init()
    try:
        with demo_graph(config, params, folder / "sim.log", []) as demo:
            client = AsyncParameterClient(demo.probe, demo.simulator)
            if not client.wait_for_services(timeout_sec=60.0):
                raise RuntimeError("the simulator's parameter services did not come up in 60 s")
            live = Session(demo.node, demo.monitor, client)
            deadline = time.monotonic() + 60.0
            while live.now_s() == 0.0:
                if time.monotonic() > deadline:
                    raise RuntimeError("no ground truth from the simulator in 60 s")
                time.sleep(0.05)
            yield live
    finally:
        rclpy.try_shutdown()


def weights_of(monitor: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(stamp s, weight) of modality ``name`` in every published ``modality_weights``."""
    names, _, stamps, weights = monitor.weight_series()
    if not len(stamps) or name not in names:
        return np.zeros(0), np.zeros(0)
    return stamps * 1e-9, weights[:, names.index(name)]


def mean_between(t: np.ndarray, v: np.ndarray, a: float, b: float) -> float | None:
    inside = (t >= a) & (t < b)
    return float(v[inside].mean()) if inside.any() else None


def score_fault(monitor: Any, name: str, on: float, off: float, end: float) -> dict[str, float | None]:
    """fall_s, recover_s and ee_ratio of a fault on ``name`` from ``on`` to ``off`` (stamps, s)."""
    t, w = weights_of(monitor, name)
    clean = mean_between(t, w, on - 5.0, on)
    errors = monitor.errors()
    before = mean_between(errors[:, 0], errors[:, 1], on - 5.0, on)
    during = mean_between(errors[:, 0], errors[:, 1], on, off)
    out: dict[str, float | None] = {"fall_s": None, "recover_s": None, "ee_ratio": None}
    if before and during is not None:
        out["ee_ratio"] = round(during / before, 2)
    if clean is None:
        return out
    fell = (t >= on) & (t < off) & (w <= 0.5 * clean)
    if not fell.any():
        return out
    out["fall_s"] = round(float(t[fell][0] - on), 2)
    after = (t >= off) & (t < end)
    if not after.any() or w[after][-1] <= 0.5 * clean:
        return out  # not back by the end of the recovery time
    low = after & (w <= 0.5 * clean)
    # back for good: the first sample after the last one at or under half its clean weight
    last_low = t[low][-1] if low.any() else -np.inf
    out["recover_s"] = round(float(max(t[after & (t > last_low)][0] - off, 0.0)), 2)
    return out


def fault_list(spec: str) -> list[tuple[str, str]]:
    """``MODALITY_KIND:FAULT,...`` or ``all`` -> [(modality kind, fault)]."""
    if spec == "all":
        return [
            (kind, fault)
            for kind in MODALITY_KINDS
            for fault in SERIES_FAULTS + (FRAME_FAULTS if kind in FRAME_KINDS else ())
        ]
    out = []
    for item in spec.split(","):
        kind, _, fault = item.partition(":")
        if kind not in MODALITY_KINDS or fault not in FAULT_KINDS:
            raise SystemExit(f"bench_live: unknown fault {item!r} (modality kinds {MODALITY_KINDS})")
        out.append((kind, fault))
    return out


def faults_part(args: argparse.Namespace, folder: Path, say: Callable[..., None]) -> dict[str, Any]:
    config = StructAlignConfig()
    config.node.finetune = False
    names = {m.kind: n for n, m in config.modalities.items() if m.enabled}
    results: dict[str, dict[str, Any]] = {}
    with session(config, folder / "faults") as live:
        live.wait(args.warmup)
        for kind, fault in fault_list(args.faults):
            on = live.set_sim(fault__modality=kind, fault__kind=fault, fault__start_s=0.0, fault__stop_s=0.0)
            live.wait(args.fault_s)
            off = live.set_sim(fault__kind="none")
            live.wait(args.recover_s)
            row = score_fault(live.monitor, names[kind], on, off, live.now_s())
            results.setdefault(names[kind], {})[fault] = row
            say(
                f"  {names[kind]:<8} {fault:<9} fall {row['fall_s']} s, recover {row['recover_s']} s, "
                f"EE ratio {row['ee_ratio']}"
            )
    return results


def shift_run(args: argparse.Namespace, folder: Path, finetune: bool) -> dict[str, Any]:
    config = StructAlignConfig()
    config.node.finetune = finetune
    field, _, value = args.shift.partition("=")
    with session(config, folder / f"shift_{'on' if finetune else 'off'}") as live:
        began = time.monotonic()
        live.wait(args.warmup)
        start = live.set_sim(**{f"shift__{field}": float(value)})
        trace = []  # once a simulated second: the guard's counters and verdict, the sensor-health trust
        while live.now_s() < start + args.shift_s:
            live.wait(1.0)
            report = live.node.pipeline.report()
            trust = report["health"].get("trust", {})
            trace.append(
                {
                    "t": round(live.now_s() - start, 1),
                    "version": live.node.pipeline.model_version,
                    "accepted": report["finetune"]["accepted"],
                    "rejected": report["finetune"]["rejected"],
                    "verdict": report["finetune"]["verdict"],
                    "trust": {k: round(float(v), 3) for k, v in trust.items()},
                }
            )
        end = live.now_s()
        wall_s = time.monotonic() - began
        errors = live.monitor.errors()
        pipeline = live.node.pipeline
        report = pipeline.report()
        tuning = report["finetune"]
    t, e = errors[:, 0], errors[:, 1]
    clean, shifted = mean_between(t, e, start - 10.0, start), mean_between(t, e, end - args.shift_s / 3, end)
    steps = tuning["steps"] - pipeline.checkpoint_step  # this run's, not the checkpoint's
    curve = [mean_between(t, e, a, a + 30.0) for a in np.arange(start, end - 1e-9, 30.0)]
    return {
        "clean_mm": None if clean is None else round(clean, 3),
        "shifted_mm": None if shifted is None else round(shifted, 3),
        "steps": steps,
        "steps_per_s": round(steps / wall_s, 2),  # over the whole session, start-up included
        "accepted": tuning["accepted"],
        "rejected": tuning["rejected"],
        "verdict": tuning["verdict"],
        "dropped": report["windows_dropped"],
        "curve_mm": [None if c is None else round(c, 2) for c in curve],  # 30 s bins from the shift
        "trace": trace,
    }


def soak_run(args: argparse.Namespace, folder: Path, finetune: bool) -> dict[str, Any]:
    from structalign_ros.ros.diagnostics import resident_mb

    config = StructAlignConfig()
    config.node.finetune = finetune
    run = folder / f"soak_{'on' if finetune else 'off'}"
    with session(config, run) as live:

        def memory() -> dict[str, float]:  # MB: the node (less the monitor's records), the trainer
            trainer = live.node.pipeline.trainer
            pid = trainer.pid if trainer is not None else None
            monitor = live.monitor.nbytes / 2**20
            return {
                "node": resident_mb() - monitor,
                "trainer": resident_mb(pid) if pid is not None else 0.0,
                "monitor": monitor,
            }

        start = live.now_s()
        trace = []  # every 10 simulated seconds: memory and the guard's counters
        while (t := live.now_s() - start) < args.minutes * 60.0:
            live.wait(10.0)
            tuning = live.node.pipeline.report()["finetune"]
            trace.append(
                {"t": round(t, 1), **memory(), "accepted": tuning["accepted"], "replay": tuning["replay"]}
            )
        errors = live.monitor.errors()
        report = live.node.pipeline.report()
    (run / "memory.json").write_text(json.dumps(trace))
    after = [row for row in trace if row["t"] >= 120.0]
    growth = {}
    if after:
        for part in ("node", "trainer"):
            first, last = after[0][part], trace[-1][part]
            growth[part] = round(last / first - 1.0, 4) if first else None
        total = [row["node"] + row["trainer"] for row in (after[0], trace[-1])]
        growth["total"] = round(total[1] / total[0] - 1.0, 4)
    t, e = errors[:, 0], errors[:, 1]
    bins = [mean_between(t, e, a, a + 300.0) for a in np.arange(t.min(), t.max(), 300.0)] if len(t) else []
    return {
        "ee_mm": round(float(e.mean()), 3) if len(e) else None,
        "curve_mm": [None if b is None else round(b, 3) for b in bins],  # per 5 minutes
        "dropped": report["windows_dropped"],
        "rss_growth": growth.get("total"),
        "rss_growth_parts": growth,
        "monitor_mb": round(trace[-1]["monitor"], 1) if trace else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="faults,shift,soak")
    parser.add_argument(
        "--faults", default=DEFAULT_FAULTS, help=f"default {DEFAULT_FAULTS}; 'all': every one"
    )
    parser.add_argument("--warmup", type=float, default=20.0, help="clean seconds first (health warm-up)")
    parser.add_argument("--fault-s", type=float, default=8.0)
    parser.add_argument("--recover-s", type=float, default=12.0)
    parser.add_argument(
        "--shift", default="tool_offset_m=0.02", help="FIELD=VALUE of sim.shift (default: another tool)"
    )
    parser.add_argument("--shift-s", type=float, default=300.0, help="the target is for 5 minutes")
    parser.add_argument("--shift-on-only", action="store_true", help="the shift with fine-tuning on alone")
    parser.add_argument("--minutes", type=float, default=1.0, help="soak length per arm")
    parser.add_argument(
        "--out", default=None, help="folder for the simulator logs (default: a temporary one)"
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
    folder = Path(args.out or tempfile.mkdtemp(prefix="bench_live-"))
    say = print
    out: dict[str, Any] = {}
    if "faults" in parts:
        say(f"(a) faults, {args.fault_s:g} s each after {args.warmup:g} s clean, fine-tuning off")
        out["faults"] = faults_part(args, folder, say)
    if "shift" in parts:
        if args.shift_on_only:  # a look at the adaptation alone (no recovered share without the off arm)
            on = shift_run(args, folder, True)
            (folder / "shift_trace.json").write_text(json.dumps({"on": on["trace"]}))
            print(json.dumps({k: v for k, v in on.items() if k != "trace"}))
            return
        on, off = shift_run(args, folder, True), shift_run(args, folder, False)
        (folder / "shift_trace.json").write_text(json.dumps({"on": on["trace"], "off": off["trace"]}))
        clean, on_mm, off_mm = off["clean_mm"], on["shifted_mm"], off["shifted_mm"]
        share = None
        if None not in (clean, on_mm, off_mm) and off_mm > clean:
            share = round((off_mm - on_mm) / (off_mm - clean), 3)
        out["shift"] = {
            "recovered_share": share,
            "on_mm": on_mm,
            "off_mm": off_mm,
            "clean_mm": clean,
            "steps_per_s": on["steps_per_s"],
            "accepted": on["accepted"],
            "rejected": on["rejected"],
        }
        say(f"(b) shift {args.shift} for {args.shift_s:g} s (EE mm, mean of the last third)")
        say(
            f"  {'':<16}{'before':>10}{'shifted':>10}{'steps':>8}{'steps/s':>9}{'accepted':>10}"
            f"{'rejected':>10}{'dropped':>9}"
        )
        for label, r in (("fine-tuning on", on), ("fine-tuning off", off)):
            say(
                f"  {label:<16}{r['clean_mm'] or float('nan'):>10.2f}{r['shifted_mm'] or float('nan'):>10.2f}"
                f"{r['steps']:>8}{r['steps_per_s']:>9}{r['accepted']:>10}{r['rejected']:>10}{r['dropped']:>9}"
            )
            say(f"  {'':<16}EE mm per 30 s from the shift: {r['curve_mm']}")
        say(f"  last verdict (on): {on['verdict']}")
        say(f"  recovered share {share}")
    if "soak" in parts:
        on, off = soak_run(args, folder, True), soak_run(args, folder, False)
        ratio = round(on["ee_mm"] / off["ee_mm"], 3) if on["ee_mm"] and off["ee_mm"] else None
        out["soak"] = {
            "minutes": args.minutes,
            "ee_ratio_on_off": ratio,
            "dropped": on["dropped"],
            "rss_growth": on["rss_growth"],
        }
        say(
            f"(c) soak {args.minutes:g} min per arm: EE on {on['ee_mm']} mm, off {off['ee_mm']} mm "
            f"(ratio {ratio}); dropped on {on['dropped']}, off {off['dropped']}; "
            f"EE per 5 min on {on['curve_mm']}, off {off['curve_mm']}; "
            f"RSS growth {on['rss_growth']} (node {on['rss_growth_parts'].get('node')}, trainer "
            f"{on['rss_growth_parts'].get('trainer')}; off: node {off['rss_growth_parts'].get('node')}); "
            f"the monitor's records at the end: {on['monitor_mb']} MB (left out); memory every 10 s in "
            f"{folder}/soak_*/memory.json"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
