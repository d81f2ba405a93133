"""The modality weights as an RViz bar chart (``visualization_msgs/MarkerArray``).

One bar (a CUBE scaled to lambda) and one text label per modality, in a row along the frame's y axis,
standing on z = 0. Ids are fixed (bar ``2i``, label ``2i + 1``) so every window replaces the previous
chart in place; a short lifetime makes the chart vanish when the node stops publishing, and
:func:`delete_all` clears it at once on deactivation. Present modalities are blue, missing ones grey.
"""

from __future__ import annotations

from collections.abc import Sequence

from builtin_interfaces.msg import Duration
from visualization_msgs.msg import Marker, MarkerArray

from structalign_ros.ros.messages import time_msg

NAMESPACE = "structalign_weights"
BAR_WIDTH = 0.08  # m
BAR_SPACING = 0.12  # m between bar centres
FULL_HEIGHT = 0.5  # m of a bar at lambda = 1
TEXT_SIZE = 0.04  # m


def weight_markers(
    stamp_ns: int,
    frame: str,
    names: Sequence[str],
    weights: Sequence[float],
    present: Sequence[bool],
    lifetime_s: float,
) -> MarkerArray:
    """The bar chart of one window's weights, stamped with its pivot stamp."""
    lifetime = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    stamp = time_msg(stamp_ns)
    out = MarkerArray()
    for i, (name, w, on) in enumerate(zip(names, weights, present, strict=True)):
        y = (i - (len(names) - 1) / 2) * BAR_SPACING
        height = max(float(w) * FULL_HEIGHT, 1e-3)  # a zero-height cube does not render
        bar = Marker(ns=NAMESPACE, id=2 * i, type=Marker.CUBE, action=Marker.ADD, lifetime=lifetime)
        bar.header.stamp, bar.header.frame_id = stamp, frame
        bar.pose.position.y, bar.pose.position.z = y, height / 2
        bar.pose.orientation.w = 1.0
        bar.scale.x, bar.scale.y, bar.scale.z = BAR_WIDTH, BAR_WIDTH, height
        rgba = (0.2, 0.5, 0.9, 1.0) if on else (0.5, 0.5, 0.5, 0.6)
        bar.color.r, bar.color.g, bar.color.b, bar.color.a = rgba
        label = Marker(
            ns=NAMESPACE, id=2 * i + 1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, lifetime=lifetime
        )
        label.header.stamp, label.header.frame_id = stamp, frame
        label.pose.position.y, label.pose.position.z = y, height + 0.05
        label.pose.orientation.w = 1.0
        label.scale.z = TEXT_SIZE
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.text = f"{name} {float(w):.2f}" if on else f"{name} (missing)"
        out.markers.extend([bar, label])
    return out


def delete_all(frame: str, stamp_ns: int) -> MarkerArray:
    """One DELETEALL marker: clears every marker of the chart at once."""
    marker = Marker(ns=NAMESPACE, action=Marker.DELETEALL)
    marker.header.stamp, marker.header.frame_id = time_msg(stamp_ns), frame
    return MarkerArray(markers=[marker])
