"""The simulated robot: MuJoCo workcell (:mod:`.scene`), scripted task (:mod:`.controller`), sensor
noise (:mod:`.noise`), stepping and sampling (:mod:`.robot`), recording to rosbag2 (:mod:`.record`).

MuJoCo picks its OpenGL backend when it is first imported; robots and CI machines have no display,
so headless EGL is the default here (``MUJOCO_GL=osmesa`` selects the software fallback).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
