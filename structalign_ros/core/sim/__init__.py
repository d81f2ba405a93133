"""The simulated robot: MuJoCo workcell (:mod:`.scene`), scripted task (:mod:`.controller`), sensor
noise (:mod:`.noise`), stepping and sampling (:mod:`.robot`), recording to rosbag2 (:mod:`.record`).

MuJoCo picks its OpenGL backend when it is first imported, from ``MUJOCO_GL``. Robots and CI machines
have no display, so unless the user chose a backend this picks headless EGL where libEGL is
installed and the OSMesa software renderer otherwise (``make setup`` installs ``libosmesa6`` on
machines without libEGL). A process that imports ``mujoco`` before this package must set
``MUJOCO_GL`` itself.
"""

import ctypes.util
import os

if "MUJOCO_GL" not in os.environ:
    os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"
