"""Head-only online fine-tuning offline (issue 15): the online trainer's own code, without a process or DDS.

Two episodes of the same seed are recorded (once, into ``--data``): as built, and with another tool
(``sim.shift.tool_offset_m``; the robot and every sensor do the same, only the ground-truth end
effector moves). A live stream is played from them: windows of the first until ``--switch-s``, of the
second after. Every window goes to the trainer's child-side code (:class:`core.serve.online._Child`:
cues, replay, holdout, the guard), which steps ``--steps-per-s`` per second of stream and offers its
weights every ``train.swap_period_s``. Each chunk of windows is scored, before it is trained on, with
the weights being served at that time (``on``) and with the shipped ones (``off``).
``recovered_share = (off - on) / (off - clean)`` over the last third of the stream after the switch
(``clean``: the shipped model's error in the 15 s before the switch); with ``--switch-s`` beyond the
episode there is no shift and ``on`` should equal ``off``. Sensor health is not modelled here (the
live node multiplies λ by it); bench/bench_live.py measures the whole node.

    .venv/bin/python bench/bench_online_head.py                       # the shift, 30 s in (~2 min)
    .venv/bin/python bench/bench_online_head.py --switch-s 1000       # no shift

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from structalign_ros.core.config import ShiftConfig, StructAlignConfig
from structalign_ros.core.data.batch import to_batch
from structalign_ros.core.data.dataset import iter_windows
from structalign_ros.core.learn.train import load_checkpoint
from structalign_ros.core.serve import online
from structalign_ros.core.sim.record import record_episode

MODEL = Path(__file__).resolve().parents[1] / "models" / "sim_default.pt"


class _Discard:
    def send(self, item: object) -> None:
        pass


def episode(folder: Path, offset: float, seed: int, seconds: float) -> Path:
    path = folder / f"seed{seed}_offset{offset:g}_{seconds:g}s"
    if not path.exists():
        config = StructAlignConfig()
        config.sim.shift = ShiftConfig(tool_offset_m=offset)
        record_episode(path, config, seed, seconds)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="/tmp/bench_online_head", help="where the two episodes are kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--offset", type=float, default=0.02, help="sim.shift.tool_offset_m")
    parser.add_argument("--switch-s", type=float, default=30.0)
    parser.add_argument("--steps-per-s", type=float, default=20.0, help="live: ~21 on this machine, loaded")
    parser.add_argument("--set", nargs="*", default=[], help="train.KEY=VALUE over the defaults")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(MODEL).build_model().eval()
    config = StructAlignConfig()
    for item in args.set:
        key, _, value = item.partition("=")
        field = key.removeprefix("train.")
        setattr(config.train, field, type(getattr(config.train, field))(value))
    config.train.__post_init__()

    def chunks(path: Path) -> list[tuple[float, object, object]]:
        rows = list(iter_windows([path], config))
        out = []
        for a in range(0, len(rows), 64):
            part = rows[a : a + 64]
            batch = to_batch([w for w, _ in part], model.specs, [p for _, p in part])
            out.append((part[0][0].stamp_ns * 1e-9, batch, online.expert_cues(model, batch)))
        return out

    clean = chunks(episode(folder, 0.0, args.seed, args.seconds))
    shifted = chunks(episode(folder, args.offset, args.seed, args.seconds))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    child = online._Child(model.specs, model.cfg, state, 0, config, _Discard())
    served = load_checkpoint(MODEL).build_model().eval()
    t0 = clean[0][0]
    log, last_t, next_offer, steps, verdicts = [], 0.0, config.train.swap_period_s, 0, []
    started = time.perf_counter()
    for (t, b_clean, c_clean), (_, b_shift, c_shift) in zip(clean, shifted, strict=False):
        t -= t0
        batch, cues = (b_shift, c_shift) if t >= args.switch_s else (b_clean, c_clean)
        if cues is not None and len(cues):
            served.load_state_dict(child.serving[0])
            on, off = online.evaluate_head(served, [cues]), online.evaluate_head(model, [cues])
            log.append((t, on["pose_pos_mm"], off["pose_pos_mm"], on["pose_rot_deg"], off["pose_rot_deg"]))
        child.pending.append(batch)
        child.absorb()
        budget, last_t = int((t - last_t) * args.steps_per_s), t
        if len(child.buffer) >= config.train.min_replay:
            for _ in range(budget):
                child.step()
                steps += 1
        if t >= next_offer:
            child.offer()
            next_offer = t + config.train.swap_period_s
            verdicts.append(f"t={t:6.1f} s  {child.progress.verdict}")
    print("\n".join(verdicts))
    a = np.array(log)
    before = min(args.switch_s, a[:, 0].max())
    clean_mm = a[(a[:, 0] < before) & (a[:, 0] >= before - 15.0), 2].mean()
    end = a[:, 0].max()
    last = a[:, 0] >= end - (end - min(args.switch_s, 30.0)) / 3
    on_mm, off_mm = a[last, 1].mean(), a[last, 2].mean()
    shifted_run = bool(args.switch_s < end)
    share = (off_mm - on_mm) / (off_mm - clean_mm) if shifted_run else None
    print(
        json.dumps(
            {
                "shift": shifted_run,
                "clean_mm": round(float(clean_mm), 3),
                "on_mm": round(float(on_mm), 3),
                "off_mm": round(float(off_mm), 3),
                "recovered_share": None if share is None else round(float(share), 3),
                "rot_on_deg": round(float(a[last, 3].mean()), 3),
                "rot_off_deg": round(float(a[last, 4].mean()), 3),
                "accepted": child.progress.accepted,
                "rejected": child.progress.rejected,
                "steps": steps,
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
