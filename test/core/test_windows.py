"""WindowAssembler properties on synthetic multi-rate streams whose values encode their own stamps."""

import numpy as np
import pytest

from structalign_ros.core.config import ConfigError, StructAlignConfig, WindowConfig
from structalign_ros.core.data.windows import WindowAssembler

NS = 1_000_000_000
SERIES = ("wrench", "imu", "tactile", "joints")
SHAPES = {"rgb": (6, 6, 3), "depth": (6, 6), "wrench": (6,), "imu": (6,), "tactile": (4, 4), "joints": (3, 4)}


def config(**window):
    cfg = StructAlignConfig()
    cfg.modalities["joints"].rate_hz = 500.0
    for name, value in window.items():
        setattr(cfg.window, name, value)
    return cfg


def value(name: str, stamp: int) -> np.ndarray:
    """A sample whose every element is its stamp in seconds (frames: a stamp-derived byte)."""
    if name == "rgb":
        return np.full(SHAPES[name], stamp // 1_000_000 % 251, dtype=np.uint8)
    return np.full(SHAPES[name], stamp / NS, dtype=np.float32)


def stream_stamps(cfg, seconds: float, start_ns: int = 0) -> dict[str, np.ndarray]:
    out = {}
    for name, m in cfg.modalities.items():
        period = int(NS / m.rate_hz)
        out[name] = start_ns + np.arange(int(seconds * m.rate_hz)) * period
    return out


def merged(stamps: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    events = [(int(t), name) for name, ts in stamps.items() for t in ts]
    events.sort()
    return [(name, t) for t, name in events]


def run(asm, events):
    windows = []
    for name, t in events:
        windows += asm.push(name, t, value(name, t))
    return windows + asm.flush()


def test_every_in_span_sample_used_once_and_bins_are_exact_means():
    cfg = config()
    stamps = stream_stamps(cfg, 1.0)
    asm = WindowAssembler(cfg.modalities, cfg.window)
    windows = run(asm, merged(stamps))
    span = int(cfg.window.span_s * NS)
    full = [w for w in windows if w.stamp_ns >= span]
    assert len(full) >= 25
    for w in full:
        assert all(w.mask.values()), (w.stamp_ns, w.mask)
        lo = w.stamp_ns - span
        for name in SERIES:
            ts = stamps[name]
            in_span = ts[(ts >= lo) & (ts <= w.stamp_ns)]
            counts = w.counts[name]
            n_bins = cfg.modalities[name].samples
            assert counts.sum() == in_span.size, name
            # Recompute every bin's mean by brute force from the raw stamps.
            bins = np.minimum((in_span - lo) * n_bins // span, n_bins - 1)
            for b in range(n_bins):
                members = in_span[bins == b]
                assert counts[b] == members.size
                if members.size:
                    np.testing.assert_allclose(w.data[name][b], members.mean() / NS, rtol=1e-6)
        assert w.data["depth"].shape == (1, 6, 6)
        assert w.data["rgb"].dtype == np.uint8 and w.data["rgb"].shape == (1, 6, 6, 3)
        # The depth frame is the latest one at or before the pivot.
        depth_t = stamps["depth"][stamps["depth"] <= w.stamp_ns].max()
        np.testing.assert_allclose(w.data["depth"][0], depth_t / NS)


def test_slow_stream_empty_bins_are_interpolated_not_extrapolated():
    cfg = config()
    cfg.modalities["tactile"].samples = 16  # 100 Hz into 16 bins of 6.25 ms: some bins stay empty
    stamps = stream_stamps(cfg, 0.6)
    windows = run(WindowAssembler(cfg.modalities, cfg.window), merged(stamps))
    w = windows[-3]
    tac = w.data["tactile"][:, 0, 0]
    counts = w.counts["tactile"]
    assert (counts == 0).any() and w.mask["tactile"]
    assert np.all(np.diff(tac) >= -1e-7), "a ramp must stay monotonic through interpolated bins"
    filled = tac[counts > 0]
    assert tac.min() >= filled.min() - 1e-7 and tac.max() <= filled.max() + 1e-7


def test_silent_sensor_is_masked_and_recovers():
    cfg = config()
    stamps = stream_stamps(cfg, 2.0)
    imu = stamps["imu"]
    stamps["imu"] = imu[(imu < 0.5 * NS) | (imu >= 1.2 * NS)]
    asm = WindowAssembler(cfg.modalities, cfg.window)
    windows = run(asm, merged(stamps))
    by_t = {w.stamp_ns / NS: w for w in windows}
    silent = [w for t, w in by_t.items() if 0.6 <= t <= 1.15]
    assert silent and not any(w.mask["imu"] for w in silent)
    assert all(not w.data["imu"].any() for w in silent), "masked data must be zeros, not invented"
    assert all(w.mask["wrench"] for w in silent)
    back = [w for t, w in by_t.items() if 1.35 <= t]
    assert back and all(w.mask["imu"] for w in back)
    imu_masks = sum(n for reason, n in asm.stats.masked.items() if reason.startswith("imu:"))
    assert imu_masks == sum(not w.mask["imu"] for w in windows)


def test_late_stream_is_masked_after_the_timeout():
    cfg = config(timeout_s=0.05)
    stamps = stream_stamps(cfg, 1.0)
    events = merged({k: v for k, v in stamps.items() if k != "joints"})
    # Joints arrive 0.2 s late: past the timeout, so their windows are cut without them.
    delayed = [("joints", int(t)) for t in stamps["joints"]]
    keyed = [(t, n) for n, t in events] + [(t + int(0.2 * NS), n) for n, t in delayed]
    keyed.sort()
    asm = WindowAssembler(cfg.modalities, cfg.window)
    windows = []
    for arrival, name in keyed:
        t = arrival - int(0.2 * NS) if name == "joints" else arrival
        windows += asm.push(name, t, value(name, t))
    mid = [w for w in windows if 0.2 * NS < w.stamp_ns < 0.7 * NS]
    assert mid and not any(w.mask["joints"] for w in mid) and all(w.mask["wrench"] for w in mid)
    assert asm.stats.masked["joints: not caught up by timeout"] >= len(mid)


def test_camera_latency_within_timeout_still_gives_full_windows():
    cfg = config(timeout_s=0.1)
    stamps = stream_stamps(cfg, 1.0)
    lag = int(0.04 * NS)
    keyed = sorted((t + (lag if n == "rgb" else 0), n, t) for n, t in merged(stamps))
    asm = WindowAssembler(cfg.modalities, cfg.window)
    windows = []
    for _, name, t in keyed:
        windows += asm.push(name, t, value(name, t))
    assert len([w for w in windows if all(w.mask.values())]) >= 25


def test_duplicates_are_dropped_and_change_nothing():
    cfg = config()
    events = merged(stream_stamps(cfg, 0.5))
    clean = run(WindowAssembler(cfg.modalities, cfg.window), events)
    doubled = [e for e in events for _ in range(2 if e[0] in ("wrench", "rgb") else 1)]
    asm = WindowAssembler(cfg.modalities, cfg.window)
    dup = run(asm, doubled)
    assert [w.stamp_ns for w in dup] == [w.stamp_ns for w in clean]
    for a, b in zip(clean, dup, strict=True):
        np.testing.assert_array_equal(a.data["wrench"], b.data["wrench"])
    n_wrench = sum(1 for n, _ in events if n == "wrench")
    assert asm.stats.dropped["wrench: duplicate stamp"] == n_wrench
    assert asm.stats.dropped["rgb: duplicate stamp"] + asm.stats.dropped[
        "rgb: frame older than the last window"
    ] == sum(1 for n, _ in events if n == "rgb")


def test_out_of_order_within_tolerance_is_sorted_in_and_older_is_dropped():
    cfg = config(reorder_s=0.01)
    events = merged(stream_stamps(cfg, 0.5))
    clean = run(WindowAssembler(cfg.modalities, cfg.window), events)
    # Swap neighbouring F/T samples (1 ms apart): within tolerance, identical windows.
    swapped = list(events)
    idx = [i for i, (n, _) in enumerate(swapped) if n == "wrench"]
    for a, b in zip(idx[::2], idx[1::2], strict=False):
        swapped[a], swapped[b] = swapped[b], swapped[a]
    asm = WindowAssembler(cfg.modalities, cfg.window)
    out = run(asm, swapped)
    assert [w.stamp_ns for w in out] == [w.stamp_ns for w in clean]
    for a, b in zip(clean, out, strict=True):
        np.testing.assert_array_equal(a.data["wrench"], b.data["wrench"])
        np.testing.assert_array_equal(a.counts["wrench"], b.counts["wrench"])
    # A sample 50 ms behind its stream is beyond the tolerance.
    asm.push("wrench", asm.streams["wrench"].last - int(0.05 * NS), np.zeros(6, np.float32))
    assert asm.stats.dropped["wrench: older than reorder_s"] == 1


def test_clock_jump_backwards_resets_and_windows_continue():
    cfg = config()
    events = merged(stream_stamps(cfg, 1.5, start_ns=5 * NS))
    asm = WindowAssembler(cfg.modalities, cfg.window)
    first = run(asm, events)
    again = []
    for name, t in events:  # the bag loops: the same stamps again
        again += asm.push(name, t, value(name, t))
    again += asm.flush()
    assert asm.stats.resets == 1
    assert [w.stamp_ns for w in again] == [w.stamp_ns for w in first]
    assert sum(all(w.mask.values()) for w in again) == sum(all(w.mask.values()) for w in first)


def test_long_forward_gap_masks_then_recovers_without_reset():
    cfg = config()
    a = merged(stream_stamps(cfg, 0.5))
    b = merged(stream_stamps(cfg, 0.5, start_ns=10 * NS))
    asm = WindowAssembler(cfg.modalities, cfg.window)
    windows = run(asm, a + b)
    assert asm.stats.resets == 0
    late = [w for w in windows if w.stamp_ns > 10.15 * NS]
    assert late and all(all(w.mask.values()) for w in late)


def test_memory_stays_bounded_over_a_long_run():
    cfg = config()
    asm = WindowAssembler(cfg.modalities, cfg.window)
    capacity = {n: s.capacity for n, s in asm.streams.items()}
    n_windows = len(run(asm, merged(stream_stamps(cfg, 20.0))))
    assert n_windows == 600
    assert {n: s.capacity for n, s in asm.streams.items()} == capacity
    assert not asm.stats.dropped


def test_faster_than_configured_stream_grows_its_buffer_and_loses_nothing():
    cfg = config()
    cfg.modalities["imu"].rate_hz = 20.0  # configured 10x too slow for the 200 Hz it gets
    stamps = stream_stamps(config(), 1.0)
    asm = WindowAssembler(cfg.modalities, cfg.window)
    capacity = asm.streams["imu"].capacity
    windows = run(asm, merged(stamps))
    assert asm.streams["imu"].capacity > capacity
    w = windows[-2]
    in_span = ((stamps["imu"] >= w.stamp_ns - 0.1 * NS) & (stamps["imu"] <= w.stamp_ns)).sum()
    assert w.counts["imu"].sum() == in_span and not asm.stats.dropped


def test_wrong_shape_and_unknown_modality_are_counted():
    cfg = config()
    asm = WindowAssembler(cfg.modalities, cfg.window)
    asm.push("wrench", 1, np.zeros(6, np.float32))
    asm.push("wrench", 2, np.zeros(7, np.float32))
    asm.push("lidar", 3, np.zeros(7, np.float32))
    asm.push("rgb", 4, np.zeros((6, 6, 3), np.uint8))
    asm.push("rgb", 5, np.zeros((8, 8, 3), np.uint8))  # a camera that changed resolution
    assert asm.stats.dropped["wrench: shape (7,) != (6,)"] == 1
    assert asm.stats.dropped["rgb: shape (8, 8, 3) != (6, 6, 3)"] == 1 and asm.pending == 1
    assert asm.stats.dropped["lidar: not an enabled modality"] == 1


def test_pivot_must_be_an_enabled_camera():
    cfg = config()
    with pytest.raises(ConfigError, match="pivot"):
        WindowAssembler(cfg.modalities, WindowConfig(pivot="imu"))


def test_pending_frames_stay_bounded_when_a_stream_dies():
    cfg = config(timeout_s=0.1)
    stamps = stream_stamps(cfg, 3.0)
    stamps["imu"] = stamps["imu"][:10]  # the IMU dies after 50 ms
    asm = WindowAssembler(cfg.modalities, cfg.window)
    most = 0
    windows = []
    for name, t in merged(stamps):
        windows += asm.push(name, t, value(name, t))
        most = max(most, asm.pending)
    # The camera's own frames advance the clock, so a frame waits at most the timeout.
    assert most <= int(0.1 * 30) + 1
    assert len(windows) + len(asm.flush()) == len(stamps["rgb"])


def test_advance_emits_timed_out_windows_when_everything_goes_quiet():
    cfg = config(timeout_s=0.05)
    stamps = stream_stamps(cfg, 0.5)
    last = int(stamps["rgb"][-1])
    stamps["joints"] = stamps["joints"][stamps["joints"] < last]  # joints stop just before the frame
    asm = WindowAssembler(cfg.modalities, cfg.window)
    for name, t in merged(stamps):
        asm.push(name, t, value(name, t))
    assert asm.pending == 1
    assert asm.advance(last + int(0.01 * NS)) == [], "not yet timed out"
    out = asm.advance(last + int(0.06 * NS))
    assert [w.stamp_ns for w in out][-1] == last and asm.pending == 0
    # F/T ran past the last frame and contributed; the joints never got past t + reorder_s, so
    # they are masked, not guessed.
    assert out[-1].mask["wrench"] and out[-1].mask["depth"] and not out[-1].mask["joints"]
