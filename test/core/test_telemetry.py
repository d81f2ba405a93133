"""Counted events stay bounded however many distinct reason texts arrive; every converter reason has
a code of the fixed vocabulary."""

import numpy as np
import pytest

from structalign_ros.core.data.bags import image_msg, joint_state_msg, wrench_msg
from structalign_ros.core.data.convert import ConversionError, convert
from structalign_ros.core.serve.telemetry import CODES, NODE, OTHER, Events, reason_code


def _reason(kind, msg, joints=()):
    with pytest.raises(ConversionError) as caught:
        convert(kind, msg, joints)
    return str(caught.value)


def test_converter_reasons_have_their_codes():
    cases = {
        "non_finite": _reason("wrench", wrench_msg(1000, "ft", np.array([np.nan, 0, np.inf, 0, 0, 0]))),
        "zero_stamp": _reason("wrench", wrench_msg(0, "ft", np.zeros(6))),
        "bad_encoding": _reason("image", image_msg(1000, "cam", np.zeros((2, 2), np.uint16), "16UC1")),
        "joints_missing": _reason("joints", joint_state_msg(1000, ["b"], np.zeros((3, 1))), ["a"]),
        "joints_repeated": _reason("joints", joint_state_msg(1000, ["a", "a"], np.zeros((3, 2))), ["a"]),
    }
    for code, text in cases.items():
        assert reason_code(f"wrench: {text}") == ("wrench", code), text
    assert reason_code("internal error: InvalidHandle") == (NODE, "internal_error")
    assert reason_code("ground truth: something new") == ("ground truth", OTHER)
    assert set(CODES) >= {code for code in cases} | {OTHER}


def test_events_stay_bounded_and_keep_the_latest_text():
    events = Events(max_texts=8)
    for k in range(5000):
        events.add(f"rgb: data has {k} bytes, expected step*height = 96*32")
        events.add(f"joints: joint(s) ['j{k}'] missing from the message (it has ['x'])")
    assert events.by_code() == {("rgb", "bad_size"): 5000, ("joints", "joints_missing"): 5000}
    assert len(events.snapshot()) == 8 and events.total() == 10000
    assert events.latest == "joints: joint(s) ['j4999'] missing from the message (it has ['x'])"


def test_logging_is_per_code_at_powers_of_two():
    events = Events()
    logged = [k + 1 for k in range(100) if events.add(f"imu: imu has {k % 3 + 1} NaN/Inf value(s)")]
    assert logged == [1, 2, 4, 8, 16, 32, 64]
