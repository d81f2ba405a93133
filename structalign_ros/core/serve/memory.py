"""Keeping a long-running process's resident memory from creeping up with every weight swap.

Installing fine-tuned weights allocates and frees blocks of megabytes at a time: the exported graph,
the state dict, a new ONNX Runtime session and its arena (the node), an export and the guard's model
copies (the online trainer). glibc serves a block of that size from its heap once the first such block
has been freed (its mmap threshold adapts upwards, up to 32 MiB), and a heap keeps the high-water mark
of whatever was ever allocated between long-lived objects. In live runs of 7-8 minutes the node and the
trainer grew by 4-6 MB per accepted update each (docs/BENCHMARKS.md). A fixed threshold stops the
adaptation: every block of :data:`MMAP_THRESHOLD` bytes or more gets its own mapping, returned to the
system when it is freed.
"""

from __future__ import annotations

import ctypes

MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, now fixed
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def return_large_blocks() -> bool:
    """Have this process map every allocation of :data:`MMAP_THRESHOLD` bytes or more on its own, so
    that freeing it gives the memory back. Returns False where the C library has no ``mallopt`` (not
    glibc); nothing changes there."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded in this process, the C library's among them
        return bool(libc.mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD)))
    except (OSError, AttributeError, TypeError):
        return False
