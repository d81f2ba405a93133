"""The pipeline's report as ``diagnostic_msgs/DiagnosticArray`` (``/diagnostics``, about 1 Hz).

Four statuses per node, named ``<node>: windows``, ``<node>: fine-tuning``, ``<node>: sensor health``
and ``<node>: runtime``, so ``rqt_robot_monitor`` groups them. The windows status is ERROR while the
node is active but no window came out during the last period, WARN when windows were masked or messages
dropped during it, else OK; ``masked.<modality>`` and ``dropped.<modality>`` are there for every
modality from the first report on, zeros included. Bad inputs are counted by modality and a fixed
vocabulary of reason codes (``bad.<modality>.<code>``, :data:`~core.serve.telemetry.CODES`), with the
newest reason text in ``bad.latest``, so the status has the same keys however many distinct faults
arrive. The fine-tuning status is WARN when the online trainer failed, or has had windows to train on
but finished no step for ``node.stall_warn_s``. The sensor-health status is WARN, naming them, while
modalities have a trust under :data:`DISTRUSTED` (:mod:`~core.serve.health`), with each modality's trust
and the two signals behind it. Each message says why.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from structalign_ros.core.serve.health import DISTRUSTED
from structalign_ros.core.serve.telemetry import reason_code
from structalign_ros.ros.messages import time_msg

LATEST_CHARS = 200  # the newest bad-input reason is cut to this


def resident_mb(pid: int | None = None) -> float:
    """Resident memory of process ``pid`` (default: this one) in MiB, from Linux ``/proc``; elsewhere
    this process's peak RSS, and 0 for another process."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if pid is None else 0.0


def per_modality(reasons: dict[str, int]) -> Counter[str]:
    """``{"wrench: reason": n}`` -> ``{"wrench": total}``."""
    out: Counter[str] = Counter()
    for reason, n in reasons.items():
        out[reason.split(":", 1)[0]] += n
    return out


def _kv(values: dict[str, Any]) -> list[KeyValue]:
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    return [KeyValue(key=k, value=fmt(v)) for k, v in values.items()]


def diagnostic_array(
    stamp_ns: int,
    node: str,
    report: dict[str, Any],
    window_rate_hz: float,
    new_problems: int,
    active: bool,
    extra: dict[str, Any],
    bad: dict[tuple[str, str], int] | None = None,
    latest_bad: str = "",
) -> DiagnosticArray:
    """Build the array.

    Args:
        stamp_ns: the node's clock now (diagnostics describe the node, not one window).
        report: :meth:`~core.serve.perception.PerceptionPipeline.report`.
        window_rate_hz: windows per second over the last period.
        new_problems: masks, drops and counted events since the previous report.
        active: whether the node is in the active lifecycle state.
        extra: more runtime values (device, backend, memory).
        bad: bad-input counts per ``(source, code)`` (:meth:`~core.serve.telemetry.Events.by_code`);
            None classifies ``report["events"]`` instead.
        latest_bad: the newest bad-input reason in full (one value, ``bad.latest``).
    """
    if active and window_rate_hz == 0:
        level, message = DiagnosticStatus.ERROR, "no windows: is the camera publishing?"
    elif new_problems:
        level, message = DiagnosticStatus.WARN, f"{new_problems} masked/dropped/bad inputs in the last period"
    else:
        level, message = DiagnosticStatus.OK, "ok" if active else "inactive"
    values: dict[str, Any] = {
        "window_rate_hz": window_rate_hz,
        "windows": report["windows"],
        "outputs": report["outputs"],
        "pending": report["pending"],
        "clock_resets": report["resets"],
    }
    # every modality's counters from the first report on, zeros included: the key set does not grow
    # when a modality is first masked or dropped, so a monitor can watch it for unbounded growth
    for kind in ("masked", "dropped"):
        counts = per_modality(report[kind])
        for name in sorted(set(report["modalities"]) | set(counts)):
            values[f"{kind}.{name}"] = counts[name]
    if bad is None:
        bad = Counter()
        for reason, n in report["events"].items():
            bad[reason_code(reason)] += n
    # one key per source and code of a fixed vocabulary: a sensor sending ever new garbage (every size,
    # every joint name) adds counts, never keys
    for (source, code), n in sorted(bad.items()):
        values[f"bad.{source.replace(' ', '_')}.{code}"] = n
    if latest_bad:
        values["bad.latest"] = latest_bad[:LATEST_CHARS]
    for stage, pct in sorted(report["latency_ms"].items()):
        for q, ms in pct.items():
            values[f"latency_ms.{stage}.{q}"] = ms
    for key, value in report["pose_error"].items():
        if value is not None:
            values[f"ee_error.{key}"] = value
    windows = DiagnosticStatus(level=level, name=f"{node}: windows", message=message, values=_kv(values))
    ft = report["finetune"]
    problem = ft["error"] or ft["warning"]
    tuning = DiagnosticStatus(
        level=DiagnosticStatus.WARN if problem else DiagnosticStatus.OK,
        name=f"{node}: fine-tuning",
        message=problem or ("running" if ft["running"] else "off"),
        values=_kv({**ft, "model_version": report["model_version"]}),
    )
    health = report["health"]
    distrusted = [name for name, h in health.items() if h["trust"] < DISTRUSTED]
    sensors = DiagnosticStatus(
        level=DiagnosticStatus.WARN if distrusted else DiagnosticStatus.OK,
        name=f"{node}: sensor health",
        message=(f"distrusted: {', '.join(distrusted)}" if distrusted else "ok") if health else "off",
        values=_kv({f"{key}.{name}": v for name, h in health.items() for key, v in h.items()}),
    )
    runtime = DiagnosticStatus(
        level=DiagnosticStatus.OK,
        name=f"{node}: runtime",
        message=", ".join(report["providers"]),
        values=_kv({"memory_mb": resident_mb(), **extra}),
    )
    out = DiagnosticArray(status=[windows, tuning, sensors, runtime])
    out.header.stamp = time_msg(stamp_ns)
    return out
