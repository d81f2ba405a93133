"""core.serve.memory: freed megabyte blocks go back to the system, whatever was freed before them."""

from __future__ import annotations

import subprocess
import sys

# Megabyte blocks with small long-lived objects between them (as a swap's graph and state between
# buffers and caches), after one 4 MiB block was freed (which raises glibc's adaptive threshold);
# prints how many MB stay resident once the big blocks are freed.
HOLES = """
import ctypes, sys
from structalign_ros.core.serve.memory import return_large_blocks
if sys.argv[1] == "on":
    assert return_large_blocks()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

first = libc.malloc(4 << 20)
libc.memset(first, 1, 4 << 20)
libc.free(first)
before = rss_mb()
blocks, small = [], []
for _ in range(64):
    blocks.append(libc.malloc(1 << 20))
    libc.memset(blocks[-1], 1, 1 << 20)
    small.append(libc.malloc(4096))
for block in blocks:
    libc.free(block)
print(rss_mb() - before)
"""


def resident_after_freeing(setting: str) -> float:
    done = subprocess.run([sys.executable, "-c", HOLES, setting], capture_output=True, text=True, check=True)
    return float(done.stdout)


def test_freed_megabyte_blocks_leave_the_process() -> None:
    assert resident_after_freeing("off") > 48.0  # glibc's default keeps them (the soak's growth)
    assert resident_after_freeing("on") < 8.0
